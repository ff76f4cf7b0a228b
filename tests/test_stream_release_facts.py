"""One test per fact of FLASHHEAD_FORMAT.md, "What the authors' streaming code does", on tiny models in the
release layout (Model_Lite + VAE_LTX, Model_Pro + VAE_Wan, and the tiny preset), plus the streamed-clip check.

Each of these failed against the engine before it followed the release (see docs/stream.md, "Reproducing
the authors' stream"); LTX posterior sampling is pinned in test_model_vae.py.
"""

from __future__ import annotations

import math
from dataclasses import replace

import av
import numpy as np
import pytest
import torch
from PIL import Image

from stream_fixtures import face_like_image, tiny_engine, write_tiny_release
from vividhead.inference import reference as ref_mod
from vividhead.inference.engine import EngineOptions, FlashHeadEngine
from vividhead.models import audio_features as af
from vividhead.models.flashhead import GEOMETRY, frame_windows, sampling_timesteps, shift_timestep, sinusoidal_embedding
from vividhead.models.release import load_release
from vividhead.models.sampler import sample_chunk

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models on a shared 2-core CPU


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_engine(tmp_path_factory.mktemp("tiny"), steps=4)


def small(engine: FlashHeadEngine, size: int = 64) -> FlashHeadEngine:
    """The same engine on 64 px frames (the tiny VAEs are slow at 512 on CPU)."""
    return FlashHeadEngine(engine.model, engine.codec, engine.audio, replace(engine.geometry, size=size),
                           engine.device, engine.options)


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * af.SAMPLE_RATE)) / af.SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
            + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def test_bf16_time_embedding_sees_the_timestep_cast_to_bf16(release):
    """In bf16 the model embeds 1000, 936, 832 and 624 (the 4-step times cast to bf16), not 937.5, 833.3, 625."""
    model = load_release(release / "Model_Lite", dtype=torch.bfloat16)
    seen: list[torch.Tensor] = []
    model.time_embedding[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    cfg = model.config
    reference = torch.randn(1, cfg.out_dim, 5, 2, 2, dtype=torch.bfloat16)
    context = model.audio_context(frame_windows(torch.randn(1, 33, cfg.audio_layers, cfg.audio_dim)))
    sample_chunk(model, reference, context, reference[:, :, :1], steps=4, generator=torch.Generator().manual_seed(0))
    assert [1000 * t for t in sampling_timesteps(4)[:4]] == pytest.approx([1000, 937.5, 833.333, 625], abs=1e-3)
    for got, value in zip(seen, (1000.0, 936.0, 832.0, 624.0), strict=True):
        expected = sinusoidal_embedding(cfg.freq_dim, torch.tensor([value])).to(torch.bfloat16)
        assert torch.equal(got, expected), value
    exact = sinusoidal_embedding(cfg.freq_dim, torch.tensor([937.5])).to(torch.bfloat16)
    assert not torch.equal(seen[1], exact)


def test_noise_generator_advances_steps_plus_one_draws_per_chunk(release):
    """Fresh noise is drawn at every step, the last one included: 1 + 4 draws per 4-step chunk."""
    model = load_release(release / "Model_Lite")
    cfg = model.config
    reference = torch.randn(1, cfg.out_dim, 5, 2, 2)
    context = model.audio_context(frame_windows(torch.randn(1, 33, cfg.audio_layers, cfg.audio_dim)))
    for steps in (4, 2):
        generator, expected = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        sample_chunk(model, reference, context, reference[:, :, :1], steps=steps, generator=generator)
        for _ in range(steps + 1):
            torch.randn(reference.shape, generator=expected)
        assert torch.equal(generator.get_state(), expected.get_state()), steps


def test_each_stream_chunk_advances_its_own_noise_generator(tiny):
    reference = tiny.reference(face_like_image())
    state = tiny.new_state(reference, seed=3)
    expected = torch.Generator().manual_seed(3)
    for chunk in range(2):
        tiny.step(state, speech(tiny.geometry.new_frames / 25, seed=chunk))
        for _ in range(tiny.options.steps + 1):
            torch.randn(reference.latent.shape, generator=expected)
        assert torch.equal(state.noise.get_state(), expected.get_state()), chunk


def test_eight_steps_use_the_linspace_schedule():
    """Step counts other than 2 and 4: linspace(1000, 1, n) before the shift, then 0."""
    expected = [shift_timestep(float(t) / 1000, 5.0) for t in np.linspace(1000, 1, 8, dtype=np.float32)] + [0.0]
    assert sampling_timesteps(8) == pytest.approx(expected, abs=1e-7)
    assert sampling_timesteps(8)[-2] == pytest.approx(shift_timestep(0.001, 5.0))   # 1, not 125
    assert sampling_timesteps(4) == pytest.approx([shift_timestep(t / 4, 5.0) for t in (4, 3, 2, 1)] + [0.0])


def test_lite_chunks_emit_24_frames_the_first_after_zero_audio(release):
    """Every Lite chunk, the first included, takes and emits 24 frames; the first chunk's 33-frame window
    ends 24 frames into the audio, so it starts with 9 frames of the zero-filled cache."""
    engine = small(FlashHeadEngine.load(release, "lite", device="cpu", options=EngineOptions(steps=1)))
    seen: list[torch.Tensor] = []
    original = engine.model.audio_context
    engine.model.audio_context = lambda windows: (seen.append(windows.clone()), original(windows))[1]
    audio = speech(3.0)                                                       # 75 frames
    session = engine.session(engine.reference(face_like_image(64)))
    session.feed(audio)
    chunks = list(session.chunks(flush=True))
    assert [len(c.frames) for c in chunks] == [24, 24, 24, 3] and engine.first_chunk_frames == 24
    assert [c.start_frame for c in chunks] == [0, 24, 48, 72]
    window = torch.from_numpy(engine.audio(af.window_for(audio, 24), af.WINDOW_FRAMES))[None]   # zeros before frame 0
    torch.testing.assert_close(seen[0], frame_windows(window[:, -35:], 2)[:, 2:])
    zeros = torch.from_numpy(engine.audio(np.zeros(af.WINDOW_FRAMES * af.SAMPLES_PER_FRAME, np.float32), af.WINDOW_FRAMES))
    torch.testing.assert_close(seen[0][0, :8, 2], zeros[-33:-25])   # the chunk's first frames: the silent cache
    assert GEOMETRY["lite"].new_frames / 25 == 0.96 and GEOMETRY["pro"].new_frames / 25 == 1.12   # first-frame latency


def test_full_first_chunk_is_the_named_option(tiny):
    """first_chunk="full" keeps the 33-frame first chunk (33 frames of real audio, then 28 per chunk)."""
    engine = FlashHeadEngine(tiny.model, tiny.codec, tiny.audio, tiny.geometry, tiny.device,
                             replace(tiny.options, first_chunk="full", steps=1))
    session = engine.session(engine.reference(face_like_image()))
    session.feed(speech(3.0))
    assert [len(c.frames) for c in session.chunks(flush=True)] == [33, 28, 14]


def test_colour_correction_per_frame_in_lab_before_the_motion_re_encode(tiny, monkeypatch):
    """On by default at strength 1.0; each frame's Lab mean/std matched to the reference; the corrected frames
    are what the next chunk's motion latents are encoded from, and what is emitted."""
    assert EngineOptions().color_correction == 1.0
    decoded, encoded = [], []
    decode, encode = tiny.codec.decode, tiny.codec.encode
    monkeypatch.setattr(tiny.codec, "decode", lambda *a, **k: decoded.append(decode(*a, **k)) or decoded[-1])
    monkeypatch.setattr(tiny.codec, "encode", lambda video, **k: encoded.append(video.clone()) or encode(video, **k))
    reference = tiny.reference(face_like_image())
    state = tiny.new_state(reference)
    chunk = tiny.step(state, speech(tiny.geometry.new_frames / 25))
    corrected = ref_mod.color_correct(decoded[0], reference.color)
    assert torch.equal(encoded[-1], corrected[:, :, -tiny.geometry.motion_frames:])        # before the re-encode
    frames = ref_mod.resize_frames(ref_mod.to_uint8_frames(corrected[:, :, -28:]), 512)
    assert np.array_equal(chunk.frames, frames)
    (mean, std), (raw_mean, raw_std) = ref_mod.lab_stats(corrected), ref_mod.lab_stats(decoded[0])
    off = ((mean - reference.color[0]).abs() + (std - reference.color[1]).abs()).amax(dim=(0, 2, 3, 4))   # [T]
    raw_off = ((raw_mean - reference.color[0]).abs() + (raw_std - reference.color[1]).abs()).amax(dim=(0, 2, 3, 4))
    assert bool((off < 0.3 * raw_off + 1e-3).all())   # every frame moves to the reference's Lab statistics (gamut clipping aside)


def test_lab_conversion_matches_scikit_image():
    from skimage.color import lab2rgb, rgb2lab

    rgb = np.random.default_rng(0).random((1000, 3))
    lab = ref_mod.rgb_to_lab(torch.from_numpy(rgb)).numpy()
    np.testing.assert_allclose(lab, rgb2lab(rgb[None])[0], atol=0.05)
    np.testing.assert_allclose(ref_mod.lab_to_rgb(torch.from_numpy(lab)).numpy(), rgb, atol=1e-4)
    np.testing.assert_allclose(lab2rgb(lab[None])[0], rgb, atol=1e-3)


@pytest.mark.parametrize("shape", [(600, 900), (900, 600), (512, 512)])
def test_reference_is_resized_short_side_bilinear_and_centre_cropped(shape, monkeypatch):
    """No face crop by default: short side to 512 (PIL bilinear, sizes rounded up), then the centre 512 x 512."""
    monkeypatch.setattr(ref_mod, "face_crop_box", lambda *_: pytest.fail("no face detection by default"))
    h, w = shape
    y, x = np.mgrid[:h, :w]
    rgb = np.stack([x * 255 // w, y * 255 // h, (x * y) % 251], axis=-1).astype(np.uint8)
    assert EngineOptions().crop is False
    image, box = ref_mod.prepare_reference(rgb)
    scale = max(512 / h, 512 / w)
    nh, nw = math.ceil(scale * h), math.ceil(scale * w)
    resized = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))
    top, left = round((nh - 512) / 2), round((nw - 512) / 2)
    assert box is None and np.array_equal(image, resized[top: top + 512, left: left + 512])


def test_ltx_reference_and_motion_latents_come_from_the_seeded_generator(release):
    engine = small(FlashHeadEngine.load(release, "lite", device="cpu", options=EngineOptions(steps=1, seed=5)))
    image = face_like_image(64)
    a, b, other = engine.reference(image), engine.reference(image), engine.reference(image, seed=6)
    assert torch.equal(a.latent, b.latent) and not torch.equal(a.latent, other.latent)
    pixels = ref_mod.to_video_tensor(a.image, 33)
    torch.testing.assert_close(a.latent, engine.codec.encode(pixels, generator=torch.Generator().manual_seed(5)))
    motions = []
    for _ in range(2):
        state = engine.new_state(a)
        engine.step(state, speech(0.96))
        motions.append(state.motion)
    assert torch.equal(motions[0], motions[1])


def test_frames_to_uint8_truncate():
    values = torch.tensor([254.9, 127.6, 0.4, 300.0, -3.0]) / 127.5 - 1              # pixel values before uint8
    frames = ref_mod.to_uint8_frames(values.view(1, 1, 1, 1, 5).expand(1, 3, 1, 1, 5))
    assert frames[0, 0, :, 0].tolist() == [254, 127, 0, 255, 0]


def test_eleven_seconds_of_speech_stream_to_275_frames_in_sync(release, tmp_path):
    """Acceptance: a tiny Lite release streams 11 s of speech to 275 frames (24 per chunk, the first too), and
    the MP4 carries 11 s of audio beside 11 s of video (64 px frames keep the tiny LTX VAE fast on CPU)."""
    from vividhead.inference.sinks import Mp4Sink, stream_to_sink

    engine = small(FlashHeadEngine.load(release, "lite", device="cpu", options=EngineOptions(steps=1)))
    session = engine.session(engine.reference(face_like_image(64)))
    out = tmp_path / "out.mp4"
    sizes: list[int] = []
    stream_to_sink(session, speech(11.0), Mp4Sink(out, size=64), piece_seconds=0.25,
                   on_chunk=lambda chunk: sizes.append(len(chunk.frames)))
    assert sizes[0] == 24 and sizes == [24] * 11 + [11] and sum(sizes) == 275
    with av.open(str(out)) as container:
        assert container.streams.video[0].average_rate == 25
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(out)) as container:
        audio_s = sum(frame.samples for frame in container.decode(audio=0)) / container.streams.audio[0].sample_rate
    assert frames == 275
    assert abs(audio_s - 11.0) < 0.1                                               # AAC frames of 1024 samples
    assert abs(frames / 25 - audio_s) < 0.1                                        # video and audio end together
