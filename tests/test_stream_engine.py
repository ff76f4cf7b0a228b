"""The streaming engine end to end: cache rows = build rows, chunk geometry, the CLI's MP4 and raw outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from stream_fixtures import MEDIA, face_like_image, tiny_engine, write_tiny_release, write_tiny_wav2vec2, write_wav
from vividhead.cli import main as cli_main
from vividhead.inference.audio_cache import AudioContextCache, PcmQueue
from vividhead.models import audio_features as af

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models on a shared 2-core CPU


@pytest.mark.parametrize("stride", [24, 28])
def test_cache_rows_match_build_audio_npy(tmp_path, stride):
    """Issue 3, point 3: the inference cache sees exactly the rows the build stores in audio.npy (float16)."""
    encoder = af.load_audio_encoder(write_tiny_wav2vec2(tmp_path / "w2v"))
    rng = np.random.default_rng(stride)
    audio = (0.2 * rng.standard_normal(int(16000 * 3.1))).astype(np.float32)
    build = af.streaming_features(encoder, audio, stride=stride).astype(np.float16)   # what annotate writes

    cache, queue, rows = AudioContextCache(encoder), PcmQueue(stride, stride), []      # every chunk: `stride` new frames
    for start in range(0, len(audio), 4000):                                          # audio arrives in 0.25 s pieces
        queue.put(audio[start: start + 4000])
        last = start + 4000 >= len(audio)
        while (piece := queue.take(flush=last)) is not None:
            window_rows = cache.push(piece)                                            # [33, layers, dim]
            rows.append(window_rows[-stride:])
    served = np.concatenate(rows)[: len(build)]
    assert served.shape == build.shape == (af.frames_for_samples(len(audio)), 3, 32)
    np.testing.assert_allclose(served.astype(np.float16).astype(np.float32), build.astype(np.float32), rtol=0, atol=0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return tiny_engine(tiny_dir)


def test_session_chunk_geometry_and_truncation(engine):
    session = engine.session(engine.reference(face_like_image()))
    audio = np.zeros(int(16000 * 3.0), np.float32)
    session.feed(audio)
    chunks = list(session.chunks(flush=True))
    assert [len(c.frames) for c in chunks] == [28, 28, 19]                # tiny = Pro geometry; 75 frames for 3 s
    assert [c.start_frame for c in chunks] == [0, 28, 56]
    assert sum(len(c.audio) for c in chunks) == len(audio)
    assert chunks[0].frames.shape[1:] == (512, 512, 3) and chunks[0].frames.dtype == np.uint8
    assert set(chunks[0].timings) == {"audio_encode", "dit", "vae_decode", "motion_encode"}
    summary = session.stats.summary()
    assert summary["frames"] == 75 and summary["fps"] > 0 and summary["first_frame_s"] > 0


def test_sessions_are_independent_and_seeded(engine):
    reference = engine.reference(face_like_image())
    audio = np.sin(np.arange(16000) / 50.0).astype(np.float32)                # one chunk each
    outputs = []
    for seed in (1, 1, 2):
        session = engine.session(reference, seed=seed)
        session.feed(audio)
        outputs.append(np.concatenate([c.frames for c in session.chunks(flush=True)]))
    assert np.array_equal(outputs[0], outputs[1]) and not np.array_equal(outputs[0], outputs[2])


def test_raw_frames_to_a_pipe(tmp_path, tiny_dir, engine):
    weights = tiny_dir                                                       # Model_Tiny/ written by the engine fixture
    wav = write_wav(tmp_path / "a.wav", 1.5)
    image = tmp_path / "face.png"
    import cv2
    cv2.imwrite(str(image), face_like_image())
    result = subprocess.run([sys.executable, "-m", "vividhead.cli", "stream", "--weights", str(weights), "--variant", "tiny",
                             "--image", str(image), "--audio", str(wav), "--out", "-", "--no-crop", "--steps", "2"],
                            capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert len(result.stdout) == 38 * 512 * 512 * 3                        # 1.5 s = 37.5 -> 38 frames
    assert b"rgb24 512x512 25 fps" in result.stderr


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Model_Lite/, Model_Pro/ (tiny dims, log-mel sized audio), VAE_LTX/, VAE_Wan/Wan2.1_VAE.pth."""
    return write_tiny_release(tmp_path_factory.mktemp("release"))


def test_cli_writes_lite_mp4_with_audio(tmp_path, capsys, release):
    """Issue point 3 on a tiny Model_Lite + VAE_LTX release (short synthetic speech to keep CI fast)."""
    weights = release
    image = MEDIA / "image" / "liveportrait_s1.jpg"
    crop = []
    if not image.is_file():
        import cv2
        image = tmp_path / "face.png"
        cv2.imwrite(str(image), face_like_image())
        crop = ["--no-crop"]
    audio = write_wav(tmp_path / "speech.wav", 1.4)
    out = tmp_path / "out dir" / "out.mp4"
    code = cli_main(["stream", "--weights", str(weights), "--variant", "lite", "--image", str(image), "--audio", str(audio),
                     "--out", str(out), "--stats", "--steps", "2", *crop])
    assert code == 0
    stats = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert stats["frames"] == 35 and stats["chunks"] == 2
    with av.open(str(out)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert (video.width, video.height, video.average_rate) == (512, 512, 25)
        frames = sum(1 for _ in container.decode(video=0))
        assert frames == 35 and sound.sample_rate == 16000
        assert abs(float(container.duration / av.time_base) - 1.4) <= 24 / 25


def test_cli_errors_name_the_problem(tmp_path, capsys):
    weights = write_tiny_release(tmp_path / "release", audio_layers=12, audio_dim=768, vaes=False)
    import cv2

    image = tmp_path / "x.png"                  # the image is checked first (before the model loads): a real one
    cv2.imwrite(str(image), face_like_image(64))
    code = cli_main(["stream", "--weights", str(weights), "--variant", "pro", "--image", str(image), "--audio", "a.wav",
                     "--out", "o.mp4"])
    assert code == 2 and "VAE_Wan" in capsys.readouterr().err


@pytest.mark.skipif(not (MEDIA / "image").is_dir(), reason=f"shared media not found at {MEDIA}")
def test_reference_face_crop_uses_the_build_rule():
    from vividhead.inference.reference import load_rgb, prepare_reference

    image, box = prepare_reference(load_rgb(MEDIA / "image" / "liveportrait_s1.jpg"), face_crop=True)
    assert image.shape == (512, 512, 3) and box is not None
    x, y, side = box
    assert 0 <= x and 0 <= y and side <= 1145 and side > 200
    _, no_face = prepare_reference(load_rgb(MEDIA / "image" / "liveportrait_s33.jpg"), face_crop=True)   # a dog
    assert no_face is None




def test_release_folder_loads_lite_and_pro_with_wav2vec(tmp_path):
    """Model_Lite + VAE_LTX and Model_Pro + VAE_Wan/Wan2.1_VAE.pth + a wav2vec2 folder, via the user's code path."""
    from safetensors.torch import load_file, save_file

    from vividhead.inference.engine import EngineOptions, FlashHeadEngine
    from vividhead.models.release import CheckpointError
    from vividhead.models.vae import DiffusersVideoCodec

    weights = write_tiny_release(tmp_path / "release", audio_layers=3, audio_dim=32)
    w2v = write_tiny_wav2vec2(tmp_path / "wav2vec2-base-960h")
    for variant, channels, new in (("lite", 128, 24), ("pro", 16, 28)):
        engine = FlashHeadEngine.load(weights, variant, device="cpu", wav2vec=w2v, options=EngineOptions(crop=False))
        assert isinstance(engine.codec, DiffusersVideoCodec) and engine.codec.latent_channels == channels
        assert engine.geometry.new_frames == new and engine.audio.name == "wav2vec2"
        assert engine.model.config.preset == variant
    path = weights / "Model_Pro" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    state["blocks.0.self_attn.qq.weight"] = state.pop("blocks.0.self_attn.q.weight")
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.self_attn\.q\.weight.*blocks\.0\.self_attn\.qq\.weight"):
        FlashHeadEngine.load(weights, "pro", device="cpu", wav2vec=w2v)
    with pytest.raises(ValueError, match="--wav2vec"):
        FlashHeadEngine.load(weights, "lite", device="cpu")            # wav2vec-sized model, log-mel default


@pytest.mark.parametrize("variant", ["lite", "pro"])
def test_lite_and_pro_chunks_through_their_vaes(release, variant):
    """Two chunks through the real VAE architectures (LTX / Wan) at 64 px: motion frames re-encode to 2 latents."""
    from dataclasses import replace

    from vividhead.inference.engine import EngineOptions, FlashHeadEngine

    loaded = FlashHeadEngine.load(release, variant, device="cpu", options=EngineOptions(steps=1, crop=False))
    small = replace(loaded.geometry, size=64)
    engine = FlashHeadEngine(loaded.model, loaded.codec, loaded.audio, small, loaded.device, loaded.options)
    session = engine.session(engine.reference(face_like_image(64)))
    session.feed(np.zeros(16000 * 2, np.float32))
    chunks = list(session.chunks(flush=True))
    expected = {"lite": [24, 24, 2], "pro": [28, 22]}[variant]         # 2 s = 50 frames; the first chunk too
    assert [len(c.frames) for c in chunks] == expected
    assert chunks[0].frames.shape[1:] == (64, 64, 3)
    assert session.state.motion.shape[2] == 2 and session.state.motion.shape[1] == engine.codec.latent_channels


def test_chunk_windows_use_left_context_from_the_cache(engine):
    """The first frames' -2..+2 windows see the real preceding rows of the 8 s window; only the right edge clamps."""
    import torch

    from vividhead.models.flashhead import frame_windows

    session = engine.session(engine.reference(face_like_image()))
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(16000 * 3)).astype(np.float32)
    seen = []
    original = engine.model.audio_context
    engine.model.audio_context = lambda windows: (seen.append(windows.clone()), original(windows))[1]
    try:
        session.feed(audio)
        list(session.chunks(flush=True))
    finally:
        del engine.model.audio_context
    ends = [28, 56]                                                    # chunk 1 ends at frame 56
    rows = af.streaming_features(engine.audio, audio, stride=28)       # build rows (chunk-final frames equal)
    window = torch.from_numpy(engine.audio(af.window_for(audio, ends[1]), af.WINDOW_FRAMES))[None]
    expected = frame_windows(window, 2)[:, -33:]
    torch.testing.assert_close(seen[1], expected)
    assert not torch.equal(seen[1][0, 0, 0], seen[1][0, 0, 2])         # frame 0 of the chunk: a real left neighbour
    np.testing.assert_allclose(seen[1][0, -28:, 2].numpy(), rows[28:56], rtol=1e-6)


@pytest.mark.parametrize("stride, first", [(24, None), (28, None), (24, 33)])
def test_engine_rows_against_build_rows_chunk_by_chunk(stride, first):
    """Train = serve, measured: the rows each chunk's cache push returns (its 33 frames + 2 of left context)
    against the build's audio.npy rows of the same frames (log-mel, float32). Every new row is identical; of the
    older rows (motion frames, left context) only the previous chunk's last frame differs, because the build
    encoded it in the window ending right after it, where its 64 ms log-mel window hangs over zeros."""
    encoder = af.LogMelEncoder()
    rng = np.random.default_rng(stride)
    audio = (0.3 * rng.standard_normal(16000 * 4)).astype(np.float32)
    build = af.streaming_features(encoder, audio, stride=stride, first=first)
    cache = AudioContextCache(encoder, af.WINDOW_FRAMES, 35)
    padded = np.pad(audio, (0, 33 * af.SAMPLES_PER_FRAME))
    for index, (start, end) in enumerate(af.chunk_spans(len(build), stride, first)[:-1]):
        rows = cache.push(padded[start * af.SAMPLES_PER_FRAME: end * af.SAMPLES_PER_FRAME])
        frames = np.arange(end - 35, end)
        known = frames >= 0
        same = np.all(rows[known] == build[frames[known]], axis=(1, 2))
        assert same[frames[known] >= start].all()                                  # the chunk's new rows
        assert [int(f) for f in frames[known][~same]] == ([start - 1] if index else [])   # the one boundary row
