"""Stage-2 settings: the paper's defaults, validation messages, and the shipped manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from vividhead.training.config import load_train_config
from vividhead.training.dmd_config import DistillConfig

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"


def test_defaults_are_the_papers():
    c = DistillConfig()
    assert (c.num_chunks, c.lr_generator, c.lr_fake, c.fake_updates_per_generator) == (5, 2e-6, 4e-7, 5)
    assert (c.guidance_scale, c.oracle, c.sampler_steps, c.sampler_shift) == (3.0, True, 4, 5.0)
    assert c.iterations(10) == 50


def test_bad_values_name_the_field():
    with pytest.raises(ValidationError, match="t_min"):
        DistillConfig(t_min=0.9, t_max=0.5)
    with pytest.raises(ValidationError, match="num_chunks"):
        DistillConfig(num_chunks=0)
    with pytest.raises(ValidationError, match="orcale"):
        DistillConfig(orcale=False)


@pytest.mark.parametrize("preset", ["tiny", "lite", "pro"])
def test_stage2_manifests_load(preset):
    config = load_train_config(MANIFESTS / f"train-stage2-{preset}.yaml")
    assert config.stage == 2 and config.model.preset == preset
    assert config.distill.oracle and config.distill.num_chunks == 5
    assert config.distill.teacher.is_absolute()
    if preset != "tiny":
        assert (config.distill.lr_generator, config.distill.lr_fake) == (2e-6, 4e-7)
