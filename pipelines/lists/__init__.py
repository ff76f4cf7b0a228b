"""Importers of the lists that talking-head datasets are published as (docs/sources.md).

Each importer reads one list format and yields `Listed` videos: a YouTube ID or URL, its ranges in
seconds, the list's face box per range where it gives one, and the list's attributes (recorded as
`given`). `expand_list` picks the importer for a `list:` entry of sources.yaml; nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vividhead.pipelines.lists import avspeech, celebvhq, hdtf, talkinghead1kh, talkvid, voxceleb2
from vividhead.pipelines.lists.common import Listed, ListError, video_url

IMPORTERS: dict[str, Callable[..., list[Listed]]] = {
    "hdtf": hdtf.read,
    "voxceleb2": voxceleb2.read,
    "celebvhq": celebvhq.read,
    "talkinghead1kh": talkinghead1kh.read,
    "avspeech": avspeech.read,
    "talkvid": talkvid.read,
}


def expand_list(fmt: str, path: Path, fps: float | None = None) -> list[Listed]:
    """The videos of one list, in listed order, each once with all its ranges."""
    if not path.exists():
        raise ListError(f"{path}: no such list file or folder (list format {fmt})")
    if fmt == "talkinghead1kh":
        return IMPORTERS[fmt](path, fps=fps or talkinghead1kh.DEFAULT_FPS)
    return IMPORTERS[fmt](path)


__all__ = ["IMPORTERS", "ListError", "Listed", "expand_list", "video_url"]
