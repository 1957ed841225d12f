"""Where the settings come from and where a workspace keeps its database, without Pydantic.

:class:`~shipyard.config.settings.Settings` reads these names (the environment's prefix, the
TOML file, the default home and database file); :func:`plain_home` reads the same names for a
command that only needs to find the database and must start faster than Pydantic imports
(``shipyard runs list``): it answers only when the settings are the defaults but for
``SHIPYARD_HOME`` (and ``SHIPYARD_USER``, which names who acts), and otherwise leaves the
settings, and any error in them, to ``Settings``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from shipyard.errors import ConfigError

ENV_PREFIX = "SHIPYARD_"
"""Every setting's environment variable starts so (``SHIPYARD_SERVING__PORT``), in any case."""
CONFIG_ENV = "SHIPYARD_CONFIG"
"""Names the TOML file; without it, ``./shipyard.toml`` if present."""
CONFIG_FILE = Path("shipyard.toml")
DEFAULT_HOME = Path(".shipyard")
DB_FILE = "shipyard.db"
"""The SQLite database in the home, unless ``db_url`` names another."""

_NOT_SETTINGS = frozenset({"URL", "TOKEN", "CONFIG"})
"""``SHIPYARD_*`` variables that are no setting: the server to talk to and its token
(``shipyard.cli.connect``), the TOML file's name."""
_PLAIN = frozenset({"HOME", "USER"})
"""The settings :func:`plain_home` reads: any string is valid for either."""


def config_file() -> Path | None:
    """The TOML file to read: ``$SHIPYARD_CONFIG`` (which must exist), else ``./shipyard.toml``
    if present, else none."""
    explicit = os.environ.get(CONFIG_ENV)
    path = Path(explicit) if explicit else CONFIG_FILE
    if explicit and not path.is_file():
        raise ConfigError(f"{CONFIG_ENV} names {path}, which does not exist")
    return path if path.is_file() else None


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML file's table, with an error that names the file and the problem."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def default_database_url(home: Path) -> str:
    """The URL of the SQLite database a workspace keeps in ``home``."""
    return f"sqlite:///{(home / DB_FILE).resolve()}"


def plain_home() -> Path | None:
    """The home, when the settings are the defaults but for ``SHIPYARD_HOME`` and
    ``SHIPYARD_USER``: no TOML file and no other setting in the environment, so the database
    is the default SQLite file in the home and every setting is valid. ``None`` otherwise:
    then only :func:`~shipyard.config.load_settings` knows (and says what is wrong, if
    anything is)."""
    if os.environ.get(CONFIG_ENV) is not None or CONFIG_FILE.is_file():
        return None
    given: dict[str, str] = {}
    for name, value in os.environ.items():
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        key = upper[len(ENV_PREFIX) :]
        if key in _NOT_SETTINGS:
            continue
        if key not in _PLAIN or key in given:  # another setting, or one given twice
            return None
        given[key] = value
    return Path(given["HOME"]) if "HOME" in given else DEFAULT_HOME
