"""How `vividhead inspect` scales: summary, what-if and HTML report over a synthetic million-row manifest.

Writes a manifest in the docs/FORMATS.md layout (many parts, realistic metric columns, random
decisions) under a temporary directory, then times each job and prints its peak memory. No shards
are written, so the report's thumbnails say their shard is missing; its size is still bounded.

    .venv/bin/python benchmarks/inspect_scale.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vividhead.inspection.reader import resolve
from vividhead.inspection.report import ExamplePicker, write_report
from vividhead.inspection.summary import summarize
from vividhead.inspection.verify import verify
from vividhead.inspection.whatif import parse_overrides, what_if

CONFIG = {"segment": {"min_seconds": 5.0}, "visibility": {"enabled": True, "max_missing_ratio": 0.2},
          "speech": {"enabled": True, "min_speech_ratio": 0.5},
          "sync": {"enabled": True, "min_confidence": 3.0, "max_abs_offset": 6}}


def write_manifest(out: Path, rows: int, parts: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (out / "manifest").mkdir(parents=True)
    per_part = rows // parts
    for part in range(parts):
        n = per_part if part < parts - 1 else rows - per_part * (parts - 1)
        duration = rng.uniform(3, 50, n)
        face_ratio = np.clip(rng.normal(0.95, 0.1, n), 0, 1)
        speech = np.clip(rng.normal(0.75, 0.2, n), 0, 1)
        lse_c = rng.normal(6, 2, n)
        offset = rng.integers(-10, 11, n)
        stage = np.full(n, None, dtype=object)
        reason = np.full(n, None, dtype=object)
        for mask, name, why in ((duration < 5, "segment", "too_short"), (1 - face_ratio > 0.2, "visibility", "face_missing"),
                                (speech < 0.5, "speech", "no_speech"), (lse_c < 3, "sync", "out_of_sync"),
                                (np.abs(offset) > 6, "sync", "av_offset")):
            free = mask & (stage == None)  # noqa: E711
            stage[free], reason[free] = name, why
        status = np.where(stage == None, "kept", "rejected")  # noqa: E711
        keys = [f"{part:016x}_{i:08d}_{i + 1:08d}_abcdef01" for i in range(n)]
        table = pa.table({
            "key": keys, "unit": [f"u{part}"] * n, "status": status, "reject_stage": stage.tolist(),
            "reject_reason": reason.tolist(), "source_id": [f"web:video{part}_{i % 50}.mp4" for i in range(n)],
            "dataset": np.where(np.arange(n) % 3 == 0, "hdtf", "web"), "uri": [f"/data/video{part}.mp4"] * n,
            "start": np.zeros(n), "end": duration, "duration": duration, "crop_side": rng.integers(300, 900, n),
            "shard": np.where(status == "kept", f"u{part}.tar", None).tolist(),
            "language": rng.choice(["en", "zh", "es", "unknown"], n), "language_provenance": ["model"] * n,
            "gender": rng.choice(["female", "male"], n), "gender_provenance": ["model"] * n,
            "age": rng.integers(18, 80, n).astype(str), "age_provenance": ["model"] * n,
            "ethnicity": ["unknown"] * n, "ethnicity_provenance": ["unknown"] * n,
            "visibility.face_ratio": face_ratio, "speech.speech_ratio": speech,
            "sync.lse_c": lse_c, "sync.lse_d": rng.normal(7.5, 1, n), "sync.offset": offset,
        })
        pq.write_table(table, out / "manifest" / f"u{part}.parquet")
    (out / "shards").mkdir()
    (out / "build.json").write_text(json.dumps({"version": "bench", "config": CONFIG}))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=200)
    parser.add_argument("--verify", type=Path, metavar="BUILD",
                        help="also time --verify on a real build directory (decode-bound: frames per second)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.verify:
        start = time.perf_counter()
        report = verify(resolve([args.verify]), workers=args.workers)
        seconds = time.perf_counter() - start
        print(f"verify {args.verify}: {report['samples']:,} samples, {report['decoded_frames']:,} frames in "
              f"{seconds:.1f} s = {report['decoded_frames'] / seconds:,.0f} frames/s "
              f"({report['decoded_frames'] / 25 / seconds:,.1f} s of clip per second), {args.workers} worker(s), "
              f"ok={report['ok']}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        start = time.perf_counter()
        write_manifest(out, args.rows, args.parts)
        print(f"wrote {args.rows:,} manifest rows in {args.parts} parts: {time.perf_counter() - start:.1f} s, "
              f"peak RSS {peak_mib():.0f} MiB")
        dataset = resolve([out])
        start = time.perf_counter()
        summary = summarize(dataset).summary
        print(f"summary: {time.perf_counter() - start:.1f} s ({summary['kept']['clips']:,} kept), "
              f"peak RSS {peak_mib():.0f} MiB")
        start = time.perf_counter()
        result = what_if(dataset, parse_overrides(["sync.min_confidence=4"], dataset))
        print(f"what-if sync.min_confidence=4: {time.perf_counter() - start:.1f} s "
              f"(kept {result['before']['kept']['clips']:,} -> {result['after']['kept']['clips']:,}), "
              f"peak RSS {peak_mib():.0f} MiB")
        start = time.perf_counter()
        picker = ExamplePicker()
        scan = summarize(dataset, [picker])
        report = write_report(Path(tmp) / "report.html", dataset, scan, picker)
        print(f"summary + HTML report: {time.perf_counter() - start:.1f} s, {report.stat().st_size / 1024:.0f} KiB, "
              f"peak RSS {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
