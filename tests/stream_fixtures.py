"""Tiny models in the real release formats, shared by the `test_stream_*` and `test_model_*` tests.

Everything is random and small, written through the same files real weights come in, and loaded back
through the code path real weights take.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


SHARED = Path(os.environ.get("VIVIDHEAD_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
MEDIA = SHARED / "media"




def write_tiny_wav2vec2(folder: Path) -> Path:
    """A random wav2vec2 in plain transformers layout (config.json + weights + preprocessor config)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=False, feat_extract_norm="group",
    )
    Wav2Vec2Model(config).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=16000, return_attention_mask=False).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------- VAEs
def tiny_ltx():
    """A random LTX-Video VAE with the real architecture (128 latent channels, stride 8x32x32), tiny widths."""
    import torch
    from diffusers import AutoencoderKLLTXVideo

    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 32, 32),
                                layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1))
    vae.latents_mean.copy_(torch.linspace(-0.5, 0.5, 128))
    vae.latents_std.copy_(torch.linspace(0.5, 2.0, 128))
    return vae.eval()


def write_ltx_diffusers(folder: Path) -> Path:
    """VAE_LTX/ in the diffusers layout: config.json + diffusion_pytorch_model.safetensors with latents_mean/std."""
    tiny_ltx().save_pretrained(folder)
    return folder


_LTX_090_TO_ORIGINAL = [  # diffusers -> LTX original names (the inverse of diffusers' 0.9.0 renames)
    ("decoder.mid_block", "decoder.up_blocks.0"),
    ("decoder.up_blocks.3.upsamplers.0", "decoder.UP.8"), ("decoder.up_blocks.3.conv_in", "decoder.UP.7"),
    ("decoder.up_blocks.3", "decoder.UP.9"),
    ("decoder.up_blocks.2.upsamplers.0", "decoder.UP.5"), ("decoder.up_blocks.2.conv_in", "decoder.UP.4"),
    ("decoder.up_blocks.2", "decoder.UP.6"),
    ("decoder.up_blocks.1.upsamplers.0", "decoder.UP.2"), ("decoder.up_blocks.1", "decoder.UP.3"),
    ("decoder.up_blocks.0", "decoder.UP.1"),
    ("encoder.mid_block", "encoder.DOWN.9"),
    ("encoder.down_blocks.3", "encoder.DOWN.8"), ("encoder.down_blocks.2.downsamplers.0", "encoder.DOWN.7"),
    ("encoder.down_blocks.2", "encoder.DOWN.6"), ("encoder.down_blocks.1.conv_out", "encoder.DOWN.5"),
    ("encoder.down_blocks.1.downsamplers.0", "encoder.DOWN.4"), ("encoder.down_blocks.1", "encoder.DOWN.3"),
    ("encoder.down_blocks.0.conv_out", "encoder.DOWN.2"), ("encoder.down_blocks.0.downsamplers.0", "encoder.DOWN.1"),
    ("encoder.down_blocks.0", "encoder.DOWN.0"),
]


def ltx_original_key(key: str) -> str:
    for new, old in _LTX_090_TO_ORIGINAL:
        if key.startswith(new + "."):
            key = old + key[len(new):]
            break
    key = key.replace("UP.", "up_blocks.").replace("DOWN.", "down_blocks.")
    key = key.replace("conv_shortcut.conv.", "conv_shortcut.").replace(".resnets.", ".res_blocks.").replace(".norm3.", ".norm3.norm.")
    return key


def write_ltx_original(folder: Path) -> Path:
    """VAE_LTX/ in LTX's original layout: config.json + autoencoder.pth + per_channel_statistics.json."""
    import json

    import torch

    vae = tiny_ltx()
    folder.mkdir(parents=True, exist_ok=True)
    state = {ltx_original_key(k): v for k, v in vae.state_dict().items() if not k.startswith("latents_")}
    torch.save(state, folder / "autoencoder.pth")
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
        "latent_channels": 128, "patch_size": 4, "norm_layer": "pixel_norm", "latent_log_var": "uniform",
        "use_quant_conv": False, "causal_decoder": False}))
    rows = [[i, float(m), float(s)] for i, (m, s) in enumerate(zip(vae.latents_mean, vae.latents_std))]
    (folder / "per_channel_statistics.json").write_text(json.dumps({"columns": ["channel", "mean-of-means", "std-of-means"], "data": rows}))
    return folder


def _wan_original_key(key: str) -> str:
    res = {"norm1.gamma": "residual.0.gamma", "conv1.": "residual.2.", "norm2.gamma": "residual.3.gamma",
           "conv2.": "residual.6.", "conv_shortcut.": "shortcut."}
    top = {"quant_conv.": "conv1.", "post_quant_conv.": "conv2."}
    for new, old in top.items():
        if key.startswith(new):
            return old + key[len(new):]
    side, rest = key.split(".", 1)
    for new, old in (("conv_in.", "conv1."), ("norm_out.gamma", "head.0.gamma"), ("conv_out.", "head.2.")):
        if rest.startswith(new):
            return f"{side}.{old}{rest[len(new):]}"
    parts = rest.split(".")
    if parts[0] == "mid_block":
        index = 1 if parts[1] == "attentions" else 2 * int(parts[2])
        tail = ".".join(parts[3:])
        prefix = f"{side}.middle.{index}."
    elif parts[0] == "down_blocks":
        prefix, tail = f"{side}.downsamples.{parts[1]}.", ".".join(parts[2:])
    else:  # decoder.up_blocks.B.resnets.R.x | decoder.up_blocks.B.upsamplers.0.x
        block = int(parts[1])
        if parts[2] == "resnets":
            prefix, tail = f"{side}.upsamples.{4 * block + int(parts[3])}.", ".".join(parts[4:])
        else:
            prefix, tail = f"{side}.upsamples.{4 * block + 3}.", ".".join(parts[4:])
    if parts[0] != "mid_block" or parts[1] != "attentions":
        for new, old in res.items():
            if tail.startswith(new):
                tail = old + tail[len(new):]
                break
    return prefix + tail


def write_wan_original(path: Path) -> Path:
    """VAE_Wan/Wan2.1_VAE.pth: a random Wan 2.1 VAE (z_dim 16, base_dim 8) under the ORIGINAL key names."""
    import torch
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({_wan_original_key(k): v for k, v in vae.state_dict().items()}, path)
    return path


# ------------------------------------------------------------------------------------- FlashHead
def tiny_dit_config(variant: str, audio_layers: int = 1, audio_dim: int = 80) -> dict:
    """config.json of a tiny DiT with the released geometry of `variant` (no `preset` key, like the release)."""
    geometry = {"lite": dict(in_dim=256, out_dim=128, vae_stride=[8, 32, 32], patch_size=[1, 1, 1]),
                "pro": dict(in_dim=32, out_dim=16, vae_stride=[4, 8, 8], patch_size=[1, 2, 2])}[variant]
    return {"_class_name": "WanModel", "_diffusers_version": "0.31.0", "model_type": "i2v", "dim": 32, "ffn_dim": 64,
            "text_dim": 16, "freq_dim": 32, "eps": 1e-6, "num_heads": 2, "num_layers": 2, "has_image_input": False,
            "audio_layers": audio_layers, "audio_dim": audio_dim, "audio_hidden": 32, "audio_tokens": 4, **geometry}


def write_tiny_release(root: Path, audio_layers: int = 1, audio_dim: int = 80, vaes: bool = True) -> Path:
    """<root>/Model_Lite, Model_Pro (release key names, tiny dims), VAE_LTX (diffusers) and VAE_Wan/Wan2.1_VAE.pth."""
    import json

    import torch
    from safetensors.torch import save_file

    from vividhead.models.flashhead import FlashHeadDiT

    for variant, folder in (("lite", "Model_Lite"), ("pro", "Model_Pro")):
        config = tiny_dit_config(variant, audio_layers, audio_dim)
        torch.manual_seed(1)
        model = FlashHeadDiT.from_config_json(config)
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "config.json").write_text(json.dumps(config, indent=2))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / folder / "diffusion_pytorch_model.safetensors"))
    if vaes:
        write_ltx_diffusers(root / "VAE_LTX")
        write_wan_original(root / "VAE_Wan" / "Wan2.1_VAE.pth")
    return root


def tiny_engine(root: Path, **options):
    """A `vividhead train`-style tiny checkpoint loaded through FlashHeadEngine.load, on CPU."""
    import torch

    from vividhead.inference.engine import EngineOptions, FlashHeadEngine
    from vividhead.models.flashhead import FlashHeadDiT
    from vividhead.models.release import save_release

    torch.manual_seed(0)
    save_release(FlashHeadDiT.for_preset("tiny"), root / "Model_Tiny")
    return FlashHeadEngine.load(root, "tiny", device="cpu", options=EngineOptions(**{"steps": 2, **options}))


def face_like_image(size: int = 600):
    """A synthetic RGB image (no real face) for engine tests that do not crop."""
    import numpy as np

    y, x = np.mgrid[:size, :size] / size
    return np.stack([x * 255, y * 255, (1 - x) * 200], axis=-1).astype(np.uint8)


def write_wav(path: Path, seconds: float, sample_rate: int = 16000, freq: float = 220.0) -> Path:
    import numpy as np
    import soundfile

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32), sample_rate)
    return path
