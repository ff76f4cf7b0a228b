"""Does stage-1 training make `vividhead stream` output resemble the reference face? Trained vs untrained.

Takes a finished `vividhead train` run of the tiny preset and the shards it trained on. For one clip
it writes the clip's first frame as the reference image and the clip's wav as the driving audio,
then runs the real CLI, `vividhead stream --weights W --variant tiny`, twice: with the trained
checkpoint and with the untrained model (the same seeded initialisation the run started from, saved
in the release layout). Each output video is compared frame by frame with the reference frame (and
with the clip's own frames) by PSNR and SSIM; the tiny codec's round trip of the reference (encode
then decode, 32x32 latent grid upsampled to 512) is printed as the ceiling.

    .venv/bin/python benchmarks/train_tiny_quality.py --run runs/train-tiny --shards demo-out/shards
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from vividhead import media


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the luma, 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03 (Wang et al. 2004)."""
    x = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    return float(np.mean(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))


def decode_all(path: Path) -> list[np.ndarray]:
    return [frame.image for frame in media.frames(path)]


def scores(frames: list[np.ndarray], reference: np.ndarray, truth: list[np.ndarray]) -> dict[str, float]:
    n = min(len(frames), len(truth))
    return {
        "psnr_ref": float(np.mean([psnr(f, reference) for f in frames])),
        "ssim_ref": float(np.mean([ssim(f, reference) for f in frames])),
        "psnr_clip": float(np.mean([psnr(frames[i], truth[i]) for i in range(n)])),
        "ssim_clip": float(np.mean([ssim(frames[i], truth[i]) for i in range(n)])),
        "frames": len(frames),
    }


def untrained_copy(run_model: Path, seed: int, out: Path) -> Path:
    """The seeded initialisation the run started from, in the release layout."""
    from vividhead.models.flashhead import FlashHeadDiT
    from vividhead.models.release import MODEL_FOLDERS, read_config, save_release

    config = read_config(run_model)
    torch.manual_seed(seed)
    return save_release(FlashHeadDiT.from_config_json(config), out / MODEL_FOLDERS["tiny"]).parent


def stream(weights: Path, image: Path, audio: Path, out: Path, steps: int) -> None:
    cmd = [sys.executable, "-m", "vividhead.cli", "stream", "--weights", str(weights), "--variant", "tiny",
           "--image", str(image), "--audio", str(audio), "--out", str(out), "--no-crop", "--seed", "0",
           "--steps", str(steps)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"vividhead stream failed ({done.returncode}): {done.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished `vividhead train` run folder (tiny)")
    parser.add_argument("--shards", nargs="+", required=True, help="the shards it trained on")
    parser.add_argument("--clip", type=int, default=0, help="which clip (index in shard order) to drive")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio seconds to stream")
    parser.add_argument("--steps", type=int, default=4, choices=(1, 2, 4, 8), help="sampler steps of the stream")
    args = parser.parse_args()

    from vividhead.models.vae import SpaceToDepthCodec
    from vividhead.training.config import expand_shards
    from vividhead.shards import read_member
    from vividhead.training.dataset import decode_frames, index_shards

    run_config = json.loads((args.run / "train_config.json").read_text())
    entries = [e for shard in index_shards(expand_shards(args.shards)) for e in shard]
    entry = entries[args.clip % len(entries)]
    frames_wanted = int(args.seconds * 25)
    decoded = decode_frames(read_member(entry, "mp4"), list(range(frames_wanted)))
    truth = [decoded[i] for i in sorted(decoded)]
    reference = truth[0]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        image, audio = tmp / "reference.png", tmp / "audio.wav"
        cv2.imwrite(str(image), cv2.cvtColor(reference, cv2.COLOR_RGB2BGR))
        from vividhead.models.audio_features import load_audio

        wav = tmp / "full.wav"
        wav.write_bytes(read_member(entry, "wav"))
        samples = load_audio(wav)[: int(args.seconds * 16000)]
        media.write_wav(audio, samples, 16000)

        codec = SpaceToDepthCodec()
        ref_t = torch.from_numpy(reference).permute(2, 0, 1).float()[None, :, None] / 127.5 - 1
        roundtrip = codec.decode(codec.encode(ref_t))[0, :, 0]
        ceiling = ((roundtrip.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()

        results = {}
        for name, weights in (("untrained", untrained_copy(args.run / "Model_Tiny", run_config["seed"], tmp / "untrained")),
                              ("trained", args.run)):
            out = tmp / f"{name}.mp4"
            stream(weights, image, audio, out, args.steps)
            results[name] = scores(decode_all(out), reference, truth)
    print(f"clip {entry.key}: reference = its frame 0, audio = its first {args.seconds:.1f} s, "
          f"run {args.run} ({sum(1 for _ in (args.run / 'loss.jsonl').open())} steps logged), "
          f"{args.steps} sampler steps")
    print(f"{'model':<10} {'frames':>6} {'PSNR ref':>9} {'SSIM ref':>9} {'PSNR clip':>10} {'SSIM clip':>10}")
    for name, r in results.items():
        print(f"{name:<10} {r['frames']:>6} {r['psnr_ref']:9.2f} {r['ssim_ref']:9.4f} {r['psnr_clip']:10.2f} {r['ssim_clip']:10.4f}")
    print(f"{'ceiling':<10} {'':>6} {psnr(ceiling, reference):9.2f} {ssim(ceiling, reference):9.4f}   "
          "(tiny codec round trip of the reference: 32x32 grid upsampled to 512)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
