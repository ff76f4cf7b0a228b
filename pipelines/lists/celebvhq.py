"""CelebV-HQ `celebvhq_info.json`: `{"meta_info": {...mappings}, "clips": {"ID_n": {...}}}` where a clip has

- `ytb_id`: the YouTube ID;
- `duration`: `{"start_sec", "end_sec"}` in seconds;
- `bbox`: `{"top", "bottom", "left", "right"}` as fractions of the frame height / width;
- `attributes`: `appearance` (0/1 per name of `meta_info.appearance_mapping`), `action`, `emotion`.

Of the attributes, `male` of the appearance mapping gives the `gender` (male / female); the others
have no column in the manifest and are not carried.
"""

from __future__ import annotations

import json
from pathlib import Path

from vividhead.pipelines.lists.common import ListError, Listed, grouped
from vividhead.pipelines.records import FaceBox

FILE = "celebvhq_info.json"


def read(path: Path) -> list[Listed]:
    file = path / FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
        clips = data["clips"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ListError(f"{file}: expected CelebV-HQ's JSON with a `clips` object ({err})") from None
    appearance = [str(name).lower() for name in data.get("meta_info", {}).get("appearance_mapping", [])]
    rows = []
    for key, clip in clips.items():
        try:
            span, box = clip["duration"], clip["bbox"]
            rows.append((clip["ytb_id"], float(span["start_sec"]), float(span["end_sec"]),
                         FaceBox(box["left"], box["top"], box["right"], box["bottom"]),
                         _attributes(clip.get("attributes", {}), appearance)))
        except (KeyError, TypeError, ValueError) as err:
            raise ListError(f"{file}: clip {key!r}: expected ytb_id, duration.start_sec/end_sec and bbox ({err})") \
                from None
    return grouped(rows)


def _attributes(attributes: dict, mapping: list[str]) -> dict[str, str]:
    flags = attributes.get("appearance") or []
    if "male" in mapping and mapping.index("male") < len(flags):
        return {"gender": "male" if flags[mapping.index("male")] else "female"}
    return {}
