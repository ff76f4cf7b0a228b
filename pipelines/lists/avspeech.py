"""AVSpeech `avspeech_train.csv` / `avspeech_test.csv`: headerless rows `YouTube ID, start, end, X, Y`.

    AvWWVOgaMlk,90.000000,93.566667,0.586719,0.311111

start and end are seconds; X, Y is the speaker's face centre as fractions of the frame: a point, so
the face stage takes the detected face that contains it. IDs may begin with `-`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from vividhead.pipelines.lists.common import ListError, Listed, grouped
from vividhead.pipelines.records import FaceBox


def read(path: Path) -> list[Listed]:
    files = [path] if path.is_file() else sorted(path.glob("*.csv"))
    if not files:
        raise ListError(f"{path}: no AVSpeech .csv file")
    rows = []
    for file in files:
        for number, parts in enumerate(csv.reader(io.StringIO(file.read_text(encoding="utf-8-sig"))), 1):
            if not parts or not "".join(parts).strip():
                continue
            if len(parts) != 5:
                raise ListError(f"{file}:{number}: expected `ID,start,end,x,y` (no header), got {parts!r}")
            try:
                start, end, x, y = (float(v) for v in parts[1:])
            except ValueError:
                raise ListError(f"{file}:{number}: expected numbers after the ID, got {parts!r}") from None
            rows.append((parts[0].strip(), start, end, FaceBox(x, y, x, y), {}))
    return grouped(rows)
