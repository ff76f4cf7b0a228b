"""Small build shards in the real `vividhead build` sample format, for the `test_train_*` tests.

Each clip is a synthetic "face" (a shaded ellipse whose mouth opens with the audio envelope) encoded
as 512x512 25 fps H.264 + AAC mp4, with the 16 kHz wav, `audio.npy` computed by the project's own
streaming feature function (log-mel default), `mask.png` and the manifest-row `json`.
"""

from __future__ import annotations

import io
import json
import tarfile
import wave
from pathlib import Path

import numpy as np

FPS = 25
SR = 16000


def synth_clip(n_frames: int, seed: int, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """RGB frames [T, size, size, 3] uint8 and float32 16 kHz audio of the same duration."""
    import cv2

    rng = np.random.default_rng(seed)
    t = np.arange(n_frames * SR // FPS) / SR
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1.5, 3.0) * t)
    audio = (0.3 * envelope * np.sin(2 * np.pi * rng.uniform(150, 300) * t)).astype(np.float32)
    draw = 128                                       # drawn small, then upscaled (fast)
    yy, xx = np.mgrid[0:draw, 0:draw] / draw
    skin = rng.uniform(120, 220, size=3)
    background = rng.uniform(20, 90, size=3)
    frames = []
    for i in range(n_frames):
        opening = envelope[min(len(envelope) - 1, i * SR // FPS)]
        face = ((xx - 0.5) / 0.28) ** 2 + ((yy - 0.5) / 0.36) ** 2 < 1
        mouth = ((xx - 0.5) / 0.1) ** 2 + ((yy - 0.68) / (0.01 + 0.05 * opening)) ** 2 < 1
        eyes = (((xx - 0.4) / 0.04) ** 2 + ((yy - 0.4) / 0.025) ** 2 < 1) | (
            ((xx - 0.6) / 0.04) ** 2 + ((yy - 0.4) / 0.025) ** 2 < 1)
        img = np.empty((draw, draw, 3), np.float32)
        img[:] = background
        img[face] = skin * (0.8 + 0.2 * yy[face, None])
        img[face & (eyes | mouth)] = 30
        frames.append(cv2.resize(img.clip(0, 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_LINEAR))
    return np.stack(frames), audio


def encode_mp4(frames: np.ndarray, audio: np.ndarray) -> bytes:
    """H.264 (yuv420p) + AAC in mp4, as the build writes."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "18"}
        sound = out.add_stream("aac", rate=SR)
        sound.layout = "mono"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        pcm = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")
        pcm.sample_rate = SR
        for packet in sound.encode(pcm):
            out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    return buffer.getvalue()


def wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((audio.clip(-1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def audio_npy(audio: np.ndarray, n_frames: int) -> bytes:
    """float16 [frames, layers, dim] from the project's streaming feature function (log-mel default)."""
    from vividhead.models.audio_features import LogMelEncoder, streaming_features

    feats = streaming_features(LogMelEncoder(), audio, n_frames, stride=28).astype(np.float16)
    buffer = io.BytesIO()
    np.save(buffer, feats)
    return buffer.getvalue()


def write_shards(folder: Path, clips_per_shard: list[int], n_frames: int = 40, size: int = 512) -> list[Path]:
    """Write one shard per entry of `clips_per_shard`; returns the shard paths."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    seed = 0
    for shard_no, n_clips in enumerate(clips_per_shard):
        path = folder / f"unit{shard_no:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for _ in range(n_clips):
                frames, audio = synth_clip(n_frames, seed, size)
                key = f"{seed:016x}_00000000_{n_frames * 40:08d}_cafe{seed:04d}"
                mask = np.zeros((size, size), np.uint8)
                mask[size // 8: -size // 8, size // 5: -size // 5] = 255
                members = {
                    "mp4": encode_mp4(frames, audio),
                    "wav": wav_bytes(audio),
                    "audio.npy": audio_npy(audio, n_frames),
                    "mask.png": cv2.imencode(".png", mask)[1].tobytes(),
                    "json": json.dumps({"key": key, "n_frames": n_frames, "status": "kept"}).encode(),
                }
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                seed += 1
        paths.append(path)
    return paths


def write_config(path: Path, shards: Path | list[Path], out: Path, **changes: object) -> Path:
    """A small stage-1 config of the tiny preset for tests; `changes` are dotted keys."""
    import yaml

    config: dict = {
        "stage": 1, "out": str(out), "seed": 0, "steps": 6, "log_every": 1, "save_every": 2,
        "data": {"shards": [str(p) for p in (shards if isinstance(shards, list) else [shards])],
                 "frames": 33, "buckets": [[32, 32]], "num_workers": 0, "shuffle_window": 4},
        "model": {"preset": "tiny"},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "batch_size": 2},
    }
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(config))
    return path
