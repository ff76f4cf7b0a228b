"""Streaming chunk geometry of the FlashHead variants: frames per chunk, motion frames, new frames, sampler.

Kept apart from the DiT (`models/flashhead.py`, which re-exports it) so that the build's audio
features can use the chunk stride without importing torch modules.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Geometry:
    """Streaming geometry of one variant. Everything else derives from the VAE's temporal stride."""

    temporal_stride: int            # s: video frames per latent frame after the first
    frames: int = 33                # video frames per chunk
    motion_latents: int = 2         # latent frames of motion context
    fps: int = 25
    sample_rate: int = 16000
    size: int = 512                 # output frames are size x size
    window_seconds: float = 8.0     # Temporal Audio Context Cache
    audio_radius: int = 2           # each video frame sees features [i-2, i+2]
    shift: float = 5.0              # timestep shift of the distilled sampler
    steps: int = 4                  # distilled sampler steps

    @property
    def motion_frames(self) -> int:     # 9 (Lite), 5 (Pro)
        return (self.motion_latents - 1) * self.temporal_stride + 1

    @property
    def new_frames(self) -> int:        # 24 (Lite), 28 (Pro)
        return self.frames - self.motion_frames

    @property
    def latent_frames(self) -> int:     # 5 (Lite), 9 (Pro)
        return (self.frames - 1) // self.temporal_stride + 1

    @property
    def window_frames(self) -> int:     # 200
        return int(self.window_seconds * self.fps)

    @property
    def chunk_seconds(self) -> float:   # real-time budget per chunk after the first: 0.96 s Lite, 1.12 s Pro
        return self.new_frames / self.fps


GEOMETRY: dict[str, Geometry] = {
    "lite": Geometry(temporal_stride=8),   # LTX VAE: 128 channels, stride 8x32x32
    "pro": Geometry(temporal_stride=4),    # Wan VAE: 16 channels, stride 4x8x8
    "tiny": Geometry(temporal_stride=4),   # space-to-depth codec, Pro's chunk geometry
}
