"""Stage-2 DMD maths: truncation keeps one graph, oracle conditioning, update ratio, exact resume.

These tests drive `Distiller` / `DistillTrainer` with a small convolutional velocity model that has
the FlashHead call signature (x_t, t, reference, per-frame audio); the same code drives the DiT.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vividhead.models.sampler import sample_chunk
from vividhead.models.flashhead import sampling_timesteps
from vividhead.training.dmd import ChunkBatch, Distiller
from vividhead.training.dmd_config import DistillConfig
from vividhead.training.stage2 import DistillTrainer

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models on a shared 2-core CPU

C, F, H, W, M, A = 4, 5, 4, 4, 2, 6   # channels, latent frames per chunk, size, motion frames, audio dim
SCHEDULE = sampling_timesteps(4, 5.0)




class TinyVelocity(nn.Module):
    """x_t and the reference on channels -> Conv3d, plus a timestep and a per-latent-frame audio bias."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2 * C, C, 3, padding=1)
        self.time = nn.Linear(1, C)
        self.audio = nn.Linear(A, C)

    def forward(self, x, timestep, reference, audio):
        out = self.conv(torch.cat([x, reference], dim=1))
        out = out + self.time(timestep.view(-1, 1) / 1000.0)[:, :, None, None, None]
        return out + self.audio(audio).permute(0, 2, 1)[:, :, :, None, None]


class Recorder:
    """Wraps a module as a Velocity and records what each call saw."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.calls: list[dict] = []

    def __call__(self, x, timestep, reference, audio):
        v = self.module(x, timestep, reference, audio)
        self.calls.append({"x": x.detach().clone(), "t": float(timestep[0]) / 1000.0, "audio": audio.detach().clone(),
                           "grad": torch.is_grad_enabled(), "x_requires_grad": x.requires_grad,
                           "v_requires_grad": v.requires_grad})
        return v


def motion_fn(x0: torch.Tensor) -> torch.Tensor:
    """Stand-in for decode -> last frames -> encode: the last M latent frames, slightly transformed."""
    return 0.9 * x0[:, :, -M:]


def make_batch(k: int = 3, b: int = 2, seed: int = 0) -> ChunkBatch:
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(b, k, C, F, H, W, generator=g)
    reference = latents[:, 0, :, :1].repeat(1, 1, F, 1, 1)
    motion = [reference[:, :, :1]] + [latents[:, j, :, :M] for j in range(1, k)]
    audio = torch.randn(b, k, F, A, generator=g)
    return ChunkBatch(latents=latents, motion_gt=motion, reference=reference, audio=audio)


def make_distiller(config: DistillConfig, seed: int = 0):
    torch.manual_seed(seed)
    teacher = TinyVelocity()
    g, t, f = Recorder(copy.deepcopy(teacher)), Recorder(teacher), Recorder(copy.deepcopy(teacher))
    return Distiller(config, g, t, f, motion_fn, seed=seed), g, t, f


def find_iteration(distiller: Distiller, chunk: int, step: int, available: int) -> int:
    for it in range(10_000):
        if distiller.draw_truncation(it, available) == (chunk, step):
            return it
    raise AssertionError("no iteration draws that truncation")


@pytest.mark.parametrize("chunk,step", [(0, 0), (1, 3), (2, 1), (2, 2)])
def test_truncation_keeps_only_chunk_k_step_t_prime(chunk, step):
    config = DistillConfig(num_chunks=3)
    distiller, gen, _, _ = make_distiller(config)
    batch = make_batch(k=3)
    batch.audio.requires_grad_(True)
    batch.reference.requires_grad_(False)
    it = find_iteration(distiller, chunk, step, 3)
    loss, log = distiller.generator_loss(batch, it)
    assert (log.values["chunk"], log.values["exit_step"]) == (chunk + 1, step)

    # G ran the full sampler on chunks before k, and steps 0..t' on chunk k, in order.
    expected = [(j, i) for j in range(chunk) for i in range(4)] + [(chunk, i) for i in range(step + 1)]
    assert len(gen.calls) == len(expected)
    for call, (j, i) in zip(gen.calls, expected):
        assert call["t"] == pytest.approx(SCHEDULE[i])
        assert torch.equal(call["audio"], batch.audio[:, j].detach())
    # Exactly one call builds a graph: step t' of chunk k, and its input carries no history graph.
    graph_calls = [n for n, c in enumerate(gen.calls) if c["v_requires_grad"]]
    assert graph_calls == [len(expected) - 1]
    assert not gen.calls[-1]["x_requires_grad"]

    # Gradients reach the generator parameters, and of the per-chunk inputs only chunk k's.
    loss.backward()
    params = list(gen.module.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    per_chunk = batch.audio.grad.abs().sum(dim=(0, 2, 3))
    assert per_chunk[chunk] > 0
    assert torch.count_nonzero(per_chunk) == 1


def test_motion_context_is_the_generators_own_previous_chunk():
    config = DistillConfig(num_chunks=3)
    distiller, gen, _, _ = make_distiller(config)
    batch = make_batch(k=3)
    it = find_iteration(distiller, 2, 0, 3)
    out = distiller.unroll(batch, it, with_grad=False)
    # chunk 0: cold start from the reference frame; chunk j > 0: motion_fn of chunk j-1's last sample.
    assert torch.equal(out.motion_preds[0], batch.motion_gt[0])
    for j in (1, 2):
        final_call = gen.calls[4 * j - 1]          # step 3 of chunk j-1 (t = 0.25 shifted, x0 = x - t v)
        t_final = torch.full((2,), 1000.0 * final_call["t"])
        prev = final_call["x"] - final_call["t"] * gen.module(final_call["x"], t_final, batch.reference,
                                                                batch.audio[:, j - 1]).detach()
        m_prev = out.motion_preds[j - 1].shape[2]
        prev = torch.cat([out.motion_preds[j - 1], prev[:, :, m_prev:]], dim=2)
        assert torch.allclose(out.motion_preds[j], motion_fn(prev), atol=1e-5)
        assert not torch.allclose(out.motion_preds[j], batch.motion_gt[j])
        # Every sampler step of chunk j saw m_pred in its first latent frames.
        for call in gen.calls[4 * j: 4 * j + 4]:
            assert torch.equal(call["x"][:, :, :M], out.motion_preds[j])


@pytest.mark.parametrize("oracle", [True, False])
def test_teacher_sees_m_gt_and_fake_score_sees_m_pred(oracle):
    config = DistillConfig(num_chunks=3, oracle=oracle, guidance_scale=3.0)
    distiller, _, teacher, fake = make_distiller(config)
    batch = make_batch(k=3)
    it = find_iteration(distiller, 2, 1, 3)
    out = distiller.unroll(batch, it, with_grad=False)
    distiller.generator_loss(batch, it)
    m_pred, m_gt = out.motion_pred, batch.motion_gt[2]
    assert not torch.allclose(m_pred, m_gt)
    # Teacher: two calls (audio, then silence for guidance), both on the oracle motion when enabled.
    assert len(teacher.calls) == 2
    expected = m_gt if oracle else m_pred
    for call in teacher.calls:
        assert torch.equal(call["x"][:, :, :M], expected)
        assert not call["grad"]
    assert torch.equal(teacher.calls[0]["audio"], batch.audio[:, 2])
    assert torch.count_nonzero(teacher.calls[1]["audio"]) == 0
    # Fake score: G's own motion, and the same re-noised generated frames as the teacher.
    assert len(fake.calls) == 1
    assert torch.equal(fake.calls[0]["x"][:, :, :M], m_pred)
    assert torch.equal(fake.calls[0]["x"][:, :, M:], teacher.calls[0]["x"][:, :, M:])


def test_guidance_scale_one_skips_the_silent_pass():
    distiller, _, teacher, _ = make_distiller(DistillConfig(num_chunks=2, guidance_scale=1.0))
    distiller.generator_loss(make_batch(k=2), 0)
    assert len(teacher.calls) == 1


def make_trainer(config: DistillConfig, seed: int = 0) -> DistillTrainer:
    torch.manual_seed(seed)
    teacher = TinyVelocity()
    return DistillTrainer(config, copy.deepcopy(teacher), teacher, copy.deepcopy(teacher),
                          velocity=lambda m: m, motion_fn=motion_fn, seed=seed)


def test_update_ratio_and_frozen_teacher():
    config = DistillConfig(num_chunks=2, fake_updates_per_generator=5, lr_generator=1e-3, lr_fake=1e-3)
    trainer = make_trainer(config)
    teacher_before = copy.deepcopy(trainer.teacher.state_dict())
    counts = {"g": 0, "f": 0}
    trainer.opt_generator.register_step_post_hook(lambda *_: counts.__setitem__("g", counts["g"] + 1))
    trainer.opt_fake.register_step_post_hook(lambda *_: counts.__setitem__("f", counts["f"] + 1))
    batch = make_batch(k=2)
    g_iterations = [it for it in range(15) if "dmd" in trainer.step(batch)]
    assert g_iterations == [0, 5, 10]
    assert counts == {"g": 3, "f": 15}
    assert (trainer.generator_steps, trainer.fake_steps) == (3, 15)
    assert config.iterations(3) == 15
    for name, value in trainer.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[name])


def test_resume_is_exact(tmp_path):
    config = DistillConfig(num_chunks=2, fake_updates_per_generator=2, lr_generator=1e-3, lr_fake=1e-3,
                           warmup_steps=2)
    batch = make_batch(k=2)
    straight = make_trainer(config)
    logs_straight = [straight.step(batch) for _ in range(8)]

    first = make_trainer(config)
    for _ in range(4):
        first.step(batch)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = make_trainer(config, seed=0)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    logs_resumed = [resumed.step(batch) for _ in range(4)]

    assert logs_resumed == logs_straight[4:]
    for name, value in straight.generator.state_dict().items():
        assert torch.equal(value, resumed.generator.state_dict()[name]), name
    for name, value in straight.fake_score.state_dict().items():
        assert torch.equal(value, resumed.fake_score.state_dict()[name]), name


def test_truncation_draws_cover_every_chunk_and_step():
    distiller, *_ = make_distiller(DistillConfig(num_chunks=5))
    draws = {distiller.draw_truncation(it, 5) for it in range(400)}
    assert draws == {(k, s) for k in range(5) for s in range(4)}
    assert {distiller.draw_truncation(it, 2)[0] for it in range(100)} == {0, 1}   # clips shorter than K
    full, *_ = make_distiller(DistillConfig(num_chunks=5, stochastic_truncation=False))
    assert full.draw_truncation(7, 5) == (4, 3)


def test_generator_updates_reduce_the_latent_regression():
    """On one fixed batch, G's updates (DMD + lambda * L_reg) pull its chunk towards z_gt."""
    config = DistillConfig(num_chunks=1, fake_updates_per_generator=1, lr_generator=3e-3, regression_weight=1.0)
    trainer = make_trainer(config)
    batch = make_batch(k=1)
    regs = [trainer.step(batch)["reg"] for _ in range(40)]
    assert sum(regs[-5:]) < sum(regs[:5])


def sample_mean(model: nn.Module, batch: ChunkBatch, seed: int = 1) -> torch.Tensor:
    """Per-channel mean of a model's samples of chunk 0 by the streaming sampler (the generated frames)."""
    g = torch.Generator().manual_seed(seed)

    def velocity(x, t, reference, context):       # the sampler passes audio as `context=`
        return model(x, t, reference, context)

    outs = [sample_chunk(velocity, batch.reference, batch.audio[:, 0], batch.motion_gt[0], steps=4, shift=5.0,
                         generator=g)[:, :, M:] for _ in range(8)]
    return torch.cat(outs).mean(dim=(0, 2, 3, 4))


def test_dmd_gradient_moves_the_generator_towards_the_teacher():
    """DMD alone (lambda = 0): a generator whose samples are offset from the teacher's, with a fake
    score that starts as the generator and tracks it, is pulled back towards the teacher's samples.
    A flipped sign or a gradient that misses G would push it away or leave it."""
    config = DistillConfig(num_chunks=1, fake_updates_per_generator=1, lr_generator=1e-3, lr_fake=1e-3,
                           regression_weight=0.0, guidance_scale=1.0)
    torch.manual_seed(0)
    teacher = TinyVelocity()
    generator = copy.deepcopy(teacher)
    with torch.no_grad():
        generator.time.bias += torch.tensor([0.8, -0.6, 0.5, -0.7])     # an offset velocity: shifted samples
    trainer = DistillTrainer(config, generator, teacher, copy.deepcopy(generator), velocity=lambda m: m,
                             motion_fn=motion_fn, seed=0)
    batch = make_batch(k=1)
    target = sample_mean(teacher, batch)
    before = float((sample_mean(generator, batch) - target).norm())
    for _ in range(60):
        trainer.step(batch)
    after = float((sample_mean(generator, batch) - target).norm())
    assert after < 0.5 * before, (before, after)
