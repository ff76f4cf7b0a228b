"""One prepared GPU check: measures every GPU claim of vividhead in one go and writes one JSON file.

    python benchmarks/gpu_check.py --out check.json            # on one GPU: real shapes, about 8 minutes
    python benchmarks/gpu_check.py --smoke --out check.json    # on a CPU: tiny shapes, same code and schema

Everything runs on random weights at the real shapes (the Lite and Pro DiT, the LTX and Wan VAEs through
diffusers, wav2vec2-base through transformers, SyncNet's real architecture), so no weights are needed. On a
bare GPU machine the few extra wheels come from `benchmarks/gpu_wheels.py` (docs/performance.md says how);
without an installed vividhead the source tree is imported as the package.

Parts, in order, each in its own process with its own time budget (a part that overruns is killed and
keeps what it had written; the JSON says so, and the next part starts):

    environment    GPU, versions, a bf16 matmul's TFLOP/s, whether NVENC opens
    parity         the fp32 DiT forward on GPU against CPU on the same weights; bf16 against fp32
    stream_lite    the stream at Lite shape, bf16: FPS, first-frame latency, chunk latency p50 / p95,
    stream_pro     time per stage, for 1, 2 and 4 batched sessions; the DiT's achieved TFLOP/s against
                   the FLOPs stream_bench counts; the output encoder (NVENC or x264); the share of chunk
                   time outside the DiT and VAE against the 5% goal. One run as shipped, then one per
                   speed-up (torch.compile; CUDA graphs through compile's "reduce-overhead").
    build_stages   clips/s of SyncNet (the sync stage's batch size), the wav2vec2 features (the build's
                   streaming windows) and the face detector, as the actor pools run them
    training       a stage-1 step at Lite size: step time, tokens/s, achieved TFLOP/s, peak memory
    dmd            the stage-2 DMD step at Lite size, gradient checkpointing as configured

GPU stage times come from the engine's own clock (it synchronises CUDA around each stage); the DiT step,
the training step and the DMD step are timed with CUDA events; all after warm-up, as medians.
`--smoke` runs the same parts at the tiny preset on the CPU (speed-up runs and GPU-only figures are
recorded as skipped with the reason), and is what tests/test_gpu_check.py runs.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1

# Seconds per part on one H200 (the whole check stays within 8 minutes with process start-up);
# `--smoke` uses the second figure.
BUDGETS: dict[str, tuple[float, float]] = {
    "environment": (25, 30),
    "parity": (35, 30),
    "stream_lite": (105, 60),
    "stream_pro": (105, 60),
    "build_stages": (40, 40),
    "training": (45, 30),
    "dmd": (55, 40),
}
SECTIONS = ("environment", "parity", "stream", "build_stages", "training", "dmd")
OUTSIDE_GOAL = 0.05                        # issue 19: at most 5% of chunk time outside the DiT and VAE
STREAM_GOALS_FPS = {"lite": 300.0, "pro": 40.0}   # issue 26, one H200, random weights at real shapes
FIRST_FRAME_GOAL_S = 1.2                   # audio the first chunk waits for + its generation


# ---------------------------------------------------------------------------------------- imports
def use_source_tree() -> None:
    """Import this checkout as the `vividhead` package when it is not installed (a bare GPU machine).

    pyproject.toml maps the top-level folders (models/, inference/, ...) to vividhead.*; the same map is
    set up here by hand, so nothing needs building or installing there."""
    if importlib.util.find_spec("vividhead") is not None and importlib.util.find_spec("vividhead.models") is not None:
        return
    sys.path.insert(0, str(ROOT))
    import vividhead

    for name in ("pipelines", "models", "training", "inference", "inspection", "evaluation"):
        folder = ROOT / name
        spec = importlib.util.spec_from_file_location(f"vividhead.{name}", folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        setattr(vividhead, name, module)
        spec.loader.exec_module(module)


def bench_module(name: str):
    """A sibling script of benchmarks/ as a module (stream_bench, dmd_step)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module(name)


# ---------------------------------------------------------------------------------- part recording
class Part:
    """The results of one part, written to its file after every measurement so a killed part keeps them."""

    def __init__(self, path: Path, budget_s: float) -> None:
        self.path, self.budget_s = path, budget_s
        self.start = time.perf_counter()
        self.data: dict[str, Any] = {"status": "running", "budget_s": budget_s}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def out_of_time(self, need_s: float = 0.0) -> bool:
        return self.left() < need_s

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.start, 2)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=_jsonable))
        tmp.replace(self.path)

    def measure(self, target: dict[str, Any], key: str, fill: Callable[[dict[str, Any]], None],
                need_s: float = 0.0) -> dict[str, Any]:
        """`fill(entry)` fills `target[key]`; an error or a spent budget is recorded there, not raised."""
        if self.out_of_time(need_s):
            target[key] = skipped(f"time budget ({self.budget_s:.0f} s) spent")
            self.save()
            return target[key]
        entry: dict[str, Any] = {"status": "running"}
        target[key] = entry
        self.save()
        try:
            fill(entry)
            entry["status"] = entry.get("status") if entry.get("status") == "skipped" else "ok"
        except Exception as err:  # noqa: BLE001 - one failed measurement must not end the check
            entry.update(status="error", error=f"{type(err).__name__}: {err}"[:2000])
        self.save()
        return entry


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def skipped(reason: str) -> dict[str, str]:
    return {"status": "skipped", "reason": reason}


# ---------------------------------------------------------------------------------------- timing
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` after `warmup` calls: CUDA events on a GPU, the wall clock on a CPU."""
    import statistics

    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            tick = time.perf_counter()
            fn()
            times.append(time.perf_counter() - tick)
    return statistics.median(times)


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# ------------------------------------------------------------------------------------ environment
def part_environment(part: Part, device, smoke: bool) -> None:
    import platform

    import torch

    env = part.data
    env.update(python=platform.python_version(), torch=torch.__version__, device=str(device),
               gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               cuda=torch.version.cuda, cpu_threads=torch.get_num_threads())
    env["packages"] = {name: _version(name) for name in
                       ("diffusers", "transformers", "pydantic", "av", "numpy", "triton", "onnxruntime", "mediapipe")}
    def fill_matmul_bf16(m: dict[str, Any]) -> None:
        n = 256 if smoke else 8192
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        seconds = median_seconds(lambda: a @ b, device, repeats=3 if smoke else 10, warmup=1 if smoke else 3)
        m.update(n=n, dtype=str(dtype), tflops=2 * n**3 / seconds / 1e12)
    part.measure(env, "matmul_bf16", fill_matmul_bf16)

    def fill_output_encoder(m: dict[str, Any]) -> None:
        from vividhead.inference.sinks import h264_settings, nvenc_available

        m.update(nvenc=nvenc_available(), codec=h264_settings(18, live=True)[0])
    part.measure(env, "output_encoder", fill_output_encoder)
    if device.type == "cuda":
        env["memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------------ models
def random_dit(preset: str, device, dtype, **overrides: Any):
    """The preset's DiT with seeded random weights, created on `device` directly (1.3B: no CPU detour)."""
    import torch

    from vividhead.models.flashhead import FlashHeadDiT

    torch.manual_seed(0)
    with torch.device(device):
        return FlashHeadDiT.for_preset(preset, **overrides).to(dtype)


def random_wav2vec(device, folder: Path, smoke: bool):
    """wav2vec2 with random weights (base shapes; tiny on --smoke) through the encoder class real weights use."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from vividhead.models.audio_features import Wav2Vec2Encoder

    torch.manual_seed(0)
    config = (Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
              if smoke else Wav2Vec2Config())
    Wav2Vec2Model(config).save_pretrained(folder)
    return Wav2Vec2Encoder(folder, device=str(device))


def random_engine(variant: str, device, options, work: Path, smoke: bool):
    """The stream engine at `variant`'s real shapes with random weights (bf16 on GPU); tiny on --smoke."""
    import torch

    from vividhead.inference.engine import FlashHeadEngine
    from vividhead.models.flashhead import GEOMETRY
    from vividhead.models.vae import DiffusersVideoCodec, SpaceToDepthCodec

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    audio = random_wav2vec(device, work / "wav2vec2", smoke)
    if variant == "tiny":
        model = random_dit("tiny", device, dtype, audio_layers=audio.layers, audio_dim=audio.dim).eval()
        codec = SpaceToDepthCodec(**{k: v for k, v in (model.config.codec or {}).items() if k != "type"})
        return FlashHeadEngine(model, codec, audio, GEOMETRY[variant], device, options)
    from diffusers import AutoencoderKLLTXVideo, AutoencoderKLWan

    model = random_dit(variant, device, dtype).eval()
    with torch.device(device):
        vae = (AutoencoderKLLTXVideo() if variant == "lite" else AutoencoderKLWan()).to(dtype).eval()
    c = model.config.out_dim
    codec = DiffusersVideoCodec(vae, torch.zeros(c), torch.ones(c), GEOMETRY[variant].temporal_stride,
                                sample_posterior=variant == "lite")
    return FlashHeadEngine(model, codec, audio, GEOMETRY[variant], device, options)


# ------------------------------------------------------------------------------------------ parity
def part_parity(part: Part, device, smoke: bool) -> None:
    """fp32 DiT on the device against the CPU on the same weights (released dims, 2 layers), and bf16 vs fp32."""
    import torch

    part.data["gpu"] = device.type == "cuda"
    presets = ("tiny",) if smoke else ("lite", "pro")
    results: dict[str, Any] = part.data.setdefault("presets", {})
    for preset in presets:
        def fill_preset(r: dict[str, Any]) -> None:
            model = random_dit(preset, torch.device("cpu"), torch.float32, num_layers=2).eval()
            inputs = dit_inputs(model, preset, torch.device("cpu"), torch.float32)
            old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False   # true fp32 on the GPU
            try:
                with torch.inference_mode():
                    cpu = model(*inputs).float()
                    on_device = model.to(device)(*(x.to(device) for x in inputs)).float().cpu()
                    bf16 = model.to(torch.bfloat16)(*(x.to(device, torch.bfloat16) if x.is_floating_point() else x.to(device)
                                                      for x in inputs)).float().cpu()
            finally:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
            scale = float(cpu.abs().max())
            r.update(layers=2, output_abs_max=scale,
                     fp32_device_vs_cpu_max_abs=float((on_device - cpu).abs().max()),
                     bf16_vs_fp32_max_abs=float((bf16 - on_device).abs().max()),
                     bf16_vs_fp32_rel=float((bf16 - on_device).abs().max()) / max(scale, 1e-12))
            if device.type != "cuda":
                r["note"] = "no GPU: the device run is a second CPU run"
        part.measure(results, preset, fill_preset, need_s=5)


def dit_inputs(model, preset: str, device, dtype) -> tuple:
    """(noisy latent, timestep, reference latent, audio windows) of one 512x512 chunk for `model`."""
    import torch

    from vividhead.models.flashhead import GEOMETRY

    cfg, g = model.config, GEOMETRY[preset]
    side = (cfg.codec["frame_size"] // cfg.codec["spatial"]) if preset == "tiny" else g.size // cfg.vae_stride[1]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, cfg.out_dim, g.latent_frames, side, side, generator=gen)
    ref = torch.randn(x.shape, generator=gen)
    windows = torch.randn(1, g.frames, 2 * g.audio_radius + 1, cfg.audio_layers, cfg.audio_dim, generator=gen)
    return (x.to(device, dtype), torch.full((1,), 500.0, device=device), ref.to(device, dtype), windows.to(device, dtype))


# ------------------------------------------------------------------------------------------ stream
def speedup_runs(smoke: bool) -> list[tuple[str, dict[str, Any]]]:
    """(name, EngineOptions fields) of the runs: as shipped, then each speed-up."""
    return [("shipped", {}),
            ("compile", {"compile": True}),
            ("cuda_graphs", {"compile": True, "compile_mode": "reduce-overhead"})]


def part_stream(part: Part, device, smoke: bool, variant: str, work: Path) -> None:
    from dataclasses import replace

    import torch

    from vividhead.inference.engine import EngineOptions
    from vividhead.inference.sinks import h264_settings

    stream_bench = bench_module("stream_bench")
    s = part.data
    s["variant"] = variant
    s["goal_fps"] = STREAM_GOALS_FPS.get(variant)
    s["outside_goal"] = OUTSIDE_GOAL
    s["first_frame_goal_s"] = FIRST_FRAME_GOAL_S
    def fill_flops(f: dict[str, Any]) -> None:
        f.update({k: float(v) for k, v in stream_bench.count_flops(variant, 4).items()})
    part.measure(s, "flops", fill_flops)
    engine = random_engine(variant, device, EngineOptions(), work, smoke)
    s["setup"] = {"dit_dtype": str(engine.dtype), "vae_dtype": str(getattr(engine.codec, "dtype", "float32")),
                  "attention": "torch SDPA (flash / memory-efficient kernels on GPU)",
                  "output_encoder": h264_settings(18, live=True)[0], "steps": engine.options.steps,
                  "not_implemented": ["fused norms (RMSNorm / LayerNorm kernels)"]}
    part.save()
    sessions = (1, 2) if smoke else (1, 2, 4)
    chunks = 2 if smoke else 3
    runs: dict[str, Any] = s.setdefault("runs", {})
    for name, fields in speedup_runs(smoke):
        if name != "shipped" and device.type != "cuda":
            runs[name] = skipped("speed-up runs need a GPU (--smoke runs the shipped path only)")
            continue
        def fill_run(run: dict[str, Any]) -> None:
            run["options"] = fields
            timed = type(engine)(engine.model, engine.codec, engine.audio, engine.geometry, device,
                                 replace(engine.options, **fields))
            step_s = median_seconds(lambda: dit_step(timed), device, repeats=2 if smoke else 5, warmup=2)
            run["dit_step_ms"] = 1000 * step_s
            if "flops" in s and "dit_step" in s["flops"]:
                run["dit_tflops"] = s["flops"]["dit_step"] / step_s / 1e12
            part.save()
            wait, compute = stream_bench.first_frame_latency(timed, timed.reference(gray(timed)), "new")
            run["first_frame"] = {"audio_wait_s": wait, "generation_s": compute, "total_s": wait + compute}
            part.save()
            counts = sessions if name == "shipped" else (1,)
            per: dict[str, Any] = run.setdefault("sessions", {})
            for n in counts:
                def fill_sessions(entry: dict[str, Any]) -> None:
                    entry.update(session_figures(timed, n, chunks))
                part.measure(per, str(n), fill_sessions, need_s=5)
            if s["goal_fps"] is not None and per.get("1", {}).get("status") == "ok":
                run["goal_met"] = per["1"]["fps"] >= s["goal_fps"] and run["first_frame"]["total_s"] <= FIRST_FRAME_GOAL_S
        part.measure(runs, name, fill_run, need_s=15)
    _torch_cleanup(torch, device)


def gray(engine):
    import numpy as np

    return np.full((engine.geometry.size, engine.geometry.size, 3), 128, np.uint8)


def dit_step(engine) -> None:
    """One DiT forward over a chunk through the engine's denoiser (compiled when the options say so)."""
    import torch

    inputs = getattr(engine, "_check_inputs", None)
    if inputs is None:
        cfg, g = engine.model.config, engine.geometry
        x = torch.randn(1, cfg.out_dim, g.latent_frames, *latent_side(engine), device=engine.device, dtype=engine.dtype)
        windows = torch.randn(1, g.frames, 5, cfg.audio_layers, cfg.audio_dim, device=engine.device, dtype=engine.dtype)
        with torch.inference_mode():
            inputs = (x, torch.full((1,), 500.0, device=engine.device), x, engine.model.audio_context(windows))
        engine._check_inputs = inputs
    x, t, ref, context = inputs
    with torch.inference_mode():
        engine.denoiser(x, t, ref, context=context)


def latent_side(engine) -> tuple[int, int]:
    cfg, g = engine.model.config, engine.geometry
    if cfg.codec and cfg.codec.get("type") == "space_to_depth":
        side = cfg.codec["frame_size"] // cfg.codec["spatial"]
        return side, side
    return g.size // cfg.vae_stride[1], g.size // cfg.vae_stride[2]


def session_figures(engine, sessions: int, chunks: int) -> dict[str, Any]:
    """`sessions` concurrent batched sessions as the server runs them: FPS, latency p50 / p95, stages, shares."""
    import threading

    import numpy as np

    from vividhead.evaluation.fps import STAGES
    from vividhead.inference.batcher import Batcher

    stream_bench = bench_module("stream_bench")
    batcher = Batcher()
    shared = batcher.engine(engine)
    reference = engine.reference(gray(engine))

    def round_of(n_chunks: int) -> tuple[float, list]:
        done: list[list] = [[] for _ in range(sessions)]
        threads = [threading.Thread(target=stream_bench._session_run, args=(shared, batcher, reference, i, n_chunks, done[i]))
                   for i in range(sessions)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start, done

    try:
        round_of(1)                                   # warm-up: allocation, the batched shapes
        wall, done = round_of(chunks)
    finally:
        batcher.close()
    every = [c for session in done for c in session]
    if len(every) < sessions * chunks:
        raise RuntimeError(f"{len(every)} chunks came back, expected {sessions * chunks} (a session thread failed)")
    frames = sum(len(c.frames) for c in every)
    latency = [c.timings["latency"] for c in every]
    model_s = np.array([sum(c.timings.get(k, 0.0) for k in stream_bench.MODEL_STAGES) for c in every])
    outside = 1 - model_s / np.asarray(latency)
    return {"sessions": sessions, "chunks_per_session": chunks, "frames": frames, "wall_s": wall,
            "fps": frames / wall, "fps_per_session": frames / wall / sessions,
            "chunk_latency_p50_ms": 1000 * percentile(latency, 50), "chunk_latency_p95_ms": 1000 * percentile(latency, 95),
            "stage_ms": {k: 1000 * float(np.mean([c.timings.get(k, 0.0) for c in every])) for k in STAGES},
            "outside_dit_vae_share": float(outside.mean()), "outside_goal_met": bool(outside.mean() <= OUTSIDE_GOAL),
            "real_time_budget_ms": 1000 * engine.geometry.chunk_seconds}


def _torch_cleanup(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------ build stages
def part_build_stages(part: Part, device, smoke: bool, work: Path) -> None:
    """Clips per second per GPU of the build's model work, with the batch sizes the stages use."""
    import numpy as np
    import torch

    from vividhead.pipelines.filter_config import SyncConfig

    clip_s = 1.0 if smoke else 5.0
    frames = int(clip_s * 25)
    audio = (0.1 * np.sin(np.arange(int(clip_s * 16000)) / 16000 * 2 * np.pi * 180)).astype(np.float32)
    b = part.data
    b["clip_seconds"] = clip_s
    def fill_syncnet(r: dict[str, Any]) -> None:
        from vividhead.models.syncnet import SyncNet, embed, offset_scores

        torch.manual_seed(0)
        model = SyncNet().to(device).eval()
        batch = SyncConfig().batch_size
        crops = np.random.default_rng(0).integers(0, 255, (frames, 224, 224, 3), dtype=np.uint8)

        def score() -> None:
            lip, aud = embed(model, crops, audio, batch)
            offset_scores(lip, aud, 15)

        seconds = median_seconds(score, device, repeats=1 if smoke else 3)
        r.update(batch_size=batch, seconds_per_clip=seconds, clips_per_s=1 / seconds, architecture="SyncNet (real), random weights")
    part.measure(b, "syncnet", fill_syncnet, need_s=5)

    def fill_wav2vec2_features(r: dict[str, Any]) -> None:
        from vividhead.models.audio_features import streaming_features
        from vividhead.models.flashhead import GEOMETRY

        encoder = random_wav2vec(device, work / "wav2vec2-build", smoke)
        stride = GEOMETRY["lite"].new_frames
        seconds = median_seconds(lambda: streaming_features(encoder, audio, stride=stride), device, repeats=1 if smoke else 3)
        r.update(windows_per_clip=-(-frames // stride), seconds_per_clip=seconds, clips_per_s=1 / seconds,
                 model="wav2vec2-base shapes" if not smoke else "tiny wav2vec2")
    part.measure(b, "wav2vec2_features", fill_wav2vec2_features, need_s=5)

    def fill_face_detector(r: dict[str, Any]) -> None:
        if importlib.util.find_spec("mediapipe") is None:
            r.update(status="skipped", reason="mediapipe is not installed here (the face stage runs on CPU workers)")
            return
        from vividhead.models.face_detect import MediapipeFaceDetector

        detector = MediapipeFaceDetector()
        rgb = np.full((512, 512, 3), 128, np.uint8)
        n = 5 if smoke else 50
        tick = time.perf_counter()
        for _ in range(n):
            detector(rgb)
        per_frame = (time.perf_counter() - tick) / n
        detector.close()
        r.update(detector="mediapipe (CPU, as the face stage runs it)", ms_per_frame=1000 * per_frame,
                 clips_per_s=1 / (per_frame * frames))
    part.measure(b, "face_detector", fill_face_detector, need_s=3)


# ---------------------------------------------------------------------------------------- training
def part_training(part: Part, device, smoke: bool) -> None:
    """Stage-1 steps at Lite size (tiny on --smoke): bf16 autocast, AdamW, checkpointing as configured."""
    import torch

    from vividhead.training.config import ModelConfig
    from vividhead.training.flow_matching import FlowBatch, flow_matching_loss
    from vividhead.training.stage1 import freeze_unused

    stream_bench = bench_module("stream_bench")
    preset = "tiny" if smoke else "lite"
    t = part.data
    t["preset"] = preset
    model = random_dit(preset, device, torch.float32).train()
    freeze_unused(model)
    model.gradient_checkpointing = ModelConfig.model_fields["gradient_checkpointing"].default and device.type == "cuda"
    t["gradient_checkpointing"] = model.gradient_checkpointing
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    x, _, ref, _ = dit_inputs(model, preset, device, torch.float32)
    cfg = model.config
    rows = torch.randn(1, 2 + 33, cfg.audio_layers, cfg.audio_dim, device=device)
    batch = FlowBatch(x, ref, rows, torch.ones(1, dtype=torch.long, device=device))
    generator = torch.Generator().manual_seed(0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step() -> None:
        with autocast:
            loss = flow_matching_loss(model, batch, shift=5.0, audio_drop_prob=0.1, generator=generator, left_context=2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()

    def fill_step(r: dict[str, Any]) -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = median_seconds(step, device, repeats=2 if smoke else 4, warmup=1)
        flops = stream_bench.count_flops(preset, 1)
        tokens = int(flops["tokens"])
        r.update(step_s=seconds, tokens_per_step=tokens, tokens_per_s=tokens / seconds,
                 model_tflops=3 * flops["dit_step"] / seconds / 1e12,
                 flops_note="3 x the forward FLOPs stream_bench counts (forward + backward, recompute not counted)",
                 peak_memory_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)
    part.measure(t, "step", fill_step, need_s=5)


def part_dmd(part: Part, device, smoke: bool) -> None:
    """Stage-2 DMD iterations at Lite size (tiny on --smoke), checkpointing as configured, bf16 autocast."""
    import statistics

    import torch

    from vividhead.training.config import ModelConfig
    from vividhead.training.dmd_config import DistillConfig
    from vividhead.training.stage1 import freeze_unused
    from vividhead.training.stage2 import DistillTrainer, motion_from_chunk

    dmd_step = bench_module("dmd_step")
    preset = "tiny" if smoke else "lite"
    d = part.data
    config = DistillConfig(num_chunks=2) if smoke else DistillConfig()
    checkpointing = ModelConfig.model_fields["gradient_checkpointing"].default and device.type == "cuda"
    d.update(preset=preset, num_chunks=config.num_chunks, gradient_checkpointing=checkpointing,
             fake_updates_per_generator=config.fake_updates_per_generator,
             motion="the chunk's last latent frames (no VAE re-encode)" if preset != "tiny" else "tiny codec re-encode")
    models = []
    for _ in range(3):
        model = random_dit(preset, device, torch.float32)
        model.gradient_checkpointing = checkpointing
        freeze_unused(model)
        models.append(model)
    geo = dmd_step.GEOMETRY[preset]
    if preset == "tiny":
        from vividhead.models.vae import load_codec

        codec = load_codec("tiny", ".", models[0].config.codec)
        motion_fn = lambda z: motion_from_chunk(codec, z, geo)  # noqa: E731
    else:
        motion_fn = lambda z: z[:, :, -geo.motion_latents:]  # noqa: E731
    trainer = DistillTrainer(config, models[0], models[1], models[2], velocity=lambda m: m, motion_fn=motion_fn)
    batch = dmd_step.synthetic_batch(models[0].config, preset, config.num_chunks, 1, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    times: dict[str, list[float]] = {"generator": [], "fake": []}

    def iteration() -> str:
        kind = "generator" if trainer.trains_generator(trainer.iteration) else "fake"
        _sync(device)
        tick = time.perf_counter()
        with autocast:
            trainer.step(batch)
        _sync(device)
        times[kind].append(time.perf_counter() - tick)
        return kind

    def fill_iterations(r: dict[str, Any]) -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        tick = time.perf_counter()
        iteration()                                                   # warm-up: a generator update
        r["first_iteration_s"] = time.perf_counter() - tick
        times["generator"].clear(), times["fake"].clear()
        limit = 2 if smoke else config.fake_updates_per_generator + 1
        for _ in range(limit):
            if part.out_of_time(10):
                r["stopped"] = "time budget: fewer iterations than a full cycle"
                break
            iteration()
            r.update({f"{k}_step_s_median": statistics.median(v) for k, v in times.items() if v})
            r["iterations"] = sum(len(v) for v in times.values())
            part.save()
        r["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    part.measure(d, "iterations", fill_iterations, need_s=5)


# ------------------------------------------------------------------------------------------ driver
def run_part(name: str, path: Path, smoke: bool, device_name: str | None) -> None:
    """Child process: one part, its results written to `path` as they come."""
    import tempfile

    import torch

    use_source_tree()
    from vividhead.inference.engine import choose_device

    device = choose_device(device_name)
    if smoke:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    part = Part(path, BUDGETS[name][1 if smoke else 0])
    part.save()
    with tempfile.TemporaryDirectory(prefix=f"gpu-check-{name}-") as tmp:
        work = Path(tmp)
        try:
            if name == "environment":
                part_environment(part, device, smoke)
            elif name == "parity":
                part_parity(part, device, smoke)
            elif name.startswith("stream_"):
                part_stream(part, device, smoke, "tiny" if smoke else name.split("_", 1)[1], work)
            elif name == "build_stages":
                part_build_stages(part, device, smoke, work)
            elif name == "training":
                part_training(part, device, smoke)
            elif name == "dmd":
                part_dmd(part, device, smoke)
            part.data["status"] = "ok"
        except Exception as err:  # noqa: BLE001 - recorded, the driver carries on with the next part
            part.data.update(status="error", error=f"{type(err).__name__}: {err}"[:2000])
        part.save()


def parts_for(only: list[str] | None, smoke: bool) -> list[str]:
    """The parts to run in order; --smoke streams the tiny preset once (stream_lite), not twice."""
    names = [n for n in BUDGETS if not (smoke and n == "stream_pro")]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise SystemExit(f"--only: unknown part(s) {unknown}; expected some of {names}")
        names = [n for n in names if n in only]
    return names


def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Run each part in its own process under its budget; merge what each wrote into one report."""
    report: dict[str, Any] = {"schema": SCHEMA, "smoke": args.smoke,
                              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "budgets_s": {k: v[1 if args.smoke else 0] for k, v in BUDGETS.items()}}
    work = args.out.parent / f".{args.out.name}.parts"
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for name in parts_for(args.only, args.smoke):
        budget = BUDGETS[name][1 if args.smoke else 0] * args.budget_scale
        path = work / f"{name}.json"
        path.unlink(missing_ok=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--part-out", str(path),
                   "--budget-scale", str(args.budget_scale)]
        command += ["--smoke"] if args.smoke else []
        command += ["--device", args.device] if args.device else []
        tick = time.perf_counter()
        print(f"[gpu_check] {name} (budget {budget:.0f} s) ...", flush=True)
        try:
            proc = subprocess.run(command, timeout=budget + 20, capture_output=True, text=True)
            killed, tail = False, (proc.stdout + proc.stderr)[-1500:]
        except subprocess.TimeoutExpired as err:
            killed, tail = True, ((err.stdout or b"") + (err.stderr or b"")).decode(errors="replace")[-1500:]
        data = json.loads(path.read_text()) if path.is_file() else {"status": "error", "error": "the part wrote nothing"}
        if killed:
            data.update(status="stopped", reason=f"killed at its time budget ({budget:.0f} s + 20 s grace); "
                                                  "the figures above were measured before that")
        elif data.get("status") in ("running", None):
            data.update(status="error", error=f"the part's process ended early (exit {proc.returncode})")
        if data.get("status") != "ok":
            data["log_tail"] = tail
        data["wall_s"] = round(time.perf_counter() - tick, 1)
        place(report, name, data)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"[gpu_check] {name}: {data['status']} in {data['wall_s']} s", flush=True)
    report["total_s"] = round(time.perf_counter() - start, 1)
    for section in SECTIONS:
        report.setdefault(section, skipped("not run (--only)"))
    args.out.write_text(json.dumps(report, indent=1))
    return report


def place(report: dict[str, Any], name: str, data: dict[str, Any]) -> None:
    if name.startswith("stream_"):
        report.setdefault("stream", {})[data.get("variant") or name.split("_", 1)[1]] = data
    else:
        report[name] = data


# ------------------------------------------------------------------------------------------- table
def table(report: dict[str, Any]) -> str:
    """The short text summary printed after the JSON is written."""
    env = report.get("environment", {})
    lines = [f"gpu_check ({'smoke' if report.get('smoke') else 'full'}) on {env.get('gpu') or env.get('device', '?')}, "
             f"torch {env.get('torch', '?')}, {report.get('total_s', '?')} s",
             f"  bf16 matmul: {_fmt(env.get('matmul_bf16', {}).get('tflops'))} TFLOP/s; output encoder: "
             f"{env.get('output_encoder', {}).get('codec', '?')}"]
    for variant, s in report.get("stream", {}).items():
        if not isinstance(s, dict) or "runs" not in s:
            lines.append(f"  stream {variant}: {s.get('status') if isinstance(s, dict) else s}")
            continue
        for run, r in s["runs"].items():
            if r.get("status") != "ok":
                lines.append(f"  stream {variant:>4} {run:<12} {r.get('status')}: {r.get('reason') or r.get('error', '')}"[:160])
                continue
            per = ", ".join(f"{n}x {_fmt(v.get('fps'))} FPS p50 {_fmt(v.get('chunk_latency_p50_ms'))} ms "
                            f"outside {_fmt(100 * v['outside_dit_vae_share']) if 'outside_dit_vae_share' in v else '?'}%"
                            for n, v in r.get("sessions", {}).items())
            lines.append(f"  stream {variant:>4} {run:<12} DiT {_fmt(r.get('dit_step_ms'))} ms/step "
                         f"({_fmt(r.get('dit_tflops'))} TFLOP/s), first frame {_fmt(r.get('first_frame', {}).get('total_s'), 3)} s; {per}")
    b = report.get("build_stages", {})
    lines.append("  build: " + ", ".join(f"{k} {_fmt(v.get('clips_per_s'))} clips/s" if v.get("status") == "ok"
                                         else f"{k} {v.get('status')}" for k, v in b.items() if isinstance(v, dict)))
    t = report.get("training", {}).get("step", {})
    lines.append(f"  training: step {_fmt(t.get('step_s'), 3)} s, {_fmt(t.get('tokens_per_s'))} tokens/s, "
                 f"{_fmt(t.get('model_tflops'))} TFLOP/s, peak {_fmt(t.get('peak_memory_gib'))} GiB ({t.get('status', '?')})")
    d = report.get("dmd", {}).get("iterations", {})
    lines.append(f"  dmd: generator step {_fmt(d.get('generator_step_s_median'), 3)} s, fake step "
                 f"{_fmt(d.get('fake_step_s_median'), 3)} s ({d.get('status', '?')})")
    for preset, p in report.get("parity", {}).get("presets", {}).items():
        lines.append(f"  parity {preset}: fp32 device vs CPU {_fmt(p.get('fp32_device_vs_cpu_max_abs'), 2, 'e')}, "
                     f"bf16 vs fp32 {_fmt(p.get('bf16_vs_fp32_rel'), 2, 'e')} of the output range ({p.get('status', '?')})")
    for section in SECTIONS:
        data = report.get(section, {})
        if isinstance(data, dict) and data.get("status") not in (None, "ok"):
            lines.append(f"  {section}: {data.get('status')} {data.get('reason') or data.get('error') or ''}"[:200])
    return "\n".join(lines)


def _fmt(value: Any, digits: int = 1, kind: str = "f") -> str:
    return "?" if not isinstance(value, (int, float)) else f"{value:.{digits}{kind}}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the report (JSON)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: the test suite's run")
    parser.add_argument("--only", nargs="+", metavar="PART", help=f"run only these parts: {', '.join(BUDGETS)}")
    parser.add_argument("--device", help="default: CUDA when present, else CPU")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time budget")
    parser.add_argument("--part", choices=tuple(BUDGETS), help=argparse.SUPPRESS)
    parser.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        BUDGETS[args.part] = tuple(b * args.budget_scale for b in BUDGETS[args.part])
        run_part(args.part, args.part_out, args.smoke, args.device)
        return 0
    args.out = args.out.resolve()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = drive(args)
    print(table(report))
    print(f"[gpu_check] wrote {args.out}")
    failed = [s for s in SECTIONS if isinstance(report.get(s), dict) and report[s].get("status") == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
