"""Atomic, exactly resumable training checkpoints in the release layout (both stages use this).

    RUN/checkpoints/step-00000100/
        Model_Tiny/config.json + diffusion_pytorch_model.safetensors   one release folder per model
        trainer.pt        step, optimiser and scheduler states, caller's extra (e.g. the config)
        rank-00000.pt     per rank: torch / CUDA / numpy / python RNG, named generators, data position
    RUN/checkpoints/latest   the name of the newest complete checkpoint

Everything is written into `.step-00000100.tmp/` and the folder is renamed when complete, so a
killed run never leaves a half checkpoint behind a complete-looking name. The model folders load
with `vividhead.models.release.load_release`, i.e. with `vividhead stream --weights`.
DDP and single-process runs save plain state dicts; FSDP runs gather full state dicts on CPU.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vividhead.models.flashhead import FlashHeadDiT
from vividhead.models.release import read_state_dict, save_release
from vividhead.training.distributed import DistContext, barrier, broadcast_object, unwrap

STEP_RE = re.compile(r"^step-(\d{8})$")
LATEST = "latest"


@dataclass
class Checkpointable:
    """What a trainer saves: named models (saved as release folders), optimisers and schedulers.

    With one model every optimiser belongs to it; with several, an optimiser's name must be the name
    of the model it updates (e.g. {"Model_Tiny": g, "FakeScore": f} and optimisers of the same names).
    """

    models: dict[str, nn.Module]                 # folder name -> model, e.g. {"Model_Tiny": dit}
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    schedulers: dict[str, Any] = field(default_factory=dict)
    fsdp: bool = False


# ------------------------------------------------------------------------------------------- RNG
def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in (generators or {}).items():
        if name not in state["generators"]:
            raise KeyError(f"checkpoint has no RNG state for generator `{name}`")
        generator.set_state(state["generators"][name])


# ------------------------------------------------------------------------------------------- state dicts
def _model_state(model: nn.Module, fsdp: bool) -> dict[str, torch.Tensor]:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


def _optim_state(model: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> dict[str, Any]:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def _save_model_folder(model: nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Write `state` in the release layout through `save_release` (any FlashHeadDiT-like module)."""
    inner = unwrap(model)
    if isinstance(inner, FlashHeadDiT):
        with torch.device("meta"):
            shell = FlashHeadDiT.from_config(inner.config)
        shell.load_state_dict(state, strict=True, assign=True)
        save_release(shell, folder)
    else:  # not a FlashHead model (e.g. a test module): plain safetensors in the same file name
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"))


# ------------------------------------------------------------------------------------------- save
def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def save_checkpoint(
    run_dir: Path,
    step: int,
    objects: Checkpointable,
    ctx: DistContext,
    rank_state: dict[str, Any],
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Save on every rank (collective under FSDP); returns the final checkpoint folder."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(ctx)
    # Gathering is collective under FSDP: every rank takes part, rank 0 writes.
    models = {name: _model_state(model, objects.fsdp) for name, model in objects.models.items()}
    first_model = next(iter(objects.models.values()))
    optims = {name: _optim_state(first_model if len(objects.models) == 1 else objects.models[name], opt, objects.fsdp)
              for name, opt in objects.optimizers.items()}
    torch.save(rank_state, tmp / f"rank-{ctx.rank:05d}.pt")
    if ctx.is_main:
        for name, state in models.items():
            _save_model_folder(objects.models[name], state, tmp / name)
        torch.save({"step": step, "optimizers": optims,
                    "schedulers": {name: s.state_dict() for name, s in objects.schedulers.items()},
                    "world_size": ctx.world_size, "extra": extra or {}}, tmp / "trainer.pt")
    barrier(ctx)
    if ctx.is_main:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        latest = final.parent / f".{LATEST}.tmp"
        latest.write_text(final.name + "\n")
        os.replace(latest, final.parent / LATEST)
        _prune(final.parent, keep)
    barrier(ctx)
    return final


def _prune(folder: Path, keep: int) -> None:
    steps = sorted(p for p in folder.iterdir() if STEP_RE.match(p.name))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------- load
def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    pointer = folder / LATEST
    if pointer.is_file():
        named = folder / pointer.read_text().strip()
        if STEP_RE.match(named.name) and named.is_dir():
            return named
    steps = sorted(p for p in folder.iterdir() if STEP_RE.match(p.name) and (p / "trainer.pt").is_file())
    return steps[-1] if steps else None


def load_model_weights(model: nn.Module, folder: Path, fsdp: bool = False) -> None:
    """Load a release-layout model folder into a (possibly wrapped) model, strictly."""
    state = read_state_dict(folder)
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
        return
    target = unwrap(model)
    device = next(target.parameters()).device
    target.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)


def load_checkpoint(path: Path, objects: Checkpointable, ctx: DistContext) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Restore models, optimisers and schedulers; returns (step, this rank's state, extra)."""
    path = Path(path)
    trainer = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    if trainer["world_size"] != ctx.world_size:
        raise ValueError(f"{path}: saved by {trainer['world_size']} rank(s), resumed with {ctx.world_size}; "
                         "exact resume needs the same world size")
    for name, model in objects.models.items():
        load_model_weights(model, path / name, objects.fsdp)
    first_model = next(iter(objects.models.values()))
    for name, optimizer in objects.optimizers.items():
        state = trainer["optimizers"][name]
        if objects.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            model = first_model if len(objects.models) == 1 else objects.models[name]
            set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(state)
    for name, scheduler in objects.schedulers.items():
        scheduler.load_state_dict(trainer["schedulers"][name])
    rank_file = path / f"rank-{ctx.rank:05d}.pt"
    rank_state = torch.load(rank_file, map_location="cpu", weights_only=False)
    step = broadcast_object(int(trainer["step"]), ctx)
    return step, rank_state, trainer["extra"]
