"""What produced each number of `vividhead eval`, and when a number rests on too few samples.

Every metric row of `eval.json` carries a `Provenance`: its protocol, each model file it actually loaded
(path, SHA-256, and how the file was checked: against `weights.lock.json`, against a published checksum,
or not at all), or the embedded default that replaced a missing file; the face detector; the videos,
clips and frames on each side; the source frame rates and the resampling and preprocessing applied.
Nothing a metric did not use is listed.

`SAMPLE_MINIMUMS` holds each metric's minimum sample size, taken from its reference's practice, in one
place. Below it a row carries a `RowWarning` (the figure is still reported): a Fréchet distance from a
few dozen samples is biased upwards and not comparable with a published table.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from vividhead.weights_verify import find_record, sha256_of, verify_file


@dataclass(frozen=True)
class SampleMinimum:
    """The fewest samples per set at which a metric is comparable with published numbers."""

    count: int
    unit: str          # what is counted: "frames", "clips"
    source: str        # whose practice the figure comes from


SAMPLE_MINIMUMS: dict[str, SampleMinimum] = {
    # pytorch-fid's README: "use a minimum sample size of 2048" so the 2048-d covariance has full rank
    # (published FIDs use 10k-50k images).
    "FID": SampleMinimum(2048, "frames", "pytorch-fid: at least 2048 feature vectors (the 2048-d covariance's rank)"),
    # StyleGAN-V's fvd2048_16f, the script of the default protocol: 2048 16-frame clips per set.
    "FVD": SampleMinimum(2048, "clips", "StyleGAN-V fvd2048_16f: 2048 16-frame clips per set"),
}


@dataclass(frozen=True)
class RowWarning:
    """Why a row's figure should not be read as it stands. `code` is machine-readable."""

    code: str          # few_samples | videos_skipped | offset_at_search_limit | frame_rates_differ
    message: str


@dataclass(frozen=True)
class ModelFile:
    """One model a metric ran: a weights file (with its SHA-256) or an embedded default (path None)."""

    name: str                  # the weights-manifest field (inception, i3d, syncnet, scrfd) or the embedded model
    role: str
    path: str | None
    sha256: str | None
    check: str                 # lock | pin | other | unverified (vividhead.weights_verify) | embedded
    runtime: str               # the package that ran it, with its version
    note: str = ""


@dataclass(frozen=True)
class SetCounts:
    """What one side (generated or reference) contributed to a metric."""

    videos: int                # videos that contributed at least one sample
    frames: int                # frames that reached the network
    clips: int | None = None   # FVD: 16-frame clips
    skipped: int = 0           # videos read but not scored (too short, no face, no audio)
    source_fps: tuple[float, ...] = ()   # the distinct frame rates of the videos read


@dataclass
class Provenance:
    """Everything that produced one metric row."""

    protocol: str | None
    models: list[ModelFile]
    generated: SetCounts | None = None
    reference: SetCounts | None = None
    face_detector: str | None = None                              # Sync: scrfd | mediapipe
    preprocessing: dict[str, str] = field(default_factory=dict)   # frame rate, crop, resize, audio, covariance


# ------------------------------------------------------------------------------------------ models
def _version(package: str) -> str:
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return f"{package} (version unknown)"


def model_file(name: str, role: str, path: Path, runtime: str) -> ModelFile:
    """A loaded weights file: its SHA-256 from its lock record when the file matches it, else hashed now."""
    integrity = verify_file(name, path)
    sha256 = None
    found = find_record(path) if integrity.state == "lock" else None
    if found is not None and Path(path).absolute() == found[0]:
        sha256 = found[1].get("files", {}).get(".", {}).get("sha256")
    return ModelFile(name, role, str(path), sha256 or sha256_of(path), integrity.state, _version(runtime),
                     integrity.detail)


def embedded_face_detector(configured: Path | None) -> ModelFile:
    """mediapipe's BlazeFace, used when no SCRFD file is available; the note says why."""
    if configured is None:
        why = "no scrfd weights configured"
    else:
        why = f"scrfd weights {configured} do not exist; mediapipe used instead"
    return ModelFile("mediapipe", "face detector (Sync face boxes)", None, None, "embedded", _version("mediapipe"),
                     f"BlazeFace full range (model_selection=1), embedded in the mediapipe wheel; {why}")


def used_weights(rows: list) -> dict[str, str]:
    """The weights files the rows loaded, by manifest field (settings.weights)."""
    used: dict[str, str] = {}
    for row in rows:
        for model in (row.provenance.models if row.provenance else []):
            if model.path is not None:
                used[model.name] = model.path
    return used


def versions(rows: list) -> dict[str, str]:
    """Python and the packages every run uses (decoding, the networks, the Fréchet maths)."""
    import av
    import numpy
    import scipy
    import torch

    from vividhead import __version__

    out = {"vividhead": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": numpy.__version__, "scipy": scipy.__version__, "av": av.__version__,
           "libavcodec": ".".join(map(str, av.library_versions["libavcodec"]))}
    if any(r.provenance and r.provenance.face_detector for r in rows):
        import cv2

        out["opencv"] = cv2.__version__
    return out


# ----------------------------------------------------------------------------------- preprocessing
def fid_preprocessing(frames_per_video: int) -> dict[str, str]:
    return {"frames": f"{frames_per_video} evenly spaced frames per video" if frames_per_video
            else "every decoded frame",
            "frame_rate": "none: frames as decoded",
            "resize": "bilinear to 299x299, scaled to [-1, 1] (pytorch-fid)",
            "covariance": "divided by N - 1"}


def fvd_preprocessing(protocol: str, clips_per_video: int, seed: int, clip_frames: int) -> dict[str, str]:
    rate = f"none: {clip_frames} consecutive decoded frames at each video's own rate"
    if protocol == "stylegan-v":
        return {"clips": f"one {clip_frames}-frame clip per video: the first of each generated video, "
                         f"a random start in each reference video (seed {seed})",
                "frame_rate": rate,
                "resize": "squashed to 224x224 by the I3D (rescale=True, resize=True), no crop",
                "covariance": "divided by N"}
    cap = f"at most {clips_per_video}" if clips_per_video else "every"
    return {"clips": f"{cap} non-overlapping {clip_frames}-frame clip(s) per video from the start",
            "frame_rate": rate,
            "resize": "short side to 224 (bilinear), centre crop 224x224, [-1, 1]",
            "covariance": "divided by N - 1"}


def sync_preprocessing(protocol: str) -> dict[str, str]:
    if protocol == "exact":
        return {"frame_rate": "to 25 fps by presentation time (the frame on screen at each tick)",
                "face_track": "the largest face per frame, gaps interpolated",
                "crop": "224x224 syncnet_python face crop, lossless",
                "audio": "16 kHz mono (channel mean), as decoded"}
    return {"frame_rate": "to 25 fps by ffmpeg -r 25's rule, with the AVI's MP3 delay shifts",
            "face_track": "longest track of > 100 detections, mean face side > 100 px; gaps <= 25 frames interpolated",
            "crop": "224x224 syncnet_python face crop, JPEG round trip at ffmpeg's default MJPEG quality "
                    "(the reference's XVID crop video is not reproduced)",
            "audio": "16 kHz mono (channel mean), delayed 1105 samples (MP3), 16-bit PCM"}


# ---------------------------------------------------------------------------------------- warnings
def few_samples(metric: str, generated: int, reference: int) -> list[RowWarning]:
    """A warning when either side has fewer samples than `SAMPLE_MINIMUMS[metric]`."""
    minimum = SAMPLE_MINIMUMS.get(metric)
    if minimum is None or min(generated, reference) >= minimum.count:
        return []
    return [RowWarning("few_samples",
                       f"{generated} generated and {reference} reference {minimum.unit}, below {minimum.count} "
                       f"({minimum.source}): biased upwards, not comparable with published {metric}s")]


def frame_rates_differ(generated: SetCounts, reference: SetCounts) -> list[RowWarning]:
    """FVD compares clips of 16 frames: at different frame rates they span different durations."""
    if not generated.source_fps or not reference.source_fps or set(generated.source_fps) == set(reference.source_fps):
        return []
    return [RowWarning("frame_rates_differ",
                       f"generated videos at {_rates(generated.source_fps)} fps, reference at "
                       f"{_rates(reference.source_fps)} fps: 16-frame clips span different durations")]


def _rates(rates: tuple[float, ...]) -> str:
    return "/".join(f"{r:g}" for r in rates)


def sync_warnings(scored: int, skipped: int, at_limit: int, vshift: int) -> list[RowWarning]:
    """Videos left out of the mean, and offsets at the search limit (no match inside the window)."""
    out = []
    if skipped:
        out.append(RowWarning("videos_skipped",
                              f"{skipped} of {scored + skipped} videos could not be scored and are not in the mean "
                              "(reasons per video in `videos`)"))
    if at_limit:
        out.append(RowWarning("offset_at_search_limit",
                              f"{at_limit} of {scored} videos have their AV offset at the +-{vshift} frame search "
                              "limit: SyncNet found no match inside the window, so their Sync-C/D are suspect"))
    return out
