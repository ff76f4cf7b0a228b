"""VoxCeleb2 per-utterance txt files (`id*/VIDEO/00001.txt`): a header, then one row per frame.

    Identity  : 	id00012
    Reference : 	21Uxsk56VDQ
    Offset    : 	1
    FV Conf   : 	16.975	(1)
    ASD Conf  : 	4.350

    FRAME 	X 	Y 	W 	H
    000096 	0.567 	0.263 	0.137 	0.243

`Reference` is the YouTube ID. FRAME counts 25 fps frames of the original video; X Y W H is the face
box as fractions of the frame. An utterance is the range [first frame, last frame + 1) / 25 with the
box of its first frame. Utterances of one video become the ranges of one source.
"""

from __future__ import annotations

from pathlib import Path

from vividhead.pipelines.lists.common import ListError, Listed, grouped, read_lines
from vividhead.pipelines.records import FaceBox

FPS = 25.0


def read(path: Path) -> list[Listed]:
    """Every utterance txt under a folder (sorted), or the one given."""
    files = [path] if path.is_file() else sorted(path.rglob("*.txt"))
    if not files:
        raise ListError(f"{path}: no VoxCeleb2 utterance .txt file")
    return grouped([_utterance(file) for file in files])


def _utterance(path: Path) -> tuple[str, float, float, FaceBox | None, dict[str, str]]:
    lines = read_lines(path)
    header = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines if ":" in line)}
    if "Reference" not in header:
        raise ListError(f"{path}: no `Reference :` line (the YouTube ID)")
    try:
        start = next(i for i, line in enumerate(lines) if line.split()[0] == "FRAME") + 1
        rows = [[float(v) for v in line.split()[:5]] for line in lines[start:]]
    except (StopIteration, ValueError) as err:
        raise ListError(f"{path}: expected a `FRAME X Y W H` header and numeric rows ({err})") from None
    if not rows:
        raise ListError(f"{path}: no frame rows after the FRAME header")
    frame, x, y, w, h = rows[0]
    return header["Reference"].split()[0], frame / FPS, (rows[-1][0] + 1) / FPS, FaceBox(x, y, x + w, y + h), {}
