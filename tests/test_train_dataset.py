"""The shard dataset: real-format shards in, windows / reference / motion / audio out, deterministically."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from train_fixtures import write_shards
from vividhead.models.flashhead import frame_windows
from vividhead.shards import read_member
from vividhead.training.dataset import (
    AUDIO_LEFT_CONTEXT, BucketBatcher, LatentCache, ShardDataset, WindowSampler, epoch_order, index_shards,
    nearest_bucket, sample_stream,
)
from vividhead.training.flow_matching import audio_windows


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_shards(tmp_path_factory.mktemp("train-shards"), [2, 1], n_frames=40)


def make(shards: list[Path], **kw) -> ShardDataset:
    return ShardDataset(shards, frames=33, buckets=[(32, 32)], shuffle_window=2, seed=3, **kw)


def test_sample_holds_window_reference_motion_and_the_clip_audio_rows(shards: list[Path]) -> None:
    ds = make(shards)
    assert len(ds) == 3
    s = ds.sample(0)
    assert s["video"].shape == (3, 33, 32, 32) and s["ref"].shape == (3, 32, 32)
    assert -1.0 <= float(s["video"].min()) and float(s["video"].max()) <= 1.0
    assert isinstance(s["full_motion"], bool) and 0 <= s["start"] <= 40 - 33 and 0 <= s["ref_index"] < 40
    entry = next(e for e in ds.flat if e.key == s["key"])
    rows = np.load(io.BytesIO(read_member(entry, "audio.npy")))
    assert rows.dtype == np.float16 and rows.shape == (40, 1, 80)
    expected = rows[np.arange(s["start"] - 2, s["start"] + 33).clip(0, None)].astype(np.float32)
    assert AUDIO_LEFT_CONTEXT == 2 and torch.equal(s["audio"], torch.from_numpy(expected))
    # The engine's windowing: frame i of the chunk sees rows i-2..i+2 (2 rows of left context from the
    # 8 s window), clamped only at the newest edge.
    windows = audio_windows(s["audio"][None], AUDIO_LEFT_CONTEXT)
    assert windows.shape == (1, 33, 5, 1, 80)
    assert torch.equal(windows, frame_windows(s["audio"][None])[:, 2:])
    assert torch.equal(windows[0, 0, 0], s["audio"][0]) and torch.equal(windows[0, 0, 2], s["audio"][2])
    assert torch.equal(windows[0, -1, 4], s["audio"][-1]) and torch.equal(windows[0, -1, 3], s["audio"][-1])


def test_stream_is_deterministic_and_worker_processes_keep_the_order(shards: list[Path]) -> None:
    ds = make(shards)
    direct = [ds.sample(j) for j in range(4)]
    loaded = sample_stream(make(shards), num_workers=2)
    for expected in direct:
        got = next(loaded)
        assert got["position"] == expected["position"] and got["key"] == expected["key"]
        assert torch.equal(got["video"], expected["video"]) and got["start"] == expected["start"]
    resumed = next(iter(make(shards, start_position=2)))
    assert resumed["key"] == direct[2]["key"] and torch.equal(resumed["ref"], direct[2]["ref"])


def test_epochs_are_permutations_and_ranks_split_the_stream(shards: list[Path]) -> None:
    for epoch in range(3):
        assert sorted(epoch_order([2, 1], seed=0, epoch=epoch, window=2)) == [0, 1, 2]
    assert any(list(epoch_order([5, 7], 0, e, 4)) != list(epoch_order([5, 7], 0, 0, 4)) for e in range(1, 4))
    r0, r1 = make(shards, rank=0, world_size=2), make(shards, rank=1, world_size=2)
    seen = [r0.entry_at(r0.global_position(j)).key for j in range(3)] + [r1.entry_at(r1.global_position(j)).key for j in range(3)]
    # Over two epochs (6 global positions) every clip is seen exactly twice.
    assert sorted(seen) == sorted([e.key for e in r0.flat] * 2)


def test_motion_mode_follows_the_paper_probability() -> None:
    sampler = WindowSampler(frames=33, motion_full_prob=0.9, seed=0)
    draws = [sampler.draw(g, 200)[2] for g in range(4000)]
    assert 0.88 < np.mean(draws) < 0.92
    starts = {sampler.draw(g, 200)[0] for g in range(500)}
    assert min(starts) == 0 and max(starts) <= 167
    grid = WindowSampler(frames=33, motion_full_prob=0.9, seed=0, grid=4)
    assert all(grid.draw(g, 200)[0] % 4 == 0 for g in range(200))


def test_buckets_group_by_aspect_and_the_batcher_resumes_its_pending_samples(shards: list[Path]) -> None:
    assert nearest_bucket(512, 512, [(32, 32), (24, 40)]) == (32, 32)
    assert nearest_bucket(360, 640, [(32, 32), (24, 40)]) == (24, 40)
    ds = make(shards)
    batcher = BucketBatcher(batch_size=2)
    batches = batcher.batches(iter(ds))
    first = next(batches)
    assert [s["position"] for s in first] == [0, 1]
    # Pull one more sample into a partial bucket, save, restore into a new batcher, compare.
    stream = iter(make(shards, start_position=batcher.next_position))
    batcher._add(next(stream))
    batcher.next_position += 1
    state = batcher.state()
    assert state == {"next_position": 3, "pending": [2]}
    again = BucketBatcher(batch_size=2)
    again.restore(state, ds)
    a = next(batcher.batches(iter(make(shards, start_position=3))))
    b = next(again.batches(iter(make(shards, start_position=3))))
    assert [s["position"] for s in a] == [s["position"] for s in b] == [2, 3]
    assert all(torch.equal(x["video"], y["video"]) for x, y in zip(a, b))


def test_latent_cache_is_keyed_by_clip_and_codec_and_replaces_decoding(shards: list[Path], tmp_path: Path) -> None:
    cache = LatentCache(tmp_path / "cache", "codec-A")
    ds = make(shards, cache=cache, cache_stride=4)
    s = ds.sample(0)
    assert "video" in s and s["start"] % 4 == 0
    latent, ref_latent = torch.randn(192, 9, 8, 8), torch.randn(192, 9, 8, 8)
    LatentCache.store(cache.window_path(s["key"], s["start"], 33, (32, 32)), latent)
    LatentCache.store(cache.ref_path(s["key"], s["ref_index"], (32, 32)), ref_latent)
    cached = ds.sample(0)
    assert "video" not in cached and torch.equal(cached["latent"], latent) and torch.equal(cached["ref_latent"], ref_latent)
    other = make(shards, cache=LatentCache(tmp_path / "cache", "codec-B"), cache_stride=4).sample(0)
    assert "video" in other


def test_a_sample_without_audio_features_is_refused_by_name(tmp_path: Path, shards: list[Path]) -> None:
    broken = tmp_path / "broken.tar"
    with tarfile.open(shards[1]) as src, tarfile.open(broken, "w") as dst:
        for info in src:
            if not info.name.endswith(".audio.npy"):
                dst.addfile(info, src.extractfile(info))
    with pytest.raises(ValueError, match=r"lacks audio\.npy"):
        index_shards([broken])


def test_a_clip_that_does_not_decode_is_skipped_with_its_reason(tmp_path: Path, shards: list[Path]) -> None:
    corrupt = tmp_path / "corrupt.tar"
    with tarfile.open(shards[1]) as src, tarfile.open(corrupt, "w") as dst:
        for info in src:
            data = src.extractfile(info).read()
            if info.name.endswith(".mp4"):
                data = b"not an mp4" * 100
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    batcher = BucketBatcher(batch_size=1)
    sample = make([corrupt]).sample(0)
    assert "mp4 does not decode" in sample["skip"]
    batcher._add(sample)
    assert batcher.skipped == 1 and sample["key"] in batcher.skip_examples[0]


def test_encoded_windows_fill_the_cache_and_come_back_identical(shards: list[Path], tmp_path: Path) -> None:
    from vividhead.models.vae import SpaceToDepthCodec
    from vividhead.training.stage1 import codec_id, to_latents

    codec = SpaceToDepthCodec()
    cache = LatentCache(tmp_path / "cache", codec_id(codec))
    ds = make(shards, cache=cache, cache_stride=4)
    fresh = to_latents([ds.sample(0), ds.sample(1)], codec, cache, torch.device("cpu"), motion_latents=2)
    assert fresh.latent.shape == (2, 192, 9, 8, 8) and fresh.ref_latent.shape == (2, 192, 9, 8, 8)
    # The reference latent is the reference frame repeated over the chunk, encoded.
    assert torch.equal(fresh.ref_latent[:, :, 0], fresh.ref_latent[:, :, -1])
    again = [ds.sample(0), ds.sample(1)]
    assert all("video" not in s for s in again)            # read from the cache, no decoding
    cached = to_latents(again, codec, cache, torch.device("cpu"), motion_latents=2)
    assert torch.equal(cached.latent, fresh.latent) and torch.equal(cached.ref_latent, fresh.ref_latent)
    assert cached.motion_latents.tolist() == [2 if s["full_motion"] else 1 for s in again]


def test_audio_condition_equals_the_streaming_engine_for_its_second_chunk(tmp_path: Path) -> None:
    """Train = serve: the window the engine generates as chunk 1 (frames 23..55 with the tiny/pro geometry:
    28 new frames per chunk, the first included, after 5 motion frames) gets the same audio windows from
    `audio.npy` as from the engine's 8 s context cache.

    One row may differ by construction of `audio.npy`: frame 27, the last frame of the build's chunk 0, was
    encoded in the window ending at frame 28 (its log-mel window hangs over zeros), while the engine
    re-encodes it inside chunk 1's window (test_stream_engine.py measures which rows differ exactly).
    Every other row, and the windowing, is identical."""
    import wave

    from vividhead.inference.audio_cache import AudioContextCache
    from vividhead.models.audio_features import LogMelEncoder
    from vividhead.models.flashhead import GEOMETRY, frame_windows

    geometry = GEOMETRY["tiny"]
    new = geometry.new_frames                                          # 28
    start = 2 * new - geometry.frames                                  # 23: chunk 1 ends at frame 56
    shard = write_shards(tmp_path, [1], n_frames=start + geometry.frames, size=64)[0]
    ds = ShardDataset([shard], frames=33, buckets=[(32, 32)], seed=0)
    ds.sampler.draw = lambda g, n: (start, 0, True)                   # pin the window to chunk 1
    sample = ds.sample(0)
    train_windows = audio_windows(sample["audio"][None], AUDIO_LEFT_CONTEXT)

    entry = ds.flat[0]
    with wave.open(io.BytesIO(read_member(entry, "wav"))) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767
    cache = AudioContextCache(LogMelEncoder(), geometry.window_frames, geometry.frames + geometry.audio_radius)
    cache.push(pcm[: new * 640])                                               # chunk 0: frames 0..27
    rows = torch.from_numpy(cache.push(pcm[new * 640: 2 * new * 640]))[None]   # chunk 1: frames 28..55
    engine_windows = frame_windows(rows, geometry.audio_radius)[:, geometry.audio_radius:]
    assert train_windows.shape == engine_windows.shape == (1, 33, 5, 1, 80)
    # Which window entries read frame 27 (row 27 - 21 = 6 of the 35 rows)?
    index = (torch.arange(35)[:, None] + torch.arange(-2, 3)).clamp(0, 34)[2:]       # [33, 5] row per entry
    boundary = (index == new - 1 - (start - AUDIO_LEFT_CONTEXT)).view(1, 33, 5, 1, 1)
    # audio.npy is float16 and the wav is 16-bit PCM: equal up to that rounding.
    close = torch.isclose(train_windows, engine_windows, atol=2e-2, rtol=1e-2)
    assert bool((close | boundary).all())
