"""Checkpoints that cannot mislead: a truncated file names itself and the problem, NaN weights are refused at
load naming the tensor, and a chunk that decodes to non-finite values stops the stream instead of going black."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from stream_fixtures import face_like_image, tiny_engine, write_wav
from vividhead.cli import main
from vividhead.inference.engine import NonFiniteOutput
from vividhead.models.release import WEIGHTS_NAME, CheckpointError, load_release

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models on a shared 2-core CPU


@pytest.fixture()
def release(tmp_path):
    tiny_engine(tmp_path / "ckpt")                       # writes <tmp>/ckpt/Model_Tiny in the release layout
    return tmp_path / "ckpt" / "Model_Tiny"


@pytest.mark.parametrize("keep", [0.5, 0.999, 6])
def test_truncated_safetensors_names_the_file_and_the_problem(release, keep):
    path = release / WEIGHTS_NAME
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else int(keep)])
    with pytest.raises(CheckpointError) as err:
        load_release(release)
    assert str(path) in str(err.value) and "truncated" in str(err.value)


def test_corrupt_header_is_named(release):
    path = release / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[8:16] = b"\xff\xfe garb"                          # the JSON header's first bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt: the .*header is not valid JSON") as err:
        load_release(release)
    assert str(path) in str(err.value)


def test_nan_weights_are_refused_at_load_naming_the_tensor(release, tmp_path, capsys):
    path = release / WEIGHTS_NAME
    state = load_file(str(path))
    state["blocks.1.ffn.0.weight"][3, :5] = float("nan")
    state["head.head.bias"][0] = float("inf")
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as err:
        load_release(release)
    message = str(err.value)
    assert str(path) in message and "blocks.1.ffn.0.weight (5 NaN, 0 infinite" in message
    assert "head.head.bias (0 NaN, 1 infinite" in message

    image, wav = tmp_path / "face.png", write_wav(tmp_path / "a.wav", 1.0)
    import cv2

    cv2.imwrite(str(image), face_like_image(64))
    code = main(["stream", "--weights", str(release.parent), "--variant", "tiny", "--image", str(image),
                 "--audio", str(wav), "--out", str(tmp_path / "out.mp4"), "--no-crop"])
    assert code == 2 and "blocks.1.ffn.0.weight" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()           # no black video


def test_a_chunk_decoding_to_non_finite_values_stops_the_stream(tmp_path):
    engine = tiny_engine(tmp_path / "ckpt")
    with torch.no_grad():
        engine.model.head.head.weight.fill_(3e38)          # finite weights whose output overflows to inf
    session = engine.session(engine.reference(face_like_image()))
    session.feed(np.zeros(16000 * 2, np.float32))
    with pytest.raises(NonFiniteOutput, match="chunk 0: the sampled latents hold NaN or infinite values"):
        list(session.chunks(flush=True))
