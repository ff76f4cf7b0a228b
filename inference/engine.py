"""The FlashHead streaming engine: one loaded model, any number of independent sessions.

`FlashHeadEngine.load(weights, variant)` loads the DiT (strict release layout), its codec and the audio
encoder once, on the device chosen once (CUDA when present, else CPU; bf16 on GPU). A `StreamSession`
holds everything that belongs to one stream: the reference latent, the audio context cache, the motion
latents, the noise generator and the metrics. Each chunk is five steps (see `StreamSession._generate`):

    rows   = cache.push(audio)                        # 8 s window encoded; the chunk's 33 rows (+2 of left context)
    latent = sample_chunk(dit, reference, context(rows), motion)   # few-step sampler, motion frames kept
    video  = codec.decode(latent)                     # 33 frames
    motion = codec.encode(video[last motion frames])  # next chunk's motion latents
    emit video[new frames]                            # 33 first, then 28 (Pro) / 24 (Lite)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vividhead.inference.audio_cache import AudioContextCache, PcmQueue
from vividhead.inference.reference import (color_correct, prepare_reference, resize_frames, to_uint8_frames,
                                           to_video_tensor)
from vividhead.inference.sampler import sample_chunk
from vividhead.models.audio_features import SAMPLES_PER_FRAME, AudioEncoder, frames_for_samples, load_audio_encoder
from vividhead.models.flashhead import GEOMETRY, FlashHeadDiT, Geometry, frame_windows
from vividhead.models.release import load_release, model_folder
from vividhead.models.vae import VideoCodec, load_codec


def choose_device(requested: str | None = None) -> torch.device:
    """The device, chosen once: as requested, else CUDA when present, else CPU."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))   # one GPU per torchrun rank
    return torch.device("cpu")


class NonFiniteOutput(RuntimeError):
    """A chunk decoded to NaN or infinite values (broken weights or an overflow): the stream must stop."""


@dataclass(frozen=True)
class EngineOptions:
    steps: int = 4
    color_correction: bool = False
    crop: bool = True                 # face-crop the reference image like the build
    compile: bool = False             # torch.compile the DiT (GPU)
    seed: int = 0
    sequence_parallel: bool = False   # split DiT tokens across torchrun ranks with xDiT (inference/parallel.py)


@dataclass
class Chunk:
    """One generated chunk: its new frames, the audio they carry and where the time went."""

    index: int
    start_frame: int
    frames: np.ndarray                # uint8 [n, H, W, 3]
    audio: np.ndarray                 # float32 16 kHz samples of those frames
    timings: dict[str, float]         # seconds: audio_encode, dit, vae_decode, motion_encode


@dataclass
class Reference:
    image: np.ndarray                 # uint8 [512, 512, 3], after the crop
    latent: torch.Tensor              # [1, C, F, h, w]
    pixels: torch.Tensor              # [1, 3, 1, 512, 512] in [-1, 1], for colour correction
    face_box: tuple[int, int, int] | None


@dataclass
class StreamStats:
    """Per-chunk latency, first-frame latency and FPS of one session."""

    started: float | None = None              # when the first audio arrived
    first_frame: float | None = None          # seconds from the first audio to the first generated frame
    chunk_latency: list[float] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    frames: int = 0
    busy: float = 0.0                         # seconds spent generating

    def record(self, chunk: Chunk, seconds: float) -> None:
        self.chunk_latency.append(seconds)
        self.busy += seconds
        self.frames += len(chunk.frames)
        if self.first_frame is None:
            self.first_frame = time.perf_counter() - (self.started or time.perf_counter())
        for name, value in chunk.timings.items():
            self.stages[name] = self.stages.get(name, 0.0) + value

    @property
    def fps(self) -> float:
        return self.frames / self.busy if self.busy else 0.0

    def summary(self) -> dict[str, float | int | None]:
        lat = self.chunk_latency
        return {"chunks": len(lat), "frames": self.frames, "fps": round(self.fps, 2),
                "first_frame_s": None if self.first_frame is None else round(self.first_frame, 3),
                "chunk_latency_mean_s": round(float(np.mean(lat)), 3) if lat else None,
                "chunk_latency_max_s": round(float(np.max(lat)), 3) if lat else None,
                **{f"{k}_s": round(v, 3) for k, v in self.stages.items()}}


class FlashHeadEngine:
    """A loaded FlashHead: DiT + codec + audio encoder, shared read-only by all sessions."""

    def __init__(self, model: FlashHeadDiT, codec: VideoCodec, audio: AudioEncoder, geometry: Geometry,
                 device: torch.device, options: EngineOptions = EngineOptions()) -> None:
        cfg = model.config
        if (audio.layers, audio.dim) != (cfg.audio_layers, cfg.audio_dim):
            raise ValueError(f"audio encoder {audio.name} gives [{audio.layers}, {audio.dim}] per frame, the model's config.json "
                             f"expects audio_layers={cfg.audio_layers}, audio_dim={cfg.audio_dim}"
                             + (" (pass --wav2vec DIR)" if audio.name == "logmel" else ""))
        if codec.latent_channels != cfg.out_dim:
            raise ValueError(f"codec has {codec.latent_channels} latent channels, config.json out_dim is {cfg.out_dim}")
        if codec.temporal_stride != geometry.temporal_stride:
            raise ValueError(f"codec temporal stride {codec.temporal_stride} != the variant's {geometry.temporal_stride}")
        self.model, self.codec, self.audio, self.geometry = model, codec, audio, geometry
        self.device, self.options = device, options
        self.is_main = True                                           # the rank that writes output
        denoiser: torch.nn.Module = model
        if options.sequence_parallel:
            from vividhead.inference.parallel import SequenceParallel, SequenceParallelDiT

            sp = SequenceParallel(model.config.num_heads)
            denoiser, self.is_main = SequenceParallelDiT(model, sp), sp.is_main
        self.denoiser = torch.compile(denoiser, dynamic=False) if options.compile else denoiser

    @classmethod
    def load(cls, weights: Path, variant: str, *, device: str | None = None, wav2vec: Path | None = None,
             vae: Path | None = None, options: EngineOptions = EngineOptions()) -> "FlashHeadEngine":
        """Load from a release folder (Model_Lite/, Model_Pro/, VAE_*) or a `vividhead train` checkpoint."""
        dev = choose_device(device)
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        model = load_release(model_folder(Path(weights), variant), device=dev, dtype=dtype)
        preset = model.config.preset or variant
        if preset != variant:
            raise ValueError(f"{weights}: the checkpoint is a {preset!r} model, --variant is {variant!r}")
        codec = load_codec(preset, Path(weights), model.config.codec, device=dev, vae_path=vae,
                           dtype=torch.bfloat16 if dev.type == "cuda" and preset != "tiny" else torch.float32)
        audio = load_audio_encoder(wav2vec, device=str(dev))
        return cls(model, codec, audio, GEOMETRY[preset], dev, options)

    @torch.inference_mode()
    def reference(self, rgb: np.ndarray) -> Reference:
        """Crop (optional), resize to 512 and encode the reference image repeated over one chunk."""
        image, box = prepare_reference(rgb, self.geometry.size, crop=self.options.crop)
        video = to_video_tensor(image, self.geometry.frames).to(self.device)
        latent = self.codec.encode(video).to(self.model.patch_embedding.weight.dtype)
        return Reference(image, latent, video[:, :, :1].float(), box)

    def session(self, reference: Reference, seed: int | None = None) -> "StreamSession":
        return StreamSession(self, reference, self.options.seed if seed is None else seed)


class StreamSession:
    """The state of one stream: audio cache and queue, motion latents, noise, metrics."""

    def __init__(self, engine: FlashHeadEngine, reference: Reference, seed: int) -> None:
        g = engine.geometry
        self.engine, self.reference = engine, reference
        self.cache = AudioContextCache(engine.audio, g.window_frames, g.frames + g.audio_radius)  # + left context
        self.queue = PcmQueue(g.frames, g.new_frames)
        self.motion = reference.latent[:, :, :1]                       # cold start: first reference latent frame
        self.generator = torch.Generator(device=engine.device).manual_seed(seed)
        self.stats = StreamStats()
        self.index = 0
        self.emitted = 0                                               # frames emitted so far

    def feed(self, samples: np.ndarray) -> None:
        """Queue 16 kHz mono float32 audio."""
        if self.stats.started is None:
            self.stats.started = time.perf_counter()
        self.queue.put(samples)

    def chunks(self, flush: bool = False) -> Iterator[Chunk]:
        """Generate every chunk whose audio is complete; `flush` also pads and emits the last partial one."""
        while (audio := self.queue.take(flush=flush)) is not None:
            started = time.perf_counter()
            chunk = self._generate(audio)
            limit = frames_for_samples(self.queue.total) - chunk.start_frame if flush else len(chunk.frames)
            chunk.frames, chunk.audio = chunk.frames[:limit], chunk.audio[: limit * SAMPLES_PER_FRAME]
            self.emitted += len(chunk.frames)
            self.stats.record(chunk, time.perf_counter() - started)
            yield chunk

    @torch.inference_mode()
    def _generate(self, audio: np.ndarray) -> Chunk:
        eng, g, timings = self.engine, self.engine.geometry, {}
        clock = _Clock(eng.device, timings)
        with clock("audio_encode"):
            rows = torch.from_numpy(self.cache.push(audio)).to(eng.device)[None]        # [1, 2 + 33, L, C]
            windows = frame_windows(rows, g.audio_radius)[:, g.audio_radius:]           # [1, 33, 5, L, C]
            context = eng.model.audio_context(windows)                                   # [1, F, T, dim]
        with clock("dit"):
            latent = sample_chunk(eng.denoiser, self.reference.latent, context, self.motion,
                                  steps=eng.options.steps, shift=g.shift, generator=self.generator)
        with clock("vae_decode"):
            native = getattr(eng.codec, "native_size", None)                          # tiny: decode small, resize uint8
            video = eng.codec.decode(latent) if native is None else eng.codec.decode(latent, size=native)  # [1, 3, 33, H, W]
        check_finite_chunk(self.index, latent, video)
        with clock("motion_encode"):
            self.motion = eng.codec.encode(video[:, :, -g.motion_frames:]).to(latent.dtype)
        new = g.frames if self.index == 0 else g.new_frames
        video = video[:, :, -new:]
        if eng.options.color_correction:
            video = color_correct(video, self.reference.pixels.to(video.device))
        frames = resize_frames(to_uint8_frames(video), g.size)                         # [new, 512, 512, 3]
        chunk = Chunk(self.index, self.emitted, frames, audio[-new * SAMPLES_PER_FRAME:], timings)
        self.index += 1
        return chunk


def check_finite_chunk(index: int, latent: torch.Tensor, video: torch.Tensor) -> None:
    """Raise NonFiniteOutput when chunk `index` sampled or decoded NaN/inf (it would otherwise become black frames)."""
    for what, tensor in (("sampled latents", latent), ("decoded pixels", video)):
        if not bool(torch.isfinite(tensor).all()):
            raise NonFiniteOutput(f"chunk {index}: the {what} hold NaN or infinite values; stopping the stream")


class _Clock:
    """Times named stages, synchronising CUDA so GPU work is attributed to its stage."""

    def __init__(self, device: torch.device, out: dict[str, float]) -> None:
        self.device, self.out = device, out

    def __call__(self, name: str) -> "_Clock":
        self.name = name
        return self

    def __enter__(self) -> None:
        self._sync()
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.out[self.name] = time.perf_counter() - self.t0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
