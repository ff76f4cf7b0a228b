"""Run the evaluation: decode each video once, feed the metrics that need it, then aggregate.

FID and FVD compare the generated set with the reference set (unpaired); Sync-C/Sync-D/offset are
the mean over generated videos (optionally over reference videos too, as a ground-truth row); FPS
times the stream engine on a checkpoint (`vividhead.evaluation.fps`). Each number is computed under a
named protocol (`fid.FID_PROTOCOLS`, `fvd.FVD_PROTOCOLS`, `sync.SYNC_PROTOCOLS`) that its row records,
with its provenance (the model files loaded, the face detector, the counts on each side, the resampling;
`provenance.py`) and its warnings (too few samples, skipped videos, offsets at the search limit).
A metric whose weights or inputs are missing is reported as unavailable with the reason, never estimated.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vividhead.evaluation import provenance as prov
from vividhead.evaluation.fid import FIDConfig, FIDFeatures
from vividhead.evaluation.frechet import frechet_distance_features
from vividhead.evaluation.fvd import FVDConfig, FVDFeatures
from vividhead.evaluation.provenance import ModelFile, Provenance, SetCounts
from vividhead.evaluation.report import REFERENCE_SUFFIX, EvalReport, MetricRow, VideoScore
from vividhead.evaluation.sync import DEFAULT_SYNC_PROTOCOL, SYNC_PROTOCOLS, SyncScorer
from vividhead.evaluation.videos import VideoItem, list_videos
from vividhead.weights import Weights, load_weights_manifest

METRICS = ("sync", "fid", "fvd", "fps")


@dataclass(frozen=True)
class EvalConfig:
    """What to compute and how to sample it."""

    metrics: tuple[str, ...] = METRICS
    fid: FIDConfig = field(default_factory=FIDConfig)
    fvd: FVDConfig = field(default_factory=FVDConfig)
    sync_protocol: str = DEFAULT_SYNC_PROTOCOL
    max_videos: int = 0              # per set; 0 = all
    sync_reference: bool = False     # also score the reference videos (a ground-truth Sync row)
    vshift: int = 15                 # SyncNet offset search, +-frames
    device: str | None = None        # None: CUDA when present, else CPU

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; expected some of {list(METRICS)}")
        if self.sync_protocol not in SYNC_PROTOCOLS:
            raise ValueError(f"unknown Sync protocol {self.sync_protocol!r}; choose from {', '.join(SYNC_PROTOCOLS)}")


def choose_device(requested: str | None = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU."""
    return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))


def device_name(device: torch.device) -> str:
    """A human name for the device: the GPU model, or the CPU model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU ({cpu}, {torch.get_num_threads()} threads)"


def load_weights(manifest: Path | None, overrides: dict[str, Path | None]) -> Weights:
    """The weights manifest (when the file exists) with command-line overrides applied."""
    weights = load_weights_manifest(manifest) if manifest is not None and manifest.is_file() else Weights()
    return weights.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def _missing_weights(weights: Weights, name: str, flag: str, expected: str) -> str | None:
    if weights.available(name) is not None:
        return None
    where = f"{getattr(weights, name)} does not exist" if getattr(weights, name) else "not configured"
    return f"no {name} weights ({where}); pass {flag} PATH to {expected} or set `{name}` in the weights manifest"


def _set_counts(per_video: list[np.ndarray], scores: list[VideoScore], clip_frames: int | None = None) -> SetCounts:
    """What one side gave a Fréchet metric: `per_video` holds the feature rows of each contributing video."""
    samples = sum(len(f) for f in per_video)
    frames = samples * clip_frames if clip_frames else samples
    return SetCounts(len(per_video), frames, samples if clip_frames else None, len(scores) - len(per_video),
                     tuple(sorted({v.fps for v in scores})))


def _frechet_row(metric: str, generated: list[np.ndarray], reference: list[np.ndarray], unit: str,
                 protocol: str, ddof: int = 1, provenance: Provenance | None = None) -> MetricRow:
    gen = np.concatenate(generated) if generated else np.empty((0, 0))
    ref = np.concatenate(reference) if reference else np.empty((0, 0))
    if len(gen) < 2 or len(ref) < 2:
        row = MetricRow.unavailable(metric, f"needs at least 2 {unit} per set; got {len(gen)} generated, "
                                            f"{len(ref)} reference", protocol)
    else:
        row = MetricRow.ok(metric, frechet_distance_features(gen, ref, ddof), protocol,
                           **{f"generated_{unit}": len(gen), f"reference_{unit}": len(ref)})
        row.warnings = prov.few_samples(metric, len(gen), len(ref))
        if provenance is not None and metric == "FVD":
            row.warnings += prov.frame_rates_differ(provenance.generated, provenance.reference)
    row.provenance = provenance
    return row


SYNC_METRICS = ("Sync-C", "Sync-D", "AV offset")


def _sync_rows(scores: list[VideoScore], protocol: str, vshift: int = 15, suffix: str = "") -> list[MetricRow]:
    """Sync-C, Sync-D (mean, std) and the AV offset as mean |offset| with the share of videos whose
    offset is at the +-vshift search limit (a signed mean would show +15 and -15 as a perfect 0)."""
    scored = [s for s in scores if s.sync_c is not None]
    if not scored:
        reason = "no video could be scored (" + "; ".join(sorted({s.note or "?" for s in scores})) + ")"
        return [MetricRow.unavailable(m + suffix, reason, protocol) for m in SYNC_METRICS]
    c = np.array([s.sync_c for s in scored])
    d = np.array([s.sync_d for s in scored])
    off = np.array([s.offset for s in scored], dtype=float)
    n = {"videos": len(scored), "skipped": len(scores) - len(scored)}
    at_limit = int(np.sum(np.abs(off) >= vshift))
    rows = [MetricRow.ok("Sync-C", c.mean(), protocol, std=float(c.std()), **n),
            MetricRow.ok("Sync-D", d.mean(), protocol, std=float(d.std()), **n),
            MetricRow.ok("AV offset", np.abs(off).mean(), protocol, videos_at_search_limit=at_limit,
                         share_at_search_limit=at_limit / len(scored), search_limit=vshift,
                         signed_mean=float(off.mean()), **n)]
    warnings = prov.sync_warnings(len(scored), len(scores) - len(scored), at_limit, vshift)
    for row in rows:
        row.metric += suffix
        row.warnings = list(warnings)
    return rows


class _Metrics:
    """The metric backends that have their weights, the model files each loaded, and the reasons for
    those that do not."""

    def __init__(self, config: EvalConfig, weights: Weights, device: torch.device, has_reference: bool) -> None:
        self.fid = self.fvd = self.sync = None
        self.unavailable: dict[str, str] = {}
        self.models: dict[str, list[ModelFile]] = {}
        wanted = set(config.metrics)
        if not has_reference:
            for name in wanted & {"fid", "fvd"}:
                self.unavailable[name] = "no --reference videos to compare with"
        if "fid" in wanted and "fid" not in self.unavailable:
            reason = _missing_weights(weights, "inception", "--inception", "pt_inception-2015-12-05-6726825d.pth")
            self.fid = FIDFeatures(weights.inception, device, config.fid) if reason is None else None
            self.unavailable.update({"fid": reason} if reason else {})
            if self.fid is not None:
                self.models["fid"] = [prov.model_file("inception", "FID Inception-v3", weights.inception, "torch")]
        if "fvd" in wanted and "fvd" not in self.unavailable:
            reason = _missing_weights(weights, "i3d", "--i3d", "i3d_torchscript.pt")
            self.fvd = FVDFeatures(weights.i3d, device, config.fvd) if reason is None else None
            self.unavailable.update({"fvd": reason} if reason else {})
            if self.fvd is not None:
                self.models["fvd"] = [prov.model_file("i3d", "FVD I3D (TorchScript)", weights.i3d, "torch")]
        if "sync" in wanted:
            reason = _missing_weights(weights, "syncnet", "--syncnet", "syncnet_v2.model")
            self.sync = (SyncScorer(weights.syncnet, device, weights.available("scrfd"), config.vshift, config.sync_protocol)
                         if reason is None else None)
            self.unavailable.update({"sync": reason} if reason else {})
            if self.sync is not None:
                scrfd = weights.available("scrfd") if self.sync.detector.name == "scrfd" else None
                self.models["sync"] = [
                    prov.model_file("syncnet", "SyncNet v2", weights.syncnet, "torch"),
                    prov.model_file("scrfd", "face detector (Sync face boxes)", scrfd, "onnxruntime") if scrfd
                    else prov.embedded_face_detector(weights.scrfd)]


def _score_set(items: list[VideoItem], name: str, metrics: _Metrics, with_sync: bool,
               features: dict[str, list[np.ndarray]]) -> list[VideoScore]:
    if metrics.fid is None and metrics.fvd is None and not (with_sync and metrics.sync is not None):
        return []                                      # no metric reads this set: do not decode it
    scores = []
    for item in items:
        video = item.load()
        score = VideoScore(item.key, item.origin, name, len(video.frames), round(video.fps, 3))
        if metrics.fid is not None:
            features["fid"].append(metrics.fid.video_features(video.frames))
        if metrics.fvd is not None:
            clips = metrics.fvd.video_features(video.frames, reference=name == "reference")
            if len(clips):
                features["fvd"].append(clips)
            else:
                score.note = f"FVD: shorter than {metrics.fvd.config.clip_frames} frames"
        if with_sync and metrics.sync is not None:
            result = metrics.sync.score(video)
            score.sync_c, score.sync_d, score.offset = result.sync_c, result.sync_d, result.offset
            score.sync_frames = result.frames
            if result.skipped:
                score.note = f"sync: {result.skipped}"
        scores.append(score)
    return scores


def _sync_provenance(protocol: str, metrics: _Metrics, side: str, scores: list[VideoScore]) -> Provenance:
    scored = [s for s in scores if s.sync_c is not None]
    counts = SetCounts(len(scored), sum(s.sync_frames or 0 for s in scored), None, len(scores) - len(scored),
                       tuple(sorted({s.fps for s in scores})))
    return Provenance(protocol, metrics.models["sync"], **{side: counts}, face_detector=metrics.sync.detector.name,
                      preprocessing=prov.sync_preprocessing(protocol))


def _settings(config: EvalConfig) -> dict:
    """The configuration of the metrics that were asked for (a Sync-only run lists no FID or FVD settings)."""
    chosen = set(config.metrics)
    settings = asdict(config)
    for name, keys in (("fid", ("fid",)), ("fvd", ("fvd",)), ("sync", ("sync_protocol", "sync_reference", "vshift"))):
        if name not in chosen:
            for key in keys:
                settings.pop(key)
    return settings


def _list(locations: Path | list[Path]) -> list[VideoItem]:
    if isinstance(locations, Path):
        return list_videos(locations)
    return sorted((item for location in locations for item in list_videos(location)), key=lambda v: v.key)


def run_eval(generated: Path | list[Path], reference: Path | None, weights: Weights, config: EvalConfig = EvalConfig(),
             fps_row: MetricRow | None = None) -> EvalReport:
    """Score the generated videos (a location, or a list of video files/shards) against the reference
    videos; FPS comes in measured (or absent)."""
    device = choose_device(config.device)
    limit = config.max_videos or None
    gen_items = _list(generated)[:limit]
    ref_items = list_videos(reference)[:limit] if reference is not None else []
    metrics = _Metrics(config, weights, device, bool(ref_items))
    gen_feats: dict[str, list[np.ndarray]] = {"fid": [], "fvd": []}
    ref_feats: dict[str, list[np.ndarray]] = {"fid": [], "fvd": []}
    try:
        videos = _score_set(gen_items, "generated", metrics, True, gen_feats)
        videos += _score_set(ref_items, "reference", metrics, config.sync_reference, ref_feats)
    finally:
        if metrics.sync is not None:
            metrics.sync.close()

    gen_videos = [v for v in videos if v.set == "generated"]
    ref_videos = [v for v in videos if v.set == "reference"]
    rows: list[MetricRow] = []
    if "fid" in config.metrics:
        if metrics.fid is None:
            rows.append(MetricRow.unavailable("FID", metrics.unavailable["fid"], config.fid.protocol))
        else:
            source = Provenance(config.fid.protocol, metrics.models["fid"], _set_counts(gen_feats["fid"], gen_videos),
                                _set_counts(ref_feats["fid"], ref_videos),
                                preprocessing=prov.fid_preprocessing(config.fid.frames_per_video))
            rows.append(_frechet_row("FID", gen_feats["fid"], ref_feats["fid"], "frames", config.fid.protocol,
                                     provenance=source))
    if "fvd" in config.metrics:
        if metrics.fvd is None:
            rows.append(MetricRow.unavailable("FVD", metrics.unavailable["fvd"], config.fvd.protocol))
        else:
            fvd = config.fvd
            source = Provenance(fvd.protocol, metrics.models["fvd"],
                                _set_counts(gen_feats["fvd"], gen_videos, fvd.clip_frames),
                                _set_counts(ref_feats["fvd"], ref_videos, fvd.clip_frames),
                                preprocessing=prov.fvd_preprocessing(fvd.protocol, fvd.clips_per_video, fvd.seed,
                                                                     fvd.clip_frames))
            rows.append(_frechet_row("FVD", gen_feats["fvd"], ref_feats["fvd"], "clips", fvd.protocol,
                                     fvd.covariance_ddof, source))
    if "sync" in config.metrics:
        if metrics.sync is None:
            rows += [MetricRow.unavailable(m, metrics.unavailable["sync"], config.sync_protocol) for m in SYNC_METRICS]
        else:
            sets = [("generated", gen_videos, "")]
            if config.sync_reference and ref_items:
                sets.append(("reference", ref_videos, REFERENCE_SUFFIX))
            for side, scores, suffix in sets:
                source = _sync_provenance(config.sync_protocol, metrics, side, scores)
                for row in _sync_rows(scores, config.sync_protocol, config.vshift, suffix):
                    row.provenance = source
                    rows.append(row)
    if "fps" in config.metrics:
        rows.append(fps_row or MetricRow.unavailable("FPS", "FPS times the stream engine: pass --checkpoint W"))

    settings = {**_settings(config), "device": device_name(device), "weights": prov.used_weights(rows)}
    versions = prov.versions(rows)
    where = str(generated) if isinstance(generated, Path) else ", ".join(sorted({str(p.parent) for p in generated})) or "-"
    return EvalReport(where, str(reference) if reference else None, rows, videos, settings, versions)
