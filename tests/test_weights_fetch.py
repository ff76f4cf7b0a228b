"""`vividhead weights fetch` against a local HTTP server on 127.0.0.1: a plain URL and a stand-in for the
Hugging Face Hub API (through HF_ENDPOINT), with an interrupted transfer, a checksum mismatch, the lock
file, and a later run catching a file changed on disk."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tiny_models import write_tiny_dwpose, write_tiny_syncnet, write_tiny_wav2vec2
from vividhead.weights import MODELS
from vividhead.weights_verify import LOCK_NAME, WeightsError


class FakeServer:
    """Serves `files` by URL path and Hugging Face `repos` ({repo: (commit, {name: bytes})}) the way the Hub
    API answers huggingface_hub; honours Range; the first GET of a path in `cut` stops halfway."""

    def __init__(self, files: dict[str, bytes] | None = None, repos: dict | None = None, cut: set[str] = frozenset()):
        self.files, self.repos, self.cut, self.log = dict(files or {}), dict(repos or {}), set(cut), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                server.answer(self, head=True)

            def do_GET(self) -> None:
                server.answer(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        path = handler.path.split("?")[0]
        self.log.append((handler.command, path, handler.headers.get("Range")))
        for repo, (commit, files) in self.repos.items():
            if path.startswith(f"/api/models/{repo}/tree/"):
                return self.json(handler, [{"type": "file", "path": name, "size": len(data),
                                            "oid": hashlib.sha1(data).hexdigest(),
                                            "lfs": {"size": len(data), "oid": hashlib.sha256(data).hexdigest(),
                                                    "pointerSize": 130}} for name, data in files.items()])
            if path.startswith(f"/api/models/{repo}/revision/"):
                return self.json(handler, {"id": repo, "sha": commit,
                                           "siblings": [{"rfilename": name} for name in files]})
            if path.startswith(f"/{repo}/resolve/"):
                data = files[path[len(f"/{repo}/resolve/"):].split("/", 1)[1]]
                return self.send(handler, data, head, {"X-Repo-Commit": commit,
                                                       "ETag": f'"{hashlib.sha256(data).hexdigest()}"'})
        if path in self.files:
            return self.send(handler, self.files[path], head, {})
        handler.send_response(404)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def json(self, handler: BaseHTTPRequestHandler, value) -> None:
        body = json.dumps(value).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command == "GET":
            handler.wfile.write(body)

    def send(self, handler: BaseHTTPRequestHandler, data: bytes, head: bool, headers: dict[str, str]) -> None:
        wanted = handler.headers.get("Range")
        start = int(wanted.split("=")[1].split("-")[0]) if wanted else 0
        handler.send_response(206 if wanted else 200)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data) - start))
        if wanted:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if head:
            return
        path = handler.path.split("?")[0]
        if path in self.cut:   # an interrupted transfer: half the body, then the connection closes
            self.cut.discard(path)
            handler.wfile.write(data[start:start + (len(data) - start) // 2])
            handler.close_connection = True
            return
        handler.wfile.write(data[start:])

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers: list[FakeServer] = []

    def make(**kwargs) -> FakeServer:
        servers.append(FakeServer(**kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def write_config(root: Path, entries: dict[str, str]) -> Path:
    """A build config whose weights manifest puts `entries` under root/weights."""
    (root / "weights.yaml").write_text("".join(f"{name}: weights/{file}\n" for name, file in entries.items()))
    (root / "build.yaml").write_text("weights_manifest: weights.yaml\n")
    return root / "build.yaml"


def vividhead(*args, endpoint: str = "", home: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, online (no HF_HUB_OFFLINE), the Hub at `endpoint`."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    if home is not None:
        env["HF_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "vividhead.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def listed(config: Path, name: str) -> dict:
    rows = json.loads(vividhead("weights", "--config", config, "--json").stdout)
    return next(r for r in rows if r["name"] == name)


def test_plain_url_resumes_records_and_catches_changes(tmp_path, server):
    data = write_tiny_syncnet(tmp_path / "served" / "syncnet_v2.model").read_bytes()
    srv = server(files={"/syncnet_v2.model": data}, cut={"/syncnet_v2.model"})
    config = write_config(tmp_path, {"syncnet": "syncnet_v2.model"})
    final = tmp_path / "weights" / "syncnet_v2.model"
    fetch = ("weights", "fetch", "syncnet", "--config", config, "--url", f"{srv.url}/syncnet_v2.model", "--no-progress")

    first = vividhead(*fetch)
    assert first.returncode == 1
    assert first.stderr.count("\n") == 1 and "interrupted" in first.stderr and "Traceback" not in first.stderr
    assert not final.exists()                                   # never a half file under the final name
    part = tmp_path / "weights" / ".syncnet_v2.model.part"
    assert 0 < part.stat().st_size < len(data)

    second = vividhead(*fetch)
    assert second.returncode == 0, second.stderr
    assert ("GET", "/syncnet_v2.model", f"bytes={len(data) // 2}-") in srv.log   # resumed, not restarted
    assert final.read_bytes() == data and not part.exists()
    record = json.loads((final.parent / LOCK_NAME).read_text())["entries"]["syncnet_v2.model"]
    assert record["source"] == f"{srv.url}/syncnet_v2.model"
    assert record["files"]["."]["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["files"]["."]["size"] == len(data)
    assert listed(config, "syncnet")["check"] == "lock ok"

    # a later run catches a file changed on disk (same size, other bytes), then a truncated one
    final.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    verify = vividhead("weights", "verify", "syncnet", "--config", config)
    assert verify.returncode == 1 and "MISMATCH" in verify.stdout and hashlib.sha256(data).hexdigest() in verify.stdout
    final.write_bytes(data[: len(data) // 3])
    row = listed(config, "syncnet")
    assert row["check"] == "MISMATCH" and f"expected {len(data)}" in row["detail"]
    from vividhead.models.syncnet import load_syncnet
    with pytest.raises(WeightsError, match="bytes, expected"):
        load_syncnet(final)


def test_hub_fetch_records_the_commit_and_survives_an_interrupted_transfer(tmp_path, server):
    folder = write_tiny_wav2vec2(tmp_path / "served" / "wav2vec2")
    files = {name: (folder / name).read_bytes() for name in MODELS["wav2vec2"].source.files}
    commit = "c0ffee" * 6 + "abcd"
    repo = MODELS["wav2vec2"].source.repo
    srv = server(repos={repo: (commit, files)}, cut={f"/{repo}/resolve/{commit}/model.safetensors"})
    config = write_config(tmp_path, {"wav2vec2": "wav2vec2-base-960h"})

    result = vividhead("weights", "fetch", "wav2vec2", "--config", config, "--no-progress",
                       endpoint=srv.url, home=tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    pinned = MODELS["wav2vec2"].source.revision
    assert any(path == f"/api/models/{repo}/revision/{pinned}" for _, path, _ in srv.log)   # the pinned revision
    final = tmp_path / "weights" / "wav2vec2-base-960h"
    assert {p.name for p in final.iterdir()} == set(files)
    assert all((final / name).read_bytes() == data for name, data in files.items())
    record = json.loads((final.parent / LOCK_NAME).read_text())["entries"]["wav2vec2-base-960h"]
    assert record["revision"] == commit and record["source"] == f"{srv.url}/{repo}"
    assert record["files"]["model.safetensors"]["sha256"] == hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert listed(config, "wav2vec2")["check"] == "lock ok"


def test_hub_fetch_refuses_a_checksum_mismatch(tmp_path, server):
    """dw-ll_ucoco_384.onnx has a published SHA-256; a file with other bytes is refused and removed."""
    wrong = write_tiny_dwpose(tmp_path / "served" / "dw-ll_ucoco_384.onnx").read_bytes()
    source = MODELS["dwpose_pose"].source
    srv = server(repos={source.repo: (source.revision, {"dw-ll_ucoco_384.onnx": wrong})})
    config = write_config(tmp_path, {"dwpose_pose": "dw-ll_ucoco_384.onnx"})

    result = vividhead("weights", "fetch", "dwpose_pose", "--config", config, "--no-progress",
                       endpoint=srv.url, home=tmp_path / "hf")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"expected {source.sha256}" in result.stderr and hashlib.sha256(wrong).hexdigest() in result.stderr
    weights = tmp_path / "weights"
    assert not (weights / "dw-ll_ucoco_384.onnx").exists() and not (weights / LOCK_NAME).exists()
    assert not [p for p in weights.rglob("*") if p.is_file()]   # nothing left, partial or final


def test_hub_fetch_honours_offline_variables(tmp_path):
    config = write_config(tmp_path, {"wav2vec2": "wav2vec2-base-960h"})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-m", "vividhead.cli", "weights", "fetch", "wav2vec2", "--config",
                             str(config)], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1 and "HF_HUB_OFFLINE is set" in result.stderr
    assert result.stderr.count("\n") == 1


def test_fetch_of_a_present_file_records_it_once_checked(tmp_path):
    """A file put in place by hand: checked (shape) and recorded in the lock file, trust on first use."""
    config = write_config(tmp_path, {"syncnet": "syncnet_v2.model"})
    path = write_tiny_syncnet(tmp_path / "weights" / "syncnet_v2.model")
    result = vividhead("weights", "fetch", "syncnet", "--config", config)
    assert result.returncode == 0 and "recorded it" in result.stdout
    record = json.loads((path.parent / LOCK_NAME).read_text())["entries"]["syncnet_v2.model"]
    assert record["files"]["."]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "present before" in record["source"]


def test_member_of_an_archive_is_extracted_under_the_manifest_name(tmp_path, server):
    """SCRFD comes as det_10g.onnx inside insightface's buffalo_l.zip; it lands as scrfd_10g_bnkps.onnx."""
    import io
    import zipfile

    from tiny_models import write_tiny_scrfd

    onnx = write_tiny_scrfd(tmp_path / "served" / "det_10g.onnx").read_bytes()
    pack = io.BytesIO()
    with zipfile.ZipFile(pack, "w") as archive:
        archive.writestr("buffalo_l/det_10g.onnx", onnx)
        archive.writestr("buffalo_l/genderage.onnx", b"another member")
    srv = server(files={"/v0.7/buffalo_l.zip": pack.getvalue()})
    config = write_config(tmp_path, {"scrfd": "scrfd_10g_bnkps.onnx"})
    result = vividhead("weights", "fetch", "scrfd", "--config", config, "--url", f"{srv.url}/v0.7/buffalo_l.zip",
                       "--no-progress")
    assert result.returncode == 0, result.stderr
    weights = tmp_path / "weights"
    assert (weights / "scrfd_10g_bnkps.onnx").read_bytes() == onnx
    assert {p.name for p in weights.iterdir()} == {LOCK_NAME, "scrfd_10g_bnkps.onnx"}   # archive removed
    record = json.loads((weights / LOCK_NAME).read_text())["entries"]["scrfd_10g_bnkps.onnx"]
    assert record["source"] == f"{srv.url}/v0.7/buffalo_l.zip (member det_10g.onnx)"
