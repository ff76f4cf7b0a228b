"""Stage 2 end to end on real-format shards: a tiny stage-1 teacher distilled by `stage2.run`.

Checks the run resumes exactly (bit-identical networks and loss log), that the student lands in the
release layout and loads with the release loader, and that bad configs fail with clear messages.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from train_fixtures import write_config, write_shards
from vividhead.models.release import load_release
from vividhead.training import stage1, stage2
from vividhead.training.config import load_train_config

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models on a shared 2-core CPU

DISTILL = {"num_chunks": 2, "fake_updates_per_generator": 2, "lr_generator": 1e-3, "lr_fake": 1e-3}




@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """Shards of 61-frame clips (two tiny chunks) and a briefly trained stage-1 tiny teacher."""
    root = tmp_path_factory.mktemp("dmd_run")
    write_shards(root / "shards", [2], n_frames=61, size=64)
    config = load_train_config(write_config(root / "s1.yaml", root / "shards", root / "teacher", steps=2))
    stage1.train(config, progress=False)
    return root


def distill_config(root, out, steps, **distill):
    changes = {"stage": 2, "steps": steps, "save_every": 2, "distill": {"teacher": str(root / "teacher"), **DISTILL, **distill}}
    return load_train_config(write_config(root / f"{out}.yaml", root / "shards", root / out, **changes))


def test_stage2_resume_is_exact(teacher_run, monkeypatch):
    root = teacher_run
    assert stage2.run(distill_config(root, "straight", 4)) == 0
    assert stage2.run(distill_config(root, "resumed", 2)) == 0
    assert stage2.run(distill_config(root, "resumed", 4)) == 0     # same out folder: resumes at step 2

    for folder in ("checkpoints/step-00000004/Model_Tiny", "checkpoints/step-00000004/FakeScore", "Model_Tiny"):
        a = load_file(str(root / "straight" / folder / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(root / "resumed" / folder / "diffusion_pytorch_model.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{folder}: {key} differs after resume"
    logs = [[json.loads(line) for line in (root / run / "loss.jsonl").read_text().splitlines()]
            for run in ("straight", "resumed")]
    drop = ("step_s",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in logs[0]] == \
           [{k: v for k, v in r.items() if k not in drop} for r in logs[1]]
    assert [r["step"] for r in logs[0]] == [1, 2, 3, 4]
    assert all({"dmd", "reg", "fake_loss"} <= r.keys() for r in logs[0])

    # The student is a release-layout folder that the release loader reads; it changed, the teacher did not.
    student = load_release(root / "straight" / "Model_Tiny")
    teacher = load_release(root / "teacher" / "Model_Tiny")
    assert student.config.preset == "tiny"
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, teacher.state_dict()[k])]
    assert changed and not any(k.startswith(("text_embedding", "audio_emb")) for k in changed)

    # ... and `vividhead stream`'s engine runs it unchanged from the run folder.
    import numpy as np

    from vividhead.inference.engine import EngineOptions, FlashHeadEngine

    import vividhead.inference.engine as engine_module
    from vividhead.models.flashhead import GEOMETRY

    sampled = []
    original = engine_module.sample_chunk
    monkeypatch.setattr(engine_module, "sample_chunk", lambda *a, **k: sampled.append(original(*a, **k)) or sampled[-1])
    # (stage 2's unroll does not colour-correct; the engine's default does, before the motion re-encode)
    engine = FlashHeadEngine.load(root / "straight", "tiny", device="cpu", options=EngineOptions(color_correction=0))
    session = engine.session(engine.reference(np.full((64, 64, 3), 128, np.uint8)))
    session.feed(np.zeros(28 * 640, np.float32))
    chunk = next(session.chunks())
    assert chunk.frames.shape == (28, 512, 512, 3)
    # Training's m_pred is exactly the motion latents the engine carries to its next chunk.
    expected = stage2.motion_from_chunk(engine.codec, sampled[0], GEOMETRY["tiny"])
    assert torch.allclose(session.state.motion, expected, atol=1e-5)


def test_stage2_needs_a_teacher(teacher_run, tmp_path):
    root = teacher_run
    config = load_train_config(write_config(tmp_path / "c.yaml", root / "shards", tmp_path / "o", stage=2,
                                            distill={"num_chunks": 2}))
    with pytest.raises(ValueError, match="distill.teacher"):
        stage2.train(config)


def test_stage2_rejects_clips_shorter_than_k_chunks(teacher_run, tmp_path):
    config = distill_config(teacher_run, "too_long", 1, num_chunks=3)   # 89 frames > 61-frame clips
    with pytest.raises(ValueError, match="num_chunks"):
        stage2.train(config)


def test_motion_latents_match_the_streaming_engine():
    """m_pred is what `vividhead stream` re-encodes: the engine's own decode/encode of a chunk."""
    from vividhead.models.flashhead import GEOMETRY
    from vividhead.models.vae import SpaceToDepthCodec

    codec, geometry = SpaceToDepthCodec(), GEOMETRY["tiny"]
    latent = torch.randn(2, codec.latent_channels, geometry.latent_frames, 8, 8)
    native = getattr(codec, "native_size", None)                 # as inference/engine.py decodes
    video = codec.decode(latent) if native is None else codec.decode(latent, size=native)
    engine_way = codec.encode(video[:, :, -geometry.motion_frames:])
    motion = stage2.motion_from_chunk(codec, latent, geometry)
    assert motion.shape[2] == geometry.motion_latents
    assert torch.allclose(motion, engine_way, atol=1e-5)
