"""Configuration of `vividhead build`: the sources file and the build config, validated with pydantic.

`SourcesFile` is what a user lists in sources.yaml. `BuildConfig` holds every setting of the build
with its default (`vividhead build --print-config` prints it): one section per stage of the stage
table (`pipelines/stages.py`), in its order, then the encoder, the run, the Ray resources and the
weights. Both load with `vividhead.configfile.load_yaml_model`, whose errors name the file and field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, create_model, field_validator, model_validator

from vividhead.configfile import StrictModel, load_yaml_model
from vividhead.pipelines import stages as table
from vividhead.pipelines.stages import COMMIT, DECODE, FETCH, PACK, Resources, Stage
from vividhead.storage import StorageConfig
from vividhead.weights import Weights, load_weights_manifest


# ----------------------------------------------------------------------------------------- sources


class BoxModel(StrictModel):
    """A listed face box: corners in a `ref_width` x `ref_height` frame (1 x 1: fractions of the frame)."""

    x0: float = Field(ge=0)
    y0: float = Field(ge=0)
    x1: float = Field(ge=0)
    y1: float = Field(ge=0)
    ref_width: float | None = Field(1.0, gt=0)
    ref_height: float | None = Field(1.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and len(value) == 4:
            return dict(zip(("x0", "y0", "x1", "y1"), value))
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "BoxModel":
        if self.x1 < self.x0 or self.y1 < self.y0:
            raise ValueError("box corners must be ordered (x0 <= x1, y0 <= y1), "
                             f"got {self.x0, self.y0, self.x1, self.y1}")
        return self


class TimeRange(StrictModel):
    """A given [start, end) range in seconds, for datasets that ship timestamps, with the list's face box."""

    start: float = Field(ge=0)
    end: float = Field(gt=0)
    box: BoxModel | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return {"start": value[0], "end": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "TimeRange":
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start})")
        return self


class GivenAttributes(StrictModel):
    """Attributes known for a source; they are recorded with provenance `given`."""

    language: str | None = None
    gender: str | None = None
    age: str | None = None
    ethnicity: str | None = None

    @field_validator("age", mode="before")
    @classmethod
    def _age_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) else value


LIST_FORMATS = ("hdtf", "voxceleb2", "celebvhq", "talkinghead1kh", "avspeech", "talkvid")


class ListRef(StrictModel):
    """`list:` in sources.yaml: a published dataset list (docs/sources.md) that expands into `video:` sources."""

    format: Literal["hdtf", "voxceleb2", "celebvhq", "talkinghead1kh", "avspeech", "talkvid"]
    path: str                                       # the list's file or folder, relative to sources.yaml
    fps: float | None = Field(None, gt=0)           # talkinghead1kh: frame rate of its frame indices (default 25)
    url_template: str | None = None                 # how an ID becomes a URL; default the YouTube watch page

    @field_validator("url_template")
    @classmethod
    def _has_id(cls, value: str | None) -> str | None:
        if value is not None and "{id}" not in value:
            raise ValueError(f"url_template must contain {{id}}, got {value!r}")
        return value


class SourceEntry(StrictModel):
    """One entry of sources.yaml: a file, glob, directory (`path`), an http(s) file (`url`), a video page or
    YouTube ID fetched with yt-dlp (`video`), or a published list (`list`)."""

    path: str | None = None
    url: str | None = None
    video: str | None = None
    list_: ListRef | None = Field(None, alias="list")   # `list:` in YAML
    dataset: str = "default"
    ranges: list[TimeRange] = Field(default_factory=list)
    attributes: GivenAttributes = Field(default_factory=GivenAttributes)
    recursive: bool = True                          # directories: include sub-directories

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            key = "url" if value.startswith(("http://", "https://")) else "path"
            return {key: value}
        return value

    @model_validator(mode="after")
    def _one_location(self) -> "SourceEntry":
        locations = {"path": self.path, "url": self.url, "video": self.video, "list": self.list_}
        given = [key for key, value in locations.items() if value is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `path` (file, glob or directory), `url` (http/https file), "
                             "`video` (a YouTube ID or a page yt-dlp supports) or `list` (a dataset list); "
                             f"got {given}")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        return self


class SourcesFile(StrictModel):
    """sources.yaml: a list of sources, plus defaults applied to entries that do not set them."""

    sources: list[SourceEntry] = Field(min_length=1)
    extensions: list[str] = Field(
        default_factory=lambda: [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".flv", ".ts", ".mpg", ".mpeg"]
    )  # file name endings a directory or glob expands to


# ------------------------------------------------------------------------------------------- build


class EncodeConfig(StrictModel):
    """How each kept clip is encoded (once, as it is cut)."""

    codec: str = "libx264"
    preset: str = "veryfast"                         # the biggest single lever on build time
    crf: int = Field(18, ge=0, le=51)
    audio_bitrate: int = Field(64000, gt=0)          # AAC, bits per second
    threads: int = Field(0, ge=0)                    # 0 = encoder default


class RunConfig(StrictModel):
    """How the build runs: downloads, retries and faults."""

    download_timeout: float = Field(30.0, gt=0)      # seconds without data before a URL download fails
    download_deadline: float = Field(3600.0, gt=0)   # seconds for one whole download (a file, or one video's sections)
    download_min_rate: float = Field(1024.0, ge=0)   # bytes/s over `download_rate_window`; slower fails (0: no floor)
    download_rate_window: float = Field(30.0, gt=0)  # seconds over which the minimum rate is measured
    max_download_bytes: int = Field(20 * 1024**3, gt=0)  # larger downloads are rejected
    max_retries: int = Field(2, ge=0)                # Ray retries of a task whose worker died


class RemoteConfig(StrictModel):
    """Video-site sources (`video:`, `list:`) fetched with yt-dlp: format, politeness, credentials."""

    min_short_side: int = Field(512, gt=0)           # the smallest video whose short side reaches this (+ best audio)
    exact_cuts: bool = True                          # re-encode at range cuts (force_keyframes_at_cuts), else keyframes
    sections: bool = True                            # download only the listed ranges where the site allows it
    per_host: int = Field(2, ge=1)                   # downloads at once per host (per machine)
    spacing: float = Field(1.0, ge=0)                # seconds between starts of requests to one host
    retries: int = Field(4, ge=0)                    # retries of a rate-limited (HTTP 429) download ...
    backoff: float = Field(5.0, ge=0)                # ... after backoff x 2^attempt seconds ...
    max_backoff: float = Field(300.0, ge=0)          # ... at most this long
    cookies: Path | None = None                      # a Netscape cookies.txt (sign-in prompts), relative to the config
    proxy: str | None = None                         # e.g. socks5://127.0.0.1:1080


class ShardsConfig(StrictModel):
    """Size of the output shards: a shard is closed when either target is reached (the last one is smaller)."""

    max_samples: int = Field(1000, gt=0)             # WebDataset's usual: about 1,000 samples ...
    max_bytes: int = Field(1_000_000_000, gt=0)      # ... or about 1 GB per shard


class ResourcesConfig(StrictModel):
    """Overrides of one Ray call's resources (unset fields keep the stage table's defaults)."""

    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float | None = Field(None, ge=0)        # 0 means no GPU, also on a GPU cluster
    concurrency: int | None = Field(None, ge=1)       # most tasks or actors at once

    def over(self, default: Resources) -> Resources:
        return Resources(default.num_cpus if self.num_cpus is None else self.num_cpus,
                         default.num_gpus if self.num_gpus is None else self.num_gpus,
                         default.concurrency if self.concurrency is None else self.concurrency)


def ray_calls() -> dict[str, Resources]:
    """The Ray calls of the build and their default resources: fetch, decode, each model stage, commit, pack."""
    return {"fetch": FETCH, "decode": DECODE, **{s.name: s.resources for s in table.STAGES if s.runs == "clips"},
            "commit": COMMIT, "pack": PACK}


class BuildSettings(StrictModel):
    """What every build config has besides its stage sections: hashes, resources, weights checks."""

    @field_validator("weights", check_fields=False)
    @classmethod
    def _known_weights(cls, value: dict[str, Path | None]) -> dict[str, Path | None]:
        unknown = sorted(set(value) - set(Weights.model_fields))
        if unknown:
            raise ValueError(f"unknown weights {unknown}; expected some of {sorted(Weights.model_fields)}")
        return value

    @field_validator("resources", check_fields=False)
    @classmethod
    def _known_calls(cls, value: dict[str, ResourcesConfig]) -> dict[str, ResourcesConfig]:
        unknown = sorted(set(value) - set(ray_calls()))
        if unknown:
            raise ValueError(f"unknown Ray calls {unknown}; expected some of {list(ray_calls())}")
        return value

    def ray_resources(self, call: str) -> Resources:
        """The resources of one Ray call (`fetch`, `decode` or a model stage): the table's, with overrides."""
        default = ray_calls()[call]
        override = getattr(self, "resources").get(call)
        return override.over(default) if override is not None else default

    def stage_config(self, stage: Stage) -> Any:
        """This config's section of one stage (None for stages without settings)."""
        return getattr(self, stage.name, None)

    def content_hash(self) -> str:
        """Hash of the fields that change a clip's bytes or the raw metrics of stages 3-7.

        The decode-pass sections and the encoder, without the thresholds that only decide (the stage
        table's threshold fields); not the model stages 8-11 (`stages_hash`).
        """
        decision = table.decision_fields()
        data = {}
        for stage in table.STAGES:
            if stage.runs == "decode":
                values = getattr(self, stage.name).model_dump(mode="json")
                data[stage.name] = {k: v for k, v in values.items() if k not in decision.get(stage.name, ())}
        data["encode"] = getattr(self, "encode").model_dump(mode="json")
        return _hash(data)

    def stages_hash(self, weights: Weights) -> str:
        """Hash of what the model stages compute: their sections without pure thresholds, and their weights."""
        decision = table.decision_fields()
        files = {name: _file_stamp(path) for name, path in weights if name not in ("scrfd", "flashhead")}
        sections = {stage.name: {k: v for k, v in getattr(self, stage.name).model_dump(mode="json").items()
                                 if k not in decision.get(stage.name, ())}
                    for stage in table.STAGES if stage.runs == "clips"}
        return _hash({"sections": sections, "weights": files})

    def config_hash(self) -> str:
        """Hash of what decides the rows: the whole config, weights included, but not how the build runs
        (`run`, `remote`, `resources`, `storage`) or how its output is cut into shards (`shards`); the MD5 of
        the fetched bytes already names what a remote source became."""
        return _hash(self.model_dump(mode="json", exclude={"run", "remote", "resources", "shards", "storage"}))


def build_config_model() -> type[BuildSettings]:
    """The build config's model: a section per stage of the table (in its order), then the rest."""
    sections: dict[str, Any] = {s.name: (s.config, Field(default_factory=s.config)) for s in table.STAGES if s.config}
    return create_model(
        "BuildConfig", __base__=BuildSettings, __module__=__name__, **sections,
        encode=(EncodeConfig, Field(default_factory=EncodeConfig)),
        run=(RunConfig, Field(default_factory=RunConfig)),
        remote=(RemoteConfig, Field(default_factory=RemoteConfig)),
        shards=(ShardsConfig, Field(default_factory=ShardsConfig)),
        storage=(StorageConfig, Field(default_factory=StorageConfig)),   # s3:// / gs:// sources and --out
        resources=(dict[str, ResourcesConfig], Field(default_factory=dict)),   # per Ray call: fetch, decode, a stage
        weights_manifest=(Path | None, None),     # default: manifests/weights.yaml of the project, if present
        weights=(dict[str, Path | None], Field(default_factory=dict)),   # overrides of single weights entries
    )


BuildConfig = build_config_model()


def _file_stamp(path: Path | None) -> Any:
    """A weights path with its size and modification time, or None when it is absent."""
    if path is None or not Path(path).exists():
        return None
    stat = Path(path).stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# -------------------------------------------------------------------------------------------- load


def load_build_config(path: Path | None, model: type[BuildSettings] | None = None) -> BuildSettings:
    """The build config from `path`, or the defaults when no path is given."""
    model = model or BuildConfig
    if path is None:
        return model()
    config = load_yaml_model(model, path)
    base = Path(path).resolve().parent
    if config.weights_manifest is not None and not config.weights_manifest.is_absolute():
        config = config.model_copy(update={"weights_manifest": base / config.weights_manifest})
    weights = {k: (base / v if v is not None and not v.is_absolute() else v) for k, v in config.weights.items()}
    remote = getattr(config, "remote", None)
    if remote is not None and remote.cookies is not None and not remote.cookies.is_absolute():
        config = config.model_copy(update={"remote": remote.model_copy(update={"cookies": base / remote.cookies})})
    return config.model_copy(update={"weights": weights})


def default_weights_manifest() -> Path:
    """manifests/weights.yaml of the project (present in a source checkout)."""
    return Path(__file__).resolve().parents[1] / "manifests" / "weights.yaml"


def resolve_weights(config: BuildSettings) -> Weights:
    """The weights manifest with the config's overrides applied."""
    manifest = config.weights_manifest or default_weights_manifest()
    weights = load_weights_manifest(manifest) if manifest.exists() else Weights()
    return weights.model_copy(update=config.weights)
