"""Where each model's weights live on local disk. No weights are ever downloaded.

`manifests/weights.yaml` lists the expected paths; relative paths resolve against that file's
folder. The build config's `weights:` section overrides any entry. A missing entry (or a path
that does not exist) means the stage uses its embedded default or is skipped.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from vividhead.configfile import load_yaml_model


class Weights(BaseModel):
    """Local weight paths, one per model; None = not configured."""

    model_config = ConfigDict(extra="forbid")

    scrfd: Path | None = None            # insightface SCRFD face detector, ONNX
    dwpose_det: Path | None = None       # YOLOX person detector, ONNX (rtmlib)
    dwpose_pose: Path | None = None      # DWpose / RTMW wholebody, ONNX (rtmlib)
    syncnet: Path | None = None          # original syncnet_v2.model state dict
    wav2vec2: Path | None = None         # transformers folder of wav2vec2-base-960h
    genderage: Path | None = None        # insightface gender/age ONNX
    language_id: Path | None = None      # transformers folder of a Whisper model
    inception: Path | None = None        # FID Inception-v3 weights (pt_inception-2015-12-05)
    i3d: Path | None = None              # I3D weights for FVD

    def resolved(self, base: Path) -> "Weights":
        """Return a copy with relative paths made absolute against `base`."""
        values = {k: (base / v if v is not None and not v.is_absolute() else v) for k, v in self}
        return Weights(**values)

    def available(self, name: str) -> Path | None:
        """The path for `name` when it is configured and exists on disk, else None."""
        path = getattr(self, name)
        return path if path is not None and path.exists() else None


def load_weights_manifest(path: Path) -> Weights:
    """Read a weights manifest; errors name the file and the field."""
    return load_yaml_model(Weights, path).resolved(path.resolve().parent)
