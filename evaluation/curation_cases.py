"""The dev footage (../shared/media/dev) as curation test cases: what DEV.md expects, and derived copies.

`dev_clips(folder)` reads DEV.md's table: each clip with its expected decision. A clip is a speaker
(in sync, to be kept by the sync check) when DEV.md says "keep" or "in sync"; it should survive the
whole build when the expected decision starts with "keep".

The derived cases are made with ffmpeg (argument lists, never a shell) in a folder the caller owns;
they are never written into the project:
- `shifted`: the audio delayed (ms > 0) or advanced (ms < 0), the video stream copied unchanged;
- `dubbed`: the video of one clip with the audio of another (one speaker's voice on another's face,
  or a voice-over on a face that does not speak);
- `moving`: a static stretch, then the picture slides sideways so the face leaves the frame at a known speed;
- `side_by_side`: a split screen of two speakers, as in a remote interview.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DevClip:
    """One row of DEV.md."""

    file: str
    shows: str
    expected: str

    @property
    def speaker(self) -> bool:
        """Someone talking in sync with the audio (kept by the sync check)."""
        return self.expected.startswith("keep") or self.expected.startswith("in sync") or "in sync as a speaker" in self.expected

    @property
    def keep(self) -> bool:
        """A curator keeps it through the whole build at default settings."""
        return self.expected.startswith("keep")

    @property
    def reject_kinds(self) -> list[str]:
        """What DEV.md rejects it for: 'reject: two people on screen, music' -> [two people on screen, music]."""
        if not self.expected.startswith("reject:"):
            return []
        return [kind.strip() for kind in re.split(r"[,;]", self.expected.removeprefix("reject:")) if kind.strip()
                and "in sync" not in kind]


def dev_clips(folder: Path) -> list[DevClip]:
    """The clips DEV.md lists whose files are present, in its order."""
    rows = []
    for line in (folder / "DEV.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith(".mp4") and (folder / cells[0]).is_file():
            rows.append(DevClip(cells[0], cells[2], cells[3]))
    return rows


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def shifted(source: Path, ms: int, out: Path) -> Path:
    """A copy of `source` with its audio delayed by `ms` (> 0) or advanced (< 0); same length, video copied."""
    delay = f"adelay={ms}:all=1," if ms > 0 else f"atrim=start={-ms / 1000},asetpts=PTS-STARTPTS," if ms < 0 else ""
    _ffmpeg("-i", str(source), "-map", "0:v:0", "-map", "0:a:0", "-c:v", "copy",
            "-af", f"{delay}apad", "-shortest", "-c:a", "aac", "-b:a", "128k", str(out))
    return out


def dubbed(face: Path, voice: Path, out: Path) -> Path:
    """The video of `face` with the audio of `voice`, as long as the shorter of the two."""
    _ffmpeg("-i", str(face), "-i", str(voice), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
            "-c:a", "aac", "-b:a", "128k", "-shortest", str(out))
    return out


def moving(source: Path, still_seconds: float, speed: float, out: Path, seconds: float) -> Path:
    """`source` still for `still_seconds`, then sliding left by `speed` frame widths per second, so the face
    leaves the frame: the picture is placed on a black canvas twice as wide and a window of the
    original width moves right across it. Audio kept; `seconds` long."""
    window = (f"pad=iw*2:ih:0:0,crop=iw/2:ih:x='if(lt(t,{still_seconds}),0,"
              f"min(iw/2,(t-{still_seconds})*{speed}*iw/2))':y=0")
    _ffmpeg("-i", str(source), "-t", str(seconds), "-map", "0:v:0", "-map", "0:a:0", "-vf", window,
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-c:a", "aac", "-b:a", "128k", str(out))
    return out


def side_by_side(left: Path, right: Path, out: Path, seconds: float) -> Path:
    """A split screen: `left` and `right` scaled to the same height and stacked side by side, with the
    left clip's audio; `seconds` long."""
    _ffmpeg("-i", str(left), "-i", str(right), "-t", str(seconds), "-filter_complex",
            "[0:v]fps=25,scale=-2:512[l];[1:v]fps=25,scale=-2:512[r];[l][r]hstack=inputs=2[v]",
            "-map", "[v]", "-map", "0:a:0", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
            "-c:a", "aac", "-b:a", "128k", str(out))
    return out
