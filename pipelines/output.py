"""The layout of a build's output directory: every path the build writes, named in one place.

Readers see `shards/*.tar`, `manifest/*.parquet`, `manifest.parquet` and `build.json`. Everything
whose name starts with a dot is the build's own working state: `.segments/` holds clips committed
but not yet packed into a shard, `.staging/` the files of clips being made, `.downloads/` fetched
URLs, `.cache/` the MD5s of sources and the resume ledger. See docs/build.md, "Shards and commits".

The root may be a bucket prefix (`s3://bucket/out`, a `vividhead.storage.ObjectPath`): then every
committed file is an object, and only the files being made (`staging`) and fetched URLs
(`downloads`) stay on the local disk of the worker that makes them.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vividhead.storage import Location, ObjectPath, sibling

PACK_NAME = re.compile(r"^shard-(\d{6,})$")


@dataclass(frozen=True)
class OutputDir:
    """Paths of a build's output directory."""

    root: Location

    @property
    def remote(self) -> bool:
        """True when the output is in a bucket."""
        return isinstance(self.root, ObjectPath)

    def at(self, text: str) -> Location:
        """A path this build recorded (a segment's), on the output's store."""
        return sibling(self.root, text)

    def _local(self, name: str) -> Path:
        """A worker-local folder of a bucket output's working files (`name` under the temporary folder)."""
        tag = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"vividhead-{tag}" / name

    @property
    def shards(self) -> Location:
        return self.root / "shards"

    @property
    def parts(self) -> Location:
        return self.root / "manifest"

    @property
    def segments(self) -> Location:
        return self.root / ".segments"

    @property
    def staging(self) -> Path:
        return self._local("staging") if self.remote else self.root / ".staging"

    @property
    def downloads(self) -> Path:
        return self._local("downloads") if self.remote else self.root / ".downloads"

    @property
    def md5_cache(self) -> Location:
        return self.root / ".cache" / "md5.json"

    @property
    def ledger(self) -> Location:
        return self.root / ".cache" / "ledger.parquet"

    def shard(self, name: str) -> Location:
        return self.shards / f"{name}.tar"

    def part(self, name: str) -> Location:
        return self.parts / f"{name}.parquet"

    def segment(self, unit: str, key: str) -> Location:
        return self.segments / unit / f"{key}.tar"

    def intent(self, name: str) -> Location:
        """The list of segments a pack is turning into shard `name` (deleted when the pack is done)."""
        return self.segments / f"{name}.pack.json"


def pack_name(number: int) -> str:
    """The name of the n-th shard and of its manifest part."""
    return f"shard-{number:06d}"


def pack_number(name: str) -> int | None:
    """The number of a shard or part name (`shard-000012` -> 12), None for other names."""
    found = PACK_NAME.match(name)
    return int(found.group(1)) if found else None
