"""Training configs: the shipped manifests validate, paths resolve against the file, errors name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vividhead.configfile import ConfigError
from vividhead.training.config import TrainConfig, expand_shards, load_train_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["train-tiny.yaml", "train-lite.yaml", "train-pro.yaml"])
def test_shipped_configs_validate_and_resolve_paths_against_the_file(name: str) -> None:
    path = REPO / "manifests" / name
    config = load_train_config(path)
    assert config.stage == 1
    assert config.model.preset == name.split("-")[1].split(".")[0]
    assert config.out.is_absolute() and config.out.parent.parent == REPO
    assert all(Path(s).is_absolute() for s in config.data.shards)


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {"stage": 1, "out": "run", "data": {"shards": ["shards"]}}


def test_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, BASE | {"optim": {"lr": -1.0}})
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    assert str(path) in str(err.value) and "optim.lr" in str(err.value)

    path = write(tmp_path, BASE | {"modle": {"preset": "tiny"}})
    with pytest.raises(ConfigError, match="modle"):
        load_train_config(path)

    path = write(tmp_path, BASE | {"model": {"preset": "huge"}})
    with pytest.raises(ConfigError, match=r"model\.preset"):
        load_train_config(path)


def test_relative_paths_resolve_against_the_config_folder_and_overrides_win(tmp_path: Path) -> None:
    config = load_train_config(write(tmp_path, BASE), {"steps": 7})
    assert config.out == tmp_path / "run"
    assert config.data.shards == [str(tmp_path / "shards")]
    assert config.steps == 7


def test_stage_two_needs_and_validates_the_distill_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="distill"):
        load_train_config(write(tmp_path, BASE | {"stage": 2}))
    with pytest.raises(ConfigError, match=r"distill\.num_chunks"):
        load_train_config(write(tmp_path, BASE | {"stage": 2, "distill": {"num_chunks": 0}}))
    config = load_train_config(write(tmp_path, BASE | {"stage": 2, "distill": {"teacher": "teacher"}}))
    assert config.distill is not None and config.distill.teacher == tmp_path / "teacher"
    with pytest.raises(ConfigError, match="stage: 1"):
        load_train_config(write(tmp_path, BASE | {"distill": {}}))


def test_expand_shards_accepts_files_folders_and_globs_and_names_a_missing_pattern(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    for name in ("a.tar", "b.tar"):
        (tmp_path / "shards" / name).write_bytes(b"")
    by_folder = expand_shards([str(tmp_path)])          # a build's output folder: its shards/
    by_glob = expand_shards([str(tmp_path / "shards" / "*.tar")])
    assert by_folder == by_glob == [tmp_path / "shards" / "a.tar", tmp_path / "shards" / "b.tar"]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        expand_shards([str(tmp_path / "nothing-here" / "*.tar")])


def test_bad_cli_config_exits_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vividhead.cli import main

    path = write(tmp_path, BASE)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "matches no shard file" in capsys.readouterr().err
    assert isinstance(TrainConfig.model_json_schema(), dict)


def test_shape_overrides_are_named_and_only_for_a_fresh_model(tmp_path: Path) -> None:
    config = load_train_config(write(tmp_path, BASE | {"model": {"overrides": {"dim": 256, "num_heads": 4}}}))
    assert config.model.overrides == {"dim": 256, "num_heads": 4}
    with pytest.raises(ConfigError, match=r"model\.overrides"):
        load_train_config(write(tmp_path, BASE | {"model": {"overrides": {"depth": 3}}}))
    with pytest.raises(ConfigError, match="fresh model"):
        load_train_config(write(tmp_path, BASE | {"model": {"overrides": {"dim": 256}, "init": "release"}}))
