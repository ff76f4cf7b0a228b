"""Where vividhead reads and writes: local paths, and object-store URLs (`s3://`, `gs://`) through fsspec.

`location(text, options)` gives a `pathlib.Path` for a local path, so the local code path is the one it
always was, and an `ObjectPath` for a URL: the part of pathlib's interface that the build, `inspect` and
the trainer use (join, name, glob, exists, read, stat, unlink) over an fsspec filesystem.

An object store has no rename, so every write is a whole-object put: `put_bytes` and `put_file` make
an object visible only once it is complete (a local path is written to `.NAME.tmp`, fsynced and renamed,
as before). `create_exclusive` is a conditional create (S3 `If-None-Match: *`), the build lock's
primitive. `check_reachable` turns a missing bucket, refused credentials or an unreachable endpoint into
one line before any work starts.

Credentials come from the standard places: `AWS_PROFILE`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
instance roles, `AWS_ENDPOINT_URL` for S3-compatible servers (MinIO, Ceph), and Google's application
default credentials for `gs://` (the `gcs` extra; untested here). `StorageConfig` names a profile or an
endpoint, never a secret, so nothing secret reaches build.json, the manifest or a log. Throttling and
transient errors are retried by botocore's adaptive mode (`max_attempts`).
"""

from __future__ import annotations

import base64
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from pydantic import ConfigDict, Field

from vividhead.configfile import StrictModel
from vividhead.envfail import EnvironmentFailure

OBJECT_SCHEMES = ("s3://", "gs://", "gcs://")
REAL_MD5 = re.compile(r"^[0-9a-f]{32}$")


class StoreOptions(StrictModel):
    """How to reach one object store. Secrets are never set here: name a profile, or use the environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_url: str | None = None       # an S3-compatible server; default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
    profile: str | None = None            # an AWS profile (~/.aws/config); default: AWS_PROFILE or the default chain
    region: str | None = None             # default: AWS_REGION / the profile's
    anonymous: bool = False               # public buckets, unsigned requests
    max_attempts: int = Field(10, ge=1)   # botocore's adaptive retries of throttling and transient errors
    connect_timeout: float = Field(10.0, gt=0)
    project: str | None = None            # gs://: the Google Cloud project


class StorageConfig(StoreOptions):
    """The build config's `storage:` section: the options of every URL, and other options per URL prefix
    (a source bucket read with another account than the output's)."""

    prefixes: dict[str, StoreOptions] = Field(default_factory=dict)

    def options(self, url: str) -> StoreOptions:
        """The options of `url`: those of its longest matching prefix, else the section's own."""
        matches = [prefix for prefix in self.prefixes if url.startswith(prefix)]
        if matches:
            return self.prefixes[max(matches, key=len)]
        return StoreOptions(**self.model_dump(exclude={"prefixes"}))


def is_object_url(text: str | os.PathLike[str]) -> bool:
    """True for an object-store URL (`s3://`, `gs://`)."""
    return str(text).startswith(OBJECT_SCHEMES)


def filesystem(protocol: str, options: StoreOptions) -> Any:
    """The fsspec filesystem of one store (fsspec caches one instance per protocol and options)."""
    if protocol == "s3":
        import s3fs

        client: dict[str, Any] = {}
        endpoint = options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            client["endpoint_url"] = endpoint
        if options.region:
            client["region_name"] = options.region
        kwargs: dict[str, Any] = {
            "anon": options.anonymous, "client_kwargs": client, "use_listings_cache": False,
            "config_kwargs": {"retries": {"mode": "adaptive", "max_attempts": options.max_attempts},
                              "connect_timeout": options.connect_timeout}}
        if options.profile:
            kwargs["profile"] = options.profile
        return s3fs.S3FileSystem(**kwargs)
    if protocol in ("gs", "gcs"):
        try:
            import gcsfs
        except ImportError:
            raise EnvironmentFailure("gs:// needs the `gcs` extra: pip install 'vividhead[gcs]'") from None
        return gcsfs.GCSFileSystem(project=options.project, token="anon" if options.anonymous else None)
    raise EnvironmentFailure(f"{protocol}:// is not an object store vividhead reads or writes (s3://, gs://)")


@dataclass(frozen=True)
class ObjectStat:
    """What `ObjectPath.stat` tells: size, modification time and the store's entity tag."""

    st_size: int
    st_mtime: float
    etag: str

    @property
    def st_mtime_ns(self) -> int:
        return int(self.st_mtime * 1e9)


@dataclass(frozen=True, eq=False)
class ObjectPath:
    """An object or prefix in a bucket, with pathlib's names for what the build does with files."""

    url: str
    options: StoreOptions = field(default_factory=StoreOptions)

    def __post_init__(self) -> None:
        scheme, _, rest = self.url.partition("://")
        object.__setattr__(self, "url", f"{scheme}://{rest.strip('/')}")

    # ------------------------------------------------------------------------------ names
    @property
    def protocol(self) -> str:
        return self.url.partition("://")[0]

    @property
    def key(self) -> str:
        """The path as fsspec names it: `bucket/prefix/name`."""
        return self.url.partition("://")[2]

    @property
    def bucket(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def fs(self) -> Any:
        return filesystem(self.protocol, self.options)

    def __truediv__(self, part: str | os.PathLike[str]) -> ObjectPath:
        return ObjectPath(f"{self.url}/{str(part).strip('/')}", self.options)

    def joinpath(self, *parts: str) -> ObjectPath:
        result = self
        for part in parts:
            result = result / part
        return result

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.key).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.key).suffix

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(f"{self.protocol}://{PurePosixPath(self.key).parent}", self.options)

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def relative_to(self, other: ObjectPath | str) -> PurePosixPath:
        return PurePosixPath(self.key).relative_to(PurePosixPath(ObjectPath(str(other)).key))

    def resolve(self) -> ObjectPath:
        return self

    def is_absolute(self) -> bool:
        return True

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"ObjectPath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other: ObjectPath) -> bool:
        return self.url < other.url

    # ------------------------------------------------------------------------------ reads
    def exists(self) -> bool:
        return bool(self.fs.exists(self.key))

    def is_file(self) -> bool:
        return bool(self.fs.isfile(self.key))

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.key))

    def glob(self, pattern: str) -> Iterator[ObjectPath]:
        """The objects under this prefix matching `pattern` (fsspec's glob, `**` included), sorted."""
        found = self.fs.glob(f"{self.key}/{pattern}")
        return iter(sorted(ObjectPath(f"{self.protocol}://{key}", self.options) for key in found))

    def rglob(self, pattern: str) -> Iterator[ObjectPath]:
        return self.glob(f"**/{pattern}")

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.key))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def open(self, mode: str = "rb") -> IO[bytes]:
        if "r" not in mode:
            raise ValueError(f"{self}: objects are written whole (storage.put_bytes / put_file), not opened for {mode!r}")
        return self.fs.open(self.key, mode)

    def stat(self) -> ObjectStat:
        info = self.fs.info(self.key)
        modified = info.get("LastModified") or info.get("updated") or info.get("mtime")
        when = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or 0.0)
        return ObjectStat(int(info.get("size") or 0), when, str(info.get("ETag") or info.get("etag") or "").strip('"'))

    # ------------------------------------------------------------------------------ writes
    def write_bytes(self, data: bytes) -> int:
        put_bytes(self, data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: an object store has no folders."""

    def rmdir(self) -> None:
        """Nothing to do: a prefix disappears with its last object."""


Location = Path | ObjectPath


def location(text: str | os.PathLike[str] | ObjectPath, storage: StorageConfig | StoreOptions | None = None) -> Location:
    """A `Path` for a local path, an `ObjectPath` (with the options `storage` gives its URL) for a URL."""
    if isinstance(text, ObjectPath):
        return text
    if not is_object_url(text):
        return Path(text)
    options = storage.options(str(text)) if isinstance(storage, StorageConfig) else storage
    return ObjectPath(str(text), options or StoreOptions())


def sibling(root: Location, text: str) -> Location:
    """`text` (a path a build recorded under `root`) on the same store, with the same options."""
    return ObjectPath(text, root.options) if isinstance(root, ObjectPath) else Path(text)


# ---------------------------------------------------------------------------------- whole writes
def put_bytes(path: Location, data: bytes) -> None:
    """Write `data` so that readers see the old object or the whole new one, never a part."""
    if isinstance(path, ObjectPath):
        path.fs.pipe_file(path.key, data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def put_file(local: Path, path: ObjectPath) -> None:
    """Upload a complete local file as one object (a multipart upload becomes visible only when completed)."""
    path.fs.put_file(str(local), path.key)


def local_temp(prefix: str) -> Path:
    """A fresh local folder for files on their way to or from a store (worker-local, never shared)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def create_exclusive(path: ObjectPath, data: bytes) -> bool:
    """Create the object only if it does not exist (S3 `If-None-Match: *`); False when it already exists."""
    if path.protocol != "s3":
        raise EnvironmentFailure(f"{path}: the build lock needs a conditional create, which vividhead does only "
                                 "on s3:// (see docs/build.md, object storage); write this build to s3:// or a disk")
    from botocore.exceptions import ClientError

    bucket, _, key = path.key.partition("/")
    try:
        path.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
            return False
        raise
    except FileExistsError:
        return False
    except OSError as err:                     # s3fs translates some ClientErrors: 412 comes back as an OSError
        if "PreconditionFailed" in str(err) or "412" in str(err) or "ConditionalRequestConflict" in str(err):
            return False
        raise
    return True


# ---------------------------------------------------------------------------------- reads
def stamp(path: Location) -> list[Any]:
    """What changes whenever a file is rewritten: [size, mtime_ns] on disk, [size, entity tag] in a bucket."""
    stat = path.stat()
    return [stat.st_size, stat.etag if isinstance(stat, ObjectStat) else stat.st_mtime_ns]


def real_md5(path: ObjectPath) -> str | None:
    """The object's MD5 when the store states a real one, else None (the bytes are hashed instead).

    S3's ETag is the MD5 of the bytes only for a single-part upload without KMS encryption (a
    multipart ETag holds a `-`); GCS states `md5Hash` (base64) for objects that are not composite."""
    info = path.fs.info(path.key)
    if path.protocol == "s3":
        etag = str(info.get("ETag") or "").strip('"').lower()
        kms = str(info.get("ServerSideEncryption") or "").startswith("aws:kms")
        return etag if REAL_MD5.match(etag) and not kms else None
    digest = info.get("md5Hash")
    return base64.b64decode(digest).hex() if digest else None


# ---------------------------------------------------------------------------------- reachability
def check_reachable(path: ObjectPath, what: str) -> None:
    """Raise EnvironmentFailure with one line naming `path` when its bucket cannot be used (missing,
    credentials refused, endpoint unreachable); `what` says which argument it is (`--out`, a source)."""
    quick = path.options.model_copy(update={"max_attempts": 2, "connect_timeout": min(path.options.connect_timeout, 5.0)})
    probe = ObjectPath(path.url, quick)
    try:
        if probe.protocol == "s3":                  # one small request, whatever the bucket holds
            prefix = probe.key.partition("/")[2]
            probe.fs.call_s3("list_objects_v2", Bucket=probe.bucket, Prefix=prefix, MaxKeys=1)
        else:
            probe.fs.ls(probe.bucket, refresh=True)
    except Exception as err:  # noqa: BLE001 - every failure of the first request becomes its one line
        raise EnvironmentFailure(f"{what} {path}: {unreachable_reason(err, probe)}") from None


def unreachable_reason(err: BaseException, path: ObjectPath) -> str:
    """Why a store refused or did not answer, in words (never the credentials themselves)."""
    names, texts, current = [], [], err
    while current is not None:
        names.append(type(current).__name__)
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    text = " ".join(texts)
    endpoint = _endpoint(path)
    if "NoSuchBucket" in text or "FileNotFoundError" in names:
        return f"the bucket {path.bucket!r} does not exist at {endpoint}"
    if "NoCredentialsError" in names:
        return "no credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or storage.profile)"
    if "ProfileNotFound" in names:
        return f"the AWS profile {path.options.profile!r} is not configured"
    if "PermissionError" in names or re.search(r"AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|Forbidden|403",
                                               text):
        return (f"access denied by {endpoint}: check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, "
                "storage.profile) and the bucket's permissions")
    if re.search(r"EndpointConnectionError|ConnectTimeout|ConnectionError|Could not connect|Connect call failed|"
                 r"Name or service not known|Cannot connect", " ".join(names) + " " + text):
        return f"cannot reach the endpoint {endpoint}"
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return f"{type(err).__name__}: {first}"


def _endpoint(path: ObjectPath) -> str:
    if path.protocol != "s3":
        return f"{path.protocol}://"
    return (path.options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            or "AWS S3")


# ---------------------------------------------------------------------------------- readers' helpers
def expand_location(text: str, base: Path | None = None, storage: StorageConfig | StoreOptions | None = None
                    ) -> list[Location]:
    """`vividhead.paths.expand` for local paths; for a URL, the objects or prefix it names ([] when none)."""
    from vividhead.paths import expand, is_glob

    if not is_object_url(text):
        return list(expand(text, base))
    root = location(text, storage)
    assert isinstance(root, ObjectPath)
    if is_glob(text):
        return sorted(ObjectPath(f"{root.protocol}://{key}", root.options) for key in root.fs.glob(root.key))
    return [root] if root.exists() else []


def arrow_files(paths: Iterable[Location]) -> tuple[list[str], Any]:
    """(file names, filesystem) for `pyarrow.dataset.dataset`: local paths as they are, objects of one
    store through pyarrow's fsspec handler."""
    paths = list(paths)
    remote = [path for path in paths if isinstance(path, ObjectPath)]
    if not remote:
        return [str(path) for path in paths], None
    if len(remote) != len(paths) or len({(path.protocol, path.options) for path in remote}) > 1:
        raise EnvironmentFailure("manifests in a bucket and on disk (or in two stores) cannot be read as one "
                                 "dataset; inspect them one at a time")
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return [path.key for path in remote], PyFileSystem(FSSpecHandler(remote[0].fs))
