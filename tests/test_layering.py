"""Import layering, read from the code itself (ast): the core and the models sit below the applications.

Layers, bottom up:
- core: the modules of `vividhead/` (config, manifest, media, shards, weights, demo, cli) and `models/`
  import no application;
- applications: `pipelines/` (curation), `training/`, `inference/`, `inspection/`, `evaluation/`;
  training imports no inference module (the trainer stands on the models, not on the streaming engine);
- the CLI: `vividhead/commands/` runs the applications, so it may import them (inside each command's
  `run`, so that `vividhead --help` does not load them all).
Every import counts, at the top of a module or inside a function. Project imports inside functions
in `pipelines/` carry a comment saying why (a Ray worker boundary or an optional dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
APPLICATIONS = ("pipelines", "training", "inference", "inspection", "evaluation", "commands")


def imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, at module level) for every absolute import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    type_only = {id(child) for node in tree.body
                 if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for child in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            found.append((node.lineno, name, id(node) in top or id(node) in type_only))
    return found


def application_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "vividhead" and len(parts) > 1 and parts[1] in APPLICATIONS:
        return parts[1]
    return None


def files(folder: str) -> list[Path]:
    return sorted((REPO / folder).glob("*.py"))


@pytest.mark.parametrize("path", files("vividhead") + files("models"), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_core_and_models_import_no_application(path: Path) -> None:
    wrong = [f"{path.name}:{line} imports {module}" for line, module, _ in imports(path) if application_of(module)]
    assert not wrong, "the core and the models must not import an application: " + "; ".join(wrong)


@pytest.mark.parametrize("path", files("training"), ids=lambda p: p.name)
def test_training_imports_no_inference_module(path: Path) -> None:
    wrong = [f"{path.name}:{line} imports {module}" for line, module, _ in imports(path)
             if application_of(module) == "inference"]
    assert not wrong, "training must not import the streaming engine: " + "; ".join(wrong)


@pytest.mark.parametrize("path", files("pipelines"), ids=lambda p: p.name)
def test_deferred_project_imports_in_pipelines_say_why(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    unexplained = [f"{path.name}:{line} {module}" for line, module, at_top in imports(path)
                   if not at_top and module.startswith("vividhead.")
                   and "#" not in lines[line - 1] and "#" not in lines[line - 2]]
    assert not unexplained, "a project import inside a function needs a comment saying why: " + "; ".join(unexplained)


def test_the_rules_see_a_violation(tmp_path: Path) -> None:
    """The checks are not vacuous: an application import, even inside a function, is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    from vividhead.pipelines.stages import STAGES\n    return STAGES\n")
    found = imports(bad)
    assert [(module, at_top) for _, module, at_top in found if application_of(module)] == [
        ("vividhead.pipelines.stages", False), ("vividhead.pipelines.stages.STAGES", False)]
