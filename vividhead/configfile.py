"""Read a YAML file into a pydantic model; every problem becomes a `ConfigError` naming the file and field.

Shared by the build config, sources.yaml, the weights manifest and the training config. A caller
that must adjust the raw mapping first (resolve relative paths, apply command-line overrides)
passes `prepare`, which may raise `ConfigError` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from vividhead.envfail import InputError


class ConfigError(InputError):
    """A configuration file is missing, unreadable or invalid; the message names the file and field."""


class StrictModel(BaseModel):
    """A config section: unknown fields are errors, so a typo is never silently ignored."""

    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path) -> Any:
    """The parsed YAML of `path` (an empty file is `{}`); errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return {} if data is None else data


def load_yaml_model(model: type[M], path: Path,
                    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> M:
    """Read `path` into `model`, after `prepare` (if given) adjusts the raw top-level mapping."""
    data = read_yaml(path)
    if isinstance(data, list) and "sources" in model.model_fields:
        data = {"sources": data}                     # sources.yaml may be a bare list of sources
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top, got {type(data).__name__}")
    if prepare is not None:
        data = prepare(data)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: " + "; ".join(_describe(e) for e in err.errors())) from None


def _describe(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "(top level)"
    got = error.get("input")
    shown = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
    return f"field '{field}': {error['msg']}{shown}"
