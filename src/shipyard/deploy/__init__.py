"""Safe deployment: policies and approvals, the validation gate, the rollout state machine,
canary analysis, rollback with diagnosis, runbooks. (The sticky canary routing that a split
decides is serving's: :mod:`shipyard.serving.routing`.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipyard.deploy.policy import DEFAULT_POLICY, Policy, load_policy, parse_policy, set_policy
from shipyard.deploy.rollback import rollback
from shipyard.deploy.rollout import (
    RolloutView,
    abort,
    approve,
    get_rollout,
    pause,
    promote,
    resume,
    rollouts_of,
    start_rollout,
)
from shipyard.lazy import lazy_exports

if TYPE_CHECKING:
    from shipyard.deploy.engine import Engine
    from shipyard.deploy.gate import GateOutcome, validate_and_deploy, validate_version
    from shipyard.deploy.loop import advance_rollouts

# the canary judge (scipy) and the validation gate (scikit-learn) load on first use
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "engine": ("Engine",),
        "gate": ("GateOutcome", "validate_and_deploy", "validate_version"),
        "loop": ("advance_rollouts",),
    },
)

__all__ = [
    "DEFAULT_POLICY",
    "Engine",
    "GateOutcome",
    "Policy",
    "RolloutView",
    "abort",
    "advance_rollouts",
    "approve",
    "get_rollout",
    "load_policy",
    "parse_policy",
    "pause",
    "promote",
    "resume",
    "rollback",
    "rollouts_of",
    "set_policy",
    "start_rollout",
    "validate_and_deploy",
    "validate_version",
]
