"""The stage table: its rows are consistent, and a stage added by one row shows up everywhere.

The toy stage (tests/toy_stage.py) is one stage module plus one row. Added to the table, it runs in
the build as an actor pool, gets its manifest column, re-decides on resume, appears in the inspect
funnel and can be re-decided by `inspect --what-if`; nothing else is edited.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import toy_stage
import yaml

from vividhead.cli import main
from vividhead.demo import Take, astronaut, write_take
from vividhead.inspection.reader import resolve
from vividhead.inspection.summary import summarize
from vividhead.inspection.whatif import parse_overrides, what_if
from vividhead.pipelines import stages
from vividhead.pipelines.build import run_build
from vividhead.pipelines.config import BuildConfig, SourcesFile, build_config_model
from vividhead.pipelines.filter_config import SyncConfig
from vividhead.pipelines.sync import decide as sync_decide


def test_every_row_is_consistent() -> None:
    names = stages.stage_names()
    assert names == ["sources", "probe", "segment", "normalize", "face", "flow", "visibility",
                     "occlusion", "speech", "sync", "annotate"]
    assert [stage.number for stage in stages.STAGES] == list(range(1, len(names) + 1))
    for stage in stages.STAGES:
        assert set(stage.thresholds) <= set(stage.config.model_fields if stage.config else ()), stage.name
        assert {t.metric for t in stage.thresholds.values()} <= set(stage.metrics), stage.name
        assert set(stage.metrics.values()) <= {"float", "int", "str", "bool"}, stage.name
        assert (stage.runs == "clips") == (stage.model is not None) == (stage.resources is not None), stage.name
        assert (stage.decide is None) == (not stage.reasons), stage.name
    assert list(BuildConfig.model_fields)[:9] == [s.name for s in stages.STAGES if s.config]


def test_decide_clip_takes_the_first_rejecting_stage_in_table_order() -> None:
    config = BuildConfig()
    row = {"segment.seconds": 6.0, "face.upscale": 1.2, "flow.max_residual": 0.5, "sync.lse_c": 1.0}
    assert stages.decide_clip(row, config)[:2] == ("flow", "abrupt_transition")
    assert stages.decide_clip({**row, "segment.seconds": 2.0}, config)[:2] == ("segment", "too_short")
    assert stages.decide_clip({**row, "flow.max_residual": 0.01}, config)[:2] == ("sync", "out_of_sync")
    sync_off = config.model_copy(update={"sync": SyncConfig(enabled=False)})
    assert stages.decide_clip({"sync.lse_c": 1.0}, sync_off) is None
    sync_row = next(s for s in stages.STAGES if s.name == "sync")
    assert sync_row.decide is sync_decide                                  # the stage module's own rule


def test_the_silero_stage_reserves_no_gpu_and_model_stages_share_gpus() -> None:
    resources = {stage.name: stage.resources for stage in stages.STAGES if stage.runs == "clips"}
    assert resources["speech"].num_gpus == 0
    assert all(resources[name].num_gpus > 0 for name in ("occlusion", "sync", "annotate"))


@pytest.fixture(scope="module")
def two_takes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 5.6 s talking takes that differ in brightness (the mirrored one is tinted darker)."""
    folder = tmp_path_factory.mktemp("toy-sources")
    photo = astronaut()
    write_take(Take("bright", ((5.6, "front"),), 190.0, 2), folder / "bright.mp4", photo)
    write_take(Take("dark", ((5.6, "mirror"),), 170.0, 5), folder / "dark.mp4", photo)
    (folder / "sources.yaml").write_text(yaml.safe_dump({"sources": ["bright.mp4", "dark.mp4"]}))
    return folder / "sources.yaml"


def test_a_toy_stage_added_by_one_row_runs_in_the_build_manifest_funnel_and_what_if(
        two_takes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES, toy_stage.ROW))          # the one row
    tests = str(Path(__file__).parent)                                     # Ray workers import the toy module
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    config_model = build_config_model()
    assert "toy" in config_model.model_fields
    off = {name: {"enabled": False} for name in ("occlusion", "speech", "sync", "annotate")}
    sources = SourcesFile.model_validate(yaml.safe_load(two_takes.read_text()))
    out = tmp_path / "out"

    first = run_build(sources, two_takes.parent, out, config_model.model_validate(off), workers=1, progress=False)
    assert first.clips["kept"] == 2 and first.stage_modes == {"toy": "default"}
    manifest = pq.read_table(out / "manifest.parquet")
    assert manifest.schema.field("toy.brightness").type == "double"
    brightness = sorted(manifest.column("toy.brightness").to_pylist())
    assert brightness[0] < brightness[1]
    middle = round(sum(brightness) / 2, 3)
    assert json.loads((out / "build.json").read_text())["stages"][-1] == "toy"

    dataset = resolve([out])
    result = what_if(dataset, parse_overrides([f"toy.max_brightness={middle}"], dataset))
    assert list(result["moves"]) == ["kept -> toy"] and result["moves"]["kept -> toy"]["clips"] == 1
    assert result["redecided_stages"][-1] == "toy" and result["thresholds"]["toy.max_brightness"]["build"] == 255.0

    stricter = config_model.model_validate({**off, "toy": {"max_brightness": middle}})
    second = run_build(sources, two_takes.parent, out, stricter, workers=1, progress=False)
    assert second.units_redecided == 2 and second.units_redone == {}                  # resume re-decides, no decode
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert sorted((row["status"], row["reject_stage"], row["reject_reason"]) for row in rows) == [
        ("kept", None, None), ("rejected", "toy", "too_bright")]

    funnel = summarize(resolve([out])).summary["funnel"]
    assert [step["stage"] for step in funnel["stages"]] == ["toy"] and funnel["stages"][0]["clips"] == 1
    assert main(["inspect", str(out), "--what-if", "toy.max_brightness=255"]) == 0
    assert "toy.max_brightness=255" in capsys.readouterr().out
