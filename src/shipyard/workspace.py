"""A workspace: the settings, the metadata store and the artifact store, opened together."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.config import Settings, load_settings
from shipyard.errors import ConfigError
from shipyard.store import Store

if TYPE_CHECKING:
    from shipyard.artifacts import ArtifactStore


@dataclass
class Workspace:
    settings: Settings
    clock: Clock = field(default=SYSTEM_CLOCK)

    @classmethod
    def open(cls, clock: Clock = SYSTEM_CLOCK, create: bool = True, **overrides: Any) -> Workspace:
        """Read the settings, open (and migrate) the store; create the home folder if needed.

        With ``create=False`` a missing workspace is an error with a hint instead: a read-only
        command run where there is none (SHIPYARD_HOME forgotten) must not leave an empty one
        behind. A workspace whose database is a server (``SHIPYARD_DB_URL``) exists already.
        """
        settings = load_settings(**overrides)
        if create:
            settings.ensure_home()
        elif settings.db_url is None and not settings.home.is_dir():
            raise ConfigError(
                f"no Shipyard workspace at {settings.home.resolve()}; "
                "run `shipyard init` or set SHIPYARD_HOME"
            )
        ws = cls(settings, clock)
        ws.store  # noqa: B018 - open and migrate now, so errors surface here
        return ws

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.database_url)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        from shipyard.artifacts import ArtifactStore  # not every command reads or writes one

        return ArtifactStore(self.settings.artifact_url, self.store, self.clock)

    @property
    def actor(self) -> str:
        return self.settings.actor
