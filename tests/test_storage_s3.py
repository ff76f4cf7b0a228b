"""Object storage end to end: a build whose sources and `--out` are s3:// URLs, on a real S3-compatible server.

moto's server mode (the `test` extra; s3fs and pandas test against it too) runs on the loopback
interface, one server for the module: the build, `inspect` and the trainer reach it through s3fs as
they would reach AWS, MinIO or Ceph. No client call is mocked.

One tiny corpus (two generated talking clips and a byte-identical copy of one, model stages off but
`annotate`, whose features `--verify` checks) is built once on local disk and once into the bucket.
The bucket build is SIGKILLed twice (after its first committed segment, then after its first manifest
part) before a third run finishes it; a second build started while the first holds the lock must
refuse. The asserts below all read those builds.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import joining_session_ray
from vividhead.demo import TAKES, astronaut, write_take

SECRET = "vividhead-test-secret-never-written"
CONFIG = "".join(f"{name}: {{enabled: false}}\n" for name in ("occlusion", "speech", "sync")) + \
    "shards: {max_samples: 1}\n"              # a shard per kept clip: packs happen while the build runs
OUT = "s3://out/build"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_moto(extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, **(extra_env or {})}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return process, endpoint
        except OSError:
            assert process.poll() is None, "moto's server did not start"
            assert time.monotonic() < deadline, "moto's server did not answer within 60 s"
            time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _env(endpoint: str | None) -> dict[str, str]:
    """The environment of a vividhead process: test credentials; the endpoint only when given (the bucket
    build names it in its config's `storage:` section instead)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def _cli(*args: str | Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vividhead.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _build_args(sources: Path, out: str | Path, config: Path) -> list[str]:
    return ["build", "--sources", str(sources), "--out", str(out), "--config", str(config), "--no-progress"]


@dataclass
class Builds:
    endpoint: str
    local: Path
    env: dict[str, str]                       # for inspect and the trainer: the endpoint from AWS_ENDPOINT_URL
    sources: Path
    config: Path
    kills: list[str] = field(default_factory=list)
    refused: subprocess.CompletedProcess | None = None
    final: subprocess.CompletedProcess | None = None


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The module's S3 server: its endpoint URL."""
    process, endpoint = _start_moto()
    try:
        yield endpoint
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def builds(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builds]:
    import s3fs

    root = tmp_path_factory.mktemp("s3")
    endpoint = server
    fs = s3fs.S3FileSystem(key="testing", secret=SECRET, client_kwargs={"endpoint_url": endpoint},
                           use_listings_cache=False)
    corpus = root / "corpus"
    corpus.mkdir()
    photo = astronaut()
    for take in TAKES:
        if take.name in ("talk_anna", "talk_cut"):
            write_take(take, corpus / f"{take.name}.mp4", photo)
    (corpus / "copy_of_anna.mp4").write_bytes((corpus / "talk_anna.mp4").read_bytes())
    fs.mkdir("src")
    fs.mkdir("out")
    for video in sorted(corpus.glob("*.mp4")):
        fs.put_file(str(video), f"src/raw/{video.name}")

    config = root / "config.yaml"
    config.write_text(CONFIG + f"storage: {{endpoint_url: {endpoint!r}}}\n")
    local_sources = root / "local.yaml"
    local_sources.write_text(f"sources:\n  - path: {str(corpus)!r}\n    dataset: d\n")
    bucket_sources = root / "bucket.yaml"
    bucket_sources.write_text("sources:\n  - path: s3://src/raw/\n    dataset: d\n")
    local = root / "local-out"
    # The local build joins the session Ray; the bucket builds start their own, whose workers get the credentials.
    result = _cli(*_build_args(local_sources, local, config), env=joining_session_ray(_env(None)))
    assert result.returncode == 0, result.stderr[-3000:]

    built = Builds(endpoint, local, _env(endpoint), bucket_sources, config)
    build_env = _env(None)                 # the bucket build finds the endpoint in its config

    def committed_segment() -> bool:
        return bool(fs.glob("out/build/.segments/*/*.tar"))

    def committed_part() -> bool:
        return bool(fs.glob("out/build/manifest/*.parquet"))

    for name, ready in (("segment", committed_segment), ("part", committed_part)):
        build = subprocess.Popen([sys.executable, "-m", "vividhead.cli", *_build_args(bucket_sources, OUT, config)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=build_env,
                                 start_new_session=True)
        if built.refused is None:
            _wait(build, lambda: fs.exists("out/build/.build.lock"))
            built.refused = _cli(*_build_args(bucket_sources, OUT, config), env=build_env)
        if _kill_when(build, ready):
            built.kills.append(name)
        _visible_objects_are_complete(fs)
    built.final = _cli(*_build_args(bucket_sources, OUT, config), env=build_env)
    assert built.final.returncode == 0, built.final.stderr[-3000:]
    yield built


def _wait(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> bool:
    """Poll until `ready()`; False when the process ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the build never reached the point"
        time.sleep(0.1)
    return True


def _kill_when(process: subprocess.Popen, ready: Callable[[], bool]) -> bool:
    """SIGKILL the build's process group once `ready()`; False when the build finished before it."""
    try:
        return _wait(process, ready)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _visible_objects_are_complete(fs) -> None:
    """Every object a reader lists is whole: each shard reads to its end, each part opens."""
    for key in fs.glob("out/build/shards/*.tar"):
        with tarfile.open(fileobj=io.BytesIO(fs.cat_file(key))) as tar:
            assert tar.getmembers(), key
    for key in fs.glob("out/build/manifest/*.parquet"):
        assert pq.read_table(io.BytesIO(fs.cat_file(key))).num_rows >= 1, key


def _decisions(table) -> list[tuple]:
    return sorted((r["uri"].rsplit("/", 1)[-1], r["key"], r["status"], r["reject_stage"], r["reject_reason"])
                  for r in table.to_pylist())


def _tar_keys(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sorted({member.name.split(".", 1)[0] for member in tar.getmembers()})


def _fs(builds: Builds):
    import s3fs

    return s3fs.S3FileSystem(key="testing", secret=SECRET, client_kwargs={"endpoint_url": builds.endpoint},
                             use_listings_cache=False)


def test_killed_bucket_build_resumes_to_the_local_build(builds: Builds) -> None:
    fs = _fs(builds)
    assert builds.kills, "the build was killed at least once before it finished"
    assert "already done" in builds.final.stdout or "continued" in builds.final.stdout, builds.final.stdout
    local = pq.read_table(builds.local / "manifest.parquet")
    bucket = pq.read_table(io.BytesIO(fs.cat_file("out/build/manifest.parquet")))
    assert _decisions(bucket) == _decisions(local)
    assert "duplicate_md5" in bucket.column("reject_reason").to_pylist(), "the copy is found by the store's MD5"
    local_keys = sorted(k for shard in sorted((builds.local / "shards").glob("*.tar"))
                        for k in _tar_keys(shard.read_bytes()))
    bucket_keys = sorted(k for key in fs.glob("out/build/shards/*.tar") for k in _tar_keys(fs.cat_file(key)))
    assert bucket_keys == local_keys and bucket_keys
    assert not fs.glob("out/build/.segments/**/*.tar"), "every committed clip was packed"
    assert not fs.exists("out/build/.build.lock"), "the lock is released"
    for key in ("out/build/build.json", "out/build/manifest.parquet"):
        assert SECRET.encode() not in fs.cat_file(key), f"{key} holds no credential"


def test_second_build_on_the_same_bucket_output_refuses(builds: Builds) -> None:
    assert builds.refused is not None
    assert builds.refused.returncode == 75, builds.refused.stderr[-2000:]
    assert f"{OUT} is being built by" in builds.refused.stderr


def test_inspect_verify_reads_the_bucket(builds: Builds) -> None:
    result = _cli("inspect", OUT, "--verify", env=builds.env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "every shard is intact and agrees with the manifest" in result.stdout


def test_the_trainer_reads_the_bucket_shards(builds: Builds, monkeypatch: pytest.MonkeyPatch) -> None:
    from vividhead.training.config import expand_shards
    from vividhead.training.dataset import ShardDataset

    for key, value in builds.env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    shards = expand_shards([OUT])
    assert [str(s) for s in shards] == [f"{OUT}/shards/{p.name}" for p in sorted((builds.local / "shards").glob("*.tar"))]
    sample = next(iter(ShardDataset(shards, frames=33, buckets=[(32, 32)], seed=0)))
    assert "skip" not in sample and sample["video"].numel() and sample["audio"].numel(), sample.get("skip")


@pytest.mark.parametrize("case", ["missing bucket", "bad credentials", "unreachable endpoint"])
def test_a_store_that_cannot_be_used_is_one_line(server: str, case: str, tmp_path: Path) -> None:
    checking = None
    env, out = _env(server), OUT
    if case == "missing bucket":
        out = "s3://no-such-bucket/out"
    elif case == "bad credentials":                # a second server that checks every request's signature
        checking, endpoint = _start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
        env = _env(endpoint)
    else:
        env = _env(f"http://127.0.0.1:{_free_port()}")
    config, sources = tmp_path / "config.yaml", tmp_path / "sources.yaml"
    config.write_text(CONFIG)
    sources.write_text("sources:\n  - path: s3://src/raw/\n")
    try:
        result = _cli(*_build_args(sources, out, config), env=env, timeout=120)
    finally:
        if checking is not None:
            _stop(checking)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and out in lines[0]
    expected = {"missing bucket": "does not exist", "bad credentials": "access denied",
                "unreachable endpoint": "cannot reach the endpoint"}[case]
    assert expected in lines[0], lines[0]


def test_paths_and_options_without_a_server() -> None:
    import pickle

    from vividhead.storage import ObjectPath, StorageConfig, StoreOptions, location

    config = StorageConfig(endpoint_url="http://store:9000", prefixes={"s3://raw/": StoreOptions(profile="reader")})
    assert config.options("s3://raw/talks/a.mp4").profile == "reader"
    assert config.options("s3://out/build").endpoint_url == "http://store:9000"
    root = location("s3://out/build/", config)
    assert isinstance(root, ObjectPath) and location("relative/out", config) == Path("relative/out")
    shard = root / "shards" / "shard-000001.tar"
    assert str(shard) == "s3://out/build/shards/shard-000001.tar" and shard.stem == "shard-000001"
    assert shard.parent.parent == root and str(shard.relative_to(root)) == "shards/shard-000001.tar"
    again = pickle.loads(pickle.dumps(shard))            # what a Ray task receives
    assert again == shard and again.options.endpoint_url == "http://store:9000"
