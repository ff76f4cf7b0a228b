"""`vividhead inspect --verify`: passes on a good build, fails with a precise message on each corruption.

Every corruption is made on a private copy of the build (never on the shared fixture): a truncated
tar, a missing file, a wrong frame rate, a sample deleted from a shard, an extra sample that the
manifest does not list, and a manifest row whose shard is gone.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from test_inspect_fixture import Expected, copy_build, encode_clip, synthetic_build  # noqa: F401
from test_inspect_summary import real_build

from vividhead.cli import main
from vividhead.inspection.reader import resolve
from vividhead.inspection.verify import verify

Members = list[tuple[str, bytes]]


def rewrite_tar(shard: Path, change: Callable[[Members], Members]) -> None:
    with tarfile.open(shard) as archive:
        members = [(m.name, archive.extractfile(m).read()) for m in archive if m.isfile()]
    with tarfile.open(shard, "w") as archive:
        for name, data in change(members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def problems_of(out: Path) -> list[str]:
    report = verify(resolve([out]))
    assert not report["ok"] and report["problem_count"] == len(report["problems"])
    return report["problems"]


def test_a_good_build_verifies(synthetic_build: Expected, capsys: pytest.CaptureFixture) -> None:
    report = verify(resolve([synthetic_build.root]))
    assert report["ok"], report["problems"]
    assert report["samples"] == 3 and report["decoded_frames"] == 30 + 30 + 40
    assert main(["inspect", str(synthetic_build.root), "--verify"]) == 0
    assert "OK: every shard is intact" in capsys.readouterr().out


def test_truncated_tar(synthetic_build: Expected, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = copy_build(synthetic_build, tmp_path)
    shard = out / "shards" / "a.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) * 2 // 3])
    problems = problems_of(out)
    assert any(p.startswith("shards/a.tar: truncated or damaged tar after sample") for p in problems), problems
    assert any("has no sample in shards/a.tar (the tar is truncated)" in p for p in problems), problems
    assert main(["inspect", str(out), "--verify"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_tar_cut_at_a_member_boundary(synthetic_build: Expected, tmp_path: Path) -> None:
    out = copy_build(synthetic_build, tmp_path)
    shard = out / "shards" / "b.tar"
    with tarfile.open(shard) as archive:
        end = max(m.offset_data + -(-m.size // 512) * 512 for m in archive)   # after the last member's data
    shard.write_bytes(shard.read_bytes()[:end])
    assert problems_of(out) == ["shards/b.tar: truncated tar: no end-of-archive marker after 1 samples"]


def test_missing_key(synthetic_build: Expected, tmp_path: Path) -> None:
    out = copy_build(synthetic_build, tmp_path)
    key = synthetic_build.kept_keys[0]
    rewrite_tar(out / "shards" / "a.tar", lambda members: [m for m in members if m[0] != f"{key}.mask.png"])
    assert problems_of(out) == [f"shards/a.tar: sample {key}: missing mask.png"]


def test_wrong_frame_rate(synthetic_build: Expected, tmp_path: Path) -> None:
    out = copy_build(synthetic_build, tmp_path)
    key = synthetic_build.kept_keys[0]
    clip = tmp_path / "30fps.mp4"
    encode_clip(synthetic_build.sources[0], 0.0, 1.2, (140, 20, 320), clip, fps=30)
    rewrite_tar(out / "shards" / "a.tar",
                lambda members: [(n, clip.read_bytes() if n == f"{key}.mp4" else d) for n, d in members])
    problems = problems_of(out)
    assert f"shards/a.tar: sample {key}: mp4 is 30.0 fps, expected 25" in problems
    assert f"shards/a.tar: sample {key}: audio.npy has 30 rows but the mp4 has 36 frames" in problems


def test_sample_deleted_from_a_shard(synthetic_build: Expected, tmp_path: Path) -> None:
    out = copy_build(synthetic_build, tmp_path)
    key = synthetic_build.kept_keys[1]
    rewrite_tar(out / "shards" / "a.tar", lambda members: [m for m in members if not m[0].startswith(key)])
    assert problems_of(out) == [f"manifest: kept row {key} has no sample in shards/a.tar"]


def test_extra_sample_not_in_the_manifest(synthetic_build: Expected, tmp_path: Path) -> None:
    out = copy_build(synthetic_build, tmp_path)
    key = synthetic_build.kept_keys[2]                        # the sample of b.tar, copied under a new key
    extra = "ffffffffffffffff_00000000_00001600_abcdef01"

    def add(members: Members) -> Members:
        copies = [(name.replace(key, extra), data.replace(key.encode(), extra.encode()))
                  for name, data in members if name.startswith(key)]
        return members + copies

    rewrite_tar(out / "shards" / "b.tar", add)
    assert problems_of(out) == [f"shards/b.tar: sample {extra} has no kept row in the manifest for this shard"]


def test_sample_in_the_wrong_shard_and_a_missing_shard(synthetic_build: Expected, tmp_path: Path) -> None:
    out = copy_build(synthetic_build, tmp_path)
    key = synthetic_build.kept_keys[2]                        # lives in b.tar
    with tarfile.open(out / "shards" / "b.tar") as archive:
        moved = [(m.name, archive.extractfile(m).read()) for m in archive if m.isfile()]
    rewrite_tar(out / "shards" / "a.tar", lambda members: members + moved)
    (out / "shards" / "b.tar").unlink()
    problems = problems_of(out)
    assert f"shards/a.tar: sample {key} has no kept row in the manifest for this shard (the manifest places it in " \
           "b.tar)" in problems
    assert "manifest: 1 kept row(s) name shards/b.tar, which does not exist" in problems


def test_build_json_totals_must_match_the_manifest(synthetic_build: Expected, tmp_path: Path) -> None:
    out = copy_build(synthetic_build, tmp_path)
    info = json.loads((out / "build.json").read_text())
    info["totals"]["kept"] = 4
    (out / "build.json").write_text(json.dumps(info))
    assert problems_of(out) == ["build.json totals say 4 kept but the manifest has 3 kept row(s)"]


def test_consolidated_manifest_must_hold_its_parts(synthetic_build: Expected, tmp_path: Path) -> None:
    out = copy_build(synthetic_build, tmp_path)
    (out / "manifest" / "c.parquet").unlink()
    assert problems_of(out) == ["out copy/manifest.parquet has 6 rows but its 2 manifest/*.parquet parts hold 5"]


def test_parallel_workers_find_the_same(synthetic_build: Expected) -> None:
    assert verify(resolve([synthetic_build.root]), workers=2)["ok"]


def test_demo_build_verifies(request: pytest.FixtureRequest) -> None:
    report = verify(resolve([real_build(request, "demo_build")]))
    assert report["ok"], report["problems"]
    assert report["samples"] > 0


def test_media_build_verifies(request: pytest.FixtureRequest) -> None:
    report = verify(resolve([real_build(request, "media_build")]))
    assert report["ok"], report["problems"]
