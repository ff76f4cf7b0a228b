"""Registry of the model stages (8-11) that run over staged 512x512 clips, in pipeline order."""

from __future__ import annotations

from vividhead.pipelines.records import ClipStage

# name -> ClipStage subclass; constructed with (stage_config, weights_config).
CLIP_STAGES: dict[str, type[ClipStage]] = {}
