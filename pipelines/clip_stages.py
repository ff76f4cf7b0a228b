"""Registry of the model stages (8-11) that run over staged 512x512 clips, in pipeline order.

Each class is constructed as `Stage(stage_config, weights)` with its config from
`vividhead.pipelines.filter_config` (the build config's fields of the same name) and a
`vividhead.weights.Weights`. `mode()` says "weights" / "default" / "skipped" and `reason()` says why.
"""

from __future__ import annotations

from vividhead.pipelines.annotate import AnnotateStage
from vividhead.pipelines.occlusion import OcclusionStage
from vividhead.pipelines.records import ClipStage
from vividhead.pipelines.speech import SpeechStage
from vividhead.pipelines.sync import SyncStage

# name -> ClipStage subclass; constructed with (stage_config, weights_config).
CLIP_STAGES: dict[str, type[ClipStage]] = {
    "occlusion": OcclusionStage,   # 8: hand over the face
    "speech": SpeechStage,         # 9: voice activity
    "sync": SyncStage,             # 10: SyncNet LSE-C/LSE-D/offset, or the mouth-envelope proxy
    "annotate": AnnotateStage,     # 11: mask.png, audio.npy, gender/age/language
}
