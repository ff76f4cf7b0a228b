"""How well `vividhead build` curates real footage: the dev clips and derived copies against DEV.md.

    python benchmarks/curation_accuracy.py                      # embedded defaults, no weights
    python benchmarks/curation_accuracy.py --weights manifests/weights.yaml   # SyncNet and the other weights

1. Builds every clip of ../shared/media/dev once with `vividhead build` (no weights, or the given
   weights manifest), with the thresholds of stages 5-9 opened so that every clip is measured by
   every stage. Each clip is then decided with the embedded defaults by the stage table's own
   `decide_clip`, in pipeline order, as resume and `inspect --what-if` do; what only the media can
   decide (no face, no audio, a piece too short) stays as the build recorded it. It prints a
   confusion table against DEV.md's expected decisions: each clip's outcome, the in-sync positives
   kept, the negatives rejected by kind, and the kept hours; then, per threshold, its value, the
   metric over DEV.md's positives and negatives, and the seconds it removes of each.
2. Checks sync on every speaker DEV.md lists (in sync, even when the build rejects it for resolution)
   and on derived copies made with ffmpeg: audio shifted by +-200, 300, 500 and 1000 ms, one speaker's
   voice over another's face (dubbed), and speech over a face that does not speak (voice-over). The
   face video is the build's own 512 crop when the build kept the clip, else a crop made the same
   way (first-frame face, `face.crop_scale`); the audio is cut from the derived copy over the same
   time range. The stage-10 code runs on each pair: SyncNet with weights; without, the weight-free
   check, whose mouth measures are taken once per face and reused for that face's audio variants (the
   video is the same). Counts per case kind: verified, corrected (with `sync.correct_offset: true`),
   unsure (kept, not verified) and rejected.
3. Without SyncNet weights, prints benchmarks/sync_cv.py's tables: the weight-free check chosen by
   leave-one-speaker-out cross-validation, judged on held-out speakers, beside the same check in sample.

The derived copies live in a temporary folder (or --work) and never in the project.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import yaml

from vividhead.pipelines.config import load_build_config, resolve_weights
from vividhead.pipelines.stages import decide_clip, threshold_reasons
from vividhead.evaluation.curation_cases import DevClip, dev_clips
from vividhead.pipelines import sync
from vividhead.pipelines.clip_media import read_wav
from vividhead.pipelines.records import Clip, Source
from vividhead.shards import read_members
from vividhead.weights import Weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sync_cv  # noqa: E402  (the cross-validated sync tables)
from sync_features import SILENT_FACE, crop_video  # noqa: E402  (the face crop both benchmarks use)
from sync_features import extract as sync_features_extract  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# Thresholds of stages 5-9 measured on the dev clips: (config field, metric column, rejects "above" or "below").
THRESHOLDS = (
    ("face.max_upscale", "face.upscale", "above"),
    ("face.max_drift", "face.max_drift", "above"),
    ("flow.max_residual", "flow.max_residual", "above"),
    ("visibility.max_missing_ratio", "visibility.missing_ratio", "above"),
    ("visibility.max_second_face_ratio", "visibility.second_face_ratio", "above"),
    ("occlusion.max_occluded_ratio", "occlusion.occluded_ratio", "above"),
    ("speech.min_speech_ratio", "speech.speech_ratio", "below"),
)
# The calibration build: every threshold above opened, so each clip is measured by every stage.
OPEN = {"face": {"max_upscale": 100.0}, "flow": {"max_residual": 100.0},
        "visibility": {"max_missing_ratio": 1.0, "max_second_face_ratio": 1.0},
        "occlusion": {"max_occluded_ratio": 1.0}, "speech": {"min_speech_ratio": 0.0}}


def run_build(clips: list[DevClip], dev: Path, work: Path, weights: Path | None, workers: int,
              name: str = "build", overrides: dict | None = None) -> list[dict]:
    """`vividhead build` over the dev clips with `overrides` of the build config; the manifest rows."""
    sources, config, out = work / "sources.yaml", work / f"{name}.yaml", work / name
    sources.write_text(yaml.safe_dump({"sources": [{"path": str(dev / c.file), "dataset": "dev"} for c in clips]}))
    if weights is None:                               # embedded defaults: an empty weights manifest
        weights = work / "no-weights.yaml"
        weights.write_text("{}\n")
    config.write_text(yaml.safe_dump({"weights_manifest": str(weights.resolve()), **(overrides or {})}))
    command = [sys.executable, "-m", "vividhead.cli", "build", "--sources", str(sources), "--out", str(out),
               "--config", str(config), "--workers", str(workers), "--no-progress"]
    for attempt in range(3):                          # a loaded machine can time Ray's start-up out; the build resumes
        if subprocess.run(command, cwd=REPO).returncode == 0:
            break
    else:
        raise SystemExit(f"vividhead build failed three times: {' '.join(command)}")
    return [row for part in sorted((out / "manifest").glob("*.parquet")) for row in pq.read_table(part).to_pylist()]


def with_defaults(rows: list[dict], config) -> list[dict]:
    """The rows of the opened build, decided as the embedded defaults decide them (threshold rules only).

    A source-level row (no key: the source was rejected before it had clips, e.g. too short) has no
    clip metrics to re-decide and stays as the build recorded it."""
    by_threshold = threshold_reasons()
    decided = []
    for row in rows:
        if row["key"] is not None and (row["status"] == "kept" or (
                row["status"] == "rejected" and row["reject_reason"] in by_threshold)):
            verdict = decide_clip(row, config)
            status, (stage, reason, detail) = ("rejected", verdict) if verdict else ("kept", (None, None, None))
            row = {**row, "status": status, "reject_stage": stage, "reject_reason": reason, "reject_detail": detail}
        decided.append(row)
    return decided


def confusion(clips: list[DevClip], rows: list[dict]) -> list[str]:
    """One line per dev clip: expected, what the build did, agreement; then the totals."""
    by_file: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_file[Path(row["uri"]).name].append(row)
    lines = [f"{'clip':<44} {'DEV.md':<8} {'build':<46} agrees", "-" * 108]
    positives = kept_positives = negatives = rejected_negatives = 0
    by_kind: Counter = Counter()
    by_kind_total: Counter = Counter()
    hours = unverified_hours = 0.0
    for clip in clips:
        outcome = by_file.get(clip.file, [])
        kept = [r for r in outcome if r["status"] == "kept"]
        seconds = sum(r["duration"] or 0.0 for r in kept)
        hours += seconds / 3600
        unverified_hours += sum(r["duration"] or 0.0 for r in kept if r.get("sync.verified") is False) / 3600
        reasons = Counter(f"{r['reject_stage']}:{r['reject_reason']}" for r in outcome if r["status"] != "kept")
        flags = Counter(r.get("sync.verdict") for r in kept)
        did = (f"kept {len(kept)} ({seconds:.1f} s; sync {', '.join(f'{k} {n}' for k, n in flags.items())})"
               if kept else "rejected " + ", ".join(f"{k} x{n}" if n > 1 else k for k, n in reasons.items()))
        if outcome and all(r["status"] == "failed" for r in outcome):
            agrees = None                             # the build failed on it: no curation decision to judge
        elif clip.keep:
            positives += 1
            kept_positives += bool(kept)
            agrees = bool(kept)
        else:
            negatives += 1
            rejected_negatives += not kept
            agrees = not kept
            for kind in clip.reject_kinds:
                by_kind_total[kind] += 1
                by_kind[kind] += not kept
        lines.append(f"{clip.file[:44]:<44} {'keep' if clip.keep else 'reject':<8} {did[:46]:<46} "
                     f"{'failed' if agrees is None else 'yes' if agrees else 'NO'}")
    lines += ["-" * 108,
              f"positives kept: {kept_positives}/{positives}    negatives rejected: {rejected_negatives}/{negatives}"
              "    (clips the build failed on are left out)",
              "negatives rejected by DEV.md kind: " + ", ".join(f"{k} {by_kind[k]}/{n}" for k, n in by_kind_total.items()),
              f"kept hours: {hours:.4f} h ({hours * 3600:.1f} s), of which sync not verified: {unverified_hours * 3600:.1f} s"]
    return lines


def calibration(clips: list[DevClip], rows: list[dict], config) -> list[str]:
    """Per threshold: its value, the metric over DEV.md's positives and negatives, and the hours it removes."""
    label = {c.file: c.keep for c in clips}
    lines = [f"{'threshold':<34}{'value':>7}  {'positives: min / median / max':<31}{'negatives: min / max':<22}"
             f"{'removes: pos s':>15}{'neg s':>7}", "-" * 116]
    for field, metric, side in THRESHOLDS:
        section, name = field.split(".")
        value = getattr(getattr(config, section), name, None)
        if value is None:
            continue
        measured = []
        for row in rows:
            got = (1.0 - row["visibility.face_ratio"] if metric == "visibility.missing_ratio" and
                   row.get("visibility.face_ratio") is not None else row.get(metric))
            if got is not None and row["status"] != "failed" and Path(row["uri"]).name in label:
                measured.append((label[Path(row["uri"]).name], float(got), row["duration"] or 0.0))
        pos = np.array([m for keep, m, _ in measured if keep])
        neg = np.array([m for keep, m, _ in measured if not keep])
        fails = (lambda m: m > value) if side == "above" else (lambda m: m < value)
        lost = sum(d for keep, m, d in measured if keep and fails(m))
        removed = sum(d for keep, m, d in measured if not keep and fails(m))
        spread = f"{pos.min():.3f} / {np.median(pos):.3f} / {pos.max():.3f}" if len(pos) else "-"
        lines.append(f"{field:<34}{value:>7}  {spread:<31}"
                     f"{f'{neg.min():.3f} / {neg.max():.3f}' if len(neg) else '-':<22}{lost:>15.1f}{removed:>7.1f}")
    return lines


def face_videos(clips: list[DevClip], rows: list[dict], dev: Path, work: Path, config) -> dict[str, tuple[Path, float, float]]:
    """Per speaker: its face video and the time range in the source it covers."""
    kept = {}
    for row in rows:
        if row["status"] == "kept" and Path(row["uri"]).name not in kept:
            kept[Path(row["uri"]).name] = row
    shards = {}
    for row in kept.values():
        found = read_members(work / "build" / "shards" / row["shard"], {row["key"]}, {"mp4"})
        shards[row["key"]] = found[row["key"]]["mp4"]
    faces = {}
    folder = work / "faces"
    folder.mkdir(exist_ok=True)
    for clip in clips:
        if not clip.speaker and clip.file != SILENT_FACE:
            continue
        row = kept.get(clip.file)
        if row is not None:
            path = folder / f"{Path(clip.file).stem}.mp4"
            path.write_bytes(shards[row["key"]])
            faces[clip.file] = (path, row["start"], row["end"])
        else:
            faces[clip.file] = crop_video(dev / clip.file, folder / f"{Path(clip.file).stem}.mp4",
                                           config.face.crop_scale, config.face.size)
    return faces


def derived_wav(source: Path, start: float, end: float, out: Path, shift_ms: int = 0) -> Path:
    """16 kHz mono wav of `source`'s audio over [start, end), delayed (shift_ms > 0) or advanced (< 0) first:
    what the shifted copy `curation_cases.shifted` holds over that range, in one ffmpeg call."""
    shift = (f"adelay={shift_ms}:all=1," if shift_ms > 0 else
             f"atrim=start={-shift_ms / 1000},asetpts=PTS-STARTPTS," if shift_ms < 0 else "")
    span = ["-ss", f"{start:.3f}"] + (["-t", f"{end - start:.3f}"] if np.isfinite(end) else [])
    pad = ["-af", f"{shift}apad"] if shift_ms else []   # a shifted copy keeps its length; a voice ends where it ends
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-map", "0:a:0",
                    *pad, *span, "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(out)],
                   check=True)
    return out


def sync_cases(clips: list[DevClip], dev: Path, shifts: list[int], voices: int) -> list[tuple[str, str, Path]]:
    """(kind, face file, audio source) for every case of the sync table; derived audio made later.
    Each face is dubbed with the voices of the next `voices` speakers in DEV.md's order."""
    speakers = [c.file for c in clips if c.speaker]
    cases = [("in sync", f, dev / f) for f in speakers]
    cases += [(f"shift {ms:+d} ms", f, ("shift", ms)) for ms in shifts for f in speakers]
    cases += [("dubbed", f, dev / speakers[(i + k) % len(speakers)]) for i, f in enumerate(speakers)
              for k in range(1, min(voices, len(speakers) - 1) + 1)]
    if (dev / SILENT_FACE).is_file():
        cases += [("voice-over", SILENT_FACE, dev / f) for f in speakers]
    return cases


def judge_sync(cases, faces, dev: Path, work: Path, config, weights) -> tuple[dict[str, Counter], dict[str, list]]:
    """Per case kind: counts of verified / unsure / rejected / correctable, and the measured (lag, z) pairs."""
    stage = sync.SyncStage(config.sync, weights)
    stage.setup()
    correcting = config.sync.model_copy(update={"correct_offset": True})
    folder = work / "audio"
    folder.mkdir(exist_ok=True)
    mouth_of: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    tally: dict[str, Counter] = defaultdict(Counter)
    measured: dict[str, list] = defaultdict(list)
    for index, (kind, face, audio) in enumerate(cases):
        video, start, end = faces[face]
        if not np.isfinite(end):                     # a crop of the whole source: as long as its video
            with av.open(str(video)) as container:
                end = start + float(container.streams.video[0].frames) / 25
        shift_ms = audio[1] if isinstance(audio, tuple) else 0
        wav = derived_wav(dev / face if shift_ms else audio, start, end, folder / f"{index}.wav", shift_ms)
        clip = Clip(key=f"case{index}", source=Source(source_id=face, uri=str(dev / face)), start=start, end=end,
                    video_path=str(video), wav_path=str(wav))
        if stage.model is not None:
            result = stage.process(clip)
            verdict = "rejected" if result.reject else "verified" if result.metrics.get("verified") else "unsure"
        else:
            if face not in mouth_of:
                mouth_of[face] = sync.mouth_measures(clip, config.sync.proxy_max_resolution)
            samples = read_wav(wav, 16000)
            frames = len(samples) // sync.SAMPLES_PER_FRAME          # a dubbed copy: the shorter of the two
            mouth, patches = (x[:frames] for x in mouth_of[face])
            result = sync.proxy_result(mouth, samples, config.sync, patches)
            corrected = sync.proxy_result(mouth, samples, correcting, patches)
            verdict = ("rejected" if result.reject else "verified" if result.metrics["verified"] else "unsure")
            if corrected.metrics["audio_shift"]:
                tally[kind]["correctable"] += 1
            if result.metrics.get("proxy_z") is not None:
                measured[kind].append((result.metrics["proxy_lag"], result.metrics["proxy_z"]))
            if kind in ("in sync",) or kind.startswith("shift"):
                print(f"  {kind:<16} {face[:40]:<40} lag {result.metrics.get('proxy_lag')!s:>4} "
                      f"z {result.metrics.get('proxy_z')!s:>6} -> {verdict}", flush=True)
        tally[kind][verdict] += 1
    stage.teardown()
    return tally, measured


def z_table(measured: dict[str, list], config) -> list[str]:
    """The weight-free check's confidence by case kind: inside and outside the natural lead window."""
    lead, tolerance = config.sync.proxy_lead_frames, config.sync.proxy_lead_tolerance
    lines = [f"{'case':<18}{'n':>4}   z median / 90% / max   {'in window: n':>13}{'max z':>7}", "-" * 68]
    for kind, pairs in measured.items():
        z = np.array([p[1] for p in pairs])
        inside = np.array([p[1] for p in pairs if abs(p[0] - lead) <= tolerance])
        lines.append(f"{kind:<18}{len(z):>4}   {np.median(z):6.2f} {np.percentile(z, 90):6.2f} {z.max():6.2f}"
                     f"   {len(inside):>13}{inside.max() if len(inside) else float('nan'):>7.2f}")
    return lines


def sync_table(tally: dict[str, Counter]) -> list[str]:
    lines = [f"{'case':<18}{'n':>4}{'verified':>10}{'unsure':>8}{'rejected':>10}{'correctable':>13}", "-" * 63]
    for kind, counts in tally.items():
        n = sum(counts[v] for v in ("verified", "unsure", "rejected"))
        lines.append(f"{kind:<18}{n:>4}{counts['verified']:>10}{counts['unsure']:>8}{counts['rejected']:>10}"
                     f"{counts['correctable']:>13}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", type=Path, default=REPO.parent / "shared" / "media" / "dev")
    parser.add_argument("--weights", type=Path, help="a weights manifest (SyncNet and the others); default: none")
    parser.add_argument("--work", type=Path, help="folder for the build and the derived copies (default: a temporary one)")
    parser.add_argument("--shifts", default="200,300,500,1000", help="audio shifts in ms, each applied +-")
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the build's local Ray")
    parser.add_argument("--voices", type=int, default=3, help="dubbed copies per face (other speakers' voices)")
    parser.add_argument("--feature-cache", type=Path, default=Path("/tmp/sync_feats"),
                        help="mouth features of the dev speakers for the cross-validation (made once, outside the project)")
    args = parser.parse_args()
    if not (args.dev / "DEV.md").is_file():
        print(f"dev footage not found: {args.dev}/DEV.md", file=sys.stderr)
        return 2
    clips = dev_clips(args.dev)
    shifts = [s * sign for s in map(int, args.shifts.split(",")) for sign in (1, -1)]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        config = load_build_config(None)
        if args.weights:
            config = config.model_copy(update={"weights_manifest": args.weights.resolve()})
        weights = resolve_weights(config) if args.weights else Weights()
        measured_rows = run_build(clips, args.dev, work, args.weights, args.workers, "build", OPEN)
        rows = with_defaults(measured_rows, config)
        faces = face_videos(clips, measured_rows, args.dev, work, config)
        tally, measured = judge_sync(sync_cases(clips, args.dev, shifts, args.voices), faces, args.dev, work, config, weights)
        mode = "SyncNet" if weights.available("syncnet") else "weight-free check"
        print(f"\n== build with {'weights ' + str(args.weights) if args.weights else 'embedded defaults'} "
              f"({len(clips)} dev clips) vs DEV.md")
        print("\n".join(confusion(clips, rows)))
        print(f"\n== sync ({mode}) on in-sync speakers and derived copies")
        print("\n".join(sync_table(tally)))
        print("\n== thresholds of stages 5-9 on the dev clips (seconds each one removes at its value)")
        print("\n".join(calibration(clips, measured_rows, config)))
        if not weights.available("syncnet"):
            print("\n== the weight-free check chosen by leave-one-speaker-out cross-validation "
                  "(benchmarks/sync_cv.py, on features cached in --feature-cache)")
            sync_features_extract(args.dev, args.feature_cache)
            print("\n".join(sync_cv.report(args.feature_cache, folds=False)))
        if measured:
            print(f"\n== the weight-free check's confidence z (lead window {config.sync.proxy_lead_frames} +- "
                  f"{config.sync.proxy_lead_tolerance} frames; verified at z >= {config.sync.proxy_min_z}, "
                  f"rejected beyond {config.sync.proxy_lead_frames} +- {config.sync.proxy_reject_tolerance} frames at "
                  f"z >= {config.sync.proxy_reject_z})")
            print("\n".join(z_table(measured, config)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
