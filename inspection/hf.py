"""Hugging Face `datasets` features for vividhead shards, so `load_dataset("webdataset", ...)` reads them.

`datasets` infers webdataset features from the first samples and would decode `wav` and `mp4`
with torchcodec, which the project does not depend on. `hf_features` declares them as raw bytes
(decode them with soundfile / PyAV), `mask.png` as an image, `audio.npy` as a float16 array of
[frames, layers, dim] and `json` as the manifest row's struct:

    from datasets import load_dataset
    from vividhead.inspection.hf import hf_features
    ds = load_dataset("webdataset", data_files={"train": shards}, split="train", features=hf_features(shards))
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from vividhead.inspection.reader import InspectError
from vividhead.media import read_npy
from vividhead.shards import iter_samples

INFER_SAMPLES = 64


def _json_schema(rows: list[dict]) -> pa.Schema:
    table = pa.Table.from_pylist(rows)
    fields = [pa.field(item.name, pa.string() if pa.types.is_null(item.type) else item.type) for item in table.schema]
    return pa.schema(fields)


def hf_features(shards: Iterable[str | Path]):
    """`datasets.Features` for the given shards, from the first shard's first samples."""
    import datasets

    shards = [Path(shard) for shard in shards]
    if not shards:
        raise InspectError("hf_features: no shards given")
    rows, feature_shape = [], None
    for sample in iter_samples(shards[0], {"json", "audio.npy"}):
        rows.append(json.loads(sample.files.get("json") or b"{}"))
        if feature_shape is None and sample.files.get("audio.npy"):
            feature_shape = read_npy(sample.files["audio.npy"]).shape
        if len(rows) >= INFER_SAMPLES:
            break
    if not rows or feature_shape is None:
        raise InspectError(f"{shards[0]}: no sample with json and audio.npy to infer the features from")
    row_features = datasets.Features.from_arrow_schema(_json_schema(rows))
    return datasets.Features({
        "__key__": datasets.Value("string"),
        "__url__": datasets.Value("string"),
        "mp4": datasets.Value("binary"),
        "wav": datasets.Value("binary"),
        "mask.png": datasets.Image(),
        "audio.npy": datasets.Array3D(shape=(None, *feature_shape[1:]), dtype="float16"),
        "json": dict(row_features),
    })
