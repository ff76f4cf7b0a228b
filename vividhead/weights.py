"""Every model file vividhead can use: where it is expected on disk, where it comes from, and what it must look like.

`manifests/weights.yaml` lists the expected paths; relative paths resolve against that file's folder. The
build config's `weights:` section overrides any entry. A missing entry (or a path that does not exist)
means the stage uses its embedded default or is skipped. Nothing is downloaded unless the user runs
`vividhead weights fetch NAME`.

`MODELS` is the catalogue, one `Model` per manifest field: what it is for, the shape its loader checks
(`Shape`), its canonical source (`Source`: the original authors' URL, or a Hugging Face repository with a
revision), its licence, and what runs without it. A checksum, size or revision appears only where a public
page states it; the comment beside it says which page. Where none is published, `weights fetch` records
what it downloaded in the lock file (`vividhead.weights_verify`) and later runs check against that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
    flashhead: Path | None = None        # SoulX-FlashHead-1_3B release folder (Model_Lite/, Model_Pro/, VAEs)

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


# ------------------------------------------------------------------------------------------ catalogue


@dataclass(frozen=True)
class Shape:
    """What a loader checks a file's structure against, before using it."""

    kind: Literal["onnx", "state_dict", "transformers", "torchscript", "release"]
    inputs: tuple[str, ...] = ()        # onnx: the input names, in order (only where a public export script fixes them)
    outputs: tuple[int, ...] = ()       # onnx: the allowed numbers of outputs (empty: any)
    input_rank: int = 4                 # onnx: rank of the first input ([1, 3, H, W])
    keys: tuple[str, ...] = ()          # state_dict: key prefixes that must all be present
    model_type: str = ""                # transformers: config.json `model_type`
    folders: tuple[str, ...] = ()       # release: at least one of these sub-folders holds a config.json

    @property
    def is_folder(self) -> bool:
        """Whether the manifest entry is a folder (transformers, release) rather than one file."""
        return self.kind in ("transformers", "release")


@dataclass(frozen=True)
class Source:
    """Where a model comes from. `url` for a plain HTTP(S) download (`member`: the file inside a zip archive);
    `repo` for a Hugging Face repository, with `files` (empty: the whole repository) at `revision`."""

    url: str = ""
    member: str = ""
    repo: str = ""
    revision: str = ""                  # a commit; empty = the repository's main, recorded in the lock when fetched
    files: tuple[str, ...] = ()
    sha256: str = ""                    # of the file as stored under the manifest's name, where published
    size: int = 0                       # bytes, where published

    def describe(self) -> str:
        if self.repo:
            files = f" {', '.join(self.files)}" if self.files else ""
            return f"hf://{self.repo}@{self.revision or 'main'}{files}"
        return f"{self.url}" + (f" (member {self.member})" if self.member else "")


@dataclass(frozen=True)
class Model:
    """One catalogue entry: a field of `Weights` and everything known about its file."""

    name: str
    title: str
    used_by: str
    build_stage: str | None             # the `vividhead build` stage that loads it (None: not the build)
    shape: Shape
    source: Source
    licence: str
    without: str                        # what runs when it is absent


_INSIGHTFACE_PACK = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
_INSIGHTFACE_LICENCE = ("insightface pretrained models: non-commercial research purposes only "
                        "(insightface python-package README)")
_DWPOSE_REVISION = "f7c16a3d45ad3783db41471848c80fbc281cabac"   # huggingface.co/yzd-v/DWPose commit "support all dwpose models"

MODELS: dict[str, Model] = {m.name: m for m in (
    Model(
        "scrfd", "insightface SCRFD-10GF face detector with 5 keypoints (ONNX)",
        "build: face; eval: face boxes for Sync-C/D (--scrfd)", "face",
        # input name: the official export script, insightface detection/scrfd/tools/scrfd2onnx.py
        # (input_names = ['input.1']; 6 outputs, 9 with keypoints)
        Shape("onnx", inputs=("input.1",), outputs=(6, 9)),
        # det_10g.onnx of the buffalo_l pack (SCRFD-10GF with keypoints), the insightface v0.7 release;
        # no checksum is published for it
        Source(url=_INSIGHTFACE_PACK, member="det_10g.onnx"),
        _INSIGHTFACE_LICENCE, "mediapipe face detection (embedded)"),
    Model(
        "dwpose_det", "DWpose person detector, YOLOX-L (ONNX)", "build: occlusion", "occlusion",
        Shape("onnx"),
        # sha256 and size: the Git LFS pointer of yolox_l.onnx at that commit
        # (huggingface.co/yzd-v/DWPose/blob/f7c16a3d45ad3783db41471848c80fbc281cabac/yolox_l.onnx)
        Source(repo="yzd-v/DWPose", revision=_DWPOSE_REVISION, files=("yolox_l.onnx",),
               sha256="7860ae79de6c89a3c1eb72ae9a2756c0ccfbe04b7791bb5880afabd97855a411", size=216746733),
        "Apache-2.0 (yzd-v/DWPose model card)", "mediapipe hands (embedded); both DWpose files are needed"),
    Model(
        "dwpose_pose", "DWpose wholebody keypoints, dw-ll_ucoco_384 (ONNX)", "build: occlusion", "occlusion",
        Shape("onnx", outputs=(2,)),    # SimCC heads: simcc_x, simcc_y
        # sha256 and size: the Git LFS pointer in huggingface.co/yzd-v/DWPose/commit/f7c16a3d45ad3783db41471848c80fbc281cabac
        Source(repo="yzd-v/DWPose", revision=_DWPOSE_REVISION, files=("dw-ll_ucoco_384.onnx",),
               sha256="724f4ff2439ed61afb86fb8a1951ec39c6220682803b4a8bd4f598cd913b1843", size=134399116),
        "Apache-2.0 (yzd-v/DWPose model card)", "mediapipe hands (embedded); both DWpose files are needed"),
    Model(
        "syncnet", "SyncNet v2 (state dict)", "build: sync; eval: Sync-C/D", "sync",
        Shape("state_dict", keys=("netcnnaud.", "netfcaud.", "netcnnlip.", "netfclip.")),
        # the authors' download script, github.com/joonson/syncnet_python download_model.sh; no checksum published
        Source(url="http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"),
        "MIT (joonson/syncnet_python LICENSE.md; the weights carry no separate licence)",
        "build: mouth-opening proxy (sync.proxy_*); eval: Sync-C/D unavailable"),
    Model(
        "wav2vec2", "wav2vec2-base-960h (transformers folder)", "build: annotate; stream; train (lite/pro)", "annotate",
        Shape("transformers", model_type="wav2vec2"),
        # revision: the head of main, "Adding `safetensors` variant of this model (#7)"
        # (huggingface.co/facebook/wav2vec2-base-960h/tree/22aad52d435eb6dbaf354bdad9b0da84ce7d6156)
        Source(repo="facebook/wav2vec2-base-960h", revision="22aad52d435eb6dbaf354bdad9b0da84ce7d6156",
               files=("config.json", "preprocessor_config.json", "model.safetensors")),
        "Apache-2.0 (facebook/wav2vec2-base-960h model card)",
        "log-mel audio features (embedded; build and tiny); stream lite/pro need it"),
    Model(
        "genderage", "insightface gender/age (ONNX)", "build: annotate", "annotate",
        Shape("onnx", outputs=(1,)),
        # genderage.onnx of the buffalo_l pack; no checksum is published for it
        Source(url=_INSIGHTFACE_PACK, member="genderage.onnx"),
        _INSIGHTFACE_LICENCE, "gender and age not annotated"),
    Model(
        "language_id", "Whisper tiny, multilingual (transformers folder)", "build: annotate (language ID)", "annotate",
        Shape("transformers", model_type="whisper"),
        # no revision with generation_config.json is pinned here: fetch takes main and records its commit
        Source(repo="openai/whisper-tiny",
               files=("config.json", "generation_config.json", "preprocessor_config.json", "model.safetensors")),
        "Apache-2.0 (openai/whisper-tiny model card)", "language not identified"),
    Model(
        "inception", "FID Inception-v3, pt_inception-2015-12-05 (state dict)", "eval: FID", None,
        Shape("state_dict", keys=("Conv2d_1a_3x3.", "Mixed_7c.", "fc.")),
        # pytorch-fid's FID_WEIGHTS_URL (github.com/mseitzer/pytorch-fid, src/pytorch_fid/inception.py). The name's
        # 6726825d follows torch.hub's hash-prefix convention, but pytorch-fid does not check it: not enforced here
        Source(url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth"),
        "Apache-2.0 (pytorch-fid; ported from TensorFlow's 2015-12-05 Inception graph)", "eval: FID unavailable"),
    Model(
        "i3d", "I3D Kinetics-400 for FVD (TorchScript)", "eval: FVD", None,
        Shape("torchscript"),
        # the detector_url of StyleGAN-V's FVD (github.com/universome/stylegan-v, also universome/fvd-comparison);
        # no checksum published
        Source(url="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"),
        "not stated by the exporter (the original I3D, deepmind/kinetics-i3d, is Apache-2.0)", "eval: FVD unavailable"),
    Model(
        "flashhead", "SoulX-FlashHead-1_3B release (Model_Lite, Model_Pro, VAE_LTX, VAE_Wan)",
        "stream (lite/pro); train --init; eval --checkpoint", None,
        Shape("release", folders=("Model_Lite", "Model_Pro")),
        # the authors' README (github.com/Soul-AILab/SoulX-FlashHead) downloads main; no revision is pinned there
        Source(repo="Soul-AILab/SoulX-FlashHead-1_3B"),
        "see the Soul-AILab/SoulX-FlashHead-1_3B model card (not stated in the GitHub README)",
        "stream runs only tiny checkpoints of `vividhead train`; train starts from scratch"),
)}
