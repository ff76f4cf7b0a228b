"""The shard layer: the bytes webdataset's TarWriter writes, read back by plain `webdataset`, indexed, one key rule."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import webdataset
from webdataset.tariterators import base_plus_ext

from vividhead.shards import (
    SAMPLE_ORDER, ShardError, ShardWriter, index_shard, iter_samples, read_member, read_members, shard_files,
    split_name, write_shard,
)


def _samples(count: int) -> list[tuple[str, dict[str, bytes]]]:
    return [(f"unit-{i:03d}", {"json": b'{"i": %d}' % i, "mp4": bytes([i]) * (700 + i), "wav": b"RIFF" * i,
                               "audio.npy": b"\x93NUMPY" + bytes(i), "mask.png": b"\x89PNG" * 3, "extra.txt": b"x"})
            for i in range(count)]


def test_written_shards_read_back_with_plain_webdataset_in_the_fixed_member_order(tmp_path: Path) -> None:
    path = tmp_path / "shards" / "u.tar"
    samples = _samples(4)
    write_shard(path, samples)
    assert shard_files(path.parent) == [path]                        # no temporary file is left behind
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uname == "" and m.mode == 0o644 for m in tar.getmembers())
    assert names[:6] == [f"unit-000.{ext}" for ext in (*SAMPLE_ORDER, "extra.txt")]
    read = list(webdataset.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in read] == [key for key, _ in samples]
    for sample, (_, files) in zip(read, samples):
        assert {k: v for k, v in sample.items() if not k.startswith("__")} == files
    write_shard(tmp_path / "again.tar", samples)                      # the same samples give the same bytes
    assert (tmp_path / "again.tar").read_bytes() == path.read_bytes()


def test_iteration_and_indexed_access_agree(tmp_path: Path) -> None:
    path = tmp_path / "u.tar"
    samples = _samples(5)
    write_shard(path, samples)
    streamed = list(iter_samples(path))
    assert [(s.key, s.files) for s in streamed] == samples and streamed[0].shard == "u.tar"
    only_json = next(iter_samples(path, {"json"}))
    assert only_json.files["json"] == samples[0][1]["json"] and only_json.files["mp4"] == b""
    index = index_shard(path)
    assert [entry.key for entry in index] == [key for key, _ in samples]
    assert read_member(index[3], "mp4") == samples[3][1]["mp4"]
    with pytest.raises(KeyError, match="no `flac`"):
        read_member(index[0], "flac")
    assert read_members(path, {"unit-001", "unit-004"}, {"json", "wav"}) == {
        key: {"json": files["json"], "wav": files["wav"]} for key, files in samples if key in ("unit-001", "unit-004")}


def test_the_bytes_are_webdataset_tarwriters(tmp_path: Path) -> None:
    path = tmp_path / "ours.tar"
    samples = _samples(3)
    write_shard(path, samples)
    theirs = tmp_path / "theirs.tar"
    with open(theirs, "wb") as handle, webdataset.TarWriter(handle, user="", group="", mode=0o644, mtime=0,
                                                            encoder=False) as writer:
        for key, files in samples:
            for ext in [e for e in SAMPLE_ORDER if e in files] + sorted(set(files) - set(SAMPLE_ORDER)):
                writer.write({"__key__": key, ext: files[ext]})
    assert path.read_bytes() == theirs.read_bytes()


def test_the_key_rule_is_webdatasets() -> None:
    assert split_name("clip-1.audio.npy") == ("clip-1", "audio.npy")
    assert split_name("a.b/clip-1.mask.png") == ("a.b/clip-1", "mask.png")
    assert split_name("README") is None
    for name in ("clip-1.audio.npy", "a.b/clip-1.mask.png", "README", "dir/.hidden", "x.", ".x", "a/b/c.d.e"):
        key, extension = base_plus_ext(name)
        assert split_name(name) == (None if key is None else (key, extension))


def test_a_key_with_a_dot_is_refused_and_nothing_is_published(tmp_path: Path) -> None:
    path = tmp_path / "u.tar"
    with pytest.raises(ShardError, match="contains a dot"):
        write_shard(path, [("ok", {"json": b"{}"}), ("clip.1", {"json": b"{}"})])
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_a_writer_reports_when_it_reaches_its_target_size(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path / "a.tar", max_samples=3)
    for key, files in _samples(3):
        assert not writer.full
        writer.add(key, files)
    assert writer.full and not (tmp_path / "a.tar").exists()         # published only by close()
    assert writer.close() == tmp_path / "a.tar" and len(index_shard(tmp_path / "a.tar")) == 3
    by_bytes = ShardWriter(tmp_path / "b.tar", max_bytes=1000)
    by_bytes.add(*_samples(1)[0])
    assert by_bytes.full
    by_bytes.abort()
    assert shard_files(tmp_path) == [tmp_path / "a.tar"] and not (tmp_path / ".b.tar.tmp").exists()


def test_a_truncated_shard_fails_loudly_after_its_complete_samples(tmp_path: Path) -> None:
    path = tmp_path / "u.tar"
    write_shard(path, _samples(3))
    data = path.read_bytes()
    entry = index_shard(path)[2]
    offset, _ = entry.member("mp4")
    path.write_bytes(data[: offset + 100])                           # cut inside the third sample's mp4
    keys = []
    with pytest.raises((tarfile.TarError, EOFError)):
        for sample in iter_samples(path):
            keys.append(sample.key)
    assert keys == ["unit-000", "unit-001"]
    with pytest.raises(ShardError, match="truncated"):
        read_member(entry, "mp4")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 40)
    with pytest.raises(ShardError, match="junk.tar"):
        index_shard(tmp_path / "junk.tar")
