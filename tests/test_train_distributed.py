"""`torchrun --nproc_per_node 2` on CPU (gloo): both ranks train on different samples and end identical.

The FSDP path (used for lite/pro on GPUs) runs on the same CPU process group: same losses as DDP up to
float rounding, and a checkpoint gathered into the release layout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train_fixtures import write_config, write_shards

# Run by torchrun in each rank: train, then dump this rank's parameters and the samples it read.
RANK_SCRIPT = """
import sys, torch
from pathlib import Path
from vividhead.training.config import load_train_config
from vividhead.training.distributed import init_distributed, shutdown, unwrap
from vividhead.training.stage1 import train

ctx = init_distributed()
config = load_train_config(Path(sys.argv[1]))
summary = train(config, ctx, progress=False)
if config.model.fsdp is True:   # FSDP: gather the full parameters (a collective) to compare them
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    state = get_model_state_dict(summary.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
else:
    state = {k: v.detach().clone() for k, v in unwrap(summary.model).state_dict().items()}
torch.save({"params": state, "losses": summary.losses, "backend": torch.distributed.get_backend(),
            "world": ctx.world_size}, Path(config.out) / f"rank{ctx.rank}.pt")
shutdown(ctx)
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_shards(tmp_path_factory.mktemp("ddp-shards"), [2, 1], n_frames=40)


def torchrun(tmp_path: Path, shards: list[Path], fsdp: bool) -> Path:
    out = tmp_path / "run"
    config = write_config(tmp_path / "ddp.yaml", shards, out, steps=3, save_every=3, **{"model.fsdp": fsdp})
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
           "--standalone", str(script), str(config)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return out


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, shards: list[Path]) -> Path:
    return torchrun(tmp_path_factory.mktemp("ddp"), shards, fsdp=False)


def test_torchrun_two_cpu_ranks_hold_identical_parameters(ddp_run: Path) -> None:
    out = ddp_run
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["backend"] == "gloo" and r0["world"] == 2
    assert r0["params"].keys() == r1["params"].keys()
    for name in r0["params"]:
        assert torch.equal(r0["params"][name], r1["params"][name]), name
    # The steps changed the weights away from the seeded initialisation...
    from vividhead.models.flashhead import FlashHeadDiT

    torch.manual_seed(0)
    init = FlashHeadDiT.for_preset("tiny").state_dict()
    assert any(not torch.equal(init[k], r0["params"][k]) for k in init)
    # ...each rank read its own samples (even / odd global positions), and the logged loss is the rank mean.
    ranks = [torch.load(out / "checkpoints" / "step-00000003" / f"rank-{r:05d}.pt", weights_only=False) for r in (0, 1)]
    assert [s["data"]["next_position"] for s in ranks] == [6, 6]        # 3 steps x batch 2 per rank
    logged = [json.loads(line)["loss"] for line in (out / "loss.jsonl").read_text().splitlines()]
    assert logged == pytest.approx(r0["losses"]) and r0["losses"] == r1["losses"]


def test_fsdp_matches_ddp_and_gathers_a_release_checkpoint(tmp_path: Path, shards: list[Path], ddp_run: Path) -> None:
    from vividhead.models.release import load_release

    out = torchrun(tmp_path, shards, fsdp=True)
    # Rank 0 gathers the full parameters (cpu_offload leaves the other ranks' copy empty).
    fsdp0, fsdp1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    ddp0 = torch.load(ddp_run / "rank0.pt", weights_only=False)
    assert fsdp0["losses"] == pytest.approx(ddp0["losses"], rel=1e-4) and fsdp0["losses"] == fsdp1["losses"]
    assert fsdp0["params"].keys() == ddp0["params"].keys()
    for name, value in ddp0["params"].items():
        assert torch.allclose(fsdp0["params"][name], value, atol=1e-5), name
    published = load_release(out / "Model_Tiny").state_dict()
    assert all(torch.equal(published[k], fsdp0["params"][k]) for k in published)
