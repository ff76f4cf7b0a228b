"""Stage-2 training loop: oracle-guided DMD distillation of a stage-1 teacher (paper eq. 4-5).

`DistillTrainer` owns the two trained networks (generator, fake score), the frozen teacher and
their optimisers, and runs one loop iteration at a time: a fake-score update every iteration and a
generator update every `fake_updates_per_generator`-th (the paper's 1:5 ratio). `run(config)` is
what `vividhead train` calls for a `stage: 2` config: it loads the networks, streams K-chunk
windows from the shards, logs the DMD and regression losses, and writes resumable checkpoints
whose generator folder is in the release layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vividhead.training.dmd import ChunkBatch, Distiller, MotionFn, Velocity
from vividhead.training.dmd_config import DistillConfig


def _adamw(params, lr: float, cfg: DistillConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, betas=cfg.betas,
                             weight_decay=cfg.weight_decay)


def _warmup(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / steps) if steps else 1.0)


class DistillTrainer:
    """Generator + fake score updates at the configured ratio, with exactly resumable state."""

    def __init__(
        self,
        config: DistillConfig,
        generator: nn.Module,
        teacher: nn.Module,
        fake_score: nn.Module,
        velocity: Callable[[nn.Module], Velocity],
        motion_fn: MotionFn,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        self.config = config
        self.generator, self.teacher, self.fake_score = generator, teacher, fake_score
        teacher.requires_grad_(False).eval()
        self.distiller = Distiller(config, velocity(generator), velocity(teacher), velocity(fake_score),
                                   motion_fn, seed=seed, rank=rank)
        self.opt_generator = _adamw(generator.parameters(), config.lr_generator, config)
        self.opt_fake = _adamw(fake_score.parameters(), config.lr_fake, config)
        self.sched_generator = _warmup(self.opt_generator, config.warmup_steps)
        self.sched_fake = _warmup(self.opt_fake, config.warmup_steps * config.fake_updates_per_generator)
        self.iteration = 0
        self.generator_steps = 0
        self.fake_steps = 0

    def trains_generator(self, iteration: int) -> bool:
        """Self-Forcing's schedule: G updates on every ratio-th iteration, s_fake on every one."""
        return iteration % self.config.fake_updates_per_generator == 0

    def _update(self, loss: torch.Tensor, module: nn.Module, optimizer, scheduler) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), self.config.grad_clip)
        if math.isfinite(float(norm)):
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def step(self, batch: ChunkBatch) -> dict[str, float]:
        """One loop iteration; returns the logged scalars (generator ones only on its iterations)."""
        logs: dict[str, float] = {"iteration": self.iteration}
        if self.trains_generator(self.iteration):
            self.generator.train()
            loss, log = self.distiller.generator_loss(batch, self.iteration)
            logs.update(log.values)
            logs["g_grad_norm"] = self._update(loss, self.generator, self.opt_generator, self.sched_generator)
            self.generator_steps += 1
        self.fake_score.train()
        loss, log = self.distiller.fake_score_loss(batch, self.iteration)
        logs.update(log.values)
        logs["fake_grad_norm"] = self._update(loss, self.fake_score, self.opt_fake, self.sched_fake)
        self.fake_steps += 1
        self.iteration += 1
        return logs

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs besides the frozen teacher (random draws are keyed by iteration)."""
        return {
            "generator": self.generator.state_dict(),
            "fake_score": self.fake_score.state_dict(),
            "opt_generator": self.opt_generator.state_dict(),
            "opt_fake": self.opt_fake.state_dict(),
            "sched_generator": self.sched_generator.state_dict(),
            "sched_fake": self.sched_fake.state_dict(),
            "counters": {"iteration": self.iteration, "generator_steps": self.generator_steps,
                         "fake_steps": self.fake_steps},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.fake_score.load_state_dict(state["fake_score"])
        self.opt_generator.load_state_dict(state["opt_generator"])
        self.opt_fake.load_state_dict(state["opt_fake"])
        self.sched_generator.load_state_dict(state["sched_generator"])
        self.sched_fake.load_state_dict(state["sched_fake"])
        counters = state["counters"]
        self.iteration = int(counters["iteration"])
        self.generator_steps = int(counters["generator_steps"])
        self.fake_steps = int(counters["fake_steps"])
