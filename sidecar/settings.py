"""One settings model for flags, a TOML file and ``SIDECAR_*`` environment variables.

Precedence: command-line flags, then environment, then the TOML file, then defaults.
"""

from __future__ import annotations

import os
import re
import socket
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sidecar.errors import ConfigError
from sidecar.grid import seconds_to_ticks

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
OUTPUT_FAMILIES = ("ts", "cmaf")


def parse_outputs(value: Any) -> tuple[str, ...]:
    """``"ts,cmaf"`` (or a list) -> ``("ts", "cmaf")``, in canonical order."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {str(v).strip().lower() for v in items if str(v).strip()}
    unknown = sorted(names - set(OUTPUT_FAMILIES))
    if unknown:
        raise ValueError(f"unknown output {', '.join(unknown)}: use ts, cmaf")
    if not names:
        raise ValueError("at least one output (ts, cmaf) is needed")
    return tuple(o for o in OUTPUT_FAMILIES if o in names)


def _valid_duration(value: Decimal) -> Decimal:
    if not Decimal("0.5") <= value <= Decimal(60):
        raise ValueError("segment duration must be between 0.5 and 60 seconds")
    seconds_to_ticks(value)
    return value


# Schemes an input URL may have; an input without "://" is a file path or ``synthetic:``.
INPUT_SCHEMES = ("rtmp", "rtmps", "udp", "tcp", "srt", "http", "https", "file")


def check_input_url(url: str) -> str:
    """One input URL, stripped; ``ValueError`` naming it when it is malformed."""
    url = url.strip()
    if not url:
        raise ValueError("empty input URL")
    if "://" not in url:
        return url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in INPUT_SCHEMES:
        raise ValueError(f"input {url!r}: unknown scheme {parts.scheme!r} "
                         f"(use {', '.join(INPUT_SCHEMES)})")
    if scheme != "file":
        try:
            port = parts.port
        except ValueError:
            port, host = None, ""
        else:
            host = parts.hostname or ""
        if not host or any(c.isspace() for c in url) or (parts.netloc.endswith(":")
                                                          and port is None):
            raise ValueError(f"input {url!r}: malformed URL (expected {scheme}://HOST[:PORT]/...)")
    return url


class StreamSpec(BaseModel):
    """``APP/NAME=INPUT[|INPUT...]``: where the stream is published and where it comes from.

    Several inputs (separated by ``|``) are tried in order: ``input`` is the first.
    """

    app: str
    name: str
    input: str
    inputs: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _split_inputs(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("inputs") and "input" in data:
            urls = tuple(check_input_url(u) for u in str(data["input"]).split("|"))
            data = {**data, "input": urls[0], "inputs": urls}
        return data

    @property
    def key(self) -> str:
        return f"{self.app}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> StreamSpec:
        path, sep, url = text.partition("=")
        if not sep or not url.strip():
            raise ConfigError(f"stream {text!r}: expected APP/NAME=INPUT")
        parts = path.strip().strip("/").split("/")
        if len(parts) != 2 or not all(NAME_RE.match(p) for p in parts):
            raise ConfigError(
                f"stream {text!r}: APP/NAME must be two names of letters, digits, '_', '-', '.'"
            )
        try:
            urls = tuple(check_input_url(u) for u in url.split("|"))
        except ValueError as exc:
            raise ConfigError(f"stream {text!r}: {exc}") from exc
        return cls(app=parts[0], name=parts[1], input=urls[0], inputs=urls)


class VodRoot(BaseModel):
    """``DIR`` or ``NAME=DIR``: a directory of files served under ``/NAME/`` (default ``vod``)."""

    app: str = "vod"
    path: Path

    @classmethod
    def parse(cls, text: str) -> VodRoot:
        name, sep, directory = text.partition("=")
        if not sep:
            return cls(path=Path(text.strip()))
        if not NAME_RE.match(name.strip()) or not directory.strip():
            raise ValueError(f"VOD root {text!r}: expected DIR or NAME=DIR (NAME of letters, "
                             "digits, '_', '-', '.')")
        return cls(app=name.strip(), path=Path(directory.strip()))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIDECAR_", extra="forbid")
    toml_path: ClassVar[Path | None] = None

    node_id: str = Field(default_factory=socket.gethostname)
    listen: str = "127.0.0.1:8080"
    data_dir: Path = Path("./sidecar-data")
    segment_duration: Decimal = Decimal(6)
    window: int = Field(default=10, ge=3, le=1000)
    store: str | None = None
    streams: list[StreamSpec] = Field(default_factory=list)
    publish_delay: Decimal = Decimal("1.0")
    segment_wait: float = Field(default=3.0, ge=0, le=60)
    retain_extra: int = Field(default=6, ge=0)
    open_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=5.0, gt=0)
    clock_offset_ms: int = 0
    advertise_url: str | None = None
    log_level: str = "info"
    # NoDecode: the environment gives plain text (``SIDECAR_OUTPUTS=ts,cmaf``), not JSON.
    outputs: Annotated[tuple[str, ...], NoDecode] = OUTPUT_FAMILIES
    # Per-stream override of ``outputs``: {"live/radio": ("ts",)}; the environment gives
    # ``SIDECAR_STREAM_OUTPUTS="live/radio=ts;live/tv=cmaf"``.
    stream_outputs: Annotated[dict[str, tuple[str, ...]], NoDecode] = Field(default_factory=dict)
    # DASH suggestedPresentationDelay in seconds (default: see ``dash_delay_ticks``).
    dash_delay: Decimal | None = None
    # VOD: directories whose files are served under /vod/, or /NAME/ for ``NAME=DIR``
    # (several roots of one name are searched in order); the environment gives them
    # separated by ':' (``SIDECAR_VOD_ROOTS=/srv/a:movies=/srv/b``).
    vod_roots: Annotated[list[VodRoot], NoDecode] = Field(default_factory=list)
    # Seconds per VOD segment (default: segment_duration).
    vod_segment_duration: Decimal | None = None
    # Playback tokens (sidecar.security.tokens): a secret turns them on for every
    # playlist, MPD and segment. Scheme "wowza" (SecureToken v2) or "hmac".
    token_secret: SecretStr | None = Field(default=None, min_length=1)
    token_scheme: Literal["wowza", "hmac"] = "wowza"
    token_prefix: str = Field(default="wowzatoken", min_length=1)
    token_hash: Literal["sha256", "sha384", "sha512"] = "sha256"
    token_include_ip: bool = False
    token_instance: str = Field(default="_definst_", min_length=1)
    # Header holding the client address behind a balancer (its last value is used),
    # e.g. "X-Forwarded-For"; without it the TCP peer's address is hashed.
    token_ip_header: str | None = None

    # Discovery (sidecar.discovery): streams started and stopped at runtime, from
    # nginx-rtmp/SRS publish callbacks and/or a Wowza Streaming Engine REST API.
    discovery_callbacks: bool = False
    discovery_secret: SecretStr | None = None
    # Callers allowed (addresses or networks); the environment gives them comma-separated.
    discovery_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1/8", "::1/128"])
    discovery_apps: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["live"])
    discovery_input: str = "rtmp://127.0.0.1:1935/{app}/{name}"
    discovery_linger: float | None = Field(default=None, ge=0, le=86_400)
    discovery_max_streams: int = Field(default=100, ge=1, le=10_000)
    wowza_rest: str | None = None
    wowza_user: str | None = None
    wowza_password: SecretStr | None = None
    wowza_input: str | None = None
    wowza_poll: float = Field(default=5.0, ge=0.5, le=3600)

    @field_validator("discovery_allow", "discovery_apps", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(
            value, str) else value

    @field_validator("discovery_allow")
    @classmethod
    def _check_allow(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"discovery allow-list {item!r}: {exc}") from exc
        return value

    @field_validator("discovery_apps")
    @classmethod
    def _check_apps(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if not NAME_RE.match(a) or ".." in a or a == "vod"]
        if bad or not value:
            raise ValueError(f"discovery application {bad[0] if bad else ''!r}: a name of "
                             "letters, digits, '_', '-', '.' (not 'vod')")
        return value

    @field_validator("discovery_input", "wowza_input")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "{app}" not in value or "{name}" not in value:
            raise ValueError(f"input template {value!r} needs {{app}} and {{name}}")
        try:
            check_input_url(value.format(app="live", name="x"))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"input template {value!r}: {exc}") from exc
        return value

    @field_validator("wowza_rest")
    @classmethod
    def _check_wowza(cls, value: str | None) -> str | None:
        if value is not None and (urlsplit(value).scheme not in ("http", "https")
                                  or not urlsplit(value).hostname):
            raise ValueError(f"--wowza-rest {value!r}: expected http(s)://HOST:PORT")
        return value

    @field_validator("vod_roots", mode="before")
    @classmethod
    def _parse_vod_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in value.split(os.pathsep) if v.strip()]
        if isinstance(value, list | tuple):
            value = [VodRoot.parse(v) if isinstance(v, str)
                     else VodRoot(path=v) if isinstance(v, Path) else v for v in value]
        return value

    @field_validator("vod_roots")
    @classmethod
    def _check_vod_roots(cls, value: list[VodRoot]) -> list[VodRoot]:
        for root in value:
            if not root.path.is_dir():
                raise ValueError(f"VOD root {str(root.path)!r} is not a directory")
        return value

    @property
    def vod_apps(self) -> dict[str, list[Path]]:
        """Application name -> its VOD directories, in the order given."""
        apps: dict[str, list[Path]] = {}
        for root in self.vod_roots:
            apps.setdefault(root.app, []).append(root.path)
        return apps

    @field_validator("vod_segment_duration")
    @classmethod
    def _check_vod_duration(cls, value: Decimal | None) -> Decimal | None:
        return None if value is None else _valid_duration(value)

    @field_validator("streams")
    @classmethod
    def _vod_is_reserved(cls, value: list[StreamSpec]) -> list[StreamSpec]:
        taken = [s.key for s in value if s.app == "vod"]
        if taken:
            raise ValueError(f"stream {taken[0]}: the application name 'vod' is reserved for "
                             "files (/vod/...)")
        return value

    @model_validator(mode="after")
    def _vod_apps_are_not_live(self) -> Settings:
        # A live stream under a VOD root's name would be shadowed by the VOD routes.
        clash = [s.key for s in self.streams if s.app in self.vod_apps]
        if clash:
            raise ValueError(f"stream {clash[0]}: its application name is a VOD root's "
                             f"(/{clash[0].split('/')[0]}/... serves files)")
        return self

    @field_validator("outputs", mode="before")
    @classmethod
    def _parse_outputs(cls, value: Any) -> Any:
        return parse_outputs(value)

    @field_validator("stream_outputs", mode="before")
    @classmethod
    def _parse_stream_outputs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in value.split(";") if v.strip()]
        if isinstance(value, list):  # ["live/radio=ts", ...] from flags or the environment
            pairs = {}
            for item in value:
                key, sep, outs = str(item).partition("=")
                if not sep:
                    raise ValueError(f"stream outputs {item!r}: expected APP/NAME=ts,cmaf")
                pairs[key.strip().strip("/")] = outs
            value = pairs
        return {str(k).strip("/"): parse_outputs(v) for k, v in dict(value).items()}

    def outputs_for(self, key: str) -> tuple[str, ...]:
        return self.stream_outputs.get(key, self.outputs)

    @field_validator("streams", mode="before")
    @classmethod
    def _parse_streams(cls, value: Any) -> Any:
        if isinstance(value, dict):  # TOML table: "live/demo" = "rtmp://..."
            value = [f"{k}={v}" for k, v in value.items()]
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        out = []
        for item in value or []:
            out.append(StreamSpec.parse(item) if isinstance(item, str) else item)
        return out

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--listen {value!r}: expected HOST:PORT")
        return value

    @field_validator("segment_duration")
    @classmethod
    def _check_duration(cls, value: Decimal) -> Decimal:
        return _valid_duration(value)

    @model_validator(mode="after")
    def _known_stream_outputs(self) -> Settings:
        keys = {s.key for s in self.streams}
        unknown = sorted(k for k in self.stream_outputs if keys and k not in keys)
        if unknown:
            raise ValueError(f"stream outputs for unknown stream(s): {', '.join(unknown)}")
        return self

    @field_validator("streams")
    @classmethod
    def _unique(cls, value: list[StreamSpec]) -> list[StreamSpec]:
        keys = [s.key for s in value]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"stream configured twice: {', '.join(dupes)}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_path))
        return tuple(sources)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def duration_ticks(self) -> int:
        return seconds_to_ticks(self.segment_duration)

    @property
    def publish_delay_ticks(self) -> int:
        return seconds_to_ticks(self.publish_delay)

    @property
    def dash_delay_ticks(self) -> int:
        """suggestedPresentationDelay: how far DASH players stay behind the live edge.

        dash.js puts the live edge at ``now - availabilityStartTime`` (not at the last
        listed segment), and a segment is listed up to about D + 3 s after its slot ends
        (grid time runs behind the wall clock by up to D, plus ingest and the publish
        delay), then reaches the player with the next MPD refresh (D): 3 x D + 4 s.
        """
        if self.dash_delay is not None:
            return seconds_to_ticks(self.dash_delay)
        return 3 * self.duration_ticks + 4 * 90_000

    @property
    def vod_duration_ticks(self) -> int:
        return seconds_to_ticks(self.vod_segment_duration or self.segment_duration)

    @property
    def base_url(self) -> str:
        return self.advertise_url or f"http://{self.listen}"


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from flags (``overrides``), environment and an optional TOML file."""
    from pydantic import ValidationError

    if config is not None and not config.is_file():
        raise ConfigError(f"config file {config} not found")

    class _Loaded(Settings):
        toml_path: ClassVar[Path | None] = config

    try:
        return _Loaded(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(str(exc)) from exc
    except ConfigError:
        raise
