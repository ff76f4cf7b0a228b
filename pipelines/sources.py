"""Stage 1 sources: expand sources.yaml into `Source` records, fetch URLs, hash the bytes.

Paths resolve against the sources file's folder. A path may be a file, a glob or a directory; a
directory and a `**` glob follow symlinked folders but enter each real folder once, so loops end. Sources are
deduplicated by source id here; by MD5 once the bytes are hashed (`dedupe_by_md5`).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from vividhead.paths import expand, is_glob, resolve_path, walk_once
from vividhead.pipelines.bucket_sources import expand_object_path
from vividhead.pipelines.config import BoxModel, RemoteConfig, RunConfig, SourceEntry, SourcesFile
from vividhead.pipelines.lists import expand_list, video_url
from vividhead.pipelines.records import FaceBox, Source, SourceKind
from vividhead.pipelines.remote.hosts import HostGate
from vividhead.pipelines.remote.http import Limits, fetch_file
from vividhead.storage import StorageConfig, is_object_url


def expand_sources(sources: SourcesFile, base: Path,
                   storage: StorageConfig | None = None) -> tuple[list[Source], list[tuple[Source, str, str]]]:
    """All sources in listed order, deduplicated by id, and the entries that matched nothing.

    Returns (sources, missing) where missing holds (source, reason, detail) for a path that does not
    exist or a glob/directory that holds no video.
    """
    found: dict[str, Source] = {}
    missing: list[tuple[Source, str, str]] = []
    extensions = {e.lower() for e in sources.extensions}
    for entry in sources.sources:
        attributes = tuple((k, v) for k, v in entry.attributes.model_dump().items() if v is not None)
        ranges = tuple((r.start, r.end) for r in entry.ranges)
        boxes = tuple(_face_box(r.box) for r in entry.ranges) if any(r.box for r in entry.ranges) else ()

        def make(uri: str, kind: SourceKind = "path") -> Source:
            return Source(f"{entry.dataset}:{uri}", uri, entry.dataset, ranges, attributes, kind=kind, boxes=boxes)

        if entry.url is not None:
            found.setdefault(make(entry.url).source_id, make(entry.url, "url"))
            continue
        if entry.video is not None:
            _add(found, make(video_url(entry.video), "video"))
            continue
        if entry.list_ is not None:
            for source in list_sources(entry, base):
                _add(found, source)
            continue
        if is_object_url(entry.path):                  # a bucket: listed here, read by the workers
            urls, problem = expand_object_path(entry.path, extensions, entry.recursive, storage or StorageConfig())
            missing += [(make(entry.path), *problem)] if problem else []
            for uri in urls:
                found.setdefault(make(uri).source_id, make(uri))
            continue
        paths, problem = _expand_path(entry, base, extensions)
        if problem:
            source = make(str(resolve_path(entry.path, base)))
            missing.append((source, *problem))
        for path in paths:
            source = make(str(path))
            found.setdefault(source.source_id, source)
    return list(found.values()), missing


def list_sources(entry: SourceEntry, base: Path) -> list[Source]:
    """The `video` sources of a `list:` entry: the list's IDs, ranges, boxes and attributes (the list's
    attributes win over the entry's). Its dataset is the entry's, else the list format's name."""
    ref = entry.list_
    dataset = entry.dataset if entry.dataset != "default" else ref.format
    defaults = {k: v for k, v in entry.attributes.model_dump().items() if v is not None}
    out = []
    for listed in expand_list(ref.format, resolve_path(ref.path, base), ref.fps):
        uri = video_url(listed.video, ref.url_template)
        given = tuple({**defaults, **listed.attributes}.items())
        boxes = tuple(listed.boxes) if any(b is not None for b in listed.boxes) else ()
        out.append(Source(f"{dataset}:{uri}", uri, dataset, tuple(listed.ranges), given, kind="video", boxes=boxes))
    return out


def _add(found: dict[str, Source], source: Source) -> None:
    """Add a source; a video listed again (twice in a list, or in two entries) gains the new ranges."""
    old = found.get(source.source_id)
    if old is None:
        found[source.source_id] = source
        return
    new = [(r, b) for r, b in zip(source.ranges, source.boxes or (None,) * len(source.ranges)) if r not in old.ranges]
    if new and old.ranges:
        boxes = (old.boxes or (None,) * len(old.ranges)) + tuple(b for _, b in new)
        found[source.source_id] = replace(old, ranges=old.ranges + tuple(r for r, _ in new),
                                          boxes=boxes if any(b is not None for b in boxes) else ())


def _face_box(box: BoxModel | None) -> FaceBox | None:
    return None if box is None else FaceBox(box.x0, box.y0, box.x1, box.y1, box.ref_width, box.ref_height)


def _expand_path(entry: SourceEntry, base: Path, extensions: set[str]) -> tuple[list[Path], tuple[str, str] | None]:
    path = resolve_path(entry.path, base)
    if is_glob(entry.path):
        files = [p for p in expand(entry.path, base) if p.is_file() and p.suffix.lower() in extensions]
        return files, None if files else ("no_match", f"{entry.path}: the glob matches no video file")
    if path.is_dir():
        files = _walk(path, extensions, entry.recursive)
        return files, None if files else ("no_match", f"{path}: the directory holds no video file")
    if path.is_file():
        return [path], None
    return [], ("missing_file", f"{path}: no such file or directory")


def _walk(root: Path, extensions: set[str], recursive: bool) -> list[Path]:
    """Video files under root; each real directory is visited once, so symlink loops end."""
    return [folder / name for folder, _, names in walk_once(root, recursive) for name in names
            if Path(name).suffix.lower() in extensions and (folder / name).is_file()]


def fetch(source: Source, downloads: Path, run: RunConfig, remote: RemoteConfig | None = None) -> Path:
    """The local file of a source: the path itself, or the URL downloaded into `downloads` (pipelines/remote/),
    polite to its host as `remote` says (per-host slots, spacing, 429 backoff)."""
    if not source.uri.startswith(("http://", "https://")):
        return Path(source.uri)
    remote = remote or RemoteConfig()
    gate = HostGate(downloads / ".hosts", remote.per_host, remote.spacing)
    return fetch_file(source.uri, downloads, Limits.of(run), gate, remote.retries, remote.backoff, remote.max_backoff)


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def with_md5(source: Source, path: Path) -> Source:
    return replace(source, md5=md5_of(path))


def dedupe_by_md5(sources: list[Source]) -> tuple[list[Source], list[tuple[Source, Source]]]:
    """First source per MD5 in listed order, and (duplicate, original) pairs for the rest."""
    first: dict[str, Source] = {}
    duplicates = []
    for source in sources:
        if source.md5 in first:
            duplicates.append((source, first[source.md5]))
        else:
            first[source.md5] = source
    return list(first.values()), duplicates
