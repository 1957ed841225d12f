"""The web dashboard: pages over the control plane's operations, served by ``shipyard
server`` under ``/ui`` (:func:`mount`)."""

from shipyard.ui.routes import mount

__all__ = ["mount"]
