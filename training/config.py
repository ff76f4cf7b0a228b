"""Validated training configs for `vividhead train` (stage 1 and stage 2), read from YAML.

One `TrainConfig` describes a run: which stage, the model preset, the data, the optimiser and the
bookkeeping. Stage 1 (flow-matching pre-training) reads the `flow` section; stage 2 (DMD
distillation) reads the `distill` section, whose fields live in `vividhead.training.dmd_config`.
Relative paths in a config file resolve against the file's own folder, never the working directory.
Errors name the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from vividhead.configfile import ConfigError, load_yaml_model
from vividhead.configfile import StrictModel as _Strict
from vividhead.paths import resolve_path
from vividhead.shards import shard_files
from vividhead.storage import Location, expand_location, is_object_url
from vividhead.training.dmd_config import DistillConfig


class DataConfig(_Strict):
    """Where the shards are and how samples are cut from them."""

    shards: list[str] = Field(..., min_length=1, description="shard files, folders or globs (*.tar)")
    frames: int = Field(33, ge=1, description="video frames per training window (one chunk)")
    # Frame sizes (height, width) to train at; a clip goes to the bucket nearest its aspect ratio.
    buckets: list[tuple[int, int]] = Field(default_factory=lambda: [(512, 512)], min_length=1)
    motion_full_prob: float = Field(0.9, ge=0.0, le=1.0, description="p of n motion frames, else first frame only")
    shuffle_window: int = Field(64, ge=1, description="samples shuffled together per epoch (bounded window)")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes per rank")
    # Latent cache: None = encode on the fly. Windows then start on a grid of `cache_stride` frames so
    # that each (clip, window) is encoded once. Keyed by clip key + VAE fingerprint.
    latent_cache: Path | None = None
    cache_stride: int = Field(4, ge=1)


class ModelConfig(_Strict):
    """The network being trained."""

    preset: Literal["tiny", "lite", "pro"] = "tiny"
    init: Path | None = Field(None, description="release model folder or checkpoint to start from")
    vae: Path | None = Field(None, description="VAE folder for lite/pro (VAE_LTX or VAE_Wan)")
    # Shape changes for a fresh model (not with `init`), written to its config.json so `vividhead stream`
    # builds the same network. Example (tiny): {dim: 256, ffn_dim: 512, num_heads: 4}.
    overrides: dict[Literal["dim", "ffn_dim", "num_heads", "num_layers", "freq_dim", "audio_hidden", "audio_tokens"],
                    int] = Field(default_factory=dict)
    gradient_checkpointing: bool = Field(True, description="on GPU only")
    fsdp: bool | Literal["auto"] = Field("auto", description="auto: FSDP for multi-GPU runs of lite/pro")


class OptimConfig(_Strict):
    """AdamW with linear warm-up then a constant or cosine rate."""

    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.01, ge=0)
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(100, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = Field(1.0, gt=0)
    batch_size: int = Field(1, ge=1, description="samples per rank per step")


class FlowConfig(_Strict):
    """Stage-1 objective (paper eq. 1)."""

    timestep_shift: float = Field(5.0, gt=0, description="the sampler's shift, applied to t ~ U(0, 1)")
    audio_drop_prob: float = Field(0.1, ge=0.0, le=1.0, description="drop the audio condition (for guidance)")


class TrainConfig(_Strict):
    """One `vividhead train` run."""

    stage: Literal[1, 2] = 1
    out: Path = Field(..., description="run folder: checkpoints, loss log, TensorBoard")
    seed: int = 0
    steps: int = Field(1000, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    log_every: int = Field(10, ge=1)
    save_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    distill: DistillConfig | None = None

    @model_validator(mode="after")
    def _check_stage(self) -> "TrainConfig":
        if self.stage == 2 and self.distill is None:
            raise ValueError("stage 2 needs a `distill:` section (see vividhead.training.dmd_config)")
        if self.model.overrides and self.model.init is not None:
            raise ValueError("model.overrides: shape changes apply to a fresh model; model.init fixes the shape")
        if self.stage == 1 and self.distill is not None:
            raise ValueError("`distill:` belongs to stage 2; this config says stage: 1")
        return self


def _with_paths_resolved(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the config's relative paths absolute against `base` (the config file's folder)."""
    raw = dict(raw)
    if raw.get("out") is not None:
        raw["out"] = resolve_path(raw["out"], base)
    data = raw.get("data")
    if isinstance(data, dict):
        data = dict(data)
        if isinstance(data.get("shards"), list):
            data["shards"] = [_shard_path(s, base) for s in data["shards"]]
        elif isinstance(data.get("shards"), str):
            data["shards"] = [_shard_path(data["shards"], base)]
        if data.get("latent_cache") is not None:
            data["latent_cache"] = resolve_path(data["latent_cache"], base)
        raw["data"] = data
    model = raw.get("model")
    if isinstance(model, dict):
        raw["model"] = {k: (resolve_path(v, base) if k in ("init", "vae") and v is not None else v)
                        for k, v in model.items()}
    distill = raw.get("distill")
    if isinstance(distill, dict):
        keys = ("teacher", "generator_init", "fake_score_init")
        raw["distill"] = {k: (resolve_path(v, base) if k in keys and v is not None else v) for k, v in distill.items()}
    return raw


def load_train_config(path: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and validate a YAML training config. `overrides` are dotted keys, already resolved paths.

    Example override keys: "data.shards" (list of str), "out" (Path), "steps" (int), "model.init".
    """
    path = Path(path)

    def prepare(raw: dict[str, Any]) -> dict[str, Any]:
        raw = _with_paths_resolved(raw, path.resolve().parent)
        for dotted, value in (overrides or {}).items():
            node = raw
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{path}: field `{part}` must be a mapping to override `{dotted}`")
            node[leaf] = value
        return raw

    return load_yaml_model(TrainConfig, path, prepare)


def _shard_path(text: Any, base: Path) -> str:
    """A shard pattern as written: a bucket URL unchanged, a local path resolved against `base`."""
    return str(text) if is_object_url(str(text)) else str(resolve_path(text, base))


def expand_shards(patterns: list[str]) -> list[Location]:
    """Shard files from paths, folders (their *.tar, or a build's shards/*.tar) and globs, sorted, unique.

    Raises FileNotFoundError naming the pattern that matched nothing.
    """
    found: list[Location] = []
    for pattern in patterns:
        matches: list[Location] = []
        for path in expand_location(pattern):
            if path.is_dir():
                matches += shard_files(path) or shard_files(path / "shards")
            elif path.is_file():
                matches.append(path)
        if not matches:
            raise FileNotFoundError(f"data.shards: `{pattern}` matches no shard file")
        found.extend(m.resolve() for m in matches)
    return sorted(set(found))
