"""FPS of the stream engine on a checkpoint and this hardware: the one timing function of the project.

`time_engine` is the source of truth for the FPS figure: `vividhead eval` reports it and
`benchmarks/stream_bench.py` calls it (printing each chunk's breakdown through `on_chunk`), so both give
the same number by construction. It feeds `warmup + chunks` chunks of synthetic speech-like audio to a
fresh session of the engine, lets it generate every chunk (audio encode, few-step DiT sampling, VAE
decode, motion re-encode; the engine's clock synchronises CUDA) and encodes each chunk's frames as the
server does (H.264 fMP4 segments). FPS = emitted frames / (generation + output encode) seconds over the
timed chunks; the first `warmup` chunks (allocation, cuDNN autotuning, torch.compile) are left out of the
figure but reported as the cold-start latency. Per-stage milliseconds per chunk come with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vividhead.evaluation.report import MetricRow
from vividhead.evaluation.runner import device_name

SAMPLE_RATE = 16000
STAGES = ("audio_encode", "dit", "vae_decode", "motion_encode", "output_encode")


@dataclass(frozen=True)
class ChunkTiming:
    """One streamed chunk: its frames and seconds per stage (output encode included)."""

    index: int
    frames: int
    stage_s: dict[str, float]
    warmup: bool                    # left out of the FPS figure

    @property
    def total_s(self) -> float:
        """Generation + output encode seconds of this chunk."""
        return sum(self.stage_s.get(s, 0.0) for s in STAGES)


@dataclass(frozen=True)
class EngineTiming:
    """What `time_engine` measured."""

    fps: float                      # emitted frames / (generation + output encode) seconds, warm-up excluded
    frames: int
    chunks: int
    warmup_chunks: int
    chunk_latency_mean_s: float
    chunk_latency_max_s: float
    first_chunk_s: float            # the very first chunk (cold start), part of the warm-up
    stage_ms: dict[str, float] = field(default_factory=dict)   # mean per timed chunk


def timing_audio(seconds: float) -> np.ndarray:
    """The benchmark's driving signal: a 180 Hz tone with a 3 Hz syllable-rate envelope, 16 kHz."""
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def time_engine(engine, reference_rgb: np.ndarray | None = None, chunks: int = 8, warmup: int = 1,
                on_chunk: Callable[[ChunkTiming], None] | None = None) -> EngineTiming:
    """Stream `warmup + chunks` chunks through a fresh session; time the last `chunks` of them.

    `on_chunk` (optional) sees each chunk's timing as soon as it is encoded, warm-up chunks included.
    """
    from vividhead.inference.sinks import FragmentEncoder

    if chunks < 1 or warmup < 0:
        raise ValueError(f"need chunks >= 1 and warmup >= 0, got chunks={chunks}, warmup={warmup}")
    g = engine.geometry
    if reference_rgb is None:
        reference_rgb = np.full((g.size, g.size, 3), 128, np.uint8)
    n_frames = engine.first_chunk_frames + (warmup + chunks - 1) * g.new_frames
    session = engine.session(engine.reference(reference_rgb))
    session.feed(timing_audio(n_frames / g.fps))
    encoder = FragmentEncoder(g.size, g.fps)
    records: list[ChunkTiming] = []
    for chunk in session.chunks(flush=True):
        start = time.perf_counter()
        encoder.encode(chunk.frames)
        chunk.timings["output_encode"] = time.perf_counter() - start
        records.append(ChunkTiming(chunk.index, len(chunk.frames), dict(chunk.timings), len(records) < warmup))
        if on_chunk is not None:
            on_chunk(records[-1])
    if len(records) < warmup + chunks:
        raise RuntimeError(f"the engine produced {len(records)} chunks, expected {warmup + chunks}")
    timed = records[warmup:warmup + chunks]
    totals = [r.total_s for r in timed]
    frames = sum(r.frames for r in timed)
    stage_ms = {s: round(1000 * float(np.mean([r.stage_s.get(s, 0.0) for r in timed])), 2) for s in STAGES}
    return EngineTiming(fps=frames / sum(totals), frames=frames, chunks=chunks, warmup_chunks=warmup,
                        chunk_latency_mean_s=float(np.mean(totals)), chunk_latency_max_s=float(np.max(totals)),
                        first_chunk_s=records[0].total_s, stage_ms=stage_ms)


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


def fps_row(engine, reference_rgb: np.ndarray, chunks: int = 8, warmup: int = 1, checkpoint: Path | None = None,
            wav2vec: Path | None = None) -> MetricRow:
    """The FPS metric row: engine FPS on this device, with the device named (and, given the checkpoint
    folder, the files it came from)."""
    from vividhead.evaluation.provenance import fps_provenance

    timing = time_engine(engine, reference_rgb, chunks=chunks, warmup=warmup)
    detail = {"device": device_name(engine.device), "variant": engine.model.config.preset or "?",
              "steps": engine.options.steps, **{k: (round(v, 4) if isinstance(v, float) else v)
                                               for k, v in asdict(timing).items() if k != "fps"}}
    row = MetricRow.ok("FPS", timing.fps, **detail)
    if checkpoint is not None:
        row.provenance = fps_provenance(checkpoint, engine.audio.name, wav2vec, chunks, warmup)
    return row
