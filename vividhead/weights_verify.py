"""Is the file on disk the file its stage expects? Lock records, published checksums and shape checks.

`weights.lock.json` sits beside the weights: in the folder that holds a manifest entry, keyed by the entry's
name. `vividhead weights fetch` writes a record per entry: source, revision, and the size and SHA-256 of
every file (one file, or each file of a folder). Later runs check the files against it, so a truncated or
changed file is caught (trust on first use where no checksum is published). A file whose size and
modification time are those recorded is not hashed again; `vividhead weights verify` hashes everything.

Each loader calls `verify_file` (against the lock record; else it compares with the published SHA-256, which
does not fail: other exports of a model are allowed, `vividhead weights` flags them) or `verify_weights`
(that, plus the shape of what it loads: ONNX input names and output count, state-dict keys, a transformers
folder's `model_type`, a TorchScript archive, a release's model folders). A mismatch raises `WeightsError`,
one line naming the file, what was expected and what was found. `vividhead build` runs the same checks on
every weight its stages will use before any worker starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from vividhead.weights import MODELS, Shape, Weights

LOCK_NAME = "weights.lock.json"


class WeightsError(ValueError):
    """A weights file is not what its stage expects (one line: the file, what was expected, what was found)."""


@dataclass(frozen=True)
class Integrity:
    """How a file on disk was checked: against its lock record, the published SHA-256, or not at all."""

    state: Literal["lock", "pin", "other", "unverified"]   # "other": not the published file (another export?)
    detail: str


# ------------------------------------------------------------------------------------------ lock file


def read_lock(folder: Path) -> dict[str, dict[str, Any]]:
    """The entries of `folder/weights.lock.json` (empty when there is none)."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("entries", {}))
    except (OSError, ValueError, AttributeError) as err:
        raise WeightsError(f"{path}: unreadable lock file ({err})") from None


def write_lock_record(entry: Path, record: dict[str, Any]) -> Path:
    """Record `entry` (a file or folder) in the lock file beside it, atomically; returns the lock file."""
    entry = Path(entry).absolute()
    lock = entry.parent / LOCK_NAME
    entries = read_lock(entry.parent)
    entries[entry.name] = record
    tmp = lock.with_name(f".{LOCK_NAME}.tmp")
    tmp.write_text(json.dumps({"version": 1, "entries": entries}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, lock)
    return lock


def lock_record(entry: Path, model: str, source: str, revision: str) -> dict[str, Any]:
    """A lock record of what is at `entry` now: every file's size, SHA-256 and modification time."""
    files = {rel: {"size": p.stat().st_size, "sha256": sha256_of(p), "mtime_ns": p.stat().st_mtime_ns}
             for rel, p in files_of(Path(entry)).items()}
    return {"model": model, "source": source, "revision": revision, "files": files,
            "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def find_record(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """The lock record covering `path`: its own, or that of a folder up to three levels above
    (a release's `Model_Lite/` is covered by the release folder's record)."""
    path = Path(path).absolute()
    for entry in (path, *list(path.parents)[:3]):
        record = read_lock(entry.parent).get(entry.name)
        if record is not None:
            return entry, record
    return None


def files_of(path: Path) -> dict[str, Path]:
    """The files of an entry by relative name: {".": path} for a file; a folder's files, hidden ones excluded."""
    path = Path(path)
    if path.is_file():
        return {".": path}
    return {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and p.name != LOCK_NAME}


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, computed once per (path, size, modification time) in this process."""
    stat = Path(path).stat()
    key = (str(Path(path).absolute()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


# ---------------------------------------------------------------------------------------- integrity


def verify_file(name: str, path: Path, full: bool = False) -> Integrity:
    """Check `path` against its lock record, else the published SHA-256 of model `name`; raise WeightsError
    on a mismatch. `full` hashes every file even when its size and modification time match the record."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: {name} weights do not exist")
    found = find_record(path)
    if found is not None:
        return _check_record(found[0], found[1], path, full)
    source = MODELS[name].source if name in MODELS else None
    if source is not None and source.sha256 and path.is_file():
        digest = sha256_of(path)
        if digest == source.sha256:
            return Integrity("pin", "matches the published SHA-256")
        # Not an error at load: other exports of the same model (RTMW for DWpose) are supported.
        return Integrity("other", f"SHA-256 {digest}, not the published {source.sha256} (another export?); "
                                  f"no lock record")
    return Integrity("unverified", "no lock record, no published checksum")


def _check_record(entry: Path, record: dict[str, Any], path: Path, full: bool) -> Integrity:
    lock = entry.parent / LOCK_NAME
    below = "" if path.absolute() == entry else path.absolute().relative_to(entry).as_posix()
    for rel, want in record.get("files", {}).items():
        if below and rel != below and not rel.startswith(below + "/"):
            continue
        file = entry if rel == "." else entry / rel
        if not file.is_file():
            raise WeightsError(f"{file}: missing; {lock} records {want['size']} bytes")
        stat = file.stat()
        if stat.st_size != want["size"]:
            raise WeightsError(f"{file}: {stat.st_size} bytes, expected {want['size']} (recorded in {lock})")
        if not full and stat.st_mtime_ns == want.get("mtime_ns"):
            continue  # untouched since it was recorded
        digest = sha256_of(file)
        if digest != want["sha256"]:
            raise WeightsError(f"{file}: SHA-256 {digest}, expected {want['sha256']} (recorded in {lock})")
    return Integrity("lock", f"matches {LOCK_NAME} ({record.get('source', 'unknown source')})")


# -------------------------------------------------------------------------------------------- shape


def verify_weights(name: str, path: Path, session: Any = None, full: bool = False) -> Integrity:
    """`verify_file`, then the shape of what the loader of `name` will load. An ONNX loader passes its own
    onnxruntime `session` so the file is not opened twice."""
    integrity = verify_file(name, path, full)
    check_shape(name, Path(path), session)
    return integrity


def check_shape(name: str, path: Path, session: Any = None) -> None:
    """Raise WeightsError when `path` does not have the shape model `name` expects."""
    shape = MODELS[name].shape
    if shape.kind == "onnx":
        _check_onnx(name, path, shape, session or _onnx_session(name, path))
    elif shape.kind == "state_dict":
        _check_state_dict(name, path, shape)
    elif shape.kind == "transformers":
        _check_transformers(name, path, shape)
    elif shape.kind == "torchscript":
        _check_torchscript(name, path)
    else:
        _check_release(name, path, shape)


def _onnx_session(name: str, path: Path) -> Any:
    import onnxruntime  # deferred: loaders pass their own session; light modules (face_detect) import this one

    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - any load failure is the same user error
        raise WeightsError(f"{path}: expected an ONNX file ({name}), found one onnxruntime cannot read: "
                           f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def _check_onnx(name: str, path: Path, shape: Shape, session: Any) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = [i.name for i in inputs]
    if shape.inputs and tuple(names[:len(shape.inputs)]) != shape.inputs:
        raise WeightsError(f"{path}: expected ONNX input {list(shape.inputs)} ({name}), found {names}")
    if not inputs or len(inputs[0].shape) != shape.input_rank:
        raise WeightsError(f"{path}: expected a rank-{shape.input_rank} ONNX input ({name}), "
                           f"found {[list(i.shape) for i in inputs]}")
    if shape.outputs and len(outputs) not in shape.outputs:
        raise WeightsError(f"{path}: expected {' or '.join(map(str, shape.outputs))} ONNX outputs ({name}), "
                           f"found {len(outputs)} {[o.name for o in outputs]}")


def _check_state_dict(name: str, path: Path, shape: Shape) -> None:
    import torch  # deferred: torch is heavy, and light modules (face_detect, audio_features) import this one

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is the same user error
        raise WeightsError(f"{path}: expected a torch state dict ({name}), found an unreadable file "
                           f"({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a torch state dict ({name}), found {type(state).__name__}")
    missing = [prefix for prefix in shape.keys if not any(str(k).startswith(prefix) for k in state)]
    if missing:
        raise WeightsError(f"{path}: expected state-dict keys {[p + '*' for p in missing]} ({name}), "
                           f"found {len(state)} keys such as {list(state)[:3]}")


def _check_transformers(name: str, path: Path, shape: Shape) -> None:
    config = path / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise WeightsError(f"{config}: expected a transformers config.json ({name}), found none readable "
                           f"({type(err).__name__})") from None
    if model_type != shape.model_type:
        raise WeightsError(f"{config}: expected model_type {shape.model_type!r} ({name}), found {model_type!r}")
    if not any((path / f).is_file() for f in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")):
        raise WeightsError(f"{path}: expected model.safetensors or pytorch_model.bin ({name}), found neither")


def _check_torchscript(name: str, path: Path) -> None:
    if not zipfile.is_zipfile(path) or not any("/code/" in n for n in zipfile.ZipFile(path).namelist()):
        raise WeightsError(f"{path}: expected a TorchScript archive ({name}), found a file without TorchScript code")


def _check_release(name: str, path: Path, shape: Shape) -> None:
    if not any((path / folder / "config.json").is_file() for folder in shape.folders):
        raise WeightsError(f"{path}: expected a release folder with {' or '.join(f + '/config.json' for f in shape.folders)} "
                           f"({name}), found {sorted(p.name for p in path.iterdir())[:6] if path.is_dir() else 'a file'}")


# ----------------------------------------------------------------------------------------- preflight


def verify_present(weights: Weights, names: list[str]) -> list[str]:
    """One error line per weight among `names` that exists on disk but is not what its stage expects."""
    errors = []
    for name in names:
        path = weights.available(name)
        if path is None:
            continue
        try:
            verify_weights(name, path)
        except WeightsError as err:
            errors.append(str(err))
    return errors
