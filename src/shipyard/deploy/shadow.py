"""The shadow stage: the candidate answers copies of live requests that the stable version
answered, and no user, before any user is routed to it.

After the replay (when the policy has one) the control loop puts the candidate in the traffic
split as the **shadow** of the stable version (:func:`shipyard.serving.split.set_split`):
every user is still answered by the stable version, and each model server copies
``canary.shadow.share_pct`` of those answered requests to the candidate off the request path,
recording both answers to the same inputs in its shadow log (:mod:`shipyard.serving.shadow`).
Once ``min_rows`` pairs are logged, the candidate is judged on them with the replay's paired
tests (:func:`shipyard.deploy.replay.judge_pairs`) at the level the release's one budget
gives the shadow's look (:meth:`Policy.shadow_alpha`):

- ``error_rate``: rows the candidate failed on, all of which the stable version answered:
  exact McNemar;
- ``prediction_shift``: the share of rows answered differently (classes), or the typical
  change of a number in units of the stable answers' spread (regressors), against
  ``canary.shadow.max_changed``;
- ``latency`` is not judged here: the stable version was timed on the user's path and the
  candidate in the server's idle-priority helper process, which do not compare; the live
  steps judge it. ``latency_spread`` and ``quality`` are live-traffic metrics.

Fewer than ``min_rows`` pairs after ``max_wait_s`` stop the release (``failed``, with the
reason); a failing verdict rolls back. Either way the candidate answered no user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard.artifacts import ArtifactStore
from shipyard.deploy.policy import SHADOW_STEP, Policy
from shipyard.deploy.replay import (
    ReplayArms,
    ReplayOutcome,
    judge_pairs,
    paired_evidence,
)
from shipyard.errors import DeployError
from shipyard.serving import records as serving_records
from shipyard.stats.canary import MetricVerdict
from shipyard.store import Store

__all__ = ["SHADOW_STEP", "ShadowLog", "ShadowUnavailable", "judge_shadow", "shadow_arms"]


class ShadowUnavailable(DeployError):
    """The shadow log holds too few pairs after the stage's longest wait."""

    def __init__(self, message: str, rows: int, needed: int) -> None:
        super().__init__(message)
        self.rows = rows
        self.needed = needed


def _first(value: Any) -> Any:
    while isinstance(value, list | tuple) and len(value):
        value = value[0]
    return value


def shadow_arms(pairs: serving_records.ShadowPairs) -> ReplayArms:
    """The logged pairs as the replay's arms: the stable answers are the recorded ones."""
    return ReplayArms(
        recorded=[_first(v) for v in pairs.stable],
        answers=[_first(v) if v is not None else None for v in pairs.shadow],
        errors=list(pairs.errors),
    )


def judge_shadow(arms: ReplayArms, policy: Policy) -> list[MetricVerdict]:
    """Every metric of the policy's analysis on the shadow's pairs, at the shadow's level."""
    floor = policy.canary.shadow.max_changed if policy.canary.shadow else 0.10
    return judge_pairs(arms, policy, policy.shadow_alpha(), floor, "shadow")


@dataclass
class ShadowLog:
    """The control loop's shadow judge: reads the shadow log since the stage began."""

    store: Store
    artifacts: ArtifactStore

    def __call__(
        self, model: str, candidate: int, stable: int, policy: Policy, started_at: float, now: float
    ) -> ReplayOutcome | None:
        """The shadow's verdicts and evidence; None while it waits for rows. Raises
        :class:`ShadowUnavailable` when ``max_wait_s`` passed with too few."""
        shadow = policy.canary.shadow
        if shadow is None:
            raise DeployError("the policy has no shadow stage")
        with self.store.session(readonly=True) as s:
            pairs = serving_records.shadow_pairs(
                s, self.artifacts, model, candidate, stable, started_at, now, shadow.max_rows
            )
        rows = len(pairs.stable)
        if rows < shadow.min_rows:
            if now - started_at < shadow.max_wait_s:
                return None
            raise ShadowUnavailable(
                f"the shadow log of {model}/{candidate} holds {rows} row(s) after "
                f"{shadow.max_wait_s:g} s; the shadow stage needs {shadow.min_rows} "
                "(canary.shadow.min_rows): too little traffic, or no model server running "
                f"the split (a server copies {shadow.share_pct:g}% of its requests)",
                rows,
                shadow.min_rows,
            )
        arms = shadow_arms(pairs)
        verdicts = judge_shadow(arms, policy)
        evidence: dict[str, Any] = {
            "stable_version": stable,
            "rows": rows,
            "requests": pairs.requests,
            "log_files": pairs.files,
            "since": started_at,
            "share_pct": shadow.share_pct,
            **paired_evidence(arms, "(shadowed)", list(dict.fromkeys(arms.errors))),
        }
        return ReplayOutcome(verdicts, evidence)
