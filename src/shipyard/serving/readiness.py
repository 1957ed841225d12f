"""Readiness that tells the truth: which live models this worker cannot serve, and why.

A load balancer keeps a replica in rotation while ``/v2/health/ready`` (and MLflow's ``/ping``)
answer 200, so they answer 503 while any model that the store says is live has no version this
worker can serve: its artifact failed its sha256 or would not load, or its serving limits are
malformed. The answer names each such model and the reason.

Which live models have no version loaded is what the last refresh of
:class:`~shipyard.serving.live.LiveModels` found (:meth:`~LiveModels.unservable`), so readiness
reads no store and agrees with the routing table: a failure that belongs to a version that is no
longer live does not count. A model that became live a moment ago and is still loading does not
count either: every replica would drop out of rotation together during each deploy. A canary
that failed to load is not counted, since its model's stable version takes all the traffic (the
route skips it). A version that failed is tried again with a backoff, so a fixed artifact makes
the worker ready again without a restart.
"""

from __future__ import annotations

from collections.abc import Callable

from shipyard.serving.live import LiveModels


class Readiness:
    """The live models a worker cannot serve: not loaded, or ``refused`` (e.g. their limits)."""

    def __init__(
        self, live: LiveModels, refused: Callable[[str], str | None] = lambda model: None
    ) -> None:
        self.live = live
        self.refused = refused

    def why_not(self, model: str) -> str | None:
        """Why ``model`` cannot be served here, or None when it can (or is not live)."""
        if model in self.live.routes:
            return self.refused(model)
        return self.live.failure(model)

    def unservable(self) -> dict[str, str]:
        """Every live model that cannot be served, with the reason, in name order."""
        out = dict(self.live.unservable())
        for model in self.live.routes:
            why = self.refused(model)
            if why is not None:
                out[model] = why
        return dict(sorted(out.items()))
