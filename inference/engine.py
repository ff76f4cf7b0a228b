"""The FlashHead streaming engine: one loaded model, any number of independent streams.

`FlashHeadEngine.load(weights, variant)` loads the DiT (strict release layout), its codec and the audio
encoder once, on the device chosen once (CUDA when present, else CPU; bf16 on GPU). Everything that
belongs to one stream is a `StreamState` (audio context cache, motion latents, the two seeded generators,
counters), and one chunk is `engine.step(state, audio)`, a function of that state and the chunk's audio:

    rows   = cache.push(audio)                        # 8 s window encoded; the chunk's 33 rows (+2 of left context)
    latent = sample_chunk(dit, reference, context(rows), motion)   # few-step sampler, motion frames kept
    video  = color_correct(codec.decode(latent))      # 33 frames, each matched to the reference in Lab
    motion = codec.encode(video[last motion frames])  # next chunk's motion latents (after the correction)
    emit uint8(video[-new:])                          # the chunk's new frames

A `StreamSession` wraps one state with the PCM queue that cuts incoming audio into chunks and the metrics.
By default this is the authors' streaming mode (FLASHHEAD_FORMAT.md, "What the authors' streaming code
does"): every chunk, the first included, takes and emits only the new frames (24 Lite / 28 Pro) on top of
a zero-filled cache, so the first frames come after 0.96 s / 1.12 s of audio. `first_chunk="full"` keeps
the older 33-frame first chunk (see docs/stream.md for when that is worth its 0.36 s / 0.2 s).
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
from vividhead.inference.reference import (color_correct, lab_stats, prepare_reference, resize_frames, to_uint8_frames,
                                           to_video_tensor)
from vividhead.models.audio_features import SAMPLES_PER_FRAME, AudioEncoder, frames_for_samples, load_audio_encoder
from vividhead.models.flashhead import GEOMETRY, FlashHeadDiT, Geometry, frame_windows
from vividhead.models.release import load_release, model_folder
from vividhead.models.sampler import sample_chunk
from vividhead.models.vae import VideoCodec, load_codec

FIRST_CHUNK_MODES = ("new", "full")
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


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
    color_correction: float = 1.0     # Lab colour-correction strength, 0 = off (the release's default is 1.0)
    crop: bool = False                # named option: face-crop the reference like the build (the release does not)
    first_chunk: str = "new"          # "new": the release's streaming mode; "full": a 33-frame first chunk
    compile: bool = False             # torch.compile the DiT (GPU)
    compile_mode: str | None = None   # torch.compile mode: None (default), "reduce-overhead" (CUDA graphs), "max-autotune"
    seed: int = 0
    sequence_parallel: bool = False   # split DiT tokens across torchrun ranks with xDiT (inference/parallel.py)

    def __post_init__(self) -> None:
        if self.first_chunk not in FIRST_CHUNK_MODES:
            raise ValueError(f"first_chunk must be one of {FIRST_CHUNK_MODES}, got {self.first_chunk!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        if not 0 <= float(self.color_correction) <= 1:
            raise ValueError(f"color_correction strength must be in [0, 1], got {self.color_correction}")


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
    image: np.ndarray                 # uint8 [512, 512, 3], after the preprocessing
    latent: torch.Tensor              # [1, C, F, h, w] in the model's dtype
    color: tuple[torch.Tensor, torch.Tensor]   # the image's Lab mean and std, for colour correction
    face_box: tuple[int, int, int] | None
    posterior: torch.Tensor | None = None      # LTX: the seeded posterior generator's state after this encode


@dataclass
class StreamState:
    """What one stream carries from chunk to chunk; `FlashHeadEngine.step` advances it."""

    reference: Reference
    cache: AudioContextCache
    motion: torch.Tensor              # [1, C, m, h, w] motion latents (cold start: the first reference latent frame)
    noise: torch.Generator            # the sampler's noise: steps + 1 draws per chunk
    posterior: torch.Generator        # LTX posterior samples of the motion re-encode
    index: int = 0                    # chunks generated
    emitted: int = 0                  # frames emitted


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
        if options.sequence_parallel:   # xfuser is an optional extra
            from vividhead.inference.parallel import SequenceParallel, enable

            sp = SequenceParallel(model.config.num_heads)
            enable(model, sp)
            self.is_main = sp.is_main
        self.denoiser = torch.compile(model, dynamic=False, mode=options.compile_mode) if options.compile else model

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

    @property
    def first_chunk_frames(self) -> int:
        """Frames the first chunk takes and emits: the new frames (24 / 28), or 33 with first_chunk="full"."""
        return self.geometry.frames if self.options.first_chunk == "full" else self.geometry.new_frames

    @property
    def dtype(self) -> torch.dtype:
        return self.model.patch_embedding.weight.dtype

    @torch.inference_mode()
    def reference(self, rgb: np.ndarray, seed: int | None = None) -> Reference:
        """Preprocess the reference image (face crop only as the named option) and encode it repeated over one
        chunk. LTX draws its posterior sample from a generator seeded with `seed` (default: options.seed);
        each stream's motion re-encodes continue that generator."""
        image, box = prepare_reference(rgb, self.geometry.size, face_crop=self.options.crop)
        pixels = to_video_tensor(image, self.geometry.frames, getattr(self.codec, "dtype", torch.float32)).to(self.device)
        posterior = torch.Generator(device=self.device).manual_seed(self.options.seed if seed is None else seed)
        latent = self.codec.encode(pixels, generator=posterior).to(self.dtype)
        return Reference(image, latent, lab_stats(pixels[:, :, :1]), box, posterior.get_state())

    def new_state(self, reference: Reference, seed: int | None = None) -> StreamState:
        """A fresh stream: zero-filled 8 s audio cache, cold-start motion, noise seeded with `seed`."""
        g = self.geometry
        posterior = torch.Generator(device=self.device)
        if reference.posterior is not None:
            posterior.set_state(reference.posterior)
        return StreamState(
            reference=reference,
            cache=AudioContextCache(self.audio, g.window_frames, g.frames + g.audio_radius),   # + left context
            motion=reference.latent[:, :, :1],
            noise=torch.Generator(device=self.device).manual_seed(self.options.seed if seed is None else seed),
            posterior=posterior,
        )

    @torch.inference_mode()
    def step(self, state: StreamState, audio: np.ndarray) -> Chunk:
        """Generate one chunk from the audio of its new frames (24 / 28, or 33 for a full first chunk);
        advances `state` and returns the chunk's new frames."""
        g, timings = self.geometry, {}
        new = len(audio) // SAMPLES_PER_FRAME
        clock = _Clock(self.device, timings)
        with clock("audio_encode"):
            rows = torch.from_numpy(state.cache.push(audio)).to(self.device)[None]       # [1, 2 + 33, L, C]
            windows = frame_windows(rows, g.audio_radius)[:, g.audio_radius:]            # [1, 33, 5, L, C]
            context = self.model.audio_context(windows)                                   # [1, F, T, dim]
        with clock("dit"):
            latent = sample_chunk(self.denoiser, state.reference.latent, context, state.motion,
                                  steps=self.options.steps, shift=g.shift, generator=state.noise)
        with clock("vae_decode"):
            native = getattr(self.codec, "native_size", None)                           # tiny: decode small, resize uint8
            video = self.codec.decode(latent) if native is None else self.codec.decode(latent, size=native)
            check_finite_chunk(state.index, latent, video)
            video = color_correct(video, state.reference.color, float(self.options.color_correction))
        with clock("motion_encode"):                                                   # after the correction, as released
            state.motion = self.codec.encode(video[:, :, -g.motion_frames:], generator=state.posterior).to(latent.dtype)
        frames = resize_frames(to_uint8_frames(video[:, :, -new:]), g.size)             # [new, 512, 512, 3]
        chunk = Chunk(state.index, state.emitted, frames, np.asarray(audio, np.float32), timings)
        state.index += 1
        state.emitted += new
        return chunk

    def session(self, reference: Reference, seed: int | None = None) -> "StreamSession":
        return StreamSession(self, self.new_state(reference, seed))


class StreamSession:
    """One stream fed as audio arrives: the PCM queue that cuts chunks, the stream's state and its metrics."""

    def __init__(self, engine: FlashHeadEngine, state: StreamState) -> None:
        self.engine, self.state = engine, state
        self.queue = PcmQueue(engine.first_chunk_frames, engine.geometry.new_frames)
        self.stats = StreamStats()

    @property
    def reference(self) -> Reference:
        return self.state.reference

    def feed(self, samples: np.ndarray) -> None:
        """Queue 16 kHz mono float32 audio."""
        if self.stats.started is None:
            self.stats.started = time.perf_counter()
        self.queue.put(samples)

    def chunks(self, flush: bool = False) -> Iterator[Chunk]:
        """Generate every chunk whose audio is complete; `flush` also zero-pads and emits the last partial one,
        trimmed to the audio."""
        while (audio := self.queue.take(flush=flush)) is not None:
            started = time.perf_counter()
            chunk = self.engine.step(self.state, audio)
            limit = frames_for_samples(self.queue.total) - chunk.start_frame if flush else len(chunk.frames)
            chunk.frames, chunk.audio = chunk.frames[:limit], chunk.audio[: limit * SAMPLES_PER_FRAME]
            self.stats.record(chunk, time.perf_counter() - started)
            yield chunk


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
