"""Stage 2 as a new user runs it, on CPU: distil a stage-1 `tiny` teacher into a 4-step student.

    python benchmarks/dmd_distill.py                     # builds the demo first (vividhead build --demo)
    python benchmarks/dmd_distill.py --shards demo-out/shards --out runs/dmd-bench

Steps, all through the project's own entry points:
1. Split the build's clips: the last `--held-out` clip keys are held back, the rest train.
2. Stage 1 (`vividhead train`, a stage-1 config): a tiny teacher with the settings of
   manifests/train-tiny.yaml, `--teacher-steps` steps.
3. Stage 2 (`vividhead train`, stage-2 configs) twice from that teacher, same seed and data, run
   side by side: oracle (teacher sees m_gt) and no-oracle (teacher sees m_pred). The DMD and
   regression losses over steps are printed.
4. Quality on the held-back clips, per 33-frame chunk with ground-truth motion context: the 4-step
   student (streaming sampler) before and after, and the teacher's 20-step Euler sampler with audio
   guidance `--guidance`. Latent MSE and PSNR (32x32, the tiny codec's resolution) against ground
   truth, and the Fréchet distance of each sampler's latent tokens to the teacher's samples (what DMD
   matches) and to the ground truth's. The teacher with other noise gives the distance's noise floor.
5. Long-horizon drift: `vividhead stream`'s engine streams `--drift-chunks` chunks from the held-back
   clip's first frame and its (looped) audio; per chunk, PSNR of the face-region crop (the clip's
   mask.png box) against the reference frame. The real clip's own frames give the natural baseline.
Every figure printed comes from the models; nothing is assumed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2
import numpy as np
import torch
import yaml

from vividhead.evaluation.frechet import frechet_distance_features
from vividhead.inference.engine import EngineOptions, FlashHeadEngine
from vividhead.media import read_npy, read_png, read_wav
from vividhead.models.flashhead import GEOMETRY, FlashHeadDiT, frame_windows, sampling_timesteps
from vividhead.models.release import load_release
from vividhead.models.sampler import overwrite_motion, sample_chunk
from vividhead.models.vae import SpaceToDepthCodec, load_codec
from vividhead.training.config import expand_shards
from vividhead.shards import read_member, write_shard
from vividhead.training.dataset import decode_frames, fit_to, index_shards, to_tensor
from vividhead.training.dmd import guided_velocity

ROOT = Path(__file__).resolve().parents[1]
GEO = GEOMETRY["tiny"]
SIZE = 32                       # the tiny codec's frame size: quality is measured where the model works


# ------------------------------------------------------------------------------------------ data
def build_demo(out: Path) -> Path:
    """Run `vividhead build --demo` into `out` (reused when its shards exist)."""
    shards = out / "shards"
    if not (shards.is_dir() and any(shards.glob("*.tar"))):
        exe = Path(sys.executable).with_name("vividhead")
        subprocess.run([str(exe), "build", "--demo", "--out", str(out)], check=True)
    return shards


def split_clips(shards: list[Path], out: Path, held_out: int) -> tuple[Path, Path, list[str]]:
    """Write train.tar / heldout.tar (the same sample bytes) so each run reads only its clips."""
    entries = sorted((e for group in index_shards(shards) for e in group), key=lambda e: e.key)
    if len(entries) <= held_out:
        raise SystemExit(f"only {len(entries)} clip(s) in the build: need more than --held-out {held_out}")
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in (("train", entries[:-held_out]), ("heldout", entries[-held_out:])):
        path = out / f"{name}.tar"
        write_shard(path, ((entry.key, {ext: read_member(entry, ext) for ext in entry.extensions}) for entry in part))
        paths[name] = path
    return paths["train"], paths["heldout"], [e.key for e in entries[-held_out:]]


def load_clip(entry) -> dict:
    """All frames (512 and 32 px), audio rows, 16 kHz audio and the face box of one clip."""
    rows = read_npy(read_member(entry, "audio.npy")).astype(np.float32)
    frames = decode_frames(read_member(entry, "mp4"), list(range(len(rows))))
    n = min(len(rows), len(frames))
    rgb = [frames[i] for i in range(n)]
    audio = read_wav(read_member(entry, "wav"), 16000, origin=f"{entry.key}.wav")
    mask = read_png(read_member(entry, "mask.png"), grey=True)
    ys, xs = np.nonzero(mask > 127)
    box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1) if len(ys) else (128, 384, 128, 384)
    return {"key": entry.key, "rgb": rgb, "small": [fit_to(f, (SIZE, SIZE)) for f in rgb], "rows": rows[:n],
            "audio": audio, "box": box}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def face_crop(frame32: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The mask box (512 px coordinates) on a 32 px frame."""
    y0, y1, x0, x1 = (int(round(v * SIZE / 512)) for v in box)
    return frame32[y0: max(y1, y0 + 1), x0: max(x1, x0 + 1)]


# ------------------------------------------------------------------------------------------ training
def write_config(path: Path, out: Path, shards: Path, steps: int, **extra) -> Path:
    """A training config file for `vividhead train` (what a user would write)."""
    config = {"out": str(out), "seed": 0, "steps": steps, "log_every": max(1, steps // 10),
              "save_every": max(1, steps // 2), "precision": "fp32",
              "data": {"shards": [str(shards)], "frames": 33, "buckets": [[SIZE, SIZE]], "num_workers": 1,
                       "shuffle_window": 16},
              "model": {"preset": "tiny"}, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def vividhead_train(config: Path, log: Path) -> subprocess.Popen:
    """`vividhead train --config CONFIG --no-progress`, output to `log`."""
    exe = Path(sys.executable).with_name("vividhead")
    handle = log.open("w")
    return subprocess.Popen([str(exe), "train", "--config", str(config), "--no-progress"], stdout=handle,
                            stderr=subprocess.STDOUT)


def wait(process: subprocess.Popen, log: Path) -> None:
    if process.wait() != 0:
        raise SystemExit(f"vividhead train failed (exit {process.returncode}); see {log}:\n{log.read_text()[-3000:]}")


def train_teacher(train_tar: Path, out: Path, steps: int) -> Path:
    """Stage 1 with the model, optimiser and flow settings of manifests/train-tiny.yaml (the user's preset)."""
    preset = yaml.safe_load((ROOT / "manifests" / "train-tiny.yaml").read_text())
    config = write_config(out / "teacher.yaml", out / "teacher", train_tar, steps, stage=1,
                          model=preset["model"], optim=preset["optim"], flow=preset["flow"])
    wait(vividhead_train(config, out / "teacher.log"), out / "teacher.log")
    return out / "teacher" / "Model_Tiny"


def distil_both(teacher: Path, train_tar: Path, out: Path, steps: int, args) -> dict[str, Path]:
    """Oracle and no-oracle students from the same teacher, seed and data, run side by side."""
    runs = {}
    for name, oracle in (("oracle", True), ("no-oracle", False)):
        config = write_config(out / f"distill-{name}.yaml", out / f"distill-{name}", train_tar, steps, stage=2,
                              seed=args.seed, optim={"batch_size": args.batch_size},
                              distill={"teacher": str(teacher.parent), "oracle": oracle, "num_chunks": args.num_chunks,
                                       "lr_generator": args.lr_generator, "lr_fake": args.lr_fake,
                                       "regression_weight": args.regression_weight,
                                       "guidance_scale": args.guidance})
        runs[name] = (vividhead_train(config, out / f"distill-{name}.log"), out / f"distill-{name}.log")
    for process, log in runs.values():
        wait(process, log)
    return {name: out / f"distill-{name}" / "Model_Tiny" for name in runs}


def loss_table(run: Path, every: int) -> list[str]:
    rows = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines() if line.strip()]
    lines = ["  step     dmd      reg   fake_loss"]
    for i in range(0, len(rows), every):
        chunk = rows[i: i + every]
        mean = {k: sum(r[k] for r in chunk) / len(chunk) for k in ("dmd", "reg", "fake_loss")}
        lines.append(f"  {chunk[0]['step']:4d}-{chunk[-1]['step']:<4d} {mean['dmd']:.4f}  {mean['reg']:.4f}  {mean['fake_loss']:.4f}")
    return lines


# ------------------------------------------------------------------------------------------ quality
def tokens(latent: torch.Tensor) -> np.ndarray:
    """The generated latent frames of a chunk as tokens [N, C]: one row per latent pixel."""
    x = latent[:, :, GEO.motion_latents:]
    return x.permute(0, 2, 3, 4, 1).reshape(-1, x.shape[1]).double().numpy()


# A chunk sampler: (reference latent, audio windows, motion latents, noise generator) -> clean latent.
ChunkSampler = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def streaming_sampler(model: FlashHeadDiT) -> ChunkSampler:
    """The student's sampler, as `vividhead stream` runs it: 4 steps, shift 5, no guidance."""
    return lambda reference, windows, motion, g: sample_chunk(
        model, reference, model.audio_context(windows), motion, steps=4, shift=GEO.shift, generator=g)


def teacher_sampler(model: FlashHeadDiT, scale: float, seed_offset: int = 0, steps: int = 20) -> ChunkSampler:
    """The teacher's many-step sampler: Euler on the shifted schedule with the distiller's own audio
    guidance `scale` (`guided_velocity`); `seed_offset` draws other noise."""
    times = sampling_timesteps(steps, GEO.shift)

    def sample(reference, windows, motion, g):
        g = torch.Generator().manual_seed(g.initial_seed() + seed_offset)
        x = torch.randn(reference.shape, generator=g)
        for t, t_next in zip(times[:-1], times[1:]):
            x = overwrite_motion(x, motion)
            v = guided_velocity(model, x, torch.full((x.shape[0],), t), reference, windows, scale)
            x = x + (t_next - t) * v
        return overwrite_motion(x, motion)
    return sample


@torch.inference_mode()
def quality(samplers: dict[str, ChunkSampler], clips: list[dict], codec: SpaceToDepthCodec,
            seeds: int) -> tuple[dict, float]:
    """Per sampler, over every full chunk of the clips and `seeds` noise draws each: mean latent MSE
    and PSNR against ground truth, and the Fréchet distance of its generated latent tokens to the
    first sampler's (the teacher: the distribution DMD matches; samples are not paired, so there is no
    per-sample distance to it) and to the ground truth's. Also returns the ground truth's spread."""
    scores = {name: {"latent_mse": [], "psnr": []} for name in samplers}
    samples: dict[str, list[np.ndarray]] = {name: [] for name in samplers}
    truth_tokens = []
    m = GEO.motion_latents
    frames = slice(GEO.motion_frames, GEO.frames)
    for clip in clips:
        video = to_tensor(clip["small"])[None]                                        # [1, 3, T, 32, 32]
        rows = torch.from_numpy(clip["rows"])[None]
        reference = codec.encode(video[:, :, :1].expand(-1, -1, GEO.frames, -1, -1))
        n_chunks = (video.shape[2] - GEO.frames) // GEO.new_frames + 1
        for j in range(n_chunks):
            s = j * GEO.new_frames
            z = codec.encode(video[:, :, s: s + GEO.frames])
            truth_tokens.append(tokens(z))
            windows = frame_windows(rows[:, max(0, s - 2): s + GEO.frames])[:, min(2, s):]
            truth = ((video[0, :, s: s + GEO.frames] + 1) * 127.5).round().clamp(0, 255)
            for name, sample in samplers.items():
                for seed in range(seeds):
                    out = sample(reference, windows, z[:, :, :m], torch.Generator().manual_seed(1000 * j + seed))
                    samples[name].append(tokens(out))
                    scores[name]["latent_mse"].append(float(((out[:, :, m:] - z[:, :, m:]) ** 2).mean()))
                    pixels = ((codec.decode(out, size=SIZE)[0] + 1) * 127.5).round().clamp(0, 255)
                    scores[name]["psnr"].append(psnr(pixels[:, frames].numpy(), truth[:, frames].numpy()))
    teacher = np.concatenate(samples[next(iter(samplers))])
    truth = np.concatenate(truth_tokens)
    table = {}
    for name in samplers:
        mine = np.concatenate(samples[name])
        table[name] = {k: float(np.mean(v)) for k, v in scores[name].items()} | {
            "fd_to_teacher": frechet_distance_features(mine, teacher),
            "mean_to_teacher": float(np.linalg.norm(mine.mean(0) - teacher.mean(0))),
            "spread": float(np.trace(np.cov(mine.T))),
            "fd_to_truth": frechet_distance_features(mine, truth), "n": len(scores[name]["psnr"])}
    return table, float(np.trace(np.cov(truth.T)))


# ------------------------------------------------------------------------------------------ drift
def drift_curve(model_dir: Path, clip: dict, chunks: int) -> list[float]:
    """Stream `chunks` chunks with the streaming engine; per chunk, face-crop PSNR vs the reference."""
    engine = FlashHeadEngine.load(model_dir.parent, "tiny", device="cpu", options=EngineOptions(crop=False, seed=0))
    reference_rgb = cv2.resize(clip["rgb"][0], (512, 512), interpolation=cv2.INTER_AREA)
    session = engine.session(engine.reference(reference_rgb))
    needed = (GEO.frames + (chunks - 1) * GEO.new_frames) * 640
    session.feed(np.resize(clip["audio"], needed).astype(np.float32))   # the clip's audio, looped
    ref = face_crop(fit_to(reference_rgb, (SIZE, SIZE)), clip["box"])
    curve = []
    for chunk in session.chunks(flush=False):
        scores = [psnr(face_crop(fit_to(f, (SIZE, SIZE)), clip["box"]), ref) for f in chunk.frames]
        curve.append(float(np.mean(scores)))
        if len(curve) == chunks:
            break
    return curve


def real_curve(clip: dict) -> list[float]:
    """The same measure on the real clip's own frames (its natural motion), per streaming chunk."""
    ref = face_crop(clip["small"][0], clip["box"])
    out, start = [], 0
    while start + (GEO.frames if not out else GEO.new_frames) <= len(clip["small"]):
        n = GEO.frames if not out else GEO.new_frames
        out.append(float(np.mean([psnr(face_crop(f, clip["box"]), ref) for f in clip["small"][start: start + n]])))
        start += n
    return out


# ------------------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", nargs="+", help="shards of a build (default: build the demo into OUT/demo-build)")
    parser.add_argument("--out", type=Path, default=Path("runs/dmd-bench"))
    parser.add_argument("--held-out", type=int, default=1)
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--distill-steps", type=int, default=150, help="generator updates (x5 fake-score updates)")
    parser.add_argument("--num-chunks", type=int, default=5)
    parser.add_argument("--lr-generator", type=float, default=2e-5)
    parser.add_argument("--lr-fake", type=float, default=1e-4)
    parser.add_argument("--regression-weight", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the distillation runs (draws, noise, data order)")
    parser.add_argument("--guidance", type=float, default=3.0, help="teacher audio guidance (distillation and its sampler)")
    parser.add_argument("--drift-chunks", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=4, help="noise seeds per held-out chunk")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="evaluation threads (a shared CPU: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    started = time.perf_counter()

    shards = [Path(s) for s in args.shards] if args.shards else [build_demo(out / "demo-build")]
    train_tar, heldout_tar, held_keys = split_clips(expand_shards([str(s) for s in shards]), out / "split", args.held_out)
    print(f"held-out clips: {held_keys}", flush=True)

    teacher = out / "teacher" / "Model_Tiny"
    if not (teacher / "config.json").is_file():
        print(f"\n== stage 1: tiny teacher, {args.teacher_steps} steps (log: {out}/teacher.log)", flush=True)
        train_teacher(train_tar, out, args.teacher_steps)
    print(f"\n== stage 2, oracle and no-oracle side by side: {args.distill_steps} generator steps, "
          f"K={args.num_chunks} (logs: {out}/distill-*.log)", flush=True)
    students = distil_both(teacher, train_tar, out, args.distill_steps, args)
    print(f"\ntraining done in {time.perf_counter() - started:.0f} s", flush=True)

    for name in students:
        print(f"\nlosses over generator steps ({name}):")
        print("\n".join(loss_table(out / f"distill-{name}", max(1, args.distill_steps // 10))))

    clips = [load_clip(e) for group in index_shards([heldout_tar]) for e in group]
    teacher_model = load_release(teacher)
    codec = load_codec("tiny", teacher, teacher_model.config.codec)
    samplers = {"teacher 20-step": teacher_sampler(teacher_model, args.guidance),
                "teacher 20-step, other noise": teacher_sampler(teacher_model, args.guidance, seed_offset=500),
                "student 4-step before": streaming_sampler(teacher_model),
                "student 4-step after (oracle)": streaming_sampler(load_release(students["oracle"])),
                "student 4-step after (no-oracle)": streaming_sampler(load_release(students["no-oracle"]))}
    table, truth_spread = quality(samplers, clips, codec, args.seeds)
    print(f"\nquality on {len(clips)} held-out clip(s), per chunk with ground-truth motion (vs ground truth):")
    print(f"  {'sampler':34s} {'latent MSE':>10s} {'PSNR dB':>8s} {'FD to teacher':>14s} {'mean to teacher':>16s} "
          f"{'spread':>7s} {'FD to truth':>12s}   n")
    for name, row in table.items():
        print(f"  {name:34s} {row['latent_mse']:10.4f} {row['psnr']:8.2f} {row['fd_to_teacher']:14.3f} "
              f"{row['mean_to_teacher']:16.3f} {row['spread']:7.2f} {row['fd_to_truth']:12.3f}   {row['n']}")
    print("  (FD: Fréchet distance of generated latent tokens; mean to teacher: distance of their mean to the\n"
          "   teacher's; spread: trace of their covariance, ground truth "
          f"{truth_spread:.2f})")

    clip = clips[0]
    curves = {"student before": drift_curve(teacher, clip, args.drift_chunks),
              "after (oracle)": drift_curve(students["oracle"], clip, args.drift_chunks),
              "after (no-oracle)": drift_curve(students["no-oracle"], clip, args.drift_chunks)}
    real = real_curve(clip)
    print(f"\nlong-horizon drift, clip {clip['key']}: face-crop PSNR (dB) vs the reference frame, per chunk")
    print("  chunk " + " ".join(f"{i + 1:6d}" for i in range(args.drift_chunks)))
    for name, curve in curves.items():
        print(f"  {name:18s}"[:20] + " ".join(f"{v:6.2f}" for v in curve) +
              f"   first-3 {np.mean(curve[:3]):.2f} -> last-3 {np.mean(curve[-3:]):.2f}")
    print(f"  {'real clip':18s}"[:20] + " ".join(f"{v:6.2f}" for v in real) + "   (the clip's own frames)")
    results = {"held_out": held_keys, "quality": table, "truth_spread": truth_spread, "drift": curves, "real_clip": real,
               "args": {k: str(v) for k, v in vars(args).items()}, "seconds": time.perf_counter() - started}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out / 'results.json'} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
