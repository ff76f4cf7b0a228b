"""Audio features: wav2vec2 from a local folder, the log-mel default, and the streaming geometry."""

from __future__ import annotations

import numpy as np
import pytest

from stream_fixtures import write_tiny_wav2vec2
from vividhead.models import audio_features as af

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models on a shared 2-core CPU


@pytest.fixture(scope="module")
def wav2vec(tmp_path_factory):
    return af.load_audio_encoder(write_tiny_wav2vec2(tmp_path_factory.mktemp("w2v")))


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * af.SAMPLE_RATE)) / af.SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def test_wav2vec2_shapes_and_layers(wav2vec):
    feats = wav2vec(_speechlike(2.0), 50)
    assert feats.shape == (50, 3, 32) and feats.dtype == np.float32
    assert not np.allclose(feats[:, 0], feats[:, -1])    # one row per transformer layer, not copies


def test_logmel_default_shape():
    feats = af.LogMelEncoder()(_speechlike(1.0), 25)
    assert feats.shape == (25, 1, 80) and np.isfinite(feats).all()


def test_chunk_spans_geometry():
    """Every chunk, the first included, makes `stride` new frames (the authors' streaming mode); `first` overrides."""
    assert af.chunk_spans(24, 24) == [(0, 24)]
    assert af.chunk_spans(50, 24) == [(0, 24), (24, 48), (48, 72)]
    assert af.chunk_spans(90, 28) == [(0, 28), (28, 56), (56, 84), (84, 112)]
    assert af.chunk_spans(34, 24, first=33) == [(0, 33), (33, 57)]


def test_window_zero_padded_at_start():
    audio = np.ones(af.SAMPLES_PER_FRAME * 10, np.float32)
    window = af.window_for(audio, 10)
    assert len(window) == af.WINDOW_FRAMES * af.SAMPLES_PER_FRAME
    assert window[-10 * af.SAMPLES_PER_FRAME:].min() == 1.0 and window[: -10 * af.SAMPLES_PER_FRAME].max() == 0.0


@pytest.mark.parametrize("stride", [24, 28])
def test_streaming_rows_come_from_the_chunk_window(stride):
    """Row i equals the row of the window that ends at the end of the chunk producing frame i."""
    enc = af.LogMelEncoder()
    audio = _speechlike(3.3, seed=stride)
    feats = af.streaming_features(enc, audio, stride=stride)
    assert feats.shape == (af.frames_for_samples(len(audio)), 1, 80)
    for start, end in af.chunk_spans(len(feats), stride):
        window = enc(af.window_for(audio, end), af.WINDOW_FRAMES)
        keep = min(end, len(feats)) - start
        np.testing.assert_allclose(feats[start:start + keep], window[af.WINDOW_FRAMES - (end - start):][:keep], rtol=1e-6)




def test_wav2vec2_concurrent_calls_match_serial_calls(wav2vec):
    """Stream sessions share one encoder and call it from their own threads: each call must see its own
    layers only. A barrier in the forward makes both calls overlap whenever the encoder lets them."""
    import threading

    audios = [_speechlike(1.0, seed) for seed in (1, 2)]
    serial = [wav2vec(a, 25) for a in audios]
    barrier = threading.Barrier(2, timeout=1.0)
    projection = wav2vec.model.feature_projection
    original = projection.forward

    def overlapping(*args, **kwargs):
        try:
            barrier.wait()          # both calls meet here when nothing serialises them
        except threading.BrokenBarrierError:
            pass                    # serialised: the other call is not coming while this one runs
        return original(*args, **kwargs)

    results: list = [None, None]

    def call(i: int) -> None:
        results[i] = wav2vec(audios[i], 25)

    projection.forward = overlapping
    try:
        threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        del projection.forward
    for got, want in zip(results, serial):
        assert got is not None and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
