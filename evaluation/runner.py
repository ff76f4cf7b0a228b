"""Run the evaluation: decode each video once, feed the metrics that need it, then aggregate.

FID and FVD compare the generated set with the reference set (unpaired); Sync-C/Sync-D/offset are
the mean over generated videos (optionally over reference videos too, as a ground-truth row); FPS
times the stream engine on a checkpoint (`vividhead.evaluation.fps`). Each number is computed under a
named protocol (`fid.FID_PROTOCOLS`, `fvd.FVD_PROTOCOLS`, `sync.SYNC_PROTOCOLS`) that its row records.
A metric whose weights or inputs are missing is reported as unavailable with the reason, never estimated.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vividhead import __version__
from vividhead.evaluation.fid import FIDConfig, FIDFeatures
from vividhead.evaluation.frechet import frechet_distance_features
from vividhead.evaluation.fvd import FVDConfig, FVDFeatures
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


def _frechet_row(metric: str, generated: list[np.ndarray], reference: list[np.ndarray], unit: str,
                 protocol: str, ddof: int = 1) -> MetricRow:
    gen = np.concatenate(generated) if generated else np.empty((0, 0))
    ref = np.concatenate(reference) if reference else np.empty((0, 0))
    if len(gen) < 2 or len(ref) < 2:
        return MetricRow.unavailable(metric, f"needs at least 2 {unit} per set; got {len(gen)} generated, {len(ref)} reference",
                                     protocol)
    return MetricRow.ok(metric, frechet_distance_features(gen, ref, ddof), protocol,
                        **{f"generated_{unit}": len(gen), f"reference_{unit}": len(ref)})


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
    rows = [MetricRow.ok("Sync-C", c.mean(), protocol, std=round(float(c.std()), 3), **n),
            MetricRow.ok("Sync-D", d.mean(), protocol, std=round(float(d.std()), 3), **n),
            MetricRow.ok("AV offset", np.abs(off).mean(), protocol,
                         at_search_limit=round(float(np.mean(np.abs(off) >= vshift)), 3), search_limit=vshift,
                         signed_mean=round(float(off.mean()), 2), **n)]
    for row in rows:
        row.metric += suffix
    return rows


class _Metrics:
    """The metric backends that have their weights, and the reasons for those that do not."""

    def __init__(self, config: EvalConfig, weights: Weights, device: torch.device, has_reference: bool) -> None:
        self.fid = self.fvd = self.sync = None
        self.unavailable: dict[str, str] = {}
        wanted = set(config.metrics)
        if not has_reference:
            for name in wanted & {"fid", "fvd"}:
                self.unavailable[name] = "no --reference videos to compare with"
        if "fid" in wanted and "fid" not in self.unavailable:
            reason = _missing_weights(weights, "inception", "--inception", "pt_inception-2015-12-05-6726825d.pth")
            self.fid = FIDFeatures(weights.inception, device, config.fid) if reason is None else None
            self.unavailable.update({"fid": reason} if reason else {})
        if "fvd" in wanted and "fvd" not in self.unavailable:
            reason = _missing_weights(weights, "i3d", "--i3d", "i3d_torchscript.pt")
            self.fvd = FVDFeatures(weights.i3d, device, config.fvd) if reason is None else None
            self.unavailable.update({"fvd": reason} if reason else {})
        if "sync" in wanted:
            reason = _missing_weights(weights, "syncnet", "--syncnet", "syncnet_v2.model")
            self.sync = (SyncScorer(weights.syncnet, device, weights.available("scrfd"), config.vshift, config.sync_protocol)
                         if reason is None else None)
            self.unavailable.update({"sync": reason} if reason else {})


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
            if result.skipped:
                score.note = f"sync: {result.skipped}"
        scores.append(score)
    return scores


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

    rows: list[MetricRow] = []
    if "fid" in config.metrics:
        rows.append(_frechet_row("FID", gen_feats["fid"], ref_feats["fid"], "frames", config.fid.protocol) if metrics.fid
                    else MetricRow.unavailable("FID", metrics.unavailable["fid"], config.fid.protocol))
    if "fvd" in config.metrics:
        rows.append(_frechet_row("FVD", gen_feats["fvd"], ref_feats["fvd"], "clips", config.fvd.protocol,
                                 config.fvd.covariance_ddof) if metrics.fvd
                    else MetricRow.unavailable("FVD", metrics.unavailable["fvd"], config.fvd.protocol))
    if "sync" in config.metrics:
        if metrics.sync is None:
            rows += [MetricRow.unavailable(m, metrics.unavailable["sync"], config.sync_protocol) for m in SYNC_METRICS]
        else:
            rows += _sync_rows([v for v in videos if v.set == "generated"], config.sync_protocol, config.vshift)
            if config.sync_reference and ref_items:
                rows += _sync_rows([v for v in videos if v.set == "reference"], config.sync_protocol, config.vshift,
                                   REFERENCE_SUFFIX)
    if "fps" in config.metrics:
        rows.append(fps_row or MetricRow.unavailable("FPS", "FPS times the stream engine: pass --checkpoint W"))

    settings = {**asdict(config), "device": device_name(device),
                "weights": {k: str(getattr(weights, k)) for k in ("inception", "i3d", "syncnet", "scrfd")
                            if getattr(weights, k) is not None}}
    versions = {"vividhead": __version__, "torch": torch.__version__}
    where = str(generated) if isinstance(generated, Path) else ", ".join(sorted({str(p.parent) for p in generated})) or "-"
    return EvalReport(where, str(reference) if reference else None, rows, videos, settings, versions)
