"""Scaling figures of `vividhead build`: 1 vs 2 workers, and peak memory against source length.

    .venv/bin/python benchmarks/build_scale.py workers            # the demo corpus with --workers 1, then 2
    .venv/bin/python benchmarks/build_scale.py memory --minutes 1 30
    .venv/bin/python benchmarks/build_scale.py resume --rows 1000000

`workers` runs the real CLI (model stages included) on the demo corpus and prints the speed-up.
`memory` loops one demo take (stream copy, no re-encode) into sources of the given lengths, then
runs the decode pass of stages 1-7 over every work unit of each source in a fresh process and
prints its peak resident memory (ru_maxrss): it stays flat because a long source is split into
`segment.unit_seconds` units and each unit keeps only the current clip's frames and audio.
`resume` writes a manifest of `--rows` rows in the build's layout (one part per 1,000-clip shard,
the build's schema, 3 clips per unit) and times resume's start-up (`pipelines/resume.py::prepare`):
the first run reads every part into the ledger, a re-run reads the ledger only, and a run after one
more shard reads that part only; then it times `vividhead inspect`'s summary over the same rows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from vividhead.inspection.reader import resolve
from vividhead.inspection.summary import summarize
from vividhead.manifest import manifest_schema
from vividhead.pipelines.config import BuildConfig
from vividhead.pipelines.output import OutputDir, pack_name
from vividhead.pipelines.resume import prepare
from vividhead.pipelines.rows import write_part
from vividhead.pipelines.stages import metric_types
from vividhead.weights import Weights

MEASURE = r'''
import resource, sys, time
from pathlib import Path
from vividhead.models.face_detect import make_face_detector
from vividhead.pipelines.config import BuildConfig
from vividhead.pipelines.extract import UnitExtractor
from vividhead.pipelines.records import Source
from vividhead.pipelines.sources import md5_of
from vividhead.pipelines.units import plan_source

path, staging = sys.argv[1], Path(sys.argv[2])
config = BuildConfig()
source = Source(path, path, md5=md5_of(Path(path)))      # streamed, as the build hashes
units = plan_source(source, path, config)
detector = make_face_detector("mediapipe", None)
start, kept = time.perf_counter(), 0
for unit in units:
    clips = UnitExtractor(unit, config, staging / unit.unit_id, detector).run()
    kept += sum(c.status == "kept" for c in clips)
print(len(units), kept, round(time.perf_counter() - start, 1), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
'''


def looped_source(take: Path, minutes: float, target: Path) -> Path:
    """`take` repeated (stream copy) to at least `minutes` long."""
    from vividhead.media import probe

    loops = max(1, int(minutes * 60 / probe(take).duration + 0.999))
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-stream_loop", str(loops - 1), "-i", str(take),
                    "-t", str(minutes * 60), "-c", "copy", str(target)], check=True)
    return target


def memory(minutes: list[float], work: Path) -> None:
    from vividhead.demo import make_demo_corpus

    take = make_demo_corpus(work / "demo-sources").parent / "talk_anna.mp4"
    for length in minutes:
        source = looped_source(take, length, work / f"long_{length:g}min.mp4")
        staging = work / f"staging_{length:g}"
        result = subprocess.run([sys.executable, "-c", MEASURE, str(source), str(staging)], check=True,
                                capture_output=True, text=True)
        units, kept, seconds, peak_mb = result.stdout.split()[-4:]
        print(f"{length:g}-minute source: {units} units, {kept} clips kept, decode pass {seconds} s, "
              f"peak memory {peak_mb} MB", flush=True)
        shutil.rmtree(staging, ignore_errors=True)


def workers(work: Path) -> None:
    from vividhead.demo import make_demo_corpus

    sources = make_demo_corpus(work / "demo-sources")
    walls = {}
    for count in (1, 2):
        out = work / f"out_{count}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vividhead.cli", "build", "--sources", str(sources), "--out", str(out),
                        "--workers", str(count), "--no-progress"], check=True, capture_output=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
        walls[count] = time.perf_counter() - start
        print(f"--workers {count}: {walls[count]:.1f} s", flush=True)
    print(f"speed-up from 1 to 2 workers: {walls[1] / walls[2]:.2f}x")


def resume(rows: int, work: Path) -> None:
    """Resume's start-up over a manifest of `rows` rows, cold, warm, and after one more shard."""
    config = BuildConfig()
    hashes = {"config_hash": config.config_hash(), "content_hash": config.content_hash(),
              "stages_hash": config.stages_hash(Weights()), "pipeline_version": "bench"}
    out = OutputDir(work / "resume-out")
    shutil.rmtree(out.root, ignore_errors=True)
    types, schema = metric_types(), manifest_schema(metric_types())
    rng = np.random.default_rng(0)

    def part(number: int, count: int) -> None:
        first = number * count
        units = [f"{(first + i) // 3:016x}_00000000_00600000" for i in range(count)]
        starts = [float((first + i) % 3 * 20) for i in range(count)]
        status = rng.choice(["kept", "rejected"], size=count, p=[0.3, 0.7])
        table = {"key": [f"{u[:16]}_{round(s * 1000):08d}_{round(s * 1000) + 20000:08d}_abcdef12"
                         for u, s in zip(units, starts)],
                 "unit": units, "status": status.tolist(), "start": starts, "end": [s + 20 for s in starts],
                 "duration": [20.0] * count, "segment.piece_start": starts,
                 "segment.end_reason": ["cut", "cut", "end"] * (count // 3) + ["cut"] * (count % 3),
                 "reject_reason": [None if s == "kept" else "no_speech" for s in status],
                 "shard": [f"{pack_name(number)}.tar" if s == "kept" else None for s in status],
                 "speech.speech_ratio": rng.uniform(0, 1, count).tolist(), "timings": ["{}"] * count,
                 **{name: [value] * count for name, value in hashes.items()}}
        rows = pa.Table.from_pydict({n: table.get(n, [None] * count) for n in schema.names}, schema=schema).to_pylist()
        write_part(out.part(pack_name(number)), rows, types, hashes["stages_hash"])

    per_part = 3000                          # 1,000 kept clips and the rows rejected meanwhile
    parts = max(1, rows // per_part)
    tick = time.perf_counter()
    for number in range(parts):
        part(number, per_part)
    print(f"wrote {parts * per_part:,} rows in {parts} parts: {time.perf_counter() - tick:.1f} s", flush=True)
    for label in ("first run (every part read into the ledger)", "re-run (the ledger only)"):
        tick = time.perf_counter()
        state = prepare(out, config, hashes, types)
        print(f"resume start-up, {label}: {time.perf_counter() - tick:.2f} s, {len(state.rows):,} units", flush=True)
    part(parts, per_part)
    tick = time.perf_counter()
    prepare(out, config, hashes, types)
    print(f"resume start-up after one more shard (its part read): {time.perf_counter() - tick:.2f} s", flush=True)
    tick = time.perf_counter()
    summarize(resolve([out.root]))
    print(f"inspect summary over {(parts + 1) * per_part:,} rows: {time.perf_counter() - tick:.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("workers", "memory", "resume"))
    parser.add_argument("--rows", type=int, default=1_000_000, help="resume: manifest rows")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 30.0])
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vividhead-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.what == "memory":
        memory(args.minutes, work)
    elif args.what == "resume":
        resume(args.rows, work)
    else:
        workers(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
