"""Paths and globs as users write them: `~`, paths relative to a config file's folder, and `*?[` globs.

One rule for the build's sources.yaml, the training config's shards and `vividhead inspect` /
`vividhead eval` arguments: a relative path resolves against `base` (the folder of the file that
names it, or the working directory), and a pattern with glob characters matches recursively (`**`).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str | Path) -> bool:
    """True when `pattern` holds a glob character."""
    return bool(GLOB_CHARS & set(str(pattern)))


def resolve_path(text: str | Path, base: Path | None = None) -> Path:
    """`text` with `~` expanded; a relative path is joined to `base` (when given) and normalised (`a/../b` is `b`)."""
    path = Path(os.path.expanduser(str(text)))
    if base is not None and not path.is_absolute():
        path = Path(os.path.normpath(Path(base) / path))
    return path


def expand(pattern: str | Path, base: Path | None = None) -> list[Path]:
    """The existing paths that `pattern` names: the glob's matches, sorted, or the path itself.

    Returns [] when nothing exists; callers say what they expected to find.
    """
    path = resolve_path(pattern, base)
    if is_glob(pattern):
        matches = glob.glob(str(path), recursive=True)
        return sorted(Path(match) for match in matches if os.path.exists(match))   # `x/**` yields `x/` even if absent
    return [path] if path.exists() else []
