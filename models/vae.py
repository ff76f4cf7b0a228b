"""Video codecs ("VAEs") of the three FlashHead presets, behind one interface.

Every codec maps video [B, 3, T, H, W] in [-1, 1] (T = 1 + k * temporal stride) to NORMALISED latents
[B, C, 1 + k, H/sh, W/sw] and back:

- `SpaceToDepthCodec` (tiny): weight-free. Frames are area-downscaled to `frame_size`, then pixels are
  folded into channels spatially (`spatial` x `spatial`) and temporally (`temporal` frames; the first frame
  stands alone, replicated, like a causal VAE). The fold is exactly invertible; decode upsamples to 512.
- `DiffusersVideoCodec` (lite / pro): diffusers' `AutoencoderKLLTXVideo` or `AutoencoderKLWan`, with the
  per-channel latent statistics: z_norm = (z - mean) / std after encode, z = z_norm * std + mean before decode.
  As in the release, LTX latents are a sample of the posterior (from the caller's seeded generator), Wan's the mean.

Loaders read the release layouts: `VAE_LTX/` as diffusers (config.json + safetensors, statistics in the
checkpoint's latents_mean/latents_std), or LTX's original (config.json + autoencoder.pth +
per_channel_statistics.json); `VAE_Wan/Wan2.1_VAE.pth` (original Wan 2.1 key names, converted by diffusers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from vividhead.models.release import check_finite


class VideoCodec(Protocol):
    latent_channels: int
    temporal_stride: int

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...


# ------------------------------------------------------------------------------------ tiny codec
class SpaceToDepthCodec:
    """Weight-free invertible codec of the tiny preset (see module docstring)."""

    def __init__(self, frame_size: int = 32, spatial: int = 4, temporal: int = 4, output_size: int = 512, **_: Any) -> None:
        if frame_size % spatial:
            raise ValueError(f"codec: frame_size {frame_size} is not a multiple of spatial {spatial}")
        self.frame_size, self.spatial, self.temporal, self.output_size = frame_size, spatial, temporal, output_size
        self.latent_channels = 3 * spatial * spatial * temporal
        self.temporal_stride = temporal
        self.native_size = frame_size   # decode(latent, size=native_size) skips the upsampling (the engine resizes uint8)

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Deterministic (`generator` is accepted for the codec interface and unused)."""
        b, c, t, h, w = video.shape
        if (t - 1) % self.temporal:
            raise ValueError(f"codec: {t} frames is not 1 + a multiple of {self.temporal}")
        frames = video.transpose(1, 2).reshape(b * t, c, h, w).float()
        if (h, w) != (self.frame_size, self.frame_size):
            frames = F.interpolate(frames, size=(self.frame_size, self.frame_size), mode="area")
        frames = F.pixel_unshuffle(frames, self.spatial)                                  # [B*T, 3p^2, h, w]
        frames = frames.view(b, t, *frames.shape[1:])
        first = frames[:, :1].expand(-1, self.temporal, -1, -1, -1)                     # causal: frame 0 alone
        groups = torch.cat([first, frames[:, 1:]], dim=1).unflatten(1, (-1, self.temporal))  # [B, F, s, 3p^2, h, w]
        return groups.flatten(2, 3).transpose(1, 2).contiguous()                         # [B, C, F, h, w]

    def decode(self, latent: torch.Tensor, size: int | None = None) -> torch.Tensor:
        b, _, f, h, w = latent.shape
        groups = latent.float().transpose(1, 2).unflatten(2, (self.temporal, -1))        # [B, F, s, 3p^2, h, w]
        frames = torch.cat([groups[:, :1].mean(dim=2), groups[:, 1:].flatten(1, 2)], dim=1)  # [B, T, 3p^2, h, w]
        t = frames.shape[1]
        frames = F.pixel_shuffle(frames.flatten(0, 1), self.spatial)                      # [B*T, 3, fs, fs]
        size = size or self.output_size
        if frames.shape[-1] != size:
            frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
        return frames.view(b, t, 3, size, size).transpose(1, 2).clamp(-1, 1)


# ------------------------------------------------------------------------------- diffusers codecs
class DiffusersVideoCodec:
    """A diffusers video autoencoder with per-channel latent normalisation."""

    def __init__(self, vae: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor, temporal_stride: int,
                 sample_posterior: bool = False) -> None:
        self.vae = vae.eval().requires_grad_(False)
        self.latent_channels = int(mean.numel())
        self.temporal_stride = temporal_stride
        self.mean, self.std = mean.float().view(1, -1, 1, 1, 1), std.float().view(1, -1, 1, 1, 1)
        self.timestep_conditioning = bool(getattr(vae.config, "timestep_conditioning", False))
        self.sample_posterior = sample_posterior        # LTX in the release; Wan takes the mean

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @torch.inference_mode()
    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised latents (float32). LTX: a sample of the posterior drawn from `generator`, as the
        release samples it; Wan: the posterior mean (mode), as the release takes it."""
        posterior = self.vae.encode(video.to(self.device, self.dtype)).latent_dist
        z = (posterior.sample(generator=generator) if self.sample_posterior else posterior.mode()).float()
        return (z - self.mean.to(z.device)) / self.std.to(z.device)

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Video [B, 3, T, H, W] in the VAE's dtype, as the VAE gives it (diffusers' Wan clamps to [-1, 1], LTX does not)."""
        z = latent.float() * self.std.to(latent.device) + self.mean.to(latent.device)
        kwargs = {"temb": torch.zeros(z.shape[0], device=self.device, dtype=self.dtype)} if self.timestep_conditioning else {}
        return self.vae.decode(z.to(self.device, self.dtype), **kwargs).sample


def load_ltx(folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> DiffusersVideoCodec:
    """`VAE_LTX/` in the diffusers layout or LTX's original layout (autoencoder.pth)."""
    from diffusers import AutoencoderKLLTXVideo

    folder = Path(folder)
    if (folder / "autoencoder.pth").is_file():
        vae = _load_ltx_original(folder)
    elif (folder / "config.json").is_file():
        vae = AutoencoderKLLTXVideo.from_pretrained(str(folder), torch_dtype=torch.float32, low_cpu_mem_usage=False)
    else:
        raise FileNotFoundError(f"{folder}: no LTX VAE (expected config.json + diffusion_pytorch_model.safetensors or autoencoder.pth)")
    mean, std = vae.latents_mean.detach().clone(), vae.latents_std.detach().clone()
    stats = folder / "per_channel_statistics.json"
    if stats.is_file():
        mean, std = _read_ltx_statistics(stats, vae.config.latent_channels)
    return DiffusersVideoCodec(_place(vae, device, dtype, folder), mean, std, int(vae.temporal_compression_ratio),
                               sample_posterior=True)


def _read_ltx_statistics(path: Path, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """{"columns": [...], "data": [[...], ...]} -> the "mean-of-means" and "std-of-means" columns."""
    table = json.loads(path.read_text())
    columns = table.get("columns")
    data = table.get("data")
    if not isinstance(columns, list) or not isinstance(data, list):
        raise ValueError(f"{path}: expected {{'columns': [...], 'data': [[...], ...]}}")
    picked = []
    for name in ("mean-of-means", "std-of-means"):
        if name not in columns:
            raise ValueError(f"{path}: column {name!r} missing (found {columns})")
        picked.append(torch.tensor([row[columns.index(name)] for row in data], dtype=torch.float32))
    if picked[0].numel() != channels:
        raise ValueError(f"{path}: {picked[0].numel()} rows, the VAE has {channels} latent channels")
    return picked[0], picked[1]


def _ltx_config_from_state(state: dict[str, torch.Tensor], original: dict[str, Any]) -> dict[str, Any]:
    """diffusers config of an LTX VAE, read off its converted state dict.

    Covers the 0.9.0 / 0.9.1 structure (LTXVideoDownBlock3D encoder; decoder noise injection and timestep
    conditioning detected from their parameters). Later VAEs (0.9.5+: residual upsamplers) should be given
    in the diffusers layout, whose config.json states the architecture.
    """
    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

    def width(prefix: str) -> int:
        return int(state[f"{prefix}.resnets.0.conv1.conv.weight"].shape[0])

    down = [f"encoder.down_blocks.{i}" for i in range(count("encoder.down_blocks."))]
    up = [f"decoder.up_blocks.{i}" for i in range(count("decoder.up_blocks."))]
    enc_widths = [width(p) for p in down]
    dec_widths = [width(p) for p in up][::-1]
    return dict(
        in_channels=int(original.get("in_channels", 3)), out_channels=int(original.get("out_channels", 3)),
        latent_channels=int(original.get("latent_channels", 128)),
        block_out_channels=tuple(enc_widths), decoder_block_out_channels=tuple(dec_widths),
        layers_per_block=tuple([count(f"{p}.resnets.") for p in down] + [count("encoder.mid_block.resnets.")]),
        decoder_layers_per_block=tuple([count(f"{p}.resnets.") for p in up][::-1] + [count("decoder.mid_block.resnets.")]),
        spatio_temporal_scaling=tuple(any(k.startswith(f"{p}.downsamplers.") for k in state) for p in down),
        decoder_spatio_temporal_scaling=tuple(any(k.startswith(f"{p}.upsamplers.") for k in state) for p in up)[::-1],
        decoder_inject_noise=tuple(f"{p}.resnets.0.per_channel_scale1" in state for p in ["decoder.mid_block", *up])[::-1],
        timestep_conditioning=any(k.startswith("decoder.time_embedder.") for k in state),
        patch_size=int(original.get("patch_size", 4)),
        decoder_causal=bool(original.get("causal_decoder", False)),
    )


def _load_ltx_original(folder: Path) -> torch.nn.Module:
    """LTX's original layout: autoencoder.pth keys converted by diffusers' single-file converter."""
    from diffusers import AutoencoderKLLTXVideo
    from diffusers.loaders.single_file_utils import convert_ltx_vae_checkpoint_to_diffusers

    original = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    raw = torch.load(folder / "autoencoder.pth", map_location="cpu", weights_only=True)
    raw = raw.get("state_dict", raw)
    prefixed = {k if k.startswith("vae.") else f"vae.{k}": v for k, v in raw.items()}
    state = convert_ltx_vae_checkpoint_to_diffusers(prefixed)
    vae = AutoencoderKLLTXVideo(**_ltx_config_from_state(state, original))
    stats = folder / "per_channel_statistics.json"
    if "latents_mean" not in state:  # statistics kept beside the weights; neutral when absent
        mean, std = (_read_ltx_statistics(stats, vae.config.latent_channels) if stats.is_file()
                     else (vae.latents_mean.clone(), vae.latents_std.clone()))
        state.update(latents_mean=mean, latents_std=std)
    _strict_load(vae, state, folder / "autoencoder.pth")
    return vae


def load_wan(path: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> DiffusersVideoCodec:
    """`VAE_Wan/Wan2.1_VAE.pth` (original Wan key names) or a diffusers AutoencoderKLWan folder."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    path = Path(path)
    if path.is_dir() and (path / "Wan2.1_VAE.pth").is_file():
        path = path / "Wan2.1_VAE.pth"
    if path.is_dir():
        vae = AutoencoderKLWan.from_pretrained(str(path), torch_dtype=torch.float32, low_cpu_mem_usage=False)
    elif path.is_file():
        raw = torch.load(path, map_location="cpu", weights_only=True)
        raw = raw.get("state_dict", raw)
        for key in ("conv1.weight", "encoder.conv1.weight"):
            if key not in raw:
                raise ValueError(f"{path}: not an original Wan 2.1 VAE state dict (key {key!r} missing)")
        z_dim, base_dim = int(raw["conv1.weight"].shape[0]) // 2, int(raw["encoder.conv1.weight"].shape[0])
        config: dict[str, Any] = dict(base_dim=base_dim, z_dim=z_dim)
        if z_dim != 16:  # the released statistics are for 16 channels; others start neutral
            config.update(latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
        vae = AutoencoderKLWan(**config)
        _strict_load(vae, convert_wan_vae_to_diffusers(raw), path)
    else:
        raise FileNotFoundError(f"{path}: no Wan VAE (expected VAE_Wan/Wan2.1_VAE.pth)")
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32)
    return DiffusersVideoCodec(_place(vae, device, dtype, path), mean, std, 2 ** sum(vae.config.temperal_downsample))


def _place(vae: torch.nn.Module, device: str | torch.device, dtype: torch.dtype, source: Path) -> torch.nn.Module:
    """The loaded VAE on its device and dtype, after refusing non-finite weights (naming the tensors)."""
    check_finite(vae.state_dict(), source)
    vae = vae.to(device)
    return vae if dtype == torch.float32 else vae.to(dtype=dtype)


def _strict_load(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
              if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{source}: VAE keys do not match (diffusers names after conversion): missing {missing[:6]}, unexpected {unexpected[:6]}, shapes {shapes[:6]}")
    module.load_state_dict(state, strict=True)


def find_vae(weights: Path, name: str) -> Path | None:
    """`name` (VAE_LTX or VAE_Wan) in the weights folder or its parent (a model folder inside a release)."""
    for base in (Path(weights), Path(weights).parent):
        if (base / name).exists():
            return base / name
    return None


def load_codec(preset: str, weights: Path, codec_config: dict[str, Any] | None = None,
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               vae_path: Path | None = None) -> VideoCodec:
    """The codec of a preset: tiny -> space-to-depth (from config.json's `codec`), lite -> LTX, pro -> Wan."""
    if preset == "tiny":
        config = dict(codec_config or {})
        if config.pop("type", "space_to_depth") != "space_to_depth":
            raise ValueError(f"tiny preset: unknown codec type in config.json: {codec_config}")
        return SpaceToDepthCodec(**config)
    name = {"lite": "VAE_LTX", "pro": "VAE_Wan"}.get(preset)
    if name is None:
        raise ValueError(f"unknown preset {preset!r}: expected tiny, lite or pro")
    path = vae_path or find_vae(weights, name)
    if path is None:
        raise FileNotFoundError(f"{weights}: {name}/ not found (next to the model folder or in its parent)")
    return load_ltx(path, device, dtype) if preset == "lite" else load_wan(path, device, dtype)
