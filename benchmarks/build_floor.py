"""Build wall time against its physical floor, measured on the same inputs in one run.

The floor is one decode of every source (PyAV, frame threads, to RGB as the build needs it) plus
one x264 encode of the kept output at the build's own encoder settings.

Default mode (the demo corpus, or `--sources`): the build runs through the real CLI twice, with
the model stages 8-11 disabled (the decode pass alone: stages 1-7, shards and manifest) and with
the embedded defaults of every stage. Prints the ratios and the throughput in source-hours per
CPU-core-hour.

`--user` mode builds sources of the kind users have from the clips in ../shared/media: 720p30,
`--seconds` (100) long each, different talking clips concatenated and looped, scaled and padded to
1280x720, so every source has real cuts. It prints, all from one run (ratios, since the machine may
be shared): the build with embedded defaults over the floor, source-hours per CPU-core-hour, the
CPU-seconds per source-second of the build's process tree (sampled from /proc twice a second) and of
the floor, with the machine's busy share during the build, the 1 -> 2 worker speed-up, and for a
1-minute and a 2-hour source (the first source cut, and looped by stream copy) the time to the
first committed clip and the peak memory of the whole process tree (driver, raylet, GCS, Ray
workers: the sum of their proportional set sizes, sampled twice a second). The 2-hour build is stopped after `--window` seconds. `--parts profile` records the 2-worker
build with py-spy (all processes) and prints where the time goes.

`--baseline REF` runs every build twice, back to back on the same inputs: once with the code of git
ref REF and once with this checkout, and prints both wall times, their ratios to the floor and the
current/baseline ratio. REF is exported with `git archive` into the scratch folder; the package is
installed editable with a package-dir mapping (top-level `pipelines/` is `vividhead.pipelines`),
so the export gets `vividhead/pipelines -> ../pipelines` (and so on, from REF's own pyproject) and
its builds run with the export as working directory and first on PYTHONPATH. Python's path finder
sits before setuptools' editable finder in `sys.meta_path`, and Ray workers get the driver's
environment and working directory, so driver and workers import REF; a one-task Ray check prints
where a worker imported `vividhead.pipelines` from before the builds start.

    .venv/bin/python benchmarks/build_floor.py                 # the demo corpus
    .venv/bin/python benchmarks/build_floor.py --baseline 131c8ba --workers 2
    .venv/bin/python benchmarks/build_floor.py --sources s.yaml --workers 2
    .venv/bin/python benchmarks/build_floor.py --user --count 2 --seconds 100 --window 300 [--parts speed,minute,hours,profile]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from vividhead import media
from vividhead.configfile import load_yaml_model
from vividhead.media import ClipEncoder
from vividhead.pipelines.config import BuildConfig, SourcesFile
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


REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Code:
    """A version of vividhead to build with: the working directory and PYTHONPATH that make Python import it,
    and the suffix of its output folders."""

    label: str
    root: Path
    pythonpath: str | None = None
    tag: str = ""

    def env(self) -> dict[str, str]:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.pythonpath, env.get("PYTHONPATH")]))
        return env


CURRENT = Code("current", REPO)


def baseline_code(ref: str, work: Path) -> Code:
    """Export git `ref` into `work` and link its mapped top-level folders under its `vividhead/` package."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", f"{ref}^{{commit}}"], check=True,
                            capture_output=True, text=True).stdout.strip()
    root = work / f"baseline-{commit}"
    if not root.is_dir():
        partial = work / f".baseline-{commit}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        archive = subprocess.Popen(["git", "-C", str(REPO), "archive", "--format=tar", commit], stdout=subprocess.PIPE)
        with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
            tar.extractall(partial, filter="data")
        if archive.wait() != 0:
            raise RuntimeError(f"git archive {commit} exited {archive.returncode}")
        mapping = tomllib.loads((partial / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
        for package, folder in mapping.items():
            if package == "vividhead" or folder == "vividhead":
                continue
            link = partial / package.replace(".", "/")
            if link.exists():
                raise RuntimeError(f"{ref}: {link} exists, so {package} cannot be linked to {folder}/")
            link.symlink_to(os.path.relpath(partial / folder, link.parent), target_is_directory=True)
        partial.rename(root)
    return Code(f"baseline {commit}", root, str(root), "-baseline")


WORKER_CHECK = """
import ray
import vividhead.pipelines


@ray.remote
def where():
    import vividhead.pipelines
    return vividhead.pipelines.__file__


ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
print(vividhead.pipelines.__file__)
print(ray.get(where.remote()))
ray.shutdown()
"""


def imported_from(code: Code) -> tuple[str, str]:
    """Where the driver and a Ray worker started as the build starts them import `vividhead.pipelines` from."""
    lines = subprocess.run([sys.executable, "-c", WORKER_CHECK], cwd=code.root, env=code.env(), check=True,
                           capture_output=True, text=True).stdout.split()
    return lines[-2], lines[-1]


def code_versions(baseline: str | None, work: Path) -> list[Code]:
    """The code to build with: this checkout, after `baseline` (checked to be what driver and worker import)."""
    if not baseline:
        return [CURRENT]
    code = baseline_code(baseline, work)
    driver, worker = imported_from(code)
    print(f"{code.label}: the driver imports vividhead.pipelines from {driver}, a Ray worker from {worker}")
    if not (driver.startswith(str(code.root)) and worker.startswith(str(code.root))):
        raise RuntimeError(f"{code.label} would not run its own code: {driver}, {worker}")
    return [code, CURRENT]


def side_by_side(name: str, walls: list[tuple[Code, float]], floor: float) -> None:
    """One build's wall time per code version, as seconds and times the floor, and current over baseline."""
    cells = "   ".join(f"{code.label}: {wall:.1f} s = {wall / floor:.2f} x" for code, wall in walls)
    print(f"{name + ':':<22} {cells}   current / baseline {walls[-1][1] / walls[0][1]:.2f}")


def print_layouts(outs: list[tuple[Code, Path]]) -> None:
    """The top-level entries of each version's output folder (they differ where the layout changed)."""
    for code, out in outs:
        print(f"output of {code.label}: {', '.join(sorted(entry.name for entry in out.iterdir()))}")


def build_seconds(sources: Path, out: Path, config: Path | None, workers: int | None, fresh: bool = True,
                  code: Code = CURRENT) -> float:
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "vividhead.cli", "build", "--sources", str(sources), "--out", str(out),
               "--no-progress"]
    if config:
        command += ["--config", str(config)]
    if workers:
        command += ["--workers", str(workers)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=code.root, env=code.env())
    return time.perf_counter() - start


def profile(out: Path) -> str:
    """Seconds per stage summed over the manifest's per-clip timings."""
    totals: dict[str, float] = {}
    for text in pq.read_table(out / "manifest.parquet").column("timings").to_pylist():
        for stage, seconds in json.loads(text or "{}").items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    return ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in sorted(totals.items(), key=lambda kv: -kv[1]))


# ------------------------------------------------------------------------- sources of the kind users have

# Talking clips of ../shared/media/dev (landscape, square and one portrait), concatenated in turn.
USER_CLIPS = ("yerfor__MimicTalk__German_20s.mp4", "tanshuai0219__EDTalk__uncrop_Obama.mp4",
              "filby89__spectre__W040_level_3_happy_029.mp4", "eknim__video-retalking__docu4_clip.mp4",
              "eknim__video-retalking__min_0422.mp4", "eknim__video-retalking__spacex.mp4",
              "yerfor__MimicTalk__Trump_10s.mp4", "eknim__video-retalking__ema01_13sec.mp4",
              "ai-forever__ghost__obama_short.mp4", "bytedance__LatentSync__demo2_video.mp4")


def user_source(clips: list[Path], seconds: float, target: Path) -> Path:
    """`clips` in turn (looped until `seconds`), each scaled and padded to 1280x720 at 30 fps, with cuts between.
    An existing `target` is reused."""
    if target.exists():
        return target
    chosen, total = [], 0.0
    while total < seconds:
        clip = clips[len(chosen) % len(clips)]
        chosen.append(clip)
        total += media.probe(clip).duration
    inputs, graph = [], []
    for n, clip in enumerate(chosen):
        inputs += ["-i", str(clip)]
        graph.append(f"[{n}:v]scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,"
                     f"fps=30,setsar=1,format=yuv420p[v{n}];[{n}:a]aresample=44100,"
                     f"aformat=sample_fmts=fltp:channel_layouts=stereo[a{n}]")
    pairs = "".join(f"[v{n}][a{n}]" for n in range(len(chosen)))
    graph.append(f"{pairs}concat=n={len(chosen)}:v=1:a=1[v][a]")
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", *inputs, "-filter_complex", ";".join(graph), "-map", "[v]",
                    "-map", "[a]", "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
                    "-g", "60", "-c:a", "aac", "-b:a", "128k", str(target)], check=True)
    return target


def looped(source: Path, seconds: float, target: Path) -> Path:
    """`source` repeated by stream copy (no re-encode) and cut to `seconds`; an existing `target` is reused."""
    if target.exists():
        return target
    repeats = max(1, int(seconds / media.probe(source).duration + 1))
    listing = target.with_suffix(".txt")
    listing.write_text(f"file '{source}'\n" * repeats)
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-t", str(seconds), "-c", "copy", str(target)], check=True)
    return target


def sources_yaml(path: Path, sources: list[Path]) -> Path:
    path.write_text("sources:\n" + "".join(f"  - {str(s)!r}\n" for s in sources))
    return path


# ------------------------------------------------------------------------ a build watched from outside


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _tree(root: int) -> list[int]:
    """`root` and its descendants."""
    tree, todo, found = _children(), [root], []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += tree.get(pid, [])
    return found


def tree_memory_mb(pids: list[int]) -> float:
    """Proportional set size (shared pages split among their users) summed over `pids`."""
    total_kb = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total_kb += next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return total_kb / 1024


def note_cpu_seconds(pids: list[int], seen: dict[int, float]) -> None:
    """Record in `seen` the CPU seconds (user + system, all threads) each of `pids` has used so far. A process's
    time after its last sample is missed, so the sum slightly undercounts."""
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        seen[pid] = (int(fields[11]) + int(fields[12])) / tick


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]                        # idle and iowait
    return sum(values) - idle, sum(values)


@dataclass
class Watched:
    """One watched build: wall seconds, peak tree memory, seconds to the first committed clip, CPU seconds of its
    process tree and the machine's busy share while it ran (every process, not only the build's)."""

    wall: float
    peak_mb: float
    first_clip: float | None
    finished: bool
    cpu: float = 0.0
    busy: float = 0.0


def _committed_clip(out: Path, seen: set[Path]) -> bool:
    """A clip is committed once its segment exists (`.segments/<unit>/<key>.tar`; a source-level row
    is named after its unit) or, in a packed shard or older layouts, once its manifest part has it."""
    segments = out / ".segments"
    if segments.is_dir() and any(path.stem != path.parent.name for path in segments.glob("*/*.tar")):
        return True
    for part in (out / "manifest").rglob("*.parquet") if (out / "manifest").is_dir() else []:
        if part.name.startswith(".") or part in seen:
            continue
        seen.add(part)
        try:
            if any(key is not None for key in pq.read_table(part, columns=["key"]).column("key").to_pylist()):
                return True
        except (OSError, ValueError):
            seen.discard(part)                           # renamed away meanwhile: look again
    return False


def watched_build(sources: Path, out: Path, workers: int | None = None, window: float | None = None,
                  profile_to: Path | None = None, config: Path | None = None, code: Code = CURRENT) -> Watched:
    """Run the CLI build (embedded defaults unless `config`), sampling its process tree; stop it after `window` s."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "vividhead.cli", "build", "--sources", str(sources), "--out", str(out),
               "--no-progress", *(["--workers", str(workers)] if workers else []),
               *(["--config", str(config)] if config else [])]
    if profile_to is not None:
        spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        command = [spy or "py-spy", "record", "--subprocesses", "--rate", "20",
                   "--format", "raw", "--output", str(profile_to), "--", *command]
    log = out.with_name(out.name + ".log")
    start, peak, first, seen = time.perf_counter(), 0.0, None, set()
    cpu: dict[int, float] = {}
    busy_before = busy_jiffies()
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                   cwd=code.root, env=code.env())
        while process.poll() is None:
            elapsed = time.perf_counter() - start
            pids = _tree(process.pid)
            peak = max(peak, tree_memory_mb(pids))
            note_cpu_seconds(pids, cpu)
            if first is None and _committed_clip(out, seen):
                first = elapsed
            if window is not None and elapsed > window:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return Watched(elapsed, peak, first, False, sum(cpu.values()), _busy_since(busy_before))
            time.sleep(0.5)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"build of {sources} exited {process.returncode}: {log.read_text()[-2000:]}")
    if first is None and _committed_clip(out, seen):
        first = wall
    return Watched(wall, peak, first, True, sum(cpu.values()), _busy_since(busy_before))


def _busy_since(before: tuple[int, int]) -> float:
    """The machine's busy share since `before` (`busy_jiffies()`)."""
    busy, total = busy_jiffies()
    return (busy - before[0]) / max(1, total - before[1])


def hot_spots(raw: Path, top: int = 12) -> list[str]:
    """Leaf functions by share of py-spy samples (all processes), from its raw (collapsed) output."""
    leaves: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.split(";")[-1]
        name, _, where = leaf.partition(" (")
        leaves[f"{name} ({Path(where.split(':')[0]).name})"] += int(count)
    total = sum(leaves.values()) or 1
    return [f"{100 * n / total:5.1f}%  {name}" for name, n in leaves.most_common(top)]


def user_mode(args: argparse.Namespace, work: Path) -> int:
    media = Path(os.environ.get("VIVIDHEAD_SHARED", REPO.parent / "shared")) / "media" / "dev"
    clips = [media / name for name in USER_CLIPS if (media / name).is_file()]
    if len(clips) < 3:
        print(f"--user needs the talking clips of {media}; it has {len(clips)} of them", file=sys.stderr)
        return 1
    paths = []
    for i in range(args.count):
        turn = (3 * i) % len(clips)
        paths.append(user_source(clips[turn:] + clips[:turn], args.seconds, work / f"user_{i}.mp4"))
    sources = sources_yaml(work / "user.yaml", paths)
    parts = set(args.parts.split(","))
    if "speed" in parts:
        codes = code_versions(args.baseline, work)
        runs: dict[tuple[str, int], Watched] = {}
        for workers in (2, 1):                           # each code on the same inputs, back to back
            for code in codes:
                out = work / f"out-w{workers}{code.tag}"
                runs[code.label, workers] = watched_build(sources, out, workers=workers, config=args.config, code=code)
        two, one = runs[CURRENT.label, 2], runs[CURRENT.label, 1]
        decode_wall, decode_cpu, source_seconds = decode_seconds(paths)
        encode_wall, encode_cpu, frames = encode_seconds(work / "out-w2", BuildConfig())
        floor, floor_cpu = decode_wall + encode_wall, decode_cpu + encode_cpu
        statuses = pq.read_table(work / "out-w2" / "manifest.parquet").column("status").to_pylist()
        print(f"inputs:     {len(paths)} sources of {args.seconds:g} s, 1280x720 30 fps with cuts "
              f"({source_seconds:.0f} s of video); {statuses.count('kept')} clips kept ({frames} frames), "
              f"{len(statuses)} manifest rows")
        print(f"floor:      {floor:.1f} s (decode {decode_wall:.1f} s + x264 {BuildConfig().encode.preset} encode of "
              f"the kept output {encode_wall:.1f} s)")
        print(f"build, embedded defaults, --workers 2: {two.wall:.1f} s = {two.wall / floor:.2f} x the floor; peak "
              f"tree memory {two.peak_mb:.0f} MB; first clip committed {_when(two.first_clip)}")
        print(f"throughput: {source_seconds / 3600 / (two.wall * 2 / 3600):.3f} source-hours per CPU-core-hour "
              "(2 workers)")
        print(f"CPU-seconds per source-second: build {two.cpu / source_seconds:.3f} ({two.cpu:.1f} CPU-s, process tree), "
              f"floor {floor_cpu / source_seconds:.3f} ({floor_cpu:.1f} CPU-s): {two.cpu / floor_cpu:.2f} x; machine busy "
              f"{two.busy:.0%} during the build")
        print(f"--workers 1: {one.wall:.1f} s; speed-up 1 -> 2 workers {one.wall / two.wall:.2f}x")
        print("where the time goes (CPU-seconds summed over clips, from the manifest): " + profile(work / "out-w2"))
        if len(codes) > 1:
            for workers in (2, 1):
                side_by_side(f"build --workers {workers}", [(code, runs[code.label, workers].wall) for code in codes],
                             floor)
            print("CPU-seconds per source-second, --workers 2: " + "   ".join(
                f"{code.label}: {runs[code.label, 2].cpu / source_seconds:.3f}" for code in codes))
            print_layouts([(code, work / f"out-w2{code.tag}") for code in codes])
    if "minute" in parts:
        minute = watched_build(sources_yaml(work / "minute.yaml", [looped(paths[0], 60, work / "user_1min.mp4")]),
                               work / "out-1min", config=args.config)
        print(f"1-minute source: {minute.wall:.1f} s, first clip committed {_when(minute.first_clip)}, "
              f"peak tree memory {minute.peak_mb:.0f} MB")
    if "hours" in parts:
        hours = watched_build(sources_yaml(work / "hours.yaml", [looped(paths[0], 7200, work / "user_2h.mp4")]),
                              work / "out-2h", window=args.window, config=args.config)
        state = "finished" if hours.finished else f"stopped after {args.window:g} s"
        print(f"2-hour source ({state}): first clip committed {_when(hours.first_clip)}, peak tree memory "
              f"{hours.peak_mb:.0f} MB")
    if "profile" in parts:
        raw = work / "profile.txt"
        watched_build(sources, work / "out-profile", workers=2, profile_to=raw, config=args.config)
        print("where the time goes (py-spy, all processes of the 2-worker build, share of samples by leaf function):")
        for line in hot_spots(raw):
            print("  " + line)
    return 0


def _when(value: float | None) -> str:
    return f"after {value:.0f} s" if value is not None else "none yet"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=Path, help="sources.yaml (default: the generated demo corpus)")
    parser.add_argument("--workers", type=int, help="CPUs given to the build's local Ray (default: all)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--user", action="store_true", help="720p30 sources with cuts made from ../shared/media")
    parser.add_argument("--count", type=int, default=2, help="--user: how many sources")
    parser.add_argument("--seconds", type=float, default=100.0, help="--user: length of each source")
    parser.add_argument("--window", type=float, default=300.0, help="--user: seconds the 2-hour build may run")
    parser.add_argument("--parts", default="speed,minute,hours",
                        help="--user: which measurements, of speed,minute,hours,profile (py-spy)")
    parser.add_argument("--config", type=Path, help="--user: a build config for every build (default: none)")
    parser.add_argument("--baseline", metavar="REF", help="also build with the code of git ref REF, back to back")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vividhead-floor-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.user:
        return user_mode(args, work)
    sources = args.sources
    if sources is None:
        from vividhead.demo import make_demo_corpus

        sources = make_demo_corpus(work / "demo-sources")
    listed, _ = expand_sources(load_yaml_model(SourcesFile, sources), sources.resolve().parent)
    paths = [Path(s.uri) for s in listed if Path(s.uri).is_file()]
    cores = args.workers or os.cpu_count() or 1
    core_only = work / "core-only.yaml"
    core_only.write_text("".join(f"{name}: {{enabled: false}}\n" for name in ("occlusion", "speech", "sync", "annotate")))

    codes = code_versions(args.baseline, work)
    walls: dict[tuple[str, str], float] = {}
    for name, config, fresh in (("stages 1-7", core_only, True), ("fixed cost", core_only, False),
                                ("all stages", None, True)):
        for code in codes:                               # each code on the same inputs, back to back
            out = work / f"out-{'core' if config else 'full'}{code.tag}"
            walls[code.label, name] = build_seconds(sources, out, config, args.workers, fresh, code)
    core_wall, fixed, full_wall = (walls[CURRENT.label, name] for name in ("stages 1-7", "fixed cost", "all stages"))
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
    if len(codes) > 1:
        for name in ("stages 1-7", "fixed cost", "all stages"):
            side_by_side(f"build, {name}", [(code, walls[code.label, name]) for code in codes], floor)
        print_layouts([(code, work / f"out-full{code.tag}") for code in codes])
    return 0


if __name__ == "__main__":
    sys.exit(main())
