"""Stage 1 sources: expand sources.yaml into `Source` records, fetch URLs, hash the bytes.

Paths resolve against the sources file's folder. A path may be a file, a glob or a directory; a
directory and a `**` glob follow symlinked folders but enter each real folder once, so loops end. Sources are
deduplicated by source id here; by MD5 once the bytes are hashed (`dedupe_by_md5`).
"""

from __future__ import annotations

import hashlib
import socket
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

from vividhead.media import MediaError
from vividhead.pipelines.bucket_sources import expand_object_path
from vividhead.paths import expand, is_glob, resolve_path, walk_once
from vividhead.pipelines.config import RunConfig, SourceEntry, SourcesFile
from vividhead.pipelines.records import Source
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

        def make(uri: str) -> Source:
            return Source(f"{entry.dataset}:{uri}", uri, entry.dataset, ranges, attributes)

        if entry.url is not None:
            found.setdefault(make(entry.url).source_id, make(entry.url))
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


def fetch(source: Source, downloads: Path, run: RunConfig) -> Path:
    """The local file of a source: the path itself, or the URL downloaded into `downloads`."""
    if not source.uri.startswith(("http://", "https://")):
        return Path(source.uri)
    name = hashlib.sha1(source.uri.encode()).hexdigest()[:16]
    target = downloads / f"{name}{Path(source.uri.split('?')[0]).suffix[:8]}"
    if target.exists():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    partial = downloads / f".{target.name}.part"
    try:
        _download(source.uri, partial, run)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target


def _download(url: str, partial: Path, run: RunConfig) -> None:
    """Stream `url` into `partial`; timeouts and the size cap raise MediaError with a reason."""
    try:
        with urllib.request.urlopen(url, timeout=run.download_timeout) as response:
            length = int(response.headers.get("Content-Length") or 0)
            if length > run.max_download_bytes:
                raise MediaError("download_too_large",
                                 f"{url}: {length} bytes > run.max_download_bytes {run.max_download_bytes}")
            size = 0
            with open(partial, "wb") as handle:
                while chunk := response.read(1 << 20):
                    size += len(chunk)
                    if size > run.max_download_bytes:
                        raise MediaError("download_too_large",
                                         f"{url}: more than run.max_download_bytes {run.max_download_bytes} bytes")
                    handle.write(chunk)
    except urllib.error.HTTPError as err:
        raise MediaError("download_failed", f"{url}: HTTP {err.code} {err.reason}") from None
    except (socket.timeout, TimeoutError):
        raise MediaError("download_stalled", f"{url}: no data for run.download_timeout {run.download_timeout} s") from None
    except urllib.error.URLError as err:
        raise MediaError("download_failed", f"{url}: {err.reason}") from None


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
