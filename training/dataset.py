"""Training samples streamed from the WebDataset shards that `vividhead build` writes.

Each sample is one training window of one clip:
  - `video`   float32 [3, T, H, W] in [-1, 1]: T consecutive frames (one 33-frame chunk);
  - `ref`     float32 [3, H, W] in [-1, 1]: a reference frame drawn from anywhere in the clip;
  - `audio`   float32 [2 + T, layers, dim]: the clip's `audio.npy` rows of the window plus the 2 rows
              before it, as the streaming engine's audio cache yields them for a chunk; the -2..+2
              windows then clamp only at the newest edge (`flow_matching.audio_windows`). Before the
              clip's first frame the rows repeat row 0 (the engine would see features of silence);
  - `full_motion` bool: motion context is the first n ground-truth frames (p 0.9) or only the first
              frame (p 0.1), the paper's dynamic motion-frame sampling;
  - `key`, `start`, `ref_index`, `position`.
With a latent cache, `latent` / `ref_latent` replace `video` / `ref` once the cache holds them.

Determinism and exact resume: the shards are indexed once (tar headers only). Sample number g of the
infinite stream is fully defined by (seed, g): epoch g // N uses its own shard permutation and a
bounded-window shuffle, and the window, reference and motion draws come from an RNG seeded with
(seed, g). Rank r of W reads g = j * W + r for j = 0, 1, ...; DataLoader worker w of K reads the j
with j % K == w, and the DataLoader's in-order round robin restores the j order. A run therefore
resumes exactly from "next j" plus the positions waiting in partly filled aspect buckets.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vividhead import media
from vividhead.shards import IndexEntry, index_shard, read_member
from vividhead.storage import location

REQUIRED = ("mp4", "audio.npy")
# Rows before the window passed along with it: the engine's left context for the -2..+2 windows.
AUDIO_LEFT_CONTEXT = 2


# ------------------------------------------------------------------------------------------ index
def training_entries(path: Path) -> list[IndexEntry]:
    """The samples of one shard (tar headers only), each holding the members training reads (REQUIRED).

    A member that is not part of such a sample (a tar of other files) is an error naming the shard and key.
    """
    entries = index_shard(location(path))
    for entry in entries:
        missing = [ext for ext in REQUIRED if ext not in entry.extensions]
        if missing:
            raise ValueError(f"{path}: sample `{entry.key}` lacks {', '.join(missing)} (expected by training; "
                             "is this a `vividhead build` shard?)")
    return entries


def index_shards(paths: list[Path]) -> list[list[IndexEntry]]:
    """Index every shard (`training_entries`); shards holding no sample are dropped."""
    indexed = []
    for path in paths:
        entries = training_entries(path)
        if entries:
            indexed.append(entries)
    if not indexed:
        raise ValueError(f"no samples in {len(paths)} shard file(s): {[str(p) for p in paths][:3]}")
    return indexed


# ------------------------------------------------------------------------------------------ order
def epoch_order(sizes: list[int], seed: int, epoch: int, window: int) -> np.ndarray:
    """Flat sample indices of one epoch: shards in a seeded order, then shuffled in bounded windows."""
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    order = np.concatenate([np.arange(starts[s], starts[s] + sizes[s]) for s in rng.permutation(len(sizes))])
    for lo in range(0, len(order), window):
        order[lo: lo + window] = rng.permutation(order[lo: lo + window])
    return order


# ------------------------------------------------------------------------------------------ media
def decode_frames(mp4: bytes, wanted: list[int]) -> dict[int, np.ndarray]:
    """Decode the frames at the `wanted` indices (RGB uint8 [H, W, 3]), stopping after the last one."""
    return {frame.index: frame.image for frame in media.frames(mp4, keep=set(wanted).__contains__, stop=max(wanted) + 1)}


def fit_to(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (area) so the frame covers `size` = (height, width), then centre-crop to it."""
    import cv2

    h, w = frame.shape[:2]
    th, tw = size
    if (h, w) == (th, tw):
        return frame
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    resized = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    y, x = (nh - th) // 2, (nw - tw) // 2
    return resized[y: y + th, x: x + tw]


def nearest_bucket(height: int, width: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest (in log ratio) to height / width."""
    ratio = np.log(height / width)
    return min(buckets, key=lambda b: abs(np.log(b[0] / b[1]) - ratio))


def to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """RGB uint8 frames -> float32 [3, T, H, W] in [-1, 1]."""
    stacked = torch.from_numpy(np.stack(frames))                      # [T, H, W, 3]
    return stacked.permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


# ------------------------------------------------------------------------------------------ cache
@dataclass(frozen=True)
class LatentCache:
    """Latents of (clip key, window start, size) and of reference frames, one file each, per VAE."""

    root: Path
    vae_id: str

    def _path(self, key: str, name: str) -> Path:
        safe = key.replace("/", "__")
        return self.root / self.vae_id / safe / f"{name}.pt"

    def window_path(self, key: str, start: int, frames: int, size: tuple[int, int]) -> Path:
        return self._path(key, f"w{start:06d}_t{frames}_{size[0]}x{size[1]}")

    def ref_path(self, key: str, index: int, size: tuple[int, int]) -> Path:
        return self._path(key, f"r{index:06d}_{size[0]}x{size[1]}")

    @staticmethod
    def load(path: Path) -> torch.Tensor | None:
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None

    @staticmethod
    def store(path: Path, tensor: torch.Tensor) -> None:
        """Atomic: write to a unique temporary name, then rename (ranks may race on one key)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(tensor.detach().to("cpu").contiguous(), tmp)
        os.replace(tmp, path)


def module_fingerprint(module: torch.nn.Module, extra: str = "") -> str:
    """A short id of a module: class, config and parameter bytes. Keys the latent cache."""
    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}|{extra}".encode())
    config = getattr(module, "config", None)
    if config is not None:
        digest.update(json.dumps(dict(config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return f"{type(module).__name__}-{digest.hexdigest()[:16]}"


# ------------------------------------------------------------------------------------------ dataset
@dataclass
class WindowSampler:
    """Draws the window, reference frame and motion mode of sample g."""

    frames: int
    motion_full_prob: float
    seed: int
    grid: int = 1             # window starts on multiples of this (the latent cache uses a grid)

    def draw(self, g: int, n_frames: int) -> tuple[int, int, bool]:
        rng = np.random.default_rng([self.seed, g, 0xD1CE])
        starts = np.arange(0, n_frames - self.frames + 1, self.grid)
        start = int(rng.choice(starts))
        ref_index = int(rng.integers(0, n_frames))
        full_motion = bool(rng.random() < self.motion_full_prob)
        return start, ref_index, full_motion


@dataclass
class ShardDataset(IterableDataset):
    """The infinite, deterministic, resumable sample stream of one rank (see the module docstring)."""

    shards: list[Path]
    frames: int = 33
    buckets: list[tuple[int, int]] = field(default_factory=lambda: [(512, 512)])
    motion_full_prob: float = 0.9
    shuffle_window: int = 64
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    start_position: int = 0                   # first j (per-rank sample number) to yield
    cache: LatentCache | None = None
    cache_stride: int = 4

    def __post_init__(self) -> None:
        super().__init__()
        self.index = index_shards([location(p) for p in self.shards])
        self.sizes = [len(entries) for entries in self.index]
        self.flat = [entry for entries in self.index for entry in entries]
        self.sampler = WindowSampler(self.frames, self.motion_full_prob, self.seed,
                                     grid=self.cache_stride if self.cache else 1)
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        """Samples per epoch (over all ranks)."""
        return len(self.flat)

    # The per-rank stream ------------------------------------------------------------------------
    def global_position(self, j: int) -> int:
        return j * self.world_size + self.rank

    def entry_at(self, g: int) -> IndexEntry:
        epoch, offset = divmod(g, len(self.flat))
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(self.sizes, self.seed, epoch, self.shuffle_window)}
        return self.flat[int(self._orders[epoch][offset])]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        # Worker w takes j = start + w, start + w + K, ...: the loader's round robin restores j order.
        for j in count(self.start_position + worker, workers):
            yield self.sample(j)

    # One sample ---------------------------------------------------------------------------------
    def sample(self, j: int) -> dict[str, Any]:
        """Sample number j of this rank; a clip too short for a window gives a `skip` record."""
        g = self.global_position(j)
        entry = self.entry_at(g)
        audio = media.read_npy(read_member(entry, "audio.npy"))
        if audio.ndim != 3:
            raise ValueError(f"{entry.shard}: `{entry.key}`.audio.npy has shape {audio.shape}, "
                             "expected [frames, layers, dim]")
        n_frames = len(audio)
        meta = self._meta(entry)
        if isinstance(meta.get("n_frames"), int) and meta["n_frames"] > 0:
            n_frames = min(n_frames, meta["n_frames"])
        base = {"key": entry.key, "position": j}
        if n_frames < self.frames:
            return base | {"skip": f"{n_frames} frames < window of {self.frames}"}
        start, ref_index, full_motion = self.sampler.draw(g, n_frames)
        rows = np.arange(start - AUDIO_LEFT_CONTEXT, start + self.frames).clip(0, None)
        base |= {"start": start, "ref_index": ref_index, "full_motion": full_motion,
                 "audio": torch.from_numpy(audio[rows].astype(np.float32))}
        cached = self._from_cache(entry.key, start, ref_index)
        if cached is not None:
            return base | cached
        wanted = list(range(start, start + self.frames)) + [ref_index]
        try:
            decoded = decode_frames(read_member(entry, "mp4"), wanted)
        except Exception as exc:  # a corrupt clip is skipped and reported, not fatal to a long run
            return base | {"skip": f"{entry.shard.name}: mp4 does not decode ({type(exc).__name__}: {exc})"}
        if len(decoded) < len(set(wanted)):
            return base | {"skip": f"mp4 decodes to fewer frames than audio.npy rows ({n_frames})"}
        h, w = decoded[start].shape[:2]
        size = nearest_bucket(h, w, self.buckets)
        window = [fit_to(decoded[i], size) for i in range(start, start + self.frames)]
        return base | {"video": to_tensor(window), "ref": to_tensor([fit_to(decoded[ref_index], size)])[:, 0],
                       "size": size}

    def _meta(self, entry: IndexEntry) -> dict[str, Any]:
        if entry.member("json") is None:
            return {}
        try:
            return json.loads(read_member(entry, "json"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{entry.shard}: `{entry.key}`.json is not valid JSON ({exc})") from exc

    def _from_cache(self, key: str, start: int, ref_index: int) -> dict[str, Any] | None:
        if self.cache is None:
            return None
        for size in self.buckets:
            latent = LatentCache.load(self.cache.window_path(key, start, self.frames, size))
            ref_latent = LatentCache.load(self.cache.ref_path(key, ref_index, size))
            if latent is not None and ref_latent is not None:
                return {"latent": latent, "ref_latent": ref_latent, "size": size}
        return None


# ------------------------------------------------------------------------------------------ batches
@dataclass
class BucketBatcher:
    """Groups consecutive samples of one rank into batches of one size bucket.

    State for exact resume: `next_position` (the next j to pull) and the positions waiting in
    partly filled buckets, which are re-read from the dataset on resume.
    """

    batch_size: int
    next_position: int = 0
    pending: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)
    skipped: int = 0
    skip_examples: list[str] = field(default_factory=list)     # the first few reasons, "key: reason"

    def state(self) -> dict[str, Any]:
        return {"next_position": self.next_position,
                "pending": [s["position"] for group in self.pending.values() for s in group]}

    def restore(self, state: dict[str, Any], dataset: ShardDataset) -> None:
        self.next_position = int(state["next_position"])
        self.pending = {}
        for j in sorted(state.get("pending", [])):
            self._add(dataset.sample(j))

    def _add(self, sample: dict[str, Any]) -> list[dict[str, Any]] | None:
        if "skip" in sample:
            self.skipped += 1
            if len(self.skip_examples) < 5:
                self.skip_examples.append(f"{sample['key']}: {sample['skip']}")
            return None
        group = self.pending.setdefault(tuple(sample["size"]), [])
        group.append(sample)
        if len(group) < self.batch_size:
            return None
        del self.pending[tuple(sample["size"])]
        return group

    def batches(self, samples: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """Lists of `batch_size` samples of one bucket (samples may hold pixels or cached latents)."""
        for sample in samples:
            if sample["position"] != self.next_position:
                raise RuntimeError(f"sample stream out of order: got position {sample['position']}, "
                                   f"expected {self.next_position}")
            self.next_position += 1
            group = self._add(sample)
            if group is not None:
                yield group


def sample_stream(dataset: ShardDataset, num_workers: int) -> Iterator[dict[str, Any]]:
    """Single samples in j order from `dataset.start_position`, with `num_workers` loader processes."""
    if num_workers == 0:
        return iter(dataset)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers,
                                         persistent_workers=False, prefetch_factor=2,
                                         multiprocessing_context="fork" if os.name == "posix" else None)
    return iter(loader)
