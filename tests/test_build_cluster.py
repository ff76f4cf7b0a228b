"""A build against a real two-node Ray cluster started on this machine; the work runs on the other node.

The head is started with `ray start --head` and no CPUs, and a second node with `ray start
--address` and two, so every decode task must be shipped away from the driver's node: a fixed
placement, where two one-CPU nodes left it to Ray Data's scheduler whether the few demo units
spread (on a loaded CI machine they all ran on one). Both nodes use a private temp dir; at the end
only the processes started here (found by that temp dir in their command line) are stopped, by pid.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import free_port, ray_start, ray_stop, run_vividhead


@pytest.fixture()
def two_node_cluster(monkeypatch: pytest.MonkeyPatch):
    # Ray >= 2.5x turns token auth on when ~/.ray/auth_token exists, but a node joining with
    # `ray start --address` does not; a private test cluster states its mode for every process.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp_dir = tempfile.mkdtemp(prefix="vhray", dir="/tmp")
    port = free_port()
    common = ["--object-store-memory", str(200 * 1024**2), "--disable-usage-stats"]
    try:
        ray_start("--head", "--num-cpus", "0", "--node-ip-address", "127.0.0.1", "--port", str(port),
                  "--temp-dir", temp_dir, "--include-dashboard", "false", *common)
        ray_start("--address", f"127.0.0.1:{port}", "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
                  "--temp-dir", temp_dir, *common)
        yield f"127.0.0.1:{port}"
    finally:
        ray_stop(temp_dir)
        time.sleep(1)


def _worker_node(address: str) -> str:
    """The node id of the cluster's one node with CPUs, asked of Ray by a short-lived driver."""
    script = ("import ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
              "print([n['NodeID'] for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU')][0])" % address)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_build_on_a_two_node_cluster(demo_build: Path, two_node_cluster: str, tmp_path: Path) -> None:
    config = tmp_path / "core.yaml"
    config.write_text("".join(f"{name}: {{enabled: false}}\n" for name in ("occlusion", "speech", "sync", "annotate")))
    out = tmp_path / "out"
    run_vividhead("build", "--sources", demo_build / "demo-sources" / "sources.yaml", "--config", config,
                  "--out", out, "--address", two_node_cluster, "--no-progress", timeout=400)
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    nodes = {row["extract.node"] for row in rows if row["key"]}
    assert nodes == {_worker_node(two_node_cluster)}, f"the decode tasks ran on {nodes}, not on the CPU node"
    demo = {(r["key"], r["reject_reason"]) for r in pq.read_table(demo_build / "manifest.parquet").to_pylist()
            if r["reject_stage"] in {None, "segment", "face", "flow", "visibility", "probe", "sources"}}
    here = {(r["key"], r["reject_reason"]) for r in rows}
    assert demo <= here, "the cluster build decides stages 1-7 as the local one"
