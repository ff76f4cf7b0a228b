"""FPS of the stream engine on a checkpoint and this hardware, timed as `benchmarks/stream_bench.py` times it.

`time_engine` is the one timing function: it streams `warmup + chunks` chunks through a session of the
engine (audio encode, few-step DiT sampling, VAE decode, motion re-encode; output encoding excluded),
discards the warm-up chunks (allocations, cuDNN autotuning, torch.compile) and reports generated frames
per second of generation time over the rest, with per-chunk and first-chunk latency. The engine's own
clock synchronises CUDA, so GPU work is counted when it finishes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vividhead.evaluation.report import MetricRow
from vividhead.evaluation.runner import device_name

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class EngineTiming:
    """What `time_engine` measured."""

    fps: float                      # generated frames / generation seconds, warm-up excluded
    frames: int
    chunks: int
    warmup_chunks: int
    chunk_latency_mean_s: float
    chunk_latency_max_s: float
    first_chunk_s: float            # latency of the very first chunk (cold start), warm-up included


def timing_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Deterministic speech-like 16 kHz audio (a modulated tone with noise) to drive timing runs."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    voiced = 0.3 * np.sin(2 * np.pi * 160 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (voiced + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def time_engine(engine, reference_rgb: np.ndarray, chunks: int = 8, warmup: int = 1,
                audio: np.ndarray | None = None) -> EngineTiming:
    """Stream `warmup + chunks` chunks through a fresh session and time the last `chunks` of them."""
    if chunks < 1:
        raise ValueError(f"chunks must be >= 1, got {chunks}")
    g = engine.geometry
    n_frames = g.frames + (warmup + chunks - 1) * g.new_frames
    samples = n_frames * (SAMPLE_RATE // g.fps)
    if audio is None or len(audio) < samples:
        audio = timing_audio(samples / SAMPLE_RATE)
    session = engine.session(engine.reference(reference_rgb))
    session.feed(audio[:samples])
    frames = [len(chunk.frames) for chunk in session.chunks()]
    latency = session.stats.chunk_latency
    if len(latency) < warmup + chunks:
        raise RuntimeError(f"the engine produced {len(latency)} chunks, expected {warmup + chunks}")
    timed, timed_frames = latency[warmup:warmup + chunks], frames[warmup:warmup + chunks]
    return EngineTiming(fps=sum(timed_frames) / sum(timed), frames=sum(timed_frames), chunks=chunks,
                        warmup_chunks=warmup, chunk_latency_mean_s=float(np.mean(timed)),
                        chunk_latency_max_s=float(np.max(timed)), first_chunk_s=float(latency[0]))


def detect_variant(checkpoint: Path) -> str:
    """tiny / lite / pro of a checkpoint folder (its config.json, or its single Model_* subfolder)."""
    from vividhead.models.release import CONFIG_NAME, MODEL_FOLDERS, infer_preset, read_config

    checkpoint = Path(checkpoint)
    if (checkpoint / CONFIG_NAME).is_file():
        return infer_preset(read_config(checkpoint), checkpoint)
    found = [v for v, folder in MODEL_FOLDERS.items() if (checkpoint / folder / CONFIG_NAME).is_file()]
    if len(found) != 1:
        raise ValueError(f"{checkpoint}: cannot tell the variant (model folders found: {found or 'none'}); pass --variant")
    return found[0]


def load_engine(checkpoint: Path, variant: str | None = None, device: str | None = None,
                wav2vec: Path | None = None, steps: int = 4):
    """The stream engine on `checkpoint`, as `vividhead stream` loads it (reference used as given, no re-crop)."""
    from vividhead.inference.engine import EngineOptions, FlashHeadEngine

    variant = variant or detect_variant(checkpoint)
    return FlashHeadEngine.load(Path(checkpoint), variant, device=device, wav2vec=wav2vec,
                                options=EngineOptions(steps=steps, crop=False))


def fps_row(engine, reference_rgb: np.ndarray, chunks: int = 8, warmup: int = 1) -> MetricRow:
    """The FPS metric row: engine FPS on this device, with the device named."""
    timing = time_engine(engine, reference_rgb, chunks=chunks, warmup=warmup)
    detail = {"device": device_name(engine.device), "variant": engine.model.config.preset or "?",
              "steps": engine.options.steps, **{k: (round(v, 4) if isinstance(v, float) else v)
                                               for k, v in asdict(timing).items() if k != "fps"}}
    return MetricRow.ok("FPS", timing.fps, **detail)
