"""Build config and sources.yaml: defaults, validation errors that name the file and the field, expansion, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from conftest import run_vividhead
from vividhead.configfile import ConfigError, load_yaml_model
from vividhead.pipelines import stages
from vividhead.pipelines.config import BuildConfig, SourcesFile, load_build_config
from vividhead.pipelines.ray_setup import on_cluster, stage_pools
from vividhead.pipelines.sources import dedupe_by_md5, expand_sources, with_md5
from vividhead.pipelines.stages import Resources
from vividhead.weights import Weights, load_weights_manifest


def test_print_config_shows_every_default_and_reloads(tmp_path: Path) -> None:
    result = run_vividhead("build", "--print-config")
    printed = yaml.safe_load(result.stdout)
    assert printed["segment"]["min_seconds"] == 5.0 and printed["segment"]["max_seconds"] == 50.0
    assert printed["normalize"] == {"fps": 25, "sample_rate": 16000}
    assert printed["sync"]["min_confidence"] == 3.0 and printed["sync"]["max_abs_offset"] == 6
    path = tmp_path / "config.yaml"
    path.write_text(result.stdout)
    assert load_build_config(path) == BuildConfig()


@pytest.mark.parametrize("text, field", [
    ("segment:\n  min_seconds: -1\n", "segment.min_seconds"),
    ("face:\n  detector: yolo\n", "face.detector"),
    ("sync:\n  min_confidence: high\n", "sync.min_confidence"),
    ("segment:\n  min_seconds: 9\n  max_seconds: 6\n", "segment"),
    ("flow:\n  max_residuals: 0.1\n", "flow.max_residuals"),
    ("weights:\n  syncnett: x.model\n", "weights"),
])
def test_bad_config_value_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_build_config(path)
    assert str(path) in str(err.value) and f"'{field}" in str(err.value)
    result = run_vividhead("build", "--config", path, "--print-config", check=False)
    assert result.returncode == 2 and str(path) in result.stderr and field in result.stderr


@pytest.mark.parametrize("text, field", [
    ("sources:\n  - path: a.mp4\n    ranges: [[5, 2]]\n", "sources.0.ranges.0"),
    ("sources:\n  - url: ftp://host/a.mp4\n", "sources.0"),
    ("sources:\n  - path: a.mp4\n    attributes: {colour: red}\n", "sources.0.attributes.colour"),
    ("sources: []\n", "sources"),
    ("sources:\n  - {path: a.mp4, url: 'http://x/y.mp4'}\n", "sources.0"),
])
def test_bad_sources_value_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_yaml_model(SourcesFile, path)
    assert str(path) in str(err.value) and f"'{field}" in str(err.value)


def test_missing_and_invalid_yaml_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_yaml_model(SourcesFile, tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("sources: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml_model(SourcesFile, broken)
    manifest = tmp_path / "weights.yaml"
    manifest.write_text("syncnet: 3\nsomething: x\n")
    with pytest.raises(ConfigError, match=r"weights.yaml.*'something'"):
        load_weights_manifest(manifest)


def test_sources_expand_globs_directories_urls_and_dedupe(tmp_path: Path) -> None:
    (tmp_path / "videos" / "sub").mkdir(parents=True)
    for name, data in (("a.mp4", b"one"), ("b.MOV", b"two"), ("sub/c.mkv", b"one"), ("notes.txt", b"x")):
        (tmp_path / "videos" / name).write_bytes(data)
    sources = SourcesFile.model_validate({"sources": [
        "videos",                                                              # a directory, recursive
        {"path": "videos/*.mp4", "dataset": "again"},                          # a glob
        {"path": "videos/a.mp4"},                                              # the same source id: dropped
        {"path": "videos/b.MOV", "dataset": "timed", "ranges": [[0, 5], {"start": 5, "end": 9}],
         "attributes": {"language": "en"}},
        "https://example.org/v.mp4",
        "missing/*.mp4",
    ]})
    found, missing = expand_sources(sources, tmp_path)
    names = [Path(s.uri).name for s in found]
    assert names == ["a.mp4", "b.MOV", "c.mkv", "a.mp4", "b.MOV", "v.mp4"]
    assert found[3].dataset == "again" and found[4].ranges == ((0.0, 5.0), (5.0, 9.0))
    assert dict(found[4].attributes) == {"language": "en"} and found[0].ranges == ()
    assert [reason for _, reason, _ in missing] == ["no_match"]
    local = [with_md5(s, Path(s.uri)) for s in found[:3]]
    kept, duplicates = dedupe_by_md5(local)
    assert [Path(s.uri).name for s in kept] == ["a.mp4", "b.MOV"]
    assert [(Path(d.uri).name, Path(o.uri).name) for d, o in duplicates] == [("c.mkv", "a.mp4")]


def test_content_hash_ignores_filter_thresholds() -> None:
    base = BuildConfig()
    stricter = BuildConfig.model_validate({"sync": {"min_confidence": 5}, "speech": {"min_speech_ratio": 0.8}})
    assert base.content_hash() == stricter.content_hash() and base.config_hash() != stricter.config_hash()
    assert BuildConfig.model_validate({"encode": {"crf": 23}}).content_hash() != base.content_hash()
    thresholds = BuildConfig.model_validate({"flow": {"max_residual": 0.05}, "visibility": {"max_missing_ratio": 0}})
    assert thresholds.content_hash() == base.content_hash()
    assert BuildConfig.model_validate({"flow": {"width": 128}}).content_hash() != base.content_hash()


def test_cli_help_and_check_weights(tmp_path: Path) -> None:
    assert "--sources" in run_vividhead("build", "--help").stdout
    config = tmp_path / "config.yaml"
    config.write_text(f"weights_manifest: {tmp_path / 'none.yaml'}\nweights:\n  scrfd: {tmp_path / 'missing.onnx'}\n")
    result = run_vividhead("build", "--config", config, "--check-weights")
    assert "face        default (mediapipe)" in result.stdout
    assert "weights.scrfd" in result.stdout and "missing" in result.stdout
    assert isinstance(Weights(), Weights)
    missing = run_vividhead("build", "--out", tmp_path / "o", check=False)
    assert missing.returncode == 2 and "--sources" in missing.stderr


def test_ray_resources_come_from_the_stage_table_and_the_resources_section() -> None:
    gpu_node, laptop = {"CPU": 16.0, "GPU": 1.0}, {"CPU": 2.0}
    config = BuildConfig()
    vad = on_cluster(config.ray_resources("speech"), gpu_node, pool=True)
    assert vad.num_gpus == 0 and vad.num_cpus == 0 and vad.concurrency == (1, 8)   # 0 means 0: no GPU share
    sync = on_cluster(config.ray_resources("sync"), gpu_node, pool=True)
    assert sync.num_gpus == 0.25 and sync.concurrency == (1, 4)                   # fractional GPUs fill the GPU
    assert on_cluster(config.ray_resources("sync"), {"CPU": 64.0, "GPU": 8.0}, pool=True).concurrency == (1, 32)
    on_laptop = on_cluster(config.ray_resources("sync"), laptop, pool=True)
    assert on_laptop.num_gpus == 0 and on_laptop.concurrency == (1, 1)             # no GPU: runs on the CPU
    decode = on_cluster(config.ray_resources("decode"), gpu_node, pool=False)
    assert (decode.num_cpus, decode.num_gpus, decode.concurrency) == (1, 0, None)
    tuned = BuildConfig.model_validate({"resources": {"sync": {"num_gpus": 0.5, "concurrency": 3},
                                                      "decode": {"num_cpus": 2}}})
    assert on_cluster(tuned.ray_resources("sync"), gpu_node, pool=True) == Resources(0, 0.5, (1, 3))
    assert tuned.ray_resources("decode").num_cpus == 2 and tuned.ray_resources("speech") == config.ray_resources("speech")
    with pytest.raises(ValidationError, match="unknown Ray calls"):
        BuildConfig.model_validate({"resources": {"syncc": {"num_gpus": 1}}})


def test_model_stages_with_equal_resources_share_one_actor_pool() -> None:
    config = BuildConfig()
    clip_stages = stages.clip_stages(config)
    def names(cluster: dict[str, float], chosen: BuildConfig = config) -> list[list[str]]:
        return [[s.name for s in pool.stages]
                for pool in stage_pools(clip_stages, lambda s: chosen.ray_resources(s.name), cluster)]
    assert names({"CPU": 2.0}) == [["occlusion", "speech", "sync", "annotate"]]       # no GPU: one pool
    assert names({"CPU": 16.0, "GPU": 1.0}) == [["occlusion"], ["speech"], ["sync", "annotate"]]  # speech: no GPU
    tuned = BuildConfig.model_validate({"resources": {"sync": {"concurrency": 3}}})
    assert names({"CPU": 2.0}, tuned) == [["occlusion", "speech"], ["sync"], ["annotate"]]
