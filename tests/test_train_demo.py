"""The new-user path: `vividhead train --config manifests/train-tiny.yaml` on the demo build's shards."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO, run_vividhead
from vividhead.models.release import load_release
from vividhead.training.config import expand_shards
from vividhead.training.stage1 import peek_audio_shape


def test_shipped_tiny_config_trains_on_the_demo_build(demo_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_vividhead("train", "--config", REPO / "manifests" / "train-tiny.yaml", "--shards", demo_build,
                           "--out", out, "--steps", "3", "--workers", "1", "--no-progress", timeout=600)
    assert "loss: first 10% mean" in result.stdout and "step 1 .. 3" in result.stdout
    rows = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] > 0 for r in rows)
    model = load_release(out / "Model_Tiny")                  # what `vividhead stream --weights RUN` loads
    assert model.config.preset == "tiny" and model.config.dim == 256   # the config's shape overrides
    # The tiny model takes the width of the demo's audio.npy rows (log-mel 1 x 80 without wav2vec2 weights).
    shape = peek_audio_shape(expand_shards([str(demo_build)]))
    assert (model.config.audio_layers, model.config.audio_dim) == shape
