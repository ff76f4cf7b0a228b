"""The run skeleton both training stages share (stage 1 flow matching, stage 2 DMD distillation).

A `TrainingRun` owns what does not depend on the objective:

    run = TrainingRun(config, ctx)           # RUN/ created, RUN/train_config.json snapshot, CPU thread policy
    step, rank_state = run.resume(objects)   # the newest complete checkpoint, if any; opens RUN/loss.jsonl
    with run.autocast():                     # bf16 autocast on CUDA ("auto"), or as `precision` says
        ...
    run.log(record)                          # one line of loss.jsonl (+ TensorBoard when installed)
    run.save(step, objects, rank_state)      # every `save_every` steps and at the last: an atomic checkpoint
    run.finish(objects, folder)              # RUN/<Model_X>/ = the newest checkpoint's model (streamable)

and `report(config)` prints the loss curve of a finished run. Learning-rate warm-up comes from diffusers'
schedulers (`warmup_schedule`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from diffusers.optimization import get_scheduler

from vividhead.training.checkpoint import Checkpointable, latest_checkpoint, load_checkpoint, save_checkpoint
from vividhead.training.config import TrainConfig
from vividhead.training.distributed import DistContext, barrier


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    cosine: bool = False) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps` (from 0), then constant, or cosine to zero at `total_steps`."""
    name = "cosine" if cosine else "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


class LossLog:
    """`loss.jsonl` (one line per step, truncated to the resume step) and TensorBoard when installed."""

    def __init__(self, run_dir: Path, resume_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / "loss.jsonl"
        self.writer = None
        if not enabled:
            return
        kept = []
        if self.path.is_file():   # a killed run may have left steps past its checkpoint, or half a line
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        self.path.write_text("".join(line + "\n" for line in kept))
        try:   # tensorboard is an optional extra
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:
            self.writer = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name in ("loss", "lr"):
                self.writer.add_scalar(f"train/{name}", record[name], record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class TrainingRun:
    """One rank's view of a run folder: config snapshot, resume, loss log, checkpoints and publishing."""

    def __init__(self, config: TrainConfig, ctx: DistContext) -> None:
        self.config, self.ctx, self.out = config, ctx, Path(config.out)
        self.started = time.perf_counter()
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(config.model_dump_json(indent=2) + "\n")
        barrier(ctx)
        if ctx.device.type == "cpu" and config.data.num_workers > 0:
            # Leave the loader workers their cores: the main process computes on the rest.
            torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - config.data.num_workers)))
        self.losses = LossLog(self.out, 0, enabled=False)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast when `precision` is bf16, or auto on CUDA; otherwise full precision."""
        bf16 = self.config.precision == "bf16" or (self.config.precision == "auto" and self.ctx.device.type == "cuda")
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def resume(self, objects: Checkpointable, what: str = "step") -> tuple[int, dict[str, Any] | None]:
        """Restore the newest complete checkpoint (step 0 without one); opens the loss log at that step."""
        step, rank_state = 0, None
        latest = latest_checkpoint(self.out)
        if latest is not None:
            step, rank_state, _ = load_checkpoint(latest, objects, self.ctx)
            if self.ctx.is_main:
                print(f"resuming from {latest} ({what} {step})", file=sys.stderr)
        self.losses = LossLog(self.out, step, enabled=self.ctx.is_main)
        return step, rank_state

    def log(self, record: dict[str, Any]) -> None:
        self.losses.write(record)

    def save(self, step: int, objects: Checkpointable, rank_state: dict[str, Any], **extra: Any) -> None:
        """A checkpoint every `save_every` steps and at the last step (the config is stored with it)."""
        if step % self.config.save_every == 0 or step == self.config.steps:
            save_checkpoint(self.out, step, objects, self.ctx, rank_state, keep=self.config.keep_checkpoints,
                            extra={"config": self.config.model_dump(mode="json"), **extra})

    def finish(self, objects: Checkpointable, folder: str, vae: Path | None = None) -> Path:
        """Close the log and publish the newest checkpoint's model folder as RUN/<folder>/, so `--weights RUN` streams it.

        For lite / pro, RUN/VAE_LTX or RUN/VAE_Wan becomes a link to the VAE the run trained with.
        """
        self.losses.close()
        target = self.out / folder
        latest = latest_checkpoint(self.out)
        if self.ctx.is_main and latest is not None:
            tmp = self.out / f".{folder}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(latest / folder, tmp)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
            link = self.out / vae.name if vae is not None else None
            if link is not None and link.name in ("VAE_LTX", "VAE_Wan") and not link.exists():
                link.symlink_to(vae.resolve(), target_is_directory=vae.is_dir())
        barrier(self.ctx)
        return target


def read_losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) pairs of a run's `loss.jsonl`."""
    path = Path(run_dir) / "loss.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return [(int(r["step"]), float(r["loss"])) for r in rows]


def loss_curve(losses: list[float], width: int = 60, height: int = 12) -> str:
    """A text plot of a loss curve: `width` bins of mean loss, log-scaled rows."""
    if not losses:
        return "(no losses)"
    bins = min(width, len(losses))
    edges = [round(i * len(losses) / bins) for i in range(bins + 1)]
    means = [sum(losses[a:b]) / (b - a) for a, b in zip(edges, edges[1:])]
    lo, hi = math.log(min(means)), math.log(max(means))
    span = hi - lo or 1.0
    rows = []
    for r in range(height):
        level = hi - span * r / max(1, height - 1)
        line = "".join("*" if abs(math.log(m) - level) <= span / (2 * max(1, height - 1)) else " " for m in means)
        rows.append(f"{math.exp(level):9.4f} |{line}")
    rows.append(" " * 10 + "+" + "-" * bins)
    rows.append(" " * 11 + f"step 1 .. {len(losses)} ({bins} bins of mean loss, log scale)")
    return "\n".join(rows)


def report(config: TrainConfig, title: str) -> None:
    """Print a finished run's loss curve and how the loss moved."""
    losses = [loss for _, loss in read_losses(config.out)]
    if not losses or min(losses) <= 0:
        return
    print(title)
    print(loss_curve(losses))
    head, tail = losses[: max(1, len(losses) // 10)], losses[-max(1, len(losses) // 10):]
    print(f"loss: first 10% mean {sum(head) / len(head):.4f} -> last 10% mean {sum(tail) / len(tail):.4f} "
          f"over {len(losses)} steps")
