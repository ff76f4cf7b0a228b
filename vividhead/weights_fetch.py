"""`vividhead weights fetch`: download a model into the weights folder, resumably, verified, then record it.

Hugging Face repositories go through `huggingface_hub` (it honours `HF_ENDPOINT`; `HF_HUB_OFFLINE` or
`TRANSFORMERS_OFFLINE` make the fetch refuse); other sources are plain HTTP(S) with `Range` resume. Every
download lands under a hidden partial name beside its destination (`.NAME.part`, `.NAME.partial/`) and is
renamed to the manifest's name only once it is complete and its published SHA-256 (where one is known) and
its shape match, so an interrupted or refused download never leaves a half file under the final name; the
next run resumes it. What was fetched is recorded in the lock file (`vividhead.weights_verify`).
"""

from __future__ import annotations

import http.client
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from huggingface_hub.utils import disable_progress_bars
from tqdm import tqdm

from vividhead import __version__
from vividhead.weights import MODELS, Model
from vividhead.weights_verify import (WeightsError, check_shape, lock_record, sha256_of,
                                      verify_weights, write_lock_record)

CHUNK = 1 << 20
DOWNLOADS = ".downloads"     # archives (the insightface pack) shared by several models, beside the weights
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class FetchError(RuntimeError):
    """A download failed or was refused; one line, and nothing is left under the final name."""


def fetch(name: str, dest: Path, url: str = "", progress: bool = True) -> str:
    """Put model `name` at `dest` (downloading it unless it is there), verify it, record it; one line back.
    `url` replaces the catalogue's HTTP(S) URL (a mirror of the same file or archive)."""
    model = MODELS[name]
    dest = Path(dest).absolute()
    if dest.exists():
        return _adopt(model, dest)
    if url and model.shape.is_folder:
        raise FetchError(f"{name} is a folder of files; --url fetches single files (use HF_ENDPOINT for a Hub mirror)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if model.source.repo and not url:
        source, revision = _fetch_hub(model, dest, progress)
    else:
        source, revision = _fetch_url(model, dest, url or model.source.url, progress), ""
    lock = write_lock_record(dest, lock_record(dest, name, source, revision))
    return f"{name}: fetched {source}{'@' + revision if revision else ''} -> {dest} (recorded in {lock.name})"


def remove_finished_archives(folder: Path) -> None:
    """Delete completed shared archives in `folder/.downloads` (partial ones stay, to resume)."""
    downloads = Path(folder) / DOWNLOADS
    for archive in downloads.glob("*"):
        if not archive.name.endswith(".part"):
            archive.unlink()
    if downloads.is_dir() and not any(downloads.iterdir()):
        downloads.rmdir()


def _adopt(model: Model, dest: Path) -> str:
    """A file already in place: check it against its record, or check it and record it (trust on first use)."""
    integrity = verify_weights(model.name, dest, full=True)
    if integrity.state == "lock":
        return f"{model.name}: already present at {dest}, matches its lock record"
    if integrity.state == "other":
        raise FetchError(f"{dest}: {integrity.detail}; not recording it (delete it to download the published file)")
    source = f"present before `weights fetch` (catalogue source: {model.source.describe()})"
    write_lock_record(dest, lock_record(dest, model.name, source, ""))
    return f"{model.name}: already present at {dest} ({integrity.detail}); recorded it in the lock file"


# ---------------------------------------------------------------------------------------------- HTTP


def _fetch_url(model: Model, dest: Path, url: str, progress: bool) -> str:
    part = dest.with_name(f".{dest.name}.part")
    if model.source.member:
        archive = dest.parent / DOWNLOADS / Path(urlsplit(url).path).name
        if not archive.is_file():
            archive.parent.mkdir(exist_ok=True)
            archive_part = archive.with_name(archive.name + ".part")
            download(url, archive_part, progress)
            os.replace(archive_part, archive)
        _extract_member(archive, model.source.member, part)
        source = f"{url} (member {model.source.member})"
    else:
        download(url, part, progress)
        source = url
    _accept(model, part, dest)
    return source


def download(url: str, part: Path, progress: bool = True) -> None:
    """Download `url` into `part`, continuing from its current size with an HTTP Range request."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"vividhead/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
            if offset and response.status != 206:
                offset = 0  # the server ignored the range: start again
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with open(part, "ab" if offset else "wb") as out, \
                    tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name.strip(".")[:40],
                         disable=not progress) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as err:
        if err.code == 416:   # nothing left to send for that range: the partial file is not a prefix of it
            part.unlink(missing_ok=True)
        raise FetchError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        done = part.stat().st_size if part.exists() else 0
        raise FetchError(f"{url}: download interrupted after {done} bytes ({type(err).__name__}: {err}); "
                         f"run the same command again to resume") from None
    if total is not None and part.stat().st_size != total:
        raise FetchError(f"{url}: download interrupted after {part.stat().st_size} of {total} bytes; "
                         f"run the same command again to resume")


def _extract_member(archive: Path, member: str, out: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as pack:
            names = [n for n in pack.namelist() if n == member or n.endswith("/" + member)]
            if not names:
                raise FetchError(f"{archive}: no {member} in the archive (found {pack.namelist()[:8]})")
            with pack.open(names[0]) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
    except zipfile.BadZipFile as err:
        archive.unlink()
        raise FetchError(f"{archive}: not a zip archive ({err}); removed it, run the same command again") from None


def _accept(model: Model, staged: Path, dest: Path) -> None:
    """Check a complete download (published SHA-256, shape) and move it to its final name, or delete it."""
    try:
        if model.source.sha256 and staged.is_file():
            digest = sha256_of(staged)
            if digest != model.source.sha256:
                raise WeightsError(f"{staged}: SHA-256 {digest}, expected {model.source.sha256} "
                                   f"(the published checksum of {model.name}); deleted it")
        check_shape(model.name, staged)
    except WeightsError as err:
        shutil.rmtree(staged) if staged.is_dir() else staged.unlink()
        raise FetchError(str(err)) from None
    os.replace(staged, dest)


# ----------------------------------------------------------------------------------------------- Hub


def _fetch_hub(model: Model, dest: Path, progress: bool) -> tuple[str, str]:
    """Download the model's Hugging Face files at its revision (main resolved to a commit); (source, commit)."""
    source = model.source
    offline = [v for v in OFFLINE_VARIABLES if os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")]
    if offline:
        raise FetchError(f"{model.name}: {offline[0]} is set, so {source.repo} is not downloaded "
                         f"(unset it, or put the files at {dest} yourself)")
    if not progress:
        disable_progress_bars()
    try:
        commit = HfApi().model_info(source.repo, revision=source.revision or None).sha
        staging = dest.with_name(f".{dest.name}.partial")
        if model.shape.is_folder:
            snapshot_download(source.repo, revision=commit, local_dir=staging,
                                              allow_patterns=list(source.files) or None)
            missing = [f for f in source.files if not (staging / f).is_file()]
            if missing:
                raise FetchError(f"{source.repo}@{commit}: files {missing} are not in the repository")
            shutil.rmtree(staging / ".cache", ignore_errors=True)
            _accept(model, staging, dest)
        else:
            path = hf_hub_download(source.repo, source.files[0], revision=commit, local_dir=staging)
            try:
                _accept(model, Path(path), dest)
            finally:  # complete, or refused: nothing to resume either way
                shutil.rmtree(staging, ignore_errors=True)
    except HfHubHTTPError as err:
        raise FetchError(f"{source.repo}: {_first_line(err)}") from None
    except (OSError, LocalEntryNotFoundError) as err:
        raise FetchError(f"{source.repo}: download interrupted ({type(err).__name__}: {_first_line(err)}); "
                         f"run the same command again to resume") from None
    except FetchError:
        raise
    except Exception as err:  # noqa: BLE001 - network errors of the Hub client's HTTP library: one line
        raise FetchError(f"{source.repo}: the Hub download failed ({type(err).__name__}: {_first_line(err)}); "
                         f"run the same command again to resume") from None
    return f"{constants.ENDPOINT}/{source.repo}", commit


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
