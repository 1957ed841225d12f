"""The settings' schema (Pydantic): one object, read from the environment and an optional
``shipyard.toml``, as :mod:`shipyard.config` describes; the names of the sources and the
default places are :mod:`shipyard.config.location`'s.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shipyard.config.location import (
    DEFAULT_HOME,
    ENV_PREFIX,
    config_file,
    default_database_url,
    read_config_file,
)
from shipyard.errors import ConfigError


class RequestLimitsSettings(BaseModel):
    """The cost bound of one inference request on every model of a server, unless a version's
    ``serving.limits`` tag overrides it. These are the defaults of
    :class:`shipyard.serving.limits.RequestLimits`, whose module says why these numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: PositiveInt = 1024 * 1024
    max_elements: PositiveInt = 1 << 20
    max_rows: PositiveInt = 100_000
    max_depth: PositiveInt = 16
    max_dims: PositiveInt = 8
    max_string_bytes: PositiveInt = 64 * 1024


class ServingSettings(BaseModel):
    """A model server; ``threads`` and ``queue`` size its prediction pool (default: one thread
    per usable core, at least two, and twice as many jobs waiting)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    flush_interval_s: float = Field(5.0, gt=0)
    request_log_sample_rate: float = Field(0.01, ge=0, le=1)
    refresh_interval_s: float = Field(0.5, gt=0)
    limits: RequestLimitsSettings = RequestLimitsSettings()
    threads: PositiveInt | None = None
    queue: NonNegativeInt | None = None


class QuotaSettings(BaseModel):
    default_pool: str = "local"
    default_cap_fraction: float = Field(0.5, gt=0, le=1)
    memory_margin: float = Field(0.10, ge=0)
    lease_ttl_s: float = Field(30.0, gt=0)
    experiment_headroom: float = Field(0.2, ge=0)


class DaemonSettings(BaseModel):
    tick_s: float = Field(1.0, gt=0)
    leader_ttl_s: float = Field(15.0, gt=0)


class OidcSettings(BaseModel):
    """Single sign-on: bearer tokens (JWTs) from this OpenID Connect provider are accepted by
    ``shipyard server``, checked against the provider's key set (``jwks_url``, or a local
    ``jwks_file``), its ``issuer`` and this ``audience``."""

    issuer: str | None = None
    audience: str | None = None
    jwks_url: str | None = None
    jwks_file: Path | None = None
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    leeway_s: float = Field(30.0, ge=0, le=600)

    @property
    def enabled(self) -> bool:
        return self.issuer is not None


class ServerSettings(BaseModel):
    """The control plane (``shipyard server``)."""

    host: str = "127.0.0.1"
    port: int = Field(8600, ge=0, le=65535)
    oidc: OidcSettings = OidcSettings()
    login_failures: PositiveInt = 10
    """Failed sign-ins allowed per identity and per address within ``login_window_s``."""
    login_window_s: float = Field(60.0, gt=0)
    threads: int = Field(1, ge=1, le=64)
    """Operations one worker runs at once. One, like a synchronous WSGI worker, because the
    operations are short and CPU-bound: several threads of one process contend for the GIL and
    stretch each other's latency (measured with 8 clients on SQLite, the slowest list's p99 was
    345 ms with Starlette's default of 40 threads, 152 ms with 2 and 65 ms with 1). Scale with
    ``shipyard server --workers`` instead; more threads let a slow operation (``audit verify``)
    hold up fewer of the others sent to its worker."""
    remember_s: float = Field(5.0, ge=0, le=300)
    """How long a worker remembers an API token it verified (0: never; each request then reads
    the store). A token revoked, an identity disabled or a role unbound through this worker is
    forgotten at once; through another replica or the embedded CLI, within ``remember_s``."""


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML file, with an error that names the file and the problem."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = config_file()
        self.data: dict[str, Any] = read_config_file(path) if path is not None else {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


class Settings(BaseSettings):
    """Where Shipyard keeps its state and how its processes find each other."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    home: Path = DEFAULT_HOME
    db_url: str | None = None
    artifact_root: str | None = None
    user: str | None = None
    serving: ServingSettings = ServingSettings()
    quota: QuotaSettings = QuotaSettings()
    daemon: DaemonSettings = DaemonSettings()
    server: ServerSettings = ServerSettings()

    @field_validator("db_url")
    @classmethod
    def _known_dialect(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
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
        return (init_settings, env_settings, _TomlSource(settings_cls))

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return default_database_url(self.home)

    @property
    def artifact_url(self) -> str:
        if self.artifact_root:
            return self.artifact_root
        return str((self.home / "artifacts").resolve())

    @property
    def logs_dir(self) -> Path:
        return (self.home / "logs").resolve()

    @property
    def actor(self) -> str:
        """Who is acting: ``SHIPYARD_USER``, else the OS user."""
        if self.user:
            return self.user
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return "unknown"

    def ensure_home(self) -> Path:
        """Create the home folder (and its logs folder) if missing; return it."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            self.logs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create SHIPYARD_HOME {self.home}: {exc}") from None
        return self.home


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning any validation problem into one clear :class:`ConfigError`."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid Shipyard settings: {problems}") from None


def yaml_error_line(exc: BaseException) -> str:
    """A YAML parser's error in one line, where first (PyYAML's own text spans several lines,
    with a caret under the place): ``line 2, column 1: expected the node content, but found
    '<stream end>' (while parsing a flow node)``."""
    problem = getattr(exc, "problem", None)
    if not problem:
        return " ".join(str(exc).split())
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = getattr(exc, "context", None)
    return f"{where}{problem}" + (f" ({context})" if context else "")
