"""FlashHead DiT: release layout round trip, strict key errors, geometry and one sampler step by hand."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vividhead.models.sampler import sample_chunk, sampler_step
from vividhead.models import flashhead as fh
from vividhead.models.release import CheckpointError, load_release, save_release

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models on a shared 2-core CPU


def tiny(**overrides) -> fh.FlashHeadDiT:
    torch.manual_seed(0)
    return fh.FlashHeadDiT.for_preset("tiny", **overrides).eval()


def test_geometry_matches_the_format():
    lite, pro = fh.GEOMETRY["lite"], fh.GEOMETRY["pro"]
    assert (lite.frames, lite.motion_frames, lite.new_frames, lite.latent_frames) == (33, 9, 24, 5)
    assert (pro.frames, pro.motion_frames, pro.new_frames, pro.latent_frames) == (33, 5, 28, 9)
    assert lite.window_frames == pro.window_frames == 200 and lite.audio_radius == 2
    assert (lite.chunk_seconds, pro.chunk_seconds) == (0.96, 1.12)
    assert fh.sampling_timesteps(4, 5.0) == pytest.approx([1.0, 5 * .75 / (1 + 4 * .75), 5 * .5 / 3, 5 * .25 / 2, 0.0])
    assert fh.sampling_timesteps(2, 5.0) == pytest.approx([1.0, 5 * .5 / 3, 0.0])


def test_audio_windows_and_latent_grouping():
    rows = torch.arange(33.0).view(1, 33, 1, 1)                       # feature value = frame index
    windows = fh.frame_windows(rows)
    assert windows.shape == (1, 33, 5, 1, 1)
    assert windows[0, 0, :, 0, 0].tolist() == [0, 0, 0, 1, 2] and windows[0, 32, :, 0, 0].tolist() == [30, 31, 32, 32, 32]
    first, rest = fh.group_audio(windows, 8)                          # Lite: 5 latent frames
    assert first.shape == (1, 1, 5) and rest.shape == (1, 4, 12)
    # group 1 = video frames 1..8: frame 1 positions 0..2, frames 2..7 position 2, frame 8 positions 2..4
    assert rest[0, 0].tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    first, rest = fh.group_audio(windows, 4)                          # Pro: 9 latent frames, s + 4 = 8 rows each
    assert rest.shape == (1, 8, 8) and rest[0, 7].tolist() == [27, 28, 29, 30, 31, 32, 32, 32]


def test_release_round_trip(tmp_path):
    model = tiny()
    save_release(model, tmp_path / "Model_Tiny")
    config = json.loads((tmp_path / "Model_Tiny" / "config.json").read_text())
    assert config["preset"] == "tiny" and config["in_dim"] == 2 * config["out_dim"]
    loaded = load_release(tmp_path / "Model_Tiny")
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_release_folder_is_what_diffusers_writes_and_reads(tmp_path):
    """The release layout (the authors' config.json with its extra keys) loads through diffusers' from_pretrained
    and through the strict loader alike; save_pretrained writes it back with the unknown keys kept."""
    from stream_fixtures import write_tiny_release

    folder = write_tiny_release(tmp_path / "release", vaes=False) / "Model_Lite"
    strict = load_release(folder)
    pretrained = fh.FlashHeadDiT.from_pretrained(folder)
    assert isinstance(strict, fh.FlashHeadDiT) and strict.config.preset == "lite" and strict.temporal_stride == 8
    for key, value in strict.state_dict().items():
        assert torch.equal(value, pretrained.state_dict()[key]), key
    save_release(strict, tmp_path / "again")
    written = json.loads((tmp_path / "again" / "config.json").read_text())
    assert written["model_type"] == "i2v" and written["preset"] == "lite" and written["vae_stride"] == [8, 32, 32]
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape"])
def test_strict_loading_names_the_key(tmp_path, change):
    folder = save_release(tiny(), tmp_path / "m")
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    key = "blocks.1.cross_attn.norm_k.weight"
    if change == "missing":
        del state[key]
    elif change == "unexpected":
        state["blocks.1.cross_attn.k_img.weight"] = torch.zeros(64, 64)
        key = "blocks.1.cross_attn.k_img.weight"
    else:
        state[key] = torch.zeros(65)
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_release(folder)


def test_released_key_names_and_shapes_on_meta():
    """The 1.3B Lite/Pro configs produce exactly the documented names and shapes."""
    for variant, s, in_dim in (("lite", 8, 256), ("pro", 4, 32)):
        with torch.device("meta"):
            model = fh.FlashHeadDiT.for_preset(variant)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        p = model.config.patch_size
        assert shapes["patch_embedding.weight"] == (1536, in_dim, *p)
        assert shapes["text_embedding.0.weight"] == (1536, 4096) and shapes["time_embedding.0.weight"] == (1536, 256)
        assert shapes["time_projection.1.weight"] == (6 * 1536, 1536)
        assert shapes["blocks.29.modulation"] == (1, 6, 1536) and "blocks.30.modulation" not in shapes
        assert shapes["blocks.0.self_attn.norm_q.weight"] == (1536,) and shapes["blocks.0.norm3.bias"] == (1536,)
        assert shapes["blocks.0.ffn.0.weight"] == (8960, 1536) and shapes["blocks.0.ffn.2.weight"] == (1536, 8960)
        assert shapes["head.head.weight"] == (in_dim // 2 * p[0] * p[1] * p[2], 1536) and shapes["head.modulation"] == (1, 2, 1536)
        assert shapes["audio_emb.proj.1.weight"] == (768, 768) and shapes["audio_emb.proj.4.weight"] == (1536,)
        assert shapes["audio_proj.proj1.weight"] == (512, 5 * 12 * 768)
        assert shapes["audio_proj.proj1_vf.weight"] == (512, (5 + s - 1) * 12 * 768)
        assert shapes["audio_proj.proj3.weight"] == (32 * 1536, 512) and shapes["audio_proj.norm.weight"] == (1536,)
        assert not any("norm1" in k or "norm2" in k for k in shapes)


def test_one_sampler_step_matches_the_update_rule(tmp_path):
    model = load_release(save_release(tiny(), tmp_path / "Model_Tiny"))      # a checkpoint, loaded as streamed
    g = torch.Generator().manual_seed(1)
    shape = (1, 192, 9, 8, 8)
    x_t, ref, noise = (torch.randn(shape, generator=g) for _ in range(3))
    motion = torch.randn(1, 192, 2, 8, 8, generator=g)
    context = model.audio_context(fh.frame_windows(torch.randn(1, 33, 1, 80, generator=g)))
    t, t_next = fh.sampling_timesteps(4)[1:3]
    with torch.no_grad():
        x_next, x0 = sampler_step(model, x_t, t, t_next, ref, context, motion, noise)
        x_in = x_t.clone()
        x_in[:, :, :2] = motion
        v = model(x_in, torch.tensor([1000 * t]), ref, context=context)
    expect_x0 = x_in - t * v
    torch.testing.assert_close(x0, expect_x0)
    torch.testing.assert_close(x_next, (1 - t_next) * expect_x0 + t_next * noise)


def test_sample_chunk_keeps_motion_and_is_deterministic():
    model = tiny()
    ref = torch.randn(1, 192, 9, 8, 8)
    motion = ref[:, :, :1]
    context = model.audio_context(fh.frame_windows(torch.randn(1, 33, 1, 80)))
    a = sample_chunk(model, ref, context, motion, steps=2, generator=torch.Generator().manual_seed(3))
    b = sample_chunk(model, ref, context, motion, steps=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(a[:, :, :1], motion) and a.shape == ref.shape




class _TwoRanks:
    """Two ranks of xDiT simulated in one process: each computes its half of the queries over the whole
    sequence (what xFuserLongContextAttention returns for a rank's slice), all_gather concatenates."""

    world = 2

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.group = self

    @staticmethod
    def long_context_attention(_, query, key, value):
        return fh.sdpa_attention(query, _TwoRanks.full_k, _TwoRanks.full_v)

    def all_gather(self, x, dim):
        other = _TwoRanks.other_half
        return torch.cat([x, other] if self.rank == 0 else [other, x], dim=dim)


def test_sequence_parallel_swaps_only_the_attention_kernel(monkeypatch):
    """The xDiT path keeps the model's forward and swaps the attention kernel; rank 0's half of the queries
    plus rank 1's half reproduce full attention (multi-GPU itself is untested here)."""
    from vividhead.inference.parallel import SequenceParallel, enable

    model = tiny()
    x, ref = torch.randn(1, 192, 9, 8, 8), torch.randn(1, 192, 9, 8, 8)
    context = model.audio_context(fh.frame_windows(torch.randn(1, 33, 1, 80)))
    with torch.no_grad():
        expect = model(x, torch.tensor([400.0]), ref, context=context)
    sp = SequenceParallel.__new__(SequenceParallel)            # the groups without torch.distributed
    sp.rank, sp.world, sp.group = 0, 2, _TwoRanks(0)
    sp.long_context_attention = _TwoRanks.long_context_attention

    def rank0_attention(q, k, v):
        _TwoRanks.full_k, _TwoRanks.full_v = k, v
        _TwoRanks.other_half = fh.sdpa_attention(q, k, v)[:, q.shape[1] // 2:]          # what rank 1 computes
        return SequenceParallel.attention(sp, q, k, v)

    enable(model, sp)
    assert all(block.self_attn.attention == sp.attention for block in model.blocks)
    model.set_attention(rank0_attention)
    with torch.no_grad():
        got = model(x, torch.tensor([400.0]), ref, context=context)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)


def test_model_folder_finds_release_and_training_layouts(tmp_path):
    from vividhead.models.release import model_folder

    save_release(tiny(), tmp_path / "run" / "checkpoints" / "step-00000002" / "Model_Tiny")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step-00000002\n")
    expected = tmp_path / "run" / "checkpoints" / "step-00000002" / "Model_Tiny"
    assert model_folder(tmp_path / "run", "tiny") == expected
    assert model_folder(expected.parent, "tiny") == expected and model_folder(expected, "lite") == expected
    with pytest.raises(FileNotFoundError, match="Model_Lite"):
        model_folder(expected.parent, "lite")
