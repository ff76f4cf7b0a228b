"""The `vividhead build` pipeline on Ray Data: sources -> units -> one decode pass -> model stages -> shards.

Read top to bottom: each numbered block is a stage of DESIGN.md 4.1, with its resources declared
where it is called. CPU stages run as Ray tasks; the model stages 8-11 run as actor pools that
load their weights once per actor and take a GPU share when the cluster has GPUs. The driver
commits each work unit (shard, then manifest part) as soon as its last clip arrives, so a killed
build loses only the units in flight.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vividhead import __version__
from vividhead.config import BuildConfig, SourcesFile, resolve_weights
from vividhead.envfail import ENVIRONMENT_REASON, EnvironmentFailure, environment_message
from vividhead.manifest import consolidate, source_row
from vividhead.media import MediaError
from vividhead.pipelines.commit import OutputDir, commit_unit, prepare
from vividhead.pipelines.extract import EXTRACT_METRICS, UnitExtractor
from vividhead.pipelines.records import Clip, Source
from vividhead.pipelines.sources import dedupe_by_md5, expand_sources, fetch, md5_of
from vividhead.pipelines.units import SourceRejection, WorkUnit, plan_source, source_unit_id
from vividhead.weights import Weights


@dataclass
class BuildSummary:
    """What a build did; also written to build.json."""

    out: str
    sources: int = 0
    units: int = 0
    units_resumed: int = 0
    units_redone: dict[str, str] = field(default_factory=dict)
    units_redecided: int = 0
    orphans_removed: int = 0
    config_changed: bool = False
    kept: int = 0
    rejected: int = 0
    skipped: int = 0
    failed: int = 0
    kept_hours: float = 0.0
    rejected_hours: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    stage_modes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


# ------------------------------------------------------------------------------------ the pipeline


def run_build(sources_file: SourcesFile, base: Path, out_dir: Path, config: BuildConfig,
              address: str | None = None, workers: int | None = None, progress: bool = True) -> BuildSummary:
    import ray

    started = time.time()
    out = OutputDir(Path(out_dir).resolve())
    out.root.mkdir(parents=True, exist_ok=True)
    weights = resolve_weights(config)
    hashes = {"config_hash": config.config_hash(), "content_hash": config.content_hash(),
              "stages_hash": config.stages_hash(weights), "pipeline_version": __version__}
    stages = model_stages(config)
    metric_types = all_metric_types()
    state = prepare(out, config, hashes, metric_types)
    summary = BuildSummary(str(out.root), units_resumed=len(state.done), units_redone=state.redo,
                           units_redecided=len(state.redecided),
                           orphans_removed=state.orphans_removed, config_changed=state.config_changed,
                           stage_modes={name: stage_mode(cls, getattr(config, name, None), weights)
                                        for name, cls in stages})
    started_ray = start_ray(address, workers)
    try:
        committer = _Committer(out, metric_types, hashes, state.done, summary, progress)

        # 1. sources: expand sources.yaml, dedupe by source id (driver)
        sources, missing = expand_sources(sources_file, base)
        for source, reason, detail in missing:
            committer.reject(SourceRejection(source_unit_id(source, "missing"), source, "sources", reason, detail))

        # 2. fetch URLs, hash the bytes and probe each source (CPU tasks), then dedupe by MD5 (driver)
        planned = _fetch_and_plan(sources, config, out) if sources else []
        summary.sources = len(sources)
        units = committer.plan(planned)

        # 3-7. segment, normalise, face crop, flow cuts, visibility: one decode pass per unit (CPU tasks)
        todo = [unit for unit in units if unit.unit_id not in state.done]
        committer.start(units)
        if todo:
            ds = ray.data.from_items([{"unit": pickle.dumps(u)} for u in todo], override_num_blocks=len(todo))
            ds = ds.flat_map(_extract_rows, fn_args=(config, str(out.staging)), num_cpus=1,
                             max_retries=config.run.max_retries)

            # 8-11. occlusion, speech, sync, annotate: model stages over the 512 clips (actor pools)
            for name, cls in stages:
                pool = actor_pool(len(stages), ray.cluster_resources(), cls.num_gpus)
                ds = ds.map(_stage_actor_class(), fn_constructor_args=(name, getattr(config, name, None), weights),
                            compute=ray.data.ActorPoolStrategy(min_size=pool["concurrency"][0],
                                                               max_size=pool["concurrency"][1]),
                            num_cpus=pool["num_cpus"], num_gpus=pool["num_gpus"])

            # commit: each unit's shard, then its manifest part, as soon as its last clip arrives (driver)
            for row in ds.iter_rows():
                committer.add(row["unit"], row["rows"], pickle.loads(row["clip"]))
        committer.finish_missing(todo, "the unit's worker failed after run.max_retries retries")
        committer.close()
    finally:
        if started_ray:
            ray.shutdown()
    consolidate(out.root)
    summary.seconds = time.time() - started
    _write_build_json(out, config, hashes, summary)
    return summary


# ----------------------------------------------------------------------------------- stage bodies


def _fetch_and_plan(sources: list[Source], config: BuildConfig, out: OutputDir) -> list[tuple]:
    """Fetch, hash and probe every source as Ray tasks; MD5s are cached by (path, size, mtime)."""
    import ray

    cache_path = out.root / ".cache" / "md5.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    ds = ray.data.from_items([{"source": pickle.dumps(s), "md5": cache.get(_stamp(s.uri))} for s in sources],
                             override_num_blocks=min(len(sources), 64))
    ds = ds.map(_fetch_row, fn_args=(config, str(out.downloads)), num_cpus=1, max_retries=config.run.max_retries)
    planned = [pickle.loads(row["planned"]) for row in ds.take_all()]
    cache.update({_stamp(source.uri): source.md5 for source, _ in planned if source.md5 and _stamp(source.uri)})
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(".md5.json.tmp")
    tmp.write_text(json.dumps(cache))
    os.replace(tmp, cache_path)
    return planned


def _stamp(uri: str) -> str | None:
    """Cache key of a local file: real path, size and modification time (None for URLs or missing files)."""
    try:
        stat = os.stat(uri)
    except (OSError, ValueError):
        return None
    return f"{os.path.realpath(uri)}|{stat.st_size}|{stat.st_mtime_ns}"


def _fetch_row(row: dict[str, Any], config: BuildConfig, downloads: str) -> dict[str, Any]:
    """Stages 1-2 for one source: (source with md5 or None, local path, units or rejection)."""
    source: Source = pickle.loads(row["source"])
    try:
        path = fetch(source, Path(downloads), config.run)
        if not path.is_file():
            raise MediaError("missing_file", f"{path}: no such file")
        md5 = row.get("md5") or md5_of(path)
        source = Source(source.source_id, source.uri, source.dataset, source.ranges, source.attributes, md5)
        result: Any = plan_source(source, str(path), config)
    except MediaError as err:
        result = SourceRejection(source_unit_id(source, "source"), source, "sources", err.reason, err.detail)
    except Exception as err:  # noqa: BLE001 - one bad source must not stop the build
        env = environment_message(err)
        result = SourceRejection(source_unit_id(source, "source"), source, "sources",
                                 ENVIRONMENT_REASON if env else "error", env or f"{type(err).__name__}: {err}",
                                 status="failed")
    return {"planned": pickle.dumps((source, result))}


def _extract_rows(row: dict[str, Any], config: BuildConfig, staging: str) -> list[dict[str, Any]]:
    """Stages 3-7 of one unit; every clip becomes a row. An error becomes one failed row."""
    from vividhead.models.face_detect import make_face_detector

    unit: WorkUnit = pickle.loads(row["unit"])
    try:
        weights = resolve_weights(config)
        detector = make_face_detector(config.face.detector, weights.available("scrfd"),
                                      config.face.model_selection, config.face.min_confidence)
        try:
            clips = UnitExtractor(unit, config, Path(staging) / unit.unit_id, detector).run()
        finally:
            detector.close()
    except Exception as err:  # noqa: BLE001 - recorded as a failed unit, the build goes on
        env = environment_message(err)                   # ... unless the disk or the cluster failed: the driver stops
        clip = Clip(key=f"{unit.unit_id}_failed", source=unit.source, start=unit.start, end=unit.end,
                    status="failed", reject_stage="extract", reject_reason=ENVIRONMENT_REASON if env else _reason(err),
                    reject_detail=env or f"{type(err).__name__}: {err} | {traceback.format_exc(limit=4)[-800:]}")
        clips = [clip]
    node = _node_id()
    for clip in clips:
        clip.metrics["extract.node"] = node
    return [{"unit": unit.unit_id, "rows": len(clips), "clip": pickle.dumps(c)} for c in clips]


def _node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _reason(err: Exception) -> str:
    return err.reason if isinstance(err, MediaError) else "error"


def _stage_actor_class():
    from vividhead.pipelines.stage_actor import ClipStageActor

    return ClipStageActor


# -------------------------------------------------------------------------------------- resources


def start_ray(address: str | None, workers: int | None) -> bool:
    """Join `address`, or start a quiet local Ray limited to this machine's CPUs (or `workers`)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray Data calls `max_retries` a deprecated remote argument but offers no named one for it yet.
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(num_cpus=workers or os.cpu_count() or 1, **options)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.max_errored_blocks = -1            # a unit whose worker died is recorded as failed, not fatal
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return True


def actor_pool(stage_count: int, resources: dict[str, float], declared_gpus: float = 0.0) -> dict[str, Any]:
    """Pool size and per-actor resources of one model stage, from what the cluster reports.

    With GPUs, each actor takes the stage's declared GPU share, or an equal share of the GPUs
    among the stages (fractions included, at most one GPU); the pool may grow until the GPUs are
    used. Without, actors reserve only a sliver of CPU so the decode tasks keep whole cores, and a
    pool may grow to one actor per two CPUs: a 2-core laptop is not oversubscribed.
    """
    cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
    if gpus > 0:
        share = declared_gpus or min(1.0, gpus / max(stage_count, 1))
        return {"num_gpus": share, "num_cpus": 1, "concurrency": (1, max(1, int(gpus / share)))}
    return {"num_gpus": 0, "num_cpus": 0, "concurrency": (1, max(1, int(cpus // 2)))}


def model_stages(config: BuildConfig) -> list[tuple[str, type]]:
    """The registered model stages in order, minus those disabled in the config."""
    from vividhead.pipelines.clip_stages import CLIP_STAGES

    active = []
    for name, cls in CLIP_STAGES.items():
        section = getattr(config, name, None)
        if section is not None and getattr(section, "enabled", True) is False:
            continue
        active.append((name, cls))
    return active


def stage_mode(cls: type, section: Any, weights: Weights) -> str:
    """`weights`, `default` or `skipped` as the stage reports it (without loading any model)."""
    try:
        return cls(section, weights).mode()
    except Exception as err:  # noqa: BLE001 - reported, the stage will fail its clips clearly
        return f"error: {type(err).__name__}: {err}"


def all_metric_types() -> dict[str, str]:
    """Declared metric columns: the decode pass's and every registered model stage's."""
    from vividhead.pipelines.clip_stages import CLIP_STAGES

    types = dict(EXTRACT_METRICS)
    for name, cls in CLIP_STAGES.items():
        types.update({f"{name}.{metric}": kind for metric, kind in cls.metric_types.items()})
    return types


# ----------------------------------------------------------------------------------------- commit


class _Committer:
    """Collects rows per unit on the driver and commits each complete unit; drives the progress bar."""

    def __init__(self, out: OutputDir, metric_types: dict[str, str], hashes: dict[str, str], done: set[str],
                 summary: BuildSummary, progress: bool) -> None:
        self.out, self.metric_types, self.hashes, self.done, self.summary = out, metric_types, hashes, done, summary
        self.pending: dict[str, list[Clip]] = {}
        self.progress = progress
        self.bar = None

    def reject(self, rejection: SourceRejection) -> None:
        if rejection.unit_id in self.done:
            return
        if rejection.reason == ENVIRONMENT_REASON:
            raise EnvironmentFailure(rejection.detail)
        metrics = {}
        if rejection.info is not None:
            info = rejection.info
            metrics = {"probe.duration": info.duration, "probe.width": info.width, "probe.height": info.height,
                       "probe.fps": info.fps, "probe.vfr": info.vfr, "probe.rotation": info.rotation,
                       "probe.video_codec": info.video_codec, "probe.pix_fmt": info.pix_fmt,
                       "probe.audio_rate": info.audio_rate, "probe.audio_channels": info.audio_channels}
        row = source_row(rejection.source, rejection.unit_id, rejection.status, rejection.stage, rejection.reason,
                         rejection.detail, metrics, self.hashes)
        commit_unit(self.out, rejection.unit_id, [row], [], self.metric_types, self.hashes)
        self.done.add(rejection.unit_id)
        self._count(rejection.status, rejection.reason, 0.0)

    def plan(self, planned: list[tuple]) -> list[WorkUnit]:
        """Dedupe fetched sources by MD5, commit source-level rejections, return the work units."""
        hashed = [source for source, result in planned if source.md5]
        _, duplicates = dedupe_by_md5(hashed)
        duplicate_ids = {dup.source_id: original for dup, original in duplicates}
        units: list[WorkUnit] = []
        for source, result in planned:
            if source.source_id in duplicate_ids:
                original = duplicate_ids[source.source_id]
                self.reject(SourceRejection(source_unit_id(Source(source.source_id, source.uri), "duplicate"), source,
                                            "sources", "duplicate_md5",
                                            f"same bytes (MD5 {source.md5}) as {original.uri}", status="skipped"))
            elif isinstance(result, SourceRejection):
                self.reject(result)
            else:
                units.extend(result)
        return units

    def start(self, units: list[WorkUnit]) -> None:
        self.summary.units = len(units)
        if self.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=len(units), initial=sum(u.unit_id in self.done for u in units), unit="unit",
                            desc=f"build: {self.summary.sources} sources", dynamic_ncols=True)

    def add(self, unit: str, rows: int, clip: Clip) -> None:
        if clip.reject_reason == ENVIRONMENT_REASON:
            raise EnvironmentFailure(clip.reject_detail)
        clips = self.pending.setdefault(unit, [])
        clips.append(clip)
        if len(clips) == rows:
            self.commit(unit, self.pending.pop(unit))

    def commit(self, unit: str, clips: list[Clip]) -> None:
        clips.sort(key=lambda c: c.start)
        commit_unit(self.out, unit, [], clips, self.metric_types, self.hashes)
        self.done.add(unit)
        for clip in clips:
            self._count(clip.status, clip.reject_reason, (clip.end - clip.start) / 3600)
        if self.bar is not None:
            self.bar.update(1)

    def finish_missing(self, units: list[WorkUnit], detail: str) -> None:
        """Units that never reported back (their worker died): failed rows, redone on resume."""
        for unit in units:
            if unit.unit_id in self.done:
                continue
            got = self.pending.pop(unit.unit_id, [])
            failed = Clip(key=f"{unit.unit_id}_failed", source=unit.source, start=unit.start, end=unit.end,
                          status="failed", reject_stage="extract", reject_reason="worker_died",
                          reject_detail=detail)
            self.commit(unit.unit_id, [c for c in got] + [failed])

    def _count(self, status: str, reason: str | None, hours: float) -> None:
        s = self.summary
        setattr(s, status, getattr(s, status) + 1)
        if status == "kept":
            s.kept_hours += hours
        else:
            s.rejected_hours += hours
            s.reasons[reason or status] = s.reasons.get(reason or status, 0) + 1
        if self.bar is not None:
            self.bar.set_postfix(kept=s.kept, rejected=s.rejected + s.skipped + s.failed,
                                 hours=f"{s.kept_hours:.3f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write_build_json(out: OutputDir, config: BuildConfig, hashes: dict[str, str], summary: BuildSummary) -> None:
    from vividhead.manifest import read_manifest

    table = read_manifest(out.root)
    statuses = table.column("status").to_pylist()
    durations = table.column("duration").to_pylist()
    totals = {status: statuses.count(status) for status in ("kept", "rejected", "skipped", "failed")}
    hours = {status: sum(d or 0.0 for s, d in zip(statuses, durations) if s == status) / 3600
             for status in ("kept", "rejected")}
    record = {"version": __version__, **hashes, "config": config.model_dump(mode="json"),
              "totals": totals, "hours": hours, "this_run": asdict(summary),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = out.root / ".build.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    os.replace(tmp, out.root / "build.json")
