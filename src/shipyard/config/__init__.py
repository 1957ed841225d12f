"""One settings object, read from the environment and an optional ``shipyard.toml``.

Precedence, highest first: keyword arguments, ``SHIPYARD_*`` environment variables (nested
fields with ``__``, e.g. ``SHIPYARD_SERVING__PORT=8080``), the TOML file, defaults.
The TOML file is ``$SHIPYARD_CONFIG`` if set, else ``./shipyard.toml`` if present.

Example ``shipyard.toml``::

    db_url = "postgresql+psycopg://shipyard@db.internal/shipyard"
    artifact_root = "s3://ml-artifacts/shipyard"

    [serving]
    port = 8080

    [serving.limits]        # the cost bound of one request (shipyard.serving.limits)
    max_rows = 1000000

The schema is :mod:`.settings` (Pydantic); the names of the sources and the default places are
:mod:`.location`, which imports no Pydantic, so a command that only has to find the database
(``shipyard runs list``) need not import it. The public names load on first use
(:mod:`shipyard.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipyard.lazy import lazy_exports

if TYPE_CHECKING:
    from shipyard.config.settings import (
        DaemonSettings,
        OidcSettings,
        QuotaSettings,
        RequestLimitsSettings,
        ServerSettings,
        ServingSettings,
        Settings,
        load_settings,
        yaml_error_line,
    )

__all__ = [
    "DaemonSettings",
    "OidcSettings",
    "QuotaSettings",
    "RequestLimitsSettings",
    "ServerSettings",
    "ServingSettings",
    "Settings",
    "load_settings",
    "yaml_error_line",
]
__getattr__, __dir__ = lazy_exports(__name__, {"settings": __all__})
