"""A workspace: the settings, the metadata store and the artifact store, opened together."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from shipyard.artifacts import ArtifactStore
from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.config import Settings, load_settings
from shipyard.store import Store


@dataclass
class Workspace:
    settings: Settings
    clock: Clock = field(default=SYSTEM_CLOCK)

    @classmethod
    def open(cls, clock: Clock = SYSTEM_CLOCK, **overrides: Any) -> Workspace:
        """Read the settings, create the home folder if needed, open (and migrate) the store."""
        settings = load_settings(**overrides)
        settings.ensure_home()
        ws = cls(settings, clock)
        ws.store  # noqa: B018 - open and migrate now, so errors surface here
        return ws

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.database_url)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.settings.artifact_url, self.store, self.clock)

    @property
    def actor(self) -> str:
        return self.settings.actor
