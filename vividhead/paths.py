"""Paths and globs as users write them: `~`, paths relative to a config file's folder, and `*?[` globs.

One rule for the build's sources.yaml, the training config's shards and `vividhead inspect` /
`vividhead eval` arguments: a relative path resolves against `base` (the folder of the file that
names it, or the working directory), and a pattern with glob characters matches recursively (`**`).

`**` follows symlinked folders but enters each real folder once, so a symlink loop ends (the standard
library's glob would walk a loop until the path length limit, 2^depth paths for two links); a source
directory is walked by the same rule (`walk_once`).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterator
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
    if not is_glob(pattern):
        return [path] if path.exists() else []
    if "**" not in path.parts:                         # bounded depth: the standard glob cannot loop
        return sorted(Path(match) for match in glob.glob(str(path)) if os.path.exists(match))
    return sorted(set(_recursive_glob(path)))


def walk_once(root: Path, recursive: bool = True) -> Iterator[tuple[Path, list[str], list[str]]]:
    """`os.walk(root)` following symlinked folders, each real folder entered once (symlink loops end)."""
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        if not recursive:
            dirs[:] = []
        yield Path(folder), dirs, sorted(names)


def _recursive_glob(pattern: Path) -> Iterator[Path]:
    """The existing paths matching a pattern with `**`, by one `walk_once` under its literal prefix."""
    parts = pattern.parts
    literal = next(i for i, part in enumerate(parts) if is_glob(part))
    root, wanted = Path(*parts[:literal]) if literal else Path(), parts[literal:]
    if not root.is_dir():
        return
    for folder, dirs, names in walk_once(root):
        relative = folder.relative_to(root).parts
        if _matches(wanted, relative):
            yield folder
        for name in dirs + names:
            if _matches(wanted, (*relative, name)):
                yield folder / name


def _matches(pattern: tuple[str, ...], names: tuple[str, ...]) -> bool:
    """Glob's rules, part by part: `**` spans zero or more folders, and a wildcard never matches a leading dot."""
    if not pattern:
        return not names
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        for skip in range(len(names) + 1):
            if _matches(rest, names[skip:]):
                return True
            if skip < len(names) and names[skip].startswith("."):
                return False
        return False
    if not names or (names[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(names[0], head) and _matches(rest, names[1:])
