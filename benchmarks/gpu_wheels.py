"""Fetch the wheels benchmarks/gpu_check.py needs on a GPU machine that has PyTorch but no package index.

    python benchmarks/gpu_wheels.py                 # -> .whl/ in the repository root (git-ignored locally)
    python benchmarks/gpu_wheels.py --dir DIR --list

The GPU machine's image (see docs/performance.md) has torch, transformers, numpy, OpenCV (headless),
safetensors, huggingface_hub, pillow, scipy and onnxruntime. It lacks the packages below, which the check's
imports reach. Each is fetched at the version installed in this environment (the one the tests ran with),
for CPython 3.12 on manylinux x86_64, without dependencies (each needed dependency is listed itself).
A pure-Python package that has no wheel on the index is built into one here. The folder stays within
the 64 MB that may travel to that machine; the script fails when it would not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20

# (distribution, why the check needs it)
WHEELS: tuple[tuple[str, str], ...] = (
    ("diffusers", "the DiT's ModelMixin, the LTX and Wan VAEs"),
    ("importlib-metadata", "diffusers imports it"),
    ("pydantic", "build, train and DMD configs"),
    ("pydantic-core", "pydantic"),
    ("annotated-types", "pydantic"),
    ("typing-inspection", "pydantic"),
    ("typing-extensions", "pydantic needs a recent one"),
    ("av", "PyAV: H.264 output encode (NVENC / x264), media I/O"),
    ("soundfile", "vividhead.media"),
    ("cffi", "soundfile"),
    ("python-speech-features", "SyncNet's MFCCs, the log-mel encoder"),
    ("webdataset", "vividhead.shards (training imports)"),
    ("braceexpand", "webdataset"),
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_24_x86_64")


def pinned(name: str) -> str:
    """`name==version` at the version installed here."""
    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        raise SystemExit(f"{name} is not installed in this environment ({sys.executable}); run `make setup` first") from None


def download(requirement: str, folder: Path) -> None:
    """One wheel for CPython 3.12 / manylinux x86_64; a pure-Python sdist is built into a wheel instead."""
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", "-d", str(folder), requirement]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    if subprocess.run(command).returncode == 0:
        return
    print(f"{requirement}: no wheel on the index; building a pure-Python wheel here", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), requirement], check=True)
    built = [w for w in folder.glob("*.whl") if w.name.lower().startswith(requirement.split("==")[0].replace("-", "_").lower())]
    if not any(w.name.endswith("-none-any.whl") for w in built):
        raise SystemExit(f"{requirement}: the wheel built here is not pure Python ({[w.name for w in built]}); "
                         "it would not run on the GPU machine")


def ignore_locally(folder: Path) -> None:
    """Keep the wheel folder out of git (the device tool carries it by name instead)."""
    try:
        exclude = subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return
    path = (ROOT / exclude).resolve()
    line = f"/{folder.resolve().relative_to(ROOT)}/" if folder.resolve().is_relative_to(ROOT) else None
    if line and (not path.is_file() or line not in path.read_text().split()):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=ROOT / ".whl", help="where the wheels go (default: .whl/)")
    parser.add_argument("--list", action="store_true", help="print the pinned requirements and stop")
    args = parser.parse_args(argv)
    requirements = [pinned(name) for name, _ in WHEELS]
    if args.list:
        for requirement, (_, why) in zip(requirements, WHEELS):
            print(f"{requirement:<32} {why}")
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    ignore_locally(args.dir)
    for stale in args.dir.glob("*.whl"):
        stale.unlink()
    for requirement in requirements:
        download(requirement, args.dir)
    wheels = sorted(args.dir.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:7.2f} MB  {wheel.name}")
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MB in {args.dir}")
    if total > LIMIT_BYTES:
        print(f"over the {LIMIT_BYTES // 2**20} MB that may travel to the GPU machine", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
