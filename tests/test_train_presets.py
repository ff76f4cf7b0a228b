"""The lite path of stage 1: start from release weights (`--init`), LTX VAE through diffusers, 9 motion frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stream_fixtures import write_tiny_release
from train_fixtures import write_config, write_shards
from vividhead.models.release import load_release, read_state_dict
from vividhead.models.vae import load_codec
from vividhead.training.config import load_train_config
from vividhead.training.stage1 import train


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Model_Lite with the released key names and lite geometry (tiny widths), and a VAE_LTX folder.
    return write_tiny_release(tmp_path_factory.mktemp("release"))


def test_lite_stage1_from_released_weights_writes_a_loadable_release_checkpoint(tmp_path: Path, release: Path) -> None:
    torch.set_num_threads(1)
    shards = write_shards(tmp_path / "shards", [2], n_frames=40)
    out = tmp_path / "run"
    config = load_train_config(write_config(
        tmp_path / "lite.yaml", shards, out, steps=2, save_every=2,
        **{"model.preset": "lite", "data.buckets": [[64, 64]], "optim.batch_size": 1}), {"model.init": release})
    summary = train(config, progress=False)
    assert summary.last_step == 2 and all(torch.isfinite(torch.tensor(summary.losses)))

    # The run's model folder is a strict release checkpoint of the lite geometry, changed by training...
    trained = load_release(out / "Model_Lite")
    assert trained.config.preset == "lite" and trained.config.vae_stride == (8, 32, 32)
    before = read_state_dict(release / "Model_Lite")
    after = trained.state_dict()
    assert before.keys() == after.keys()
    assert not torch.equal(before["blocks.0.self_attn.q.weight"], after["blocks.0.self_attn.q.weight"])
    assert torch.equal(before["text_embedding.0.weight"], after["text_embedding.0.weight"])   # kept, unused: frozen
    # ...and the run folder holds the VAE link, so `vividhead stream --weights RUN --variant lite` finds both.
    codec = load_codec("lite", out, trained.config.codec)
    assert codec.latent_channels == 128 and codec.temporal_stride == 8
