"""TalkVid metadata (huggingface.co/datasets/FreedomIntelligence/TalkVid): a JSON array (or JSON lines) of clips

    {"id": "...", "start-time": 0.1, "end-time": 5.14, "fps": 24.0,
     "info": {"Video Link": "https://www.youtube.com/watch?v=Tr6MMsoWAog", "Gender": "Male",
              "Age Group": "60+", "Ethnicity": "White", "Language": "English", ...}, ...}

start-time and end-time are seconds. The person's Gender, Age Group, Ethnicity and Language become the
given attributes. TalkVid gives no face box.
"""

from __future__ import annotations

import json
from pathlib import Path

from vividhead.pipelines.lists.common import ListError, Listed, grouped

ATTRIBUTES = {"Gender": "gender", "Age Group": "age", "Ethnicity": "ethnicity", "Language": "language"}


def read(path: Path) -> list[Listed]:
    files = [path] if path.is_file() else sorted([*path.glob("*.json"), *path.glob("*.jsonl")])
    if not files:
        raise ListError(f"{path}: no TalkVid .json / .jsonl metadata file")
    rows = []
    for file in files:
        for index, item in enumerate(_items(file)):
            info = item.get("info") or {}
            link = info.get("Video Link") or info.get("video_link")
            start = item.get("start-time", item.get("start"))
            end = item.get("end-time", item.get("end"))
            if link is None or start is None or end is None:
                raise ListError(f"{file}: item {index}: expected info.`Video Link`, `start-time` and `end-time`")
            given = {name: str(info[key]).lower() if name == "gender" else str(info[key])
                     for key, name in ATTRIBUTES.items() if info.get(key) not in (None, "")}
            rows.append((link, float(start), float(end), None, given))
    return grouped(rows)


def _items(file: Path) -> list[dict]:
    text = file.read_text(encoding="utf-8-sig").strip()
    try:
        if text.startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as err:
        raise ListError(f"{file}: not TalkVid JSON ({err})") from None
