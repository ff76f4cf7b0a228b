"""The `vividhead build` pipeline on Ray Data: the numbered stages of the README, one Ray call each.

Read top to bottom. Stages 1-2 run as one task per source, 3-7 as one decode pass per work unit
that sends each clip on as soon as it is cut, and the model stages (8-11, the `clips` rows of the
stage table) in actor pools that load their weights once per actor. The last call commits every
clip on the worker as a segment; the driver only collects the segments' small records and sends
each shard's worth to a pack task, which writes the training-sized shard and its manifest part
(`pipelines/commit.py`, `pipelines/segments.py`). Each call's num_cpus / num_gpus / concurrency
come from the stage table, overridden by the build config's `resources:` section, and are written
at the call. A killed build loses only the clips being made; a re-run continues each unit where
its committed pieces stop (`pipelines/resume.py`).
"""

from __future__ import annotations

import shutil
import time
from contextlib import closing
from pathlib import Path

import ray

from vividhead import __version__
from vividhead.manifest import consolidate
from vividhead.pipelines import fetch, stages
from vividhead.pipelines.commit import Committer, ShardTarget
from vividhead.pipelines.config import BuildSettings, SourcesFile, resolve_weights
from vividhead.pipelines.extract import extract_rows, rows_as_made, unit_dataset
from vividhead.pipelines.output import OutputDir
from vividhead.pipelines.ray_setup import on_cluster, stage_pools, start_ray, stop_ray
from vividhead.pipelines.resume import prepare
from vividhead.pipelines.segments import write_segment
from vividhead.pipelines.sources import expand_sources
from vividhead.pipelines.stage_actor import ClipStageActor
from vividhead.pipelines.summary import BuildSummary, count, write_build_json
from vividhead.pipelines.units import SourceRejection, source_unit_id
from vividhead.shards import shard_files
from vividhead.storage import Location, location


def run_build(sources_file: SourcesFile, base: Path, out_dir: Location, config: BuildSettings,
              address: str | None = None, workers: int | None = None, progress: bool = True) -> BuildSummary:
    started = time.time()
    out = OutputDir(location(str(out_dir), config.storage).resolve())
    out.root.mkdir(parents=True, exist_ok=True)
    weights = resolve_weights(config)
    hashes = {"config_hash": config.config_hash(), "content_hash": config.content_hash(),
              "stages_hash": config.stages_hash(weights), "pipeline_version": __version__}
    metric_types = stages.metric_types()
    state = prepare(out, config, hashes, metric_types)
    summary = BuildSummary(str(out.root), units_redone=state.redo, units_redecided=len(state.redecided),
                           orphans_removed=state.orphans_removed, dropped=state.dropped,
                           config_changed=state.config_changed,
                           stage_modes=stages.modes(config, weights))
    committer = Committer(out, metric_types, hashes, ShardTarget(config.shards.max_samples, config.shards.max_bytes),
                          config.ray_resources("pack"), state.pending, state.next_number, progress)
    # A stop (SIGINT / SIGTERM: `vividhead.envfail.Stopped`) or an error may come at any line below: each
    # stream of rows is closed, which stops its Ray Data executor, before Ray is shut down in `finally`.
    try:
        start_ray(address, workers)                          # inside the `try`: a stop during its start ends it
        cluster = ray.cluster_resources()

        # 1-2. sources, probe: expand sources.yaml (driver); fetch, MD5 and probe each source (tasks); dedupe (driver)
        sources, missing = expand_sources(sources_file, base, config.storage)
        rejections = [SourceRejection(source_unit_id(source, "missing"), source, "sources", reason, detail)
                      for source, reason, detail in missing]
        fetched = []
        if sources:
            r = on_cluster(config.ray_resources("fetch"), cluster, pool=False)
            rows = fetch.source_rows(sources, out.md5_cache)
            ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 64))
            ds = ds.map(fetch.fetch_and_probe, fn_args=(config, str(out.downloads)),
                        num_cpus=r.num_cpus, num_gpus=r.num_gpus, concurrency=r.concurrency,
                        max_retries=config.run.max_retries)
            with closing(iter(ds.iter_rows())) as rows:
                fetched = list(rows)
        plan = fetch.plan(fetched, out.md5_cache)
        for rejection in [*rejections, *plan.rejections]:
            if rejection.unit_id not in state.rows:
                committer.reject(rejection)
        points = {unit.unit_id: state.point(unit, config.normalize.fps) for unit in plan.units}
        todo = [unit.resumed(points[unit.unit_id]) for unit in plan.units if not points[unit.unit_id].complete]
        summary.sources, summary.units = len(sources), len(plan.units)
        summary.units_resumed = len(plan.units) - len(todo)
        summary.units_continued = sum(unit.resume_at is not None for unit in todo)
        committer.start(plan.units, len(sources), summary.units_resumed)
        if todo:
            # 3-7. segment, normalize, face, flow, visibility: one decode pass per work unit (tasks), clip by clip
            r = on_cluster(config.ray_resources("decode"), cluster, pool=False)
            ds = unit_dataset(todo).flat_map(extract_rows, fn_args=(config, str(out.staging), str(out.downloads)),
                                             num_cpus=r.num_cpus, num_gpus=r.num_gpus, concurrency=r.concurrency,
                                             max_retries=config.run.max_retries)

            # 8-11. occlusion, speech, sync, annotate: the model stages of the table over the 512 clips, in actor
            # pools; consecutive stages with the same resources on this cluster share a pool (pipelines/ray_setup.py)
            for pool in stage_pools(stages.clip_stages(config), lambda s: config.ray_resources(s.name), cluster):
                r = pool.resources
                ds = ds.map(ClipStageActor, fn_constructor_args=([(s, config.stage_config(s)) for s in pool.stages],
                                                                 weights),
                            num_cpus=r.num_cpus, num_gpus=r.num_gpus, concurrency=r.concurrency)

            # commit: each clip becomes a segment on its worker; full shards are packed by tasks (pipelines/commit.py)
            r = on_cluster(config.ray_resources("commit"), cluster, pool=False)
            committed = {unit.unit_id: points[unit.unit_id].keys for unit in todo if points[unit.unit_id].keys}
            ds = ds.map(write_segment, fn_args=(out.root, hashes, committed),
                        num_cpus=r.num_cpus, num_gpus=r.num_gpus, concurrency=r.concurrency,
                        max_retries=config.run.max_retries)
            with closing(rows_as_made(ds)) as records:
                for record in records:
                    committer.add(record)
        committer.finish_missing(todo, "the unit's worker failed after run.max_retries retries")
        committer.finish()
        shutil.rmtree(out.staging, ignore_errors=True)       # every clip is committed: nothing is staged
        if out.remote:
            shutil.rmtree(out.downloads.parent, ignore_errors=True)   # this node's copies of bucket sources
    finally:
        committer.close()
        stop_ray()
    count(summary, consolidate(out.root), len(shard_files(out.shards)))
    summary.seconds = time.time() - started
    write_build_json(out, config, hashes, stages.stage_names(), summary)
    return summary
