"""Stage 9, speech: voice activity on the clip's audio (silero-vad); reject clips that are mostly not speech.

The rejection rule is the pure function `decide`; the stage's row in `pipelines/stages.py` maps
`min_speech_ratio` to the metric `speech_ratio`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from vividhead.models.vad import SileroVad
from vividhead.pipelines.clip_media import read_audio
from vividhead.pipelines.filter_config import SpeechConfig
from vividhead.pipelines.records import Clip, ClipStage, StageResult
from vividhead.weights import Weights


def decide(metrics: Mapping[str, Any], config: SpeechConfig) -> tuple[str, str] | None:
    """(reason, detail) when the thresholds reject a clip with these speech metrics, else None.

    Pure, over the stage's own metric names; a missing (None) metric decides nothing.
    """
    ratio = metrics.get("speech_ratio")
    if not config.enabled or ratio is None or not ratio < config.min_speech_ratio:
        return None
    return ("no_speech",
            f"speech covers {ratio:.0%} of the clip, below speech.min_speech_ratio={config.min_speech_ratio}")


class SpeechStage(ClipStage):
    """Share of the clip's audio that silero-vad marks as speech."""

    name: ClassVar[str] = "speech"
    metric_types: ClassVar[dict[str, str]] = {
        "speech_ratio": "float",       # share of the clip covered by speech segments
        "speech_segments": "int",      # number of speech segments
        "longest_silence": "float",    # seconds, longest gap without speech (clip edges included)
    }

    def __init__(self, config: SpeechConfig | None = None, weights: Weights | None = None) -> None:
        self.config = config or SpeechConfig()
        self.vad = None

    def mode(self) -> Literal["weights", "default", "skipped"]:
        return "default" if self.config.enabled else "skipped"

    def reason(self) -> str:
        return "silero-vad (ships its model)" if self.config.enabled else "disabled in the build config"

    def setup(self) -> None:
        if self.config.enabled:
            c = self.config
            self.vad = SileroVad(c.vad_threshold, c.min_speech_ms, c.min_silence_ms)

    def process(self, clip: Clip) -> StageResult:
        if self.vad is None:
            return StageResult()
        start = time.perf_counter()
        found = self.vad(read_audio(clip))
        edges = [0.0] + [t for seg in found.segments for t in seg] + [found.duration]
        gaps = [edges[i + 1] - edges[i] for i in range(0, len(edges), 2)]
        result = StageResult(metrics={
            "speech_ratio": round(found.ratio, 4),
            "speech_segments": len(found.segments),
            "longest_silence": round(max(gaps), 3),
        })
        decision = decide({"speech_ratio": found.ratio}, self.config)   # the unrounded ratio
        if decision is not None:
            result.reject, result.detail = decision
        result.seconds = time.perf_counter() - start
        return result
