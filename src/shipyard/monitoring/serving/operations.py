"""Is the model served at all, and within its quota: a synthetic probe of each server, the
absence of traffic that was expected, and each server's use of its quota lease."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from shipyard.checks import Check, Metric
from shipyard.monitoring.serving.base import QUOTA_USED_FRACTION, ServingReader
from shipyard.serving import records
from shipyard.statuses import CheckStatus, LeaseStatus


class OperationsChecks(ServingReader):
    """The outage and quota checks of :class:`~shipyard.monitoring.serving.ServingMonitor`."""

    def outage(
        self,
        model: str,
        url: str | Sequence[str] | None = None,
        expect_traffic: bool = True,
        *,
        expect_server: bool = False,
    ) -> Check:
        """A synthetic probe of the server(s) at ``url`` plus the absence of expected traffic.

        ``shipyard_serving_probe_up`` is 1 when any server answers ready for the model (a load
        balancer in front of them still gets answers), 0 when none does — and 0 when
        ``expect_server`` (the model is live) but no server is running to probe.
        ``shipyard_serving_recent_requests`` is written while traffic is expected (requests
        within ``traffic_history_s``), so that a model that never had traffic alerts nothing.
        """
        name = "serving.outage"
        evidence: dict[str, Any] = {}
        problems = []
        labels = {"model": model}
        metrics: list[Metric] = []
        urls = [url] if isinstance(url, str) else list(url or [])
        if urls:
            probes = []
            for u in urls:
                up, why, seconds = self._probe(u, model)
                probes.append({"url": u, "up": up, "detail": why, "seconds": seconds})
            answering = [p for p in probes if p["up"]]
            evidence["probe"] = (answering or probes)[0]
            evidence["probes"] = probes
            metrics.append(("shipyard_serving_probe_up", labels, 1.0 if answering else 0.0))
            if not answering:
                problems.append("probe failed: " + "; ".join(str(p["detail"]) for p in probes))
        elif expect_server:
            evidence["probe"] = {"up": False, "detail": "no running model server serves it"}
            metrics.append(("shipyard_serving_probe_up", labels, 0.0))
            problems.append("live, but no running model server serves it")
        now = self.clock.time()
        since = now - self.config.period_s
        recent_requests = self._requests(model, since, now)
        earlier = self._requests(model, now - self.config.traffic_history_s, since)
        evidence["traffic"] = {"recent": recent_requests, "earlier": earlier}
        if recent_requests or earlier:
            metrics.append(("shipyard_serving_recent_requests", labels, float(recent_requests)))
        if expect_traffic and recent_requests == 0 and earlier > 0:
            problems.append(
                f"no traffic in the last {self.config.period_s:.0f} s "
                f"after {earlier} requests before"
            )
        status = CheckStatus.ALERT if problems else CheckStatus.OK
        summary = "; ".join(problems) if problems else "answering"
        return Check.of_model(name, model, None, status, summary, evidence, metrics)

    def _requests(self, model: str, since: float, until: float) -> int:
        """Requests in the windows of ``model`` that ended in ``(since, until]``: a window
        ending on the boundary of the recent period is counted once, as earlier traffic."""
        with self.store.session() as s:
            return records.request_count(s, model, since, until)

    def quota(self, model: str) -> Check:
        """Each live server's measured use of the quota lease it holds, per resource.

        ``shipyard_serving_quota_used_fraction{model,pool,resource}`` = used / granted, the
        largest over the model's servers in that pool (the one closest to its grant)."""
        from shipyard.serving.instances import instance_leases

        name = "serving.quota"
        leases = [
            x
            for x in instance_leases(self.store, self.clock.time(), model)
            if x.status == LeaseStatus.HELD
        ]
        if not leases:
            return Check.of_model(
                name, model, None, CheckStatus.OK, "no running server of it holds a quota lease"
            )
        worst: dict[tuple[str, str], float] = {}
        servers = []
        for lease in leases:
            fractions = {
                r: lease.used[r] / granted
                for r, granted in lease.granted.items()
                if granted > 0 and r in lease.used
            }
            servers.append(
                {
                    "url": lease.instance.url,
                    "pool": lease.pool,
                    "lease": lease.instance.lease_id,
                    "granted": lease.granted,
                    "used": lease.used,
                    "fraction": fractions,
                }
            )
            for r, f in fractions.items():
                worst[(lease.pool, r)] = max(f, worst.get((lease.pool, r), 0.0))
        metrics = [
            (QUOTA_USED_FRACTION, {"model": model, "pool": pool, "resource": r}, f)
            for (pool, r), f in sorted(worst.items())
        ]
        high = {f"{pool}/{r}": f for (pool, r), f in worst.items() if f > self.max_fraction}
        status = (
            CheckStatus.ALERT
            if any(f > 1 for f in high.values())
            else CheckStatus.WARNING
            if high
            else CheckStatus.OK
        )
        shown = ", ".join(f"{r} {f:.0%}" for (_, r), f in sorted(worst.items()))
        summary = f"{len(leases)} server(s) use {shown or 'nothing measured yet'} of their lease"
        if high:
            summary += f"; above {self.max_fraction:.0%}: {sorted(high)}"
        return Check.of_model(name, model, None, status, summary, {"servers": servers}, metrics)

    @property
    def max_fraction(self) -> float:
        return self.config.max_quota_fraction

    def _probe(self, url: str, model: str) -> tuple[bool, str, float]:
        started = self.clock.monotonic()
        try:
            with httpx.Client(base_url=url, timeout=self.config.probe_timeout_s) as c:
                r = c.get(f"/v2/models/{model}/ready")
            elapsed = self.clock.monotonic() - started
            if r.status_code != 200:
                return False, f"HTTP {r.status_code}: {r.text[:200]}", elapsed
            return True, "ready", elapsed
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}", self.clock.monotonic() - started
