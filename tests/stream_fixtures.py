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
