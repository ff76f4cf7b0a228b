"""Kill a build anywhere, run it again, and check the output equals an uninterrupted build.

The corpus has every kind of row: kept clips and clip rejections (the demo corpus: a talking head,
a cut into a piece too short, a faceless video), source rejections (no audio, too low a resolution,
too short, a missing file), a duplicate (same bytes under another name), a failed unit (its decode
pass always raises, through the fault hook) and a long source split into several work units. The
build config has one-sample shards, so packs happen all through the build, and the model stages
8-11 off (`--stages full` keeps them on).

A clean build runs first (twice with `--kills`). Then each trial starts a fresh build of the same
corpus into its own folder and kills its whole process group (driver, local Ray, workers) with SIGKILL:
- `--kills N` times spread evenly over the clean build's wall time (one random moment in each of N
  equal slices, seeded by `--seed`; the faster of two clean builds, which must agree); a kill that
  would land after the build ended is counted apart;
- at each named moment of `benchmarks/faults/sitecustomize.py` (inside a pack, between a shard and
  its manifest part, after a source-level segment, while the ledger or the manifest is written...):
  the hook stops the build there and the harness kills it.
Each trial then re-runs the build once (without kills; it must exit 0) and compares keys and per-clip
decisions with the clean build; no duplicate key, no temporary file, nothing left in `.segments/` or
`.staging/`, no shard without its manifest part. Injected faults (`--faults`): Ray workers SIGKILLed
mid-clip (the build must finish by itself); the loss of the node running a decode task mid-clip, on
a local cluster of a head without CPUs and two worker nodes, all started with the fault env; ENOSPC
inside a pack; a truncated and a corrupt segment tar on disk (resume must record both); SIGINT to the
process group and SIGTERM to the driver, `--signals` builds each, at seeded moments spread over the build
(every one stops within seconds with exactly one line saying how to resume, exit 130 / 143, no process
left, and its re-run equals the clean build);
every `.cache/` file overwritten with garbage.

    .venv/bin/python benchmarks/kill_anywhere.py --kills 30 --seed 1 --faults all
    .venv/bin/python benchmarks/kill_anywhere.py --kills 0 --moments pack_part,ledger --faults none
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from vividhead.pipelines.ray_setup import parent_of, with_descendants

REPO = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "faults"
MODEL_STAGES = ("occlusion", "speech", "sync", "annotate")
MOMENTS = ("source_segment", "clip_segment", "pack_intent", "pack_shard", "pack_part", "pack_finish", "manifest")
FAULTS = ("worker", "node", "enospc", "segment", "signals", "cache")
FAIL_SOURCE = "fail_me.mp4"


# ---------------------------------------------------------------------------------------------- corpus
def _ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True, timeout=120)


def _synthetic(path: Path, seconds: float, size: str, audio: bool) -> None:
    """A test-pattern video (no face), with a tone when `audio`."""
    inputs: list[str | Path] = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration={seconds}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    _ffmpeg(*inputs, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            *(["-c:a", "aac", "-shortest"] if audio else []), path)


def make_corpus(folder: Path, demo: bool = False, long_copies: int = 3) -> Path:
    """Write the corpus and its sources.yaml into `folder`; returns the sources.yaml path.

    Two of the demo's videos (a talking head and the faceless one; `demo`: all five) and a long source
    of `long_copies` talking heads in a row, one work unit each (none when 0)."""
    from vividhead.demo import TAKES, astronaut, write_take

    folder.mkdir(parents=True, exist_ok=True)
    photo = astronaut()
    takes = [t for t in TAKES if demo or t.name in ("talk_anna", "no_face")]
    for take in takes:
        write_take(take, folder / f"{take.name}.mp4", photo)
    names = [f"{take.name}.mp4" for take in takes if take.name != "talk_ranges"]
    shutil.copyfile(folder / "talk_anna.mp4", folder / "talk_anna_copy.mp4")          # duplicate
    _synthetic(folder / "silent.mp4", 6, "640x480", audio=False)                       # no_audio
    _synthetic(folder / "short.mp4", 2, "640x480", audio=True)                         # too_short
    _synthetic(folder / "tiny.mp4", 6, "160x120", audio=True)                          # resolution_too_low
    _synthetic(folder / FAIL_SOURCE, 6, "640x480", audio=True)                         # failed unit
    names += ["talk_anna_copy.mp4", "silent.mp4", "short.mp4", "tiny.mp4", FAIL_SOURCE, "missing.mp4"]
    if long_copies:
        listing = folder / "long.txt"
        listing.write_text("".join(f"file '{folder / 'talk_anna.mp4'}'\n" for _ in range(long_copies)))
        _ffmpeg("-f", "concat", "-safe", "0", "-i", listing, "-c", "copy", folder / "long.mp4")   # several units
        names.append("long.mp4")
    entries = [{"path": name, "dataset": "kill"} for name in names]
    if demo:
        entries.append({"path": "talk_ranges.mp4", "dataset": "kill", "ranges": [[0.0, 5.5], [5.5, 11.0]]})
    sources = folder / "sources.yaml"
    sources.write_text(json.dumps({"sources": entries}, indent=1))
    return sources


def write_config(path: Path, full: bool = False) -> Path:
    """One-sample shards (packs all through the build), six-second work units, model stages off unless `full`."""
    lines = ["shards: {max_samples: 1}", "segment: {unit_seconds: 6.0}", "run: {max_retries: 2}"]
    if not full:
        lines += [f"{name}: {{enabled: false}}" for name in MODEL_STAGES]
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------------------------- runs
@dataclass
class Build:
    """How to run `vividhead build` over the corpus: its arguments and the fault environment."""

    sources: Path
    config: Path
    workers: int = 2
    address: str | None = None

    def args(self, out: Path) -> list[str]:
        args = [sys.executable, "-m", "vividhead.cli", "build", "--sources", str(self.sources), "--config",
                str(self.config), "--out", str(out), "--no-progress"]
        return args + (["--address", self.address] if self.address else ["--workers", str(self.workers)])


def fault_env(fault_dir: Path, faults: str = "") -> dict[str, str]:
    """The environment of a build (and of `ray start` nodes) with the fault hook enabled."""
    fault_dir.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, "PYTHONPATH": path, "VH_FAULT_DIR": str(fault_dir), "VH_FAULTS": faults,
           "VH_FAIL_SOURCE": FAIL_SOURCE, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return env


def start(build: Build, out: Path, fault_dir: Path, faults: str = "", log: Path | None = None) -> subprocess.Popen:
    """Start a build in its own session (so its whole process group can be killed)."""
    for old in fault_dir.glob("*") if fault_dir.exists() else []:
        old.unlink()
    handle = open(log or os.devnull, "ab")
    try:
        return subprocess.Popen(build.args(out), stdout=handle, stderr=subprocess.STDOUT,
                                env=fault_env(fault_dir, faults), start_new_session=True, preexec_fn=_as_in_a_terminal)
    finally:
        handle.close()


def _as_in_a_terminal() -> None:
    """In the build's process, before it runs: SIGINT at its default, as in a terminal's foreground job, even
    when the harness itself ignores it (a background job of a non-interactive shell ignores SIGINT, and so
    would the build: Python keeps an inherited SIG_IGN)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def session_left(sid: int, wait: float = 5.0) -> list[int]:
    """The processes of session `sid` still alive `wait` seconds after its leader ended (none: Ray was shut down)."""
    deadline = time.monotonic() + wait
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return session_pids(sid)


def session_pids(sid: int) -> list[int]:
    """Every process of session `sid` (the build's driver, its local Ray and Ray's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:                       # field 6 of /proc/PID/stat: the session id
            found.append(int(entry.name))
    return found


def wait_for(process: subprocess.Popen, ready: Path | Callable[[], bool], timeout: float = 600) -> bool:
    """Wait until `ready` (a file appears, or the callable says so), the build exits, or `timeout`."""
    check = ready.exists if isinstance(ready, Path) else ready
    deadline = time.monotonic() + timeout
    while not check() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def kill_all(process: subprocess.Popen) -> None:
    """SIGKILL the build's process group and anything left in its session, and reap the driver."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in session_pids(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    deadline = time.monotonic() + 10
    while session_pids(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def run_to_end(build: Build, out: Path, fault_dir: Path, log: Path, faults: str = "", timeout: float = 900) -> int:
    """Run the build until it exits; its exit status."""
    process = start(build, out, fault_dir, faults, log)
    try:
        return process.wait(timeout=timeout)
    finally:
        kill_all(process)


def finish(build: Build, out: Path, fault_dir: Path, log: Path) -> int:
    """Re-run without injected kills (the failed unit's fault stays on); its exit status, which must be 0."""
    return run_to_end(build, out, fault_dir, log)


# ------------------------------------------------------------------------------------------ comparing
@dataclass
class Outcome:
    """What the harness compares: per-clip decisions and the shards' sample keys."""

    decisions: list[tuple]
    shard_keys: list[str]
    seconds: float = 0.0


def outcome(out: Path) -> Outcome:
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    decisions = sorted((Path(r["uri"]).name, r["key"], r["unit"], r["status"], r["reject_stage"], r["reject_reason"],
                        r["start"], r["end"]) for r in rows)
    keys = []
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            keys += sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})
    return Outcome(decisions, sorted(keys))


def problems(out: Path, clean: Outcome) -> list[str]:
    """Every way `out` differs from the clean build or holds what a finished build must not."""
    found = []
    if not (out / "manifest.parquet").exists():
        return ["no manifest.parquet"]
    got = outcome(out)
    if got.decisions != clean.decisions:
        missing = sorted(set(clean.decisions) - set(got.decisions))[:3]
        extra = sorted(set(got.decisions) - set(clean.decisions))[:3]
        found.append(f"decisions differ: missing {missing}, extra {extra}")
    if got.shard_keys != clean.shard_keys:
        found.append(f"shard keys differ: {len(got.shard_keys)} against {len(clean.shard_keys)}")
    if len(set(got.shard_keys)) != len(got.shard_keys):
        found.append("a key is in two shards")
    keys = [d[1] for d in got.decisions if d[1]]
    if len(keys) != len(set(keys)):
        found.append("a key has two manifest rows")
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") and p.name.endswith((".tmp", ".part"))]
    leftovers += [p for p in (out / ".segments").rglob("*") if p.is_file()] if (out / ".segments").exists() else []
    leftovers += list((out / ".staging").rglob("*")) if (out / ".staging").exists() else []
    if leftovers:
        found.append(f"left behind: {[str(p.relative_to(out)) for p in leftovers[:5]]}")
    parts = {p.stem for p in (out / "manifest").glob("*.parquet")}
    orphans = [s.name for s in (out / "shards").glob("*.tar") if s.stem not in parts]
    if orphans:
        found.append(f"shards without their manifest part: {orphans}")
    return found


def dropped(out: Path) -> dict[str, str]:
    """What the last run's resume dropped (build.json this_run.dropped)."""
    return json.loads((out / "build.json").read_text())["this_run"]["dropped"]


# ------------------------------------------------------------------------------------------- trials
@dataclass
class Trial:
    """One kill (or fault) and its re-run."""

    name: str
    landed: bool = True                 # False: the build ended before the kill
    problems: list[str] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0
    stopped_in: float | None = None     # a signal's trial: seconds from the signal to the build's exit


class Harness:
    """Runs the clean build and the trials in `work`, each in its own output folder."""

    def __init__(self, build: Build, work: Path, log: Callable[[str], None] = print) -> None:
        self.build, self.work, self.say = build, work, log
        self.clean: Outcome | None = None
        self.count = 0

    def folder(self, name: str) -> tuple[Path, Path, Path]:
        self.count += 1
        base = self.work / f"{self.count:03d}-{name}"
        base.mkdir(parents=True)
        return base / "out", base / "faults", base / "log.txt"

    def run_clean(self, twice: bool = False) -> Outcome:
        """An uninterrupted build, the reference. `twice`: a second one, which must agree, and the reference is
        timed as the faster of the two (kills spread over a build slowed by a busy moment would land after the
        trials' builds ended)."""
        seconds = []
        for name in ("clean", "clean-again")[:1 + twice]:
            out, faults, log = self.folder(name)
            began = time.monotonic()
            status = run_to_end(self.build, out, faults, log)
            if status != 0:
                raise SystemExit(f"the {name} build exited {status}; see {log}")
            seconds.append(time.monotonic() - began)
            if self.clean is None:
                self.clean, self.clean_dir = outcome(out), out
            elif differ := problems(out, self.clean):
                raise SystemExit(f"two uninterrupted builds differ: {'; '.join(differ)} ({self.clean_dir}, {out})")
        self.clean.seconds = min(seconds)
        return self.clean

    def _check(self, trial: Trial, out: Path, faults: Path, log: Path, began: float) -> Trial:
        status = finish(self.build, out, faults, log)
        trial.problems = [f"the re-run exited {status} (see {log})"] if status else problems(out, self.clean)
        trial.seconds = time.monotonic() - began
        self.say(f"  {trial.name:<34} {'ok' if not trial.problems else 'DIFFERS: ' + '; '.join(trial.problems)}"
                 f"{'' if trial.landed else ' (the build had ended: no kill)'}{' ' + trial.note if trial.note else ''}"
                 f" [{trial.seconds:.0f} s]")
        return trial

    def kill_at_time(self, seconds: float) -> Trial:
        """SIGKILL the build `seconds` after it started."""
        out, faults, log = self.folder(f"t{seconds:.1f}")
        began = time.monotonic()
        process = start(self.build, out, faults, log=log)
        try:
            process.wait(timeout=seconds)
            landed = False
        except subprocess.TimeoutExpired:
            landed = True
        kill_all(process)
        return self._check(Trial(f"kill at {seconds:.1f} s", landed), out, faults, log, began)

    def kill_at_moment(self, moments: list[tuple[str, int]], timeout: float = 600) -> Trial:
        """Stop the build at each named moment in turn (the n-th time it is reached), SIGKILL it there."""
        name = "+".join(f"{point}#{n}" for point, n in moments)
        out, faults, log = self.folder(name.replace("#", "-"))
        began = time.monotonic()
        landed = True
        for point, n in moments:
            process = start(self.build, out, faults, f"{point}:{n}:stop", log)
            landed &= wait_for(process, faults / f"hit-{point}", timeout)
            kill_all(process)
        return self._check(Trial(f"kill at {name}", landed), out, faults, log, began)

    def worker_kill(self, kills: int = 2) -> Trial:
        """SIGKILL Ray workers mid-clip (after a unit's first clip): the build must finish by itself."""
        out, faults, log = self.folder("worker-kill")
        began = time.monotonic()
        faults.mkdir(parents=True)
        trial = Trial(f"{kills} Ray workers killed mid-clip")
        process = start(self.build, out, faults, f"clip:{'+'.join(str(2 * n + 1) for n in range(kills))}:die", log)
        status = process.wait(timeout=900)
        kill_all(process)
        reached = (faults / "count-clip").stat().st_size if (faults / "count-clip").exists() else 0
        trial.landed = reached >= 2 * kills - 1
        trial.note = f"{min(kills, (reached + 1) // 2)} workers died mid-clip, {reached} first clips made"
        if status != 0:
            trial.problems.append(f"the build exited {status} (see {log})")
        else:
            trial.problems = problems(out, self.clean)
        trial.seconds = time.monotonic() - began
        self.say(f"  {trial.name:<34} {'ok' if not trial.problems else 'DIFFERS: ' + '; '.join(trial.problems)}"
                 f" {trial.note} [{trial.seconds:.0f} s]")
        return trial

    def enospc(self) -> Trial:
        """ENOSPC inside a pack: the build stops with one line naming the output; the re-run completes."""
        out, faults, log = self.folder("enospc-pack")
        began = time.monotonic()
        status = run_to_end(self.build, out, faults, log, "pack_shard:2:enospc")
        last = last_line(log)
        trial = Trial("ENOSPC inside a pack", note=f"exit {status}: {last!r}")
        if status != 1 or "no space left" not in last:
            trial.problems.append(f"the full disk did not end the build with its line (exit {status})")
        return self._check(trial, out, faults, log, began)

    def damaged_segments(self) -> Trial:
        """A kill leaves segments; one is truncated, one overwritten: resume drops, records and remakes them."""
        out, faults, log = self.folder("damaged-segments")
        began = time.monotonic()
        process = start(self.build, out, faults, "clip_segment:1:stop", log)
        wait_for(process, faults / "hit-clip_segment")
        kill_all(process)
        segments = sorted((out / ".segments").glob("*/*.tar"))
        trial = Trial("truncated and corrupt segment tars", landed=len(segments) >= 2)
        if len(segments) >= 2:
            segments[0].write_bytes(segments[0].read_bytes()[: segments[0].stat().st_size // 3])
            segments[1].write_bytes(b"\0garbage" * 300)
        status = run_to_end(self.build, out, faults, log)
        recorded = dropped(out) if status == 0 else {}
        trial.note = f"dropped: {len(recorded)}"
        if trial.landed and len(recorded) < 2:
            trial.problems.append(f"resume did not record the damaged segments: {recorded}")
        self._check(trial, out, faults, log, began)
        return trial

    def signals(self, signum: int, times: int, seed: int) -> list[Trial]:
        """SIGINT to the build's process group (as Ctrl-C does) or SIGTERM to the driver, in `times` builds in a
        row, each at a seeded moment of its own slice of the clean build's wall time (`kill_times`: from the
        start-up and ray.init to the last packs). Each must end within 30 s with exactly one line that says
        how to resume (or, stopped while its arguments are read, that nothing was started), exit 128 +
        signum, and no process of its session left 5 s later; its re-run must equal the clean build."""
        name = signal.Signals(signum).name
        trials = []
        for seconds in kill_times(self.clean.seconds, times, seed):
            out, faults, log = self.folder(f"{name}-{seconds:.1f}")
            began = time.monotonic()
            trial = Trial(f"{name} at {seconds:.1f} s " + ("to the group" if signum == signal.SIGINT else "to the driver"))
            process = start(self.build, out, faults, log=log)
            try:
                process.wait(timeout=seconds)
                trial.landed = False                    # the build ended before the signal
            except subprocess.TimeoutExpired:
                sent = time.monotonic()
                if signum == signal.SIGINT:
                    os.killpg(process.pid, signum)      # Ctrl-C: the terminal signals the whole process group
                else:
                    process.send_signal(signum)         # `kill PID`: the driver alone
                try:
                    status: int | None = process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    status = None
                took = trial.stopped_in = time.monotonic() - sent
                left = session_left(process.pid)
                kill_all(process)
                lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
                last = (lines or [""])[-1]
                trial.note = f"stopped in {took:.1f} s, exit {status}: {last[:60]!r}..."
                said = "resume" in last or "nothing was started" in last
                finished = any(line.startswith("this run:") for line in lines)
                if finished and status != 128 + signum:   # the summary was out: only the interpreter's exit was left
                    trial.landed, trial.stopped_in = False, None
                    trial.note = f"the build had finished (summary printed) when the signal came: exit {status}"
                elif status is None:
                    trial.problems.append("still running 30 s after the signal")
                elif status != 128 + signum or len(lines) != 1 or not said or left:
                    trial.problems.append(f"exit {status}, {len(lines)} lines, {len(left)} processes left; "
                                          f"last line {last[:200]!r}")
            kill_all(process)
            if trial.problems:
                trial.seconds = time.monotonic() - began
                self.say(f"  {trial.name:<34} DIFFERS: {'; '.join(trial.problems)}")
                trials.append(trial)
            else:
                trials.append(self._check(trial, out, faults, log, began))
        return trials

    def corrupt_cache(self) -> Trial:
        """Every file of `.cache/` overwritten with garbage after a finished build: the next builds still run."""
        out, faults, log = self.folder("corrupt-cache")
        began = time.monotonic()
        shutil.copytree(self.clean_dir, out)
        for path in (out / ".cache").glob("*"):
            path.write_bytes(b"{not json nor parquet")
        return self._check(Trial("corrupt .cache files"), out, faults, log, began)

    def node_loss(self) -> Trial:
        """A local cluster: a head without CPUs and two worker nodes of 2 CPUs, all started with the fault
        env. The first decode task to make a clip stops there (fault hook); the node running it (its
        raylet, whatever that raylet started, and the node's own processes) is SIGKILLed. The build
        must finish on the other node, or stop with one line and finish when run again."""
        out, faults, log = self.folder("node-loss")
        began = time.monotonic()
        temp_dir = tempfile.mkdtemp(prefix="vhkill", dir="/tmp")
        # Ray workers get the environment of their node's raylet, not the driver's: the nodes get the faults
        env = {**fault_env(faults, "clip:1:stop"), "RAY_AUTH_MODE": "disabled"}
        port = _free_port()
        common = ["--object-store-memory", str(200 * 1024**2), "--disable-usage-stats", "--temp-dir", temp_dir,
                  "--node-ip-address", "127.0.0.1"]
        ray = str(Path(sys.executable).with_name("ray"))
        trial = Trial("worker node lost mid-clip")
        nodes: list[set[int]] = []
        try:
            subprocess.run([ray, "start", "--head", "--num-cpus", "0", "--port", str(port), "--include-dashboard",
                            "false", *common], check=True, capture_output=True, env=env, timeout=180)
            started = set(_pids_naming(temp_dir))
            for _ in range(2):
                subprocess.run([ray, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "2", *common],
                               check=True, capture_output=True, env=env, timeout=180)
                nodes.append(set(_pids_naming(temp_dir)) - started)
                started |= nodes[-1]
            build = Build(self.build.sources, self.build.config, address=f"127.0.0.1:{port}")
            with open(log, "ab") as handle:
                process = subprocess.Popen(build.args(out), stdout=handle, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True)
            trial.landed = wait_for(process, faults / "hit-clip")
            if trial.landed:
                worker = int((faults / "hit-clip").read_text())
                raylet = parent_of(worker)
                lost = with_descendants(next((node for node in nodes if raylet in node), {raylet}))
                for pid in lost:
                    _kill(pid)
                trial.note = f"killed {len(lost)} processes of the node"
            status = process.wait(timeout=900)
            kill_all(process)
            trial.note += f"; the build exited {status}" + ("" if status == 0 else f": {last_line(log)!r}")
            if status != 0:                             # run again on the node that is left (its count is kept)
                status = run_to_end(build, out, faults.parent / "faults-rerun", log, timeout=900)
            trial.problems = [f"the re-run exited {status}"] if status else problems(out, self.clean)
        finally:
            kill_all_named(temp_dir)
        trial.seconds = time.monotonic() - began
        self.say(f"  {trial.name:<34} {'ok' if not trial.problems else 'DIFFERS: ' + '; '.join(trial.problems)}"
                 f" {trial.note} [{trial.seconds:.0f} s]")
        return trial


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pids_naming(text: str) -> list[int]:
    """Processes whose command line names `text` (a cluster's private temp dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_all_named(temp_dir: str, keep: set[int] = frozenset()) -> None:
    """SIGKILL the processes of a cluster's private temp dir, and what they started (Ray's agents, renamed)."""
    for pid in with_descendants(set(_pids_naming(temp_dir))):
        if pid not in keep:
            _kill(pid)


def kill_times(clean_seconds: float, kills: int, seed: int) -> list[float]:
    """One random moment in each of `kills` equal slices of the clean build's wall time."""
    rng = random.Random(seed)
    return [clean_seconds * (i + rng.random()) / kills for i in range(kills)]


# --------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs spread evenly over the clean build")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--moments", default=",".join(MOMENTS),
                        help=f"named moments to kill at (comma-separated, or none): {','.join(MOMENTS)}")
    parser.add_argument("--faults", default="all", help=f"injected faults (all, none, or some of {','.join(FAULTS)})")
    parser.add_argument("--signals", type=int, default=10,
                        help="builds stopped by SIGINT, and as many by SIGTERM, spread over the build (fault `signals`)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--demo", action="store_true", help="all five demo videos in the corpus, not two")
    parser.add_argument("--long", type=int, default=3, help="work units of the long source (0: none)")
    parser.add_argument("--stages", choices=("core", "full"), default="core", help="core: model stages 8-11 off")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temp dir, deleted unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="kill_anywhere-"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    sources = make_corpus(work / "corpus", args.demo, args.long)
    build = Build(sources, write_config(work / "config.yaml", args.stages == "full"), args.workers)
    harness = Harness(build, work / "runs")
    clean = harness.run_clean(twice=args.kills > 0)
    kinds = {d[3] for d in clean.decisions} | {d[5] for d in clean.decisions if d[5]}
    print(f"clean build: {clean.seconds:.1f} s, {len(clean.decisions)} rows, {len(clean.shard_keys)} kept clips, "
          f"{len(list(harness.clean_dir.glob('shards/*.tar')))} shards; statuses and reasons: {sorted(kinds)}")
    trials: list[Trial] = []
    for seconds in kill_times(clean.seconds, args.kills, args.seed):
        trials.append(harness.kill_at_time(seconds))
    moments = [m for m in args.moments.split(",") if m and m != "none"]
    for point in moments:
        trials.append(harness.kill_at_moment([(point, 2 if point.startswith("pack") else 1)]))
    if moments:
        trials.append(harness.kill_at_moment([("pack_finish", 1), ("ledger", 1)]))
    faults = FAULTS if args.faults == "all" else [f for f in args.faults.split(",") if f and f != "none"]
    if "worker" in faults:
        trials.append(harness.worker_kill())
    if "node" in faults:
        trials.append(harness.node_loss())
    if "enospc" in faults:
        trials.append(harness.enospc())
    if "segment" in faults:
        trials.append(harness.damaged_segments())
    if "signals" in faults:
        trials += harness.signals(signal.SIGINT, args.signals, args.seed)
        trials += harness.signals(signal.SIGTERM, args.signals, args.seed)
    if "cache" in faults:
        trials.append(harness.corrupt_cache())

    timed = [t for t in trials if t.name.startswith("kill at ") and t.name.endswith(" s")]
    landed = sum(t.landed for t in timed)
    bad = [t for t in trials if t.problems]
    print(f"kills over time: {len(timed)} ({landed} during the build, {len(timed) - landed} after it ended); "
          f"named moments: {sum(1 for t in trials if t.name.startswith('kill at ') and t not in timed)}; "
          f"faults: {len(trials) - sum(1 for t in trials if t.name.startswith('kill at '))}")
    for name in ("SIGINT", "SIGTERM"):
        sent = [t for t in trials if t.name.startswith(f"{name} at ")]
        if sent:
            stops = sorted(t.stopped_in for t in sent if t.landed and t.stopped_in is not None)
            print(f"{name}: {len(stops)} of {len(sent)} landed during the build; {sum(not t.problems for t in sent)} "
                  f"of {len(sent)} stopped with one line and the right exit, no process left, re-run identical"
                  + (f"; stop took {stops[len(stops) // 2]:.1f} s median, {stops[-1]:.1f} s at most" if stops else ""))
    print(f"identical to the clean build: {len(trials) - len(bad)} of {len(trials)} runs; "
          f"{time.monotonic() - began:.0f} s in all")
    if not args.keep and args.work is None and not bad:
        shutil.rmtree(work, ignore_errors=True)
    elif bad:
        print(f"scratch kept in {work}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
