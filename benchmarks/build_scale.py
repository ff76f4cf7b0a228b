"""Scaling figures of `vividhead build`: 1 vs 2 workers, and peak memory against source length.

    .venv/bin/python benchmarks/build_scale.py workers            # the demo corpus with --workers 1, then 2
    .venv/bin/python benchmarks/build_scale.py memory --minutes 1 30

`workers` runs the real CLI (model stages included) on the demo corpus and prints the speed-up.
`memory` loops one demo take (stream copy, no re-encode) into sources of the given lengths, then
runs the decode pass of stages 1-7 over every work unit of each source in a fresh process and
prints its peak resident memory (ru_maxrss): it stays flat because a long source is split into
`segment.unit_seconds` units and each unit keeps only the current clip's frames and audio.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("workers", "memory"))
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 30.0])
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vividhead-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.what == "memory":
        memory(args.minutes, work)
    else:
        workers(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
