"""One rule for paths and globs: `~`, relative to a base folder, recursive `**` globs, sorted matches."""

from __future__ import annotations

from pathlib import Path

import pytest

from vividhead.paths import expand, is_glob, resolve_path


def test_relative_paths_resolve_against_the_base_and_globs_match_recursively(tmp_path: Path) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/2.mp4", "a/1.mp4", "a/deep/3.mp4", "a/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert resolve_path("a/../a/1.mp4", tmp_path) == tmp_path / "a" / "1.mp4"
    assert resolve_path("/abs/x.mp4", tmp_path) == Path("/abs/x.mp4")
    assert resolve_path("~/x.mp4") == Path.home() / "x.mp4"
    assert is_glob("a/*.mp4") and not is_glob("a/1.mp4")
    assert expand("a/*.mp4", tmp_path) == [tmp_path / "a" / "1.mp4", tmp_path / "a" / "2.mp4"]
    assert expand("a/**/*.mp4", tmp_path)[-1] == tmp_path / "a" / "deep" / "3.mp4"
    assert expand("a", tmp_path) == [tmp_path / "a"]
    assert expand("missing.mp4", tmp_path) == [] and expand("b/*.mp4", tmp_path) == []


@pytest.mark.parametrize("pattern", ["x[", "no-such-dir/**"])
def test_a_pattern_that_matches_nothing_gives_no_paths(tmp_path: Path, pattern: str) -> None:
    assert expand(pattern, tmp_path) == []
