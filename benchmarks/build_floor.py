"""Build wall time against its physical floor, measured on the same inputs in one run.

The floor is one decode of every source (PyAV, frame threads, to RGB as the build needs it) plus
one x264 encode of the kept output at the build's own encoder settings. The build runs through the
real CLI twice: with the model stages 8-11 disabled (the decode pass alone: stages 1-7, shards and
manifest) and with the embedded defaults of every stage. Prints the ratios and the throughput in
source-hours per CPU-core-hour.

    .venv/bin/python benchmarks/build_floor.py                 # the demo corpus
    .venv/bin/python benchmarks/build_floor.py --sources s.yaml --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from vividhead.config import BuildConfig, SourcesFile
from vividhead.configfile import load_yaml_model
from vividhead import media
from vividhead.media import ClipEncoder
from vividhead.pipelines.sources import expand_sources
from vividhead.shards import iter_samples


def decode_pass_seconds(paths: list[Path], config: BuildConfig, work: Path) -> tuple[float, float]:
    """Wall and CPU time of stages 2-7 run in this process (no Ray) over every unit of every source."""
    import hashlib

    from vividhead.models.face_detect import make_face_detector
    from vividhead.pipelines.extract import UnitExtractor
    from vividhead.pipelines.records import Source
    from vividhead.pipelines.units import plan_source

    detector = make_face_detector("mediapipe", None)
    wall, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        source = Source(str(path), str(path), md5=hashlib.md5(path.read_bytes()).hexdigest())
        units = plan_source(source, str(path), config)
        for unit in units if isinstance(units, list) else []:
            UnitExtractor(unit, config, work / "in-process" / unit.unit_id, detector).run()
    return time.perf_counter() - wall, time.process_time() - cpu


def decode_seconds(paths: list[Path]) -> tuple[float, float, float]:
    """Wall and CPU time to decode every source to RGB once, and the total source duration."""
    duration = sum(media.probe(path).duration for path in paths)
    start, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        for _ in media.frames(path):
            pass
    return time.perf_counter() - start, time.process_time() - cpu, duration


def encode_seconds(out: Path, config: BuildConfig) -> tuple[float, float, int]:
    """Wall and CPU time to x264-encode the kept clips' frames (decoded beforehand) at the build's settings."""
    clips = []
    for shard in sorted((out / "shards").glob("*.tar")):
        for sample in iter_samples(shard):
            clips.append([frame.image for frame in media.frames(sample.files["mp4"])])
    enc = config.encode
    start, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        for i, frames in enumerate(clips):
            encoder = ClipEncoder(Path(tmp) / f"{i}.mp4", config.face.size, config.normalize.fps,
                                  config.normalize.sample_rate, enc.codec, enc.preset, enc.crf, enc.audio_bitrate,
                                  enc.threads)
            for frame in frames:
                encoder.add(frame)
            encoder.close(np.zeros(int(len(frames) / config.normalize.fps * config.normalize.sample_rate), np.float32))
    return time.perf_counter() - start, time.process_time() - cpu, sum(len(c) for c in clips)


def build_seconds(sources: Path, out: Path, config: Path | None, workers: int | None, fresh: bool = True) -> float:
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "vividhead.cli", "build", "--sources", str(sources), "--out", str(out),
               "--no-progress"]
    if config:
        command += ["--config", str(config)]
    if workers:
        command += ["--workers", str(workers)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - start


def profile(out: Path) -> str:
    """Seconds per stage summed over the manifest's per-clip timings."""
    totals: dict[str, float] = {}
    for text in pq.read_table(out / "manifest.parquet").column("timings").to_pylist():
        for stage, seconds in json.loads(text or "{}").items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    return ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in sorted(totals.items(), key=lambda kv: -kv[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=Path, help="sources.yaml (default: the generated demo corpus)")
    parser.add_argument("--workers", type=int, help="CPUs given to the build's local Ray (default: all)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vividhead-floor-"))
    sources = args.sources
    if sources is None:
        from vividhead.demo import make_demo_corpus

        sources = make_demo_corpus(work / "demo-sources")
    listed, _ = expand_sources(load_yaml_model(SourcesFile, sources), sources.resolve().parent)
    paths = [Path(s.uri) for s in listed if Path(s.uri).is_file()]
    cores = args.workers or os.cpu_count() or 1
    core_only = work / "core-only.yaml"
    core_only.write_text("".join(f"{name}: {{enabled: false}}\n" for name in ("occlusion", "speech", "sync", "annotate")))

    core_wall = build_seconds(sources, work / "out-core", core_only, args.workers)
    fixed = build_seconds(sources, work / "out-core", core_only, args.workers, fresh=False)
    full_wall = build_seconds(sources, work / "out-full", None, args.workers)
    decode_wall, decode_cpu, source_seconds = decode_seconds(paths)
    encode_wall, encode_cpu, frames = encode_seconds(work / "out-core", BuildConfig())
    floor, floor_cpu = decode_wall + encode_wall, decode_cpu + encode_cpu
    pass_wall, pass_cpu = decode_pass_seconds(paths, BuildConfig(), work)
    kept = pq.read_table(work / "out-core" / "manifest.parquet").column("status").to_pylist().count("kept")
    print(f"inputs:            {len(paths)} sources, {source_seconds:.1f} s of video; {kept} clips kept "
          f"({frames} frames) by stages 1-7")
    print(f"floor:             {floor:.1f} s  (decode {decode_wall:.1f} s + encode of the kept output "
          f"{encode_wall:.1f} s, x264 {BuildConfig().encode.preset})")
    print(f"decode pass, stages 2-7 in one process (no Ray): {pass_wall:.1f} s = {pass_wall / floor:.2f} x the floor; "
          f"CPU {pass_cpu:.1f} s = {pass_cpu / floor_cpu:.2f} x the floor's CPU {floor_cpu:.1f} s")
    print(f"build, stages 1-7: {core_wall:.1f} s  = {core_wall / floor:.2f} x the floor")
    print(f"fixed cost:        {fixed:.1f} s  (a re-run with nothing left to do: process and Ray start, hashing, "
          f"probing); without it stages 1-7 take {(core_wall - fixed) / floor:.2f} x the floor")
    print(f"build, all stages: {full_wall:.1f} s  = {full_wall / floor:.2f} x the floor")
    print("where the time goes (CPU-seconds summed over clips, all stages): " + profile(work / "out-full"))
    for label, wall in (("stages 1-7", core_wall), ("all stages", full_wall)):
        print(f"throughput ({label}): {source_seconds / 3600 / (wall * cores / 3600):.3f} source-hours per "
              f"CPU-core-hour on {cores} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
