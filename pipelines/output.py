"""The layout of a build's output directory: every path the build writes, named in one place.

Readers see `shards/*.tar`, `manifest/*.parquet`, `manifest.parquet` and `build.json`. Everything
whose name starts with a dot is the build's own working state: `.segments/` holds clips committed
but not yet packed into a shard, `.staging/` the files of clips being made, `.downloads/` fetched
URLs, `.cache/` the MD5s of sources and the resume ledger. See docs/build.md, "Shards and commits".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PACK_NAME = re.compile(r"^shard-(\d{6,})$")


@dataclass(frozen=True)
class OutputDir:
    """Paths of a build's output directory."""

    root: Path

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def parts(self) -> Path:
        return self.root / "manifest"

    @property
    def segments(self) -> Path:
        return self.root / ".segments"

    @property
    def staging(self) -> Path:
        return self.root / ".staging"

    @property
    def downloads(self) -> Path:
        return self.root / ".downloads"

    @property
    def md5_cache(self) -> Path:
        return self.root / ".cache" / "md5.json"

    @property
    def ledger(self) -> Path:
        return self.root / ".cache" / "ledger.parquet"

    def shard(self, name: str) -> Path:
        return self.shards / f"{name}.tar"

    def part(self, name: str) -> Path:
        return self.parts / f"{name}.parquet"

    def segment(self, unit: str, key: str) -> Path:
        return self.segments / unit / f"{key}.tar"

    def intent(self, name: str) -> Path:
        """The list of segments a pack is turning into shard `name` (deleted when the pack is done)."""
        return self.segments / f"{name}.pack.json"


def pack_name(number: int) -> str:
    """The name of the n-th shard and of its manifest part."""
    return f"shard-{number:06d}"


def pack_number(name: str) -> int | None:
    """The number of a shard or part name (`shard-000012` -> 12), None for other names."""
    found = PACK_NAME.match(name)
    return int(found.group(1)) if found else None
