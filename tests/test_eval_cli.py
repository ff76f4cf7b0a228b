"""`vividhead eval --checkpoint` as a new user runs it: a tiny checkpoint trained on demo clips, scored
against a held-back demo clip (the demo build's one shard is split in two). Generation, FID, FVD, Sync and FPS all run; the FPS row names the device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_vividhead
from test_eval_networks import eval_weights
from tiny_models import write_tiny_syncnet
from vividhead.evaluation.videos import list_videos
from vividhead.models.flashhead import GEOMETRY
from vividhead.shards import iter_samples, write_shard


def test_checkpoint_generate_then_score_on_held_back_demo_shards(demo_build: Path, tmp_path: Path, tmp_path_factory):
    samples = [s for shard in sorted((demo_build / "shards").glob("*.tar")) for s in iter_samples(shard)]
    assert len(samples) >= 2, "the demo build keeps several clips"
    train_shard = tmp_path / "train" / "train-000000.tar"        # all clips but the last, which is held back
    write_shard(train_shard, [(s.key, s.files) for s in samples[:-1]])
    held = tmp_path / "held back"
    write_shard(held / "held-000000.tar", [(samples[-1].key, samples[-1].files)])
    run = tmp_path / "run"
    run_vividhead("train", "--config", REPO / "manifests" / "train-tiny.yaml", "--shards", train_shard,
                  "--out", run, "--steps", "3")
    nets = eval_weights(tmp_path_factory)
    manifest = tmp_path / "weights.yaml"
    manifest.write_text("{}\n")                       # only the weights passed below
    out = tmp_path / "eval out"
    result = run_vividhead(
        "eval", "--checkpoint", run, "--reference", held, "--out", out, "--weights", manifest,
        "--inception", nets["inception"], "--i3d", nets["i3d"],
        "--syncnet", write_tiny_syncnet(tmp_path / "syncnet_v2.model"),
        "--fid-frames", "2", "--fvd-protocol", "fvd-comparison", "--fvd-clips", "2", "--sync-protocol", "exact",
        "--fps-chunks", "1", "--steps", "2", "--device", "cpu")

    table = (out / "eval.md").read_text()
    assert table in result.stdout
    rows = {r["metric"]: r for r in json.loads((out / "eval.json").read_text())["rows"]}
    assert list(rows) == ["FID", "FVD", "Sync-C", "Sync-D", "AV offset", "FPS"]
    assert all(rows[m]["status"] == "ok" and rows[m]["value"] is not None for m in ("FID", "FVD", "FPS")), rows
    # A 3-step tiny model, sampled as the authors' stream samples (fresh noise at the last step too),
    # gives noise frames with no face, so the sync rows must say so rather than score; sync scoring of
    # real faces is covered by test_eval_sync and test_eval_runner.
    for metric in ("Sync-C", "Sync-D", "AV offset"):
        row = rows[metric]
        assert (row["status"] == "ok" and row["value"] is not None) or (
            row["status"] == "unavailable" and "no face detected" in row["reason"]), row
        assert row["protocol"] == "exact"
    fps = rows["FPS"]
    assert fps["value"] > 0 and fps["detail"]["device"].startswith("CPU (") and fps["detail"]["variant"] == "tiny"
    assert f"device={fps['detail']['device']}" in table and "| FPS ↑ |" in table
    # provenance: the checkpoint folder and the embedded log-mel audio encoder of the tiny variant
    assert [(m["name"], m["path"], m["sha256"]) for m in fps["provenance"]["models"]] == [
        ("flashhead", str(run), None), ("logmel", None, None)]
    settings = json.loads((out / "eval.json").read_text())["settings"]
    assert settings["checkpoint"] == {"path": str(run), "variant": "from the checkpoint", "steps": 2, "generated": True}
    assert set(settings["weights"]) == {"inception", "i3d", "syncnet", "flashhead"}
    # one timed chunk after one warm-up chunk: the steady chunk's new frames, every stage timed
    assert fps["detail"]["frames"] == GEOMETRY["tiny"].new_frames and fps["detail"]["warmup_chunks"] == 1
    assert set(fps["detail"]["stage_ms"]) == {"audio_encode", "dit", "vae_decode", "motion_encode", "output_encode"}
    assert fps["value"] == pytest.approx(fps["detail"]["frames"] / fps["detail"]["chunk_latency_mean_s"], rel=1e-3)
    generated = list_videos(out / "generated")
    reference = list_videos(held)
    assert [g.key for g in generated] == [r.key for r in reference]
    gen, ref = generated[0].load(), reference[0].load()
    assert gen.frames.shape[1:] == (512, 512, 3) and len(gen.frames) == len(ref.frames)
    assert gen.audio is not None and abs(len(gen.audio) - len(ref.audio)) < 1600   # the clip's own audio
