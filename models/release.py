"""Read and write FlashHead checkpoint folders in the release layout, strictly.

A model folder holds `config.json` + `diffusion_pytorch_model.safetensors` (or a sharded
`diffusion_pytorch_model.safetensors.index.json`), exactly like the authors' `Model_Lite/` and
`Model_Pro/`. `vividhead train` writes the same layout; its config.json carries `"preset"` so the
loader knows a tiny checkpoint uses the space-to-depth codec. Every key and shape must match:
an error names the first offending keys.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vividhead.models.flashhead import FlashHeadConfig, FlashHeadDiT

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
MODEL_FOLDERS = {"lite": "Model_Lite", "pro": "Model_Pro", "tiny": "Model_Tiny"}


class CheckpointError(ValueError):
    """A checkpoint folder does not match the model it declares."""


def infer_preset(config: FlashHeadConfig, folder: Path) -> str:
    """tiny / lite / pro from config.json's `preset`, else the folder name, else the VAE stride."""
    if config.preset:
        return config.preset
    name = folder.name.lower()
    for preset in ("lite", "pro", "tiny"):
        if preset in name:
            return preset
    return {(8, 32, 32): "lite", (4, 8, 8): "pro"}.get(tuple(config.vae_stride), "pro")


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


def read_config(folder: Path) -> FlashHeadConfig:
    path = Path(folder) / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read the model config ({err})") from err
    try:
        config = FlashHeadConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from err
    return config


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    folder = Path(folder)
    if (folder / WEIGHTS_NAME).is_file():
        return load_file(str(folder / WEIGHTS_NAME))
    if (folder / INDEX_NAME).is_file():
        index = json.loads((folder / INDEX_NAME).read_text())
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(str(folder / shard)))
        return state
    raise FileNotFoundError(f"{folder}: neither {WEIGHTS_NAME} nor {INDEX_NAME}")


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
    """Load a model folder (config.json + safetensors) strictly; the preset is recorded on the config."""
    folder = Path(folder)
    config = read_config(folder)
    config.preset = infer_preset(config, folder)
    with torch.device("meta"):
        model = FlashHeadDiT(config)
    state = read_state_dict(folder)
    check_state_dict(model.state_dict(), state, folder / WEIGHTS_NAME)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def save_release(model: FlashHeadDiT, folder: Path, dtype: torch.dtype | None = None) -> Path:
    """Write config.json + safetensors atomically (temporary names, then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None else v).detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp_weights, tmp_config = folder / f".{WEIGHTS_NAME}.tmp", folder / f".{CONFIG_NAME}.tmp"
    save_file(state, str(tmp_weights), metadata={"format": "pt"})
    tmp_config.write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    os.replace(tmp_weights, folder / WEIGHTS_NAME)
    os.replace(tmp_config, folder / CONFIG_NAME)
    return folder
