"""The staging smoke check: the version loads (its artifact's sha256 verified), answers a sample
built from its own signature and training profile, and answers within the policy's latency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from shipyard.checks import Check
from shipyard.deploy.engine import SMOKE
from shipyard.deploy.policy import Policy
from shipyard.errors import ShipyardError
from shipyard.registry import Registry, VersionInfo
from shipyard.statuses import CheckStatus


def sample_rows(info: VersionInfo, rows: int) -> np.ndarray[Any, Any]:
    """Rows spread over each numeric column's training range (its mean where only that is
    known) and the most frequent training value of each categorical column."""
    profile = (info.reference_profile or {}).get("columns", {})
    columns: list[list[Any]] = []
    fractions = np.linspace(0.0, 1.0, rows) if rows > 1 else np.asarray([0.5])
    for spec in info.signature.inputs:
        col = profile.get(spec.name, {})
        if spec.type == "string":
            freq = col.get("frequencies") or {}
            value = max(freq.items(), key=lambda kv: kv[1])[0] if freq else ""
            columns.append([value] * rows)
        elif spec.type == "boolean":
            columns.append([False] * rows)
        else:
            lo, hi = col.get("min"), col.get("max")
            if lo is not None and hi is not None:
                columns.append(list(lo + fractions * (hi - lo)))
            else:
                columns.append([float(col.get("mean", 0.0))] * rows)
    arr = np.asarray(columns, dtype=object).T
    return arr.astype(np.float64) if info.signature.numeric else arr


@dataclass
class RegistrySmokeCheck:
    registry: Registry

    def __call__(self, model: str, version: int, policy: Policy) -> Check:
        try:
            info, predictor = self.registry.load(model, version=version)
        except ShipyardError as exc:
            evidence = {"loads": False, "error": str(exc)}
            return Check.of_model(SMOKE, model, version, CheckStatus.ALERT, str(exc), evidence)
        x = sample_rows(info, policy.staging.sample_rows)
        timings_ms = []
        try:
            predictor.predict(x[:1])  # warm-up, not timed
            for i in range(len(x)):
                t0 = time.perf_counter()
                predictions = predictor.predict(x[i : i + 1])
                timings_ms.append((time.perf_counter() - t0) * 1000)
        except Exception as exc:  # a model that raises on valid rows fails staging
            why = f"{type(exc).__name__}: {exc}"
            evidence = {"loads": True, "answers": False, "error": why}
            return Check.of_model(SMOKE, model, version, CheckStatus.ALERT, why, evidence)
        worst = max(timings_ms)
        ok = worst <= policy.staging.max_latency_ms
        return Check.of_model(
            SMOKE,
            model,
            version,
            CheckStatus.OK if ok else CheckStatus.ALERT,
            f"answered {len(x)} rows, the slowest in {worst:.3g} ms "
            f"(limit {policy.staging.max_latency_ms:g} ms)",
            {
                "loads": True,
                "artifact_digest": info.artifact_digest,
                "answers": True,
                "rows": len(x),
                "last_prediction": np.asarray(predictions).tolist()[:1],
                "max_latency_ms": round(worst, 3),
                "latency_limit_ms": policy.staging.max_latency_ms,
                "meets_latency": ok,
            },
        )
