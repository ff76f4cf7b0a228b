"""The wheel installs every module under the `vividhead.` namespace and nothing at the top level."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"pipelines": "vividhead/pipelines", "models": "vividhead/models",
          "training": "vividhead/training", "inference": "vividhead/inference", "vividhead": "vividhead"}


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(ROOT)], check=True)
    (wheel,) = out.glob("vividhead-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_wheel_holds_every_module_under_the_namespace(wheel_names: set[str]) -> None:
    for folder, target in MAPPED.items():
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT / folder).as_posix()
            assert f"{target}/{relative}" in wheel_names, f"{folder}/{relative} is missing from the wheel"


def test_wheel_adds_no_generic_top_level_names(wheel_names: set[str]) -> None:
    top = {name.split("/")[0] for name in wheel_names if not name.startswith("vividhead-")}
    assert top == {"vividhead"}


def test_cli_lists_every_subcommand() -> None:
    result = subprocess.run([sys.executable, "-m", "vividhead.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in ("build", "inspect", "train", "stream", "eval"):
        assert command in result.stdout


def test_reading_a_commands_arguments_imports_no_other_commands_dependencies() -> None:
    code = ("import sys; from vividhead.cli import build_parser; build_parser('build').parse_args(['build', '--demo', "
            "'--out', 'x']); print(sorted({'torch', 'scipy.signal', 'ray'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"          # eval's protocol choices would import torch


def test_wheel_ships_the_stream_page(wheel_names: set[str]) -> None:
    for name in ("index.html", "app.js"):
        assert f"vividhead/inference/static/{name}" in wheel_names
