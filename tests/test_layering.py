"""The import rules between the top-level folders, read from the source (every import, deferred ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPLICATIONS = ("pipelines", "training", "inference", "inspection", "evaluation")
RULES = {                                    # folder -> vividhead packages its modules must not import
    "models": APPLICATIONS,                  # models import no application
    "training": ("inference",),              # training imports nothing from the streaming application
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", sorted(RULES))
def test_folder_imports_follow_the_layering(folder: str) -> None:
    banned = tuple(f"vividhead.{name}" for name in RULES[folder])
    offences = [f"{path.relative_to(ROOT)}: {name}" for path in sorted((ROOT / folder).rglob("*.py"))
                for name in sorted(imported_modules(path)) if any(name == b or name.startswith(b + ".") for b in banned)]
    assert not offences, "\n".join(offences)
