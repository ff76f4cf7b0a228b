"""TalkingHead-1KH (github.com/tcwang0509/TalkingHead-1KH, `data_list.zip`): `{split}_video_ids.txt` with one
YouTube ID a line, and `{split}_video_tubes.txt` with one talking-head tube a line:

    --Y9imYnfBw_0000, 720, 1280, 0, 271, 504, 63, 792, 351

that is `ID_CHUNK, H, W, S, E, L, T, R, B`. The dataset's own scripts split each video into 1-minute
chunks (`ID_0000` is 0:00-1:00); S and E are frame indices inside the chunk (E inclusive); L T R B is the
box in pixels of an H x W frame. A range is chunk x 60 + [S, E + 1) / fps: the list gives frames, not
seconds, so the frame rate is the `fps` of the `list:` entry (default 25). The chunk boundaries of the
dataset's ffmpeg split fall on keyframes, so ranges may be off by a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path

from vividhead.pipelines.lists.common import ListError, Listed, grouped, read_lines
from vividhead.pipelines.records import FaceBox

DEFAULT_FPS = 25.0
CHUNK_SECONDS = 60.0


def read(path: Path, fps: float = DEFAULT_FPS) -> list[Listed]:
    files = [path] if path.is_file() else sorted(path.glob("*_video_tubes.txt"))
    if not files:
        raise ListError(f"{path}: no *_video_tubes.txt file (TalkingHead-1KH data_list)")
    rows = []
    for file in files:
        for number, line in enumerate(read_lines(file), 1):
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 9:
                raise ListError(f"{file}:{number}: expected `ID_CHUNK, H, W, S, E, L, T, R, B`, got {line!r}")
            video, _, chunk = parts[0].rpartition("_")
            try:
                h, w, s, e, left, top, right, bottom = (int(v) for v in parts[1:])
                offset = int(chunk) * CHUNK_SECONDS
            except ValueError:
                raise ListError(f"{file}:{number}: expected integers after the tube name, got {line!r}") from None
            rows.append((video, offset + s / fps, offset + (e + 1) / fps,
                         FaceBox(left, top, right, bottom, ref_width=w, ref_height=h), {}))
    return grouped(rows)
