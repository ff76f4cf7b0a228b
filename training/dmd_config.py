"""Settings of stage 2: oracle-guided DMD distillation (paper section 3.2, eq. 4-5).

`DistillConfig` is the `distill:` section of a stage-2 training config. The run's bookkeeping
(`steps` = generator updates, `seed`, `log_every`, `save_every`, `optim.batch_size`) lives in
the top-level `TrainConfig`, shared with stage 1. Every field here has the paper's value as its
default where the paper gives one; where it is silent the default follows Self-Forcing / DMD2, the recipe the paper says it adheres to, and the comment says so.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DistillConfig(BaseModel):
    """Oracle-guided DMD distillation of a stage-1 teacher into a few-step streaming student."""

    model_config = ConfigDict(extra="forbid")

    # --- the three networks -------------------------------------------------------------------
    # Teacher = frozen real score. A stage-1 checkpoint folder or a release model folder
    # (config.json + diffusion_pytorch_model.safetensors). The generator and the fake score start
    # from it too unless their own path is given (the paper initialises all three from stage 1).
    teacher: Path | None = None
    generator_init: Path | None = None
    fake_score_init: Path | None = None

    # --- self-forcing unroll ------------------------------------------------------------------
    num_chunks: int = Field(5, ge=1, description="K: chunks the generator unrolls at most (paper: 5)")
    sampler_steps: int = Field(4, ge=1, description="student denoising steps, as `vividhead stream` uses")
    sampler_shift: float = Field(5.0, gt=0, description="timestep shift of the student sampler")
    # Stochastic truncation: k ~ U{1..K} chunks, gradient kept only at step t' ~ U{0..steps-1} of chunk k.
    stochastic_truncation: bool = True

    # --- oracle guidance and the loss ---------------------------------------------------------
    oracle: bool = Field(True, description="teacher sees ground-truth motion frames m_gt; False: m_pred")
    guidance_scale: float = Field(3.0, ge=1.0, description="teacher audio guidance (release teacher: 3)")
    regression_weight: float = Field(
        1.0, ge=0.0, description="lambda of eq. 5 (the paper gives no value; 0 disables L_reg)"
    )
    # Re-noising range for the DMD gradient and the fake-score loss, as fractions of the schedule
    # (DMD2 / Self-Forcing use 0.02..0.98).
    t_min: float = Field(0.02, ge=0.0, lt=1.0)
    t_max: float = Field(0.98, gt=0.0, le=1.0)
    # Shift applied to the uniformly drawn re-noising time (same warp as the sampler; 1 = none).
    timestep_shift: float = Field(5.0, gt=0)

    # --- schedule (the run's top-level `steps` counts generator updates) --------------------
    lr_generator: float = Field(2e-6, gt=0)
    lr_fake: float = Field(4e-7, gt=0)
    fake_updates_per_generator: int = Field(5, ge=1, description="update ratio G : s_fake = 1 : this")
    betas: tuple[float, float] = (0.0, 0.999)     # Self-Forcing's AdamW betas
    weight_decay: float = Field(0.01, ge=0.0)
    grad_clip: float = Field(10.0, gt=0)
    warmup_steps: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check_ranges(self) -> "DistillConfig":
        if self.t_min >= self.t_max:
            raise ValueError(f"distill.t_min ({self.t_min}) must be below distill.t_max ({self.t_max})")
        return self

    def iterations(self, generator_steps: int) -> int:
        """Loop iterations for `generator_steps` G updates: one fake-score update per iteration."""
        return generator_steps * self.fake_updates_per_generator
