"""Read and write FlashHead checkpoint folders in the release layout, strictly.

A model folder holds `config.json` + `diffusion_pytorch_model.safetensors` (or a sharded
`diffusion_pytorch_model.safetensors.index.json`), exactly like the authors' `Model_Lite/` and
`Model_Pro/`: what diffusers' `FlashHeadDiT.save_pretrained` writes and `from_pretrained` reads.
`vividhead train` writes the same layout; its config.json carries `"preset"` so the loader knows a
tiny checkpoint uses the space-to-depth codec. `load_release` checks every key and shape before
loading: an error names the first offending keys. A truncated or corrupt safetensors file is refused with an error
that names the file and what is wrong with it, and a checkpoint holding NaN or infinite weights is refused
at load with the offending tensors named (it would otherwise stream a black video).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vividhead.models.flashhead import FlashHeadDiT
from vividhead.weights_verify import verify_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
MODEL_FOLDERS = {"lite": "Model_Lite", "pro": "Model_Pro", "tiny": "Model_Tiny"}


class CheckpointError(ValueError):
    """A checkpoint folder does not match the model it declares."""


def infer_preset(config: dict[str, Any], folder: Path) -> str:
    """tiny / lite / pro from config.json's `preset`, else the folder name, else the VAE stride."""
    if config.get("preset"):
        return config["preset"]
    name = folder.name.lower()
    for preset in ("lite", "pro", "tiny"):
        if preset in name:
            return preset
    return {(8, 32, 32): "lite", (4, 8, 8): "pro"}.get(tuple(config.get("vae_stride", ())), "pro")


def model_folder(weights: Path, variant: str) -> Path:
    """The DiT folder for `variant`: `weights` itself when it holds config.json, else Model_Lite/Model_Pro/Model_Tiny
    under it; a `vividhead train` run folder resolves through its `checkpoints/latest` file."""
    weights = Path(weights)
    if (weights / CONFIG_NAME).is_file():
        return weights
    for latest in (weights / "latest", weights / "checkpoints" / "latest"):   # a `vividhead train` run folder
        if latest.is_file():
            weights = latest.parent / latest.read_text().strip()
            break
    candidate = weights / MODEL_FOLDERS.get(variant, variant)
    if (candidate / CONFIG_NAME).is_file():
        return candidate
    raise FileNotFoundError(f"{weights}: no {MODEL_FOLDERS.get(variant, variant)}/{CONFIG_NAME} (and no {CONFIG_NAME} in the folder itself)")


def read_config(folder: Path) -> dict[str, Any]:
    """config.json of a model folder, as a dict."""
    path = Path(folder) / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read the model config ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: the model config is not a JSON object")
    return data


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    folder = Path(folder)
    if (folder / WEIGHTS_NAME).is_file():
        return read_safetensors(folder / WEIGHTS_NAME)
    if (folder / INDEX_NAME).is_file():
        try:
            shards = sorted(set(json.loads((folder / INDEX_NAME).read_text())["weight_map"].values()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{folder / INDEX_NAME}: not a readable shard index ({err!r})") from err
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_safetensors(folder / shard))
        return state
    raise FileNotFoundError(f"{folder}: neither {WEIGHTS_NAME} nor {INDEX_NAME}")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one safetensors file; a truncated or corrupt file raises CheckpointError naming it."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: {safetensors_problem(Path(path)) or 'unreadable safetensors file'} ({err})") from err


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file, in words: its layout is an 8-byte header length, a JSON header
    giving each tensor's byte range, then the tensor data."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            return f"truncated: {size} bytes, too short for the 8-byte header length"
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > size - 8:
            return (f"truncated or not a safetensors file: the header length field says {header_len} bytes, "
                    f"the file has {size - 8} after it")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return f"corrupt: the {header_len}-byte header is not valid JSON ({err})"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError, AttributeError):
        return "corrupt: the header does not give every tensor's data_offsets"
    data = size - 8 - header_len
    if end > data:
        return f"truncated: the header declares {end} bytes of tensor data, the file holds {data} ({data / end:.1%})"
    if end < data:
        return f"corrupt: {data - end} bytes after the last tensor's data"
    return None


def check_finite(state: dict[str, torch.Tensor], where: Path) -> None:
    """Raise CheckpointError naming the floating-point tensors that hold NaN or infinite values."""
    bad = []
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
            bad.append(f"{name} ({nan} NaN, {inf} infinite of {tensor.numel()})")
    if bad:
        raise CheckpointError(f"{where}: non-finite weights in {len(bad)} tensor(s): {'; '.join(bad[:8])}"
                              + (" ..." if len(bad) > 8 else ""))


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: Path) -> None:
    """Raise CheckpointError naming missing keys, unexpected keys and shape mismatches."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(found[k].shape)}, model {tuple(expected[k].shape)}"
              for k in expected if k in found and found[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:8])}")
    if problems:
        raise CheckpointError(f"{where}: the checkpoint does not match its config.json: " + " | ".join(problems))


def load_release(folder: Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> FlashHeadDiT:
    """Load a model folder (config.json + safetensors) strictly; the preset is recorded in the config."""
    folder = Path(folder)
    verify_file("flashhead", folder)   # against the release's lock record, when `weights fetch` wrote one
    config = read_config(folder)
    try:
        with torch.device("meta"):
            model = FlashHeadDiT.from_config_json(config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{folder / CONFIG_NAME}: {err}") from err
    model.register_to_config(preset=infer_preset(config, folder))
    state = read_state_dict(folder)
    check_state_dict(model.state_dict(), state, folder / WEIGHTS_NAME)
    check_finite(state, folder / WEIGHTS_NAME)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def save_release(model: FlashHeadDiT, folder: Path) -> Path:
    """Write config.json + diffusion_pytorch_model.safetensors with diffusers' `save_pretrained`."""
    model.save_pretrained(Path(folder), safe_serialization=True)
    return Path(folder)
