"""Safe deployment: policies and approvals, the validation gate, the rollout state machine,
sticky canary routing, canary analysis, rollback with diagnosis, runbooks."""

from shipyard.deploy.engine import Engine
from shipyard.deploy.gate import GateOutcome, validate_and_deploy, validate_version
from shipyard.deploy.loop import advance_rollouts
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
from shipyard.deploy.routing import bucket, choose_version, in_canary, routing_key
from shipyard.deploy.traffic import LiveSplit, live_split, live_splits

__all__ = [
    "DEFAULT_POLICY",
    "Engine",
    "GateOutcome",
    "LiveSplit",
    "Policy",
    "RolloutView",
    "abort",
    "advance_rollouts",
    "approve",
    "bucket",
    "choose_version",
    "get_rollout",
    "in_canary",
    "live_split",
    "live_splits",
    "load_policy",
    "parse_policy",
    "pause",
    "promote",
    "resume",
    "rollback",
    "rollouts_of",
    "routing_key",
    "set_policy",
    "start_rollout",
    "validate_and_deploy",
    "validate_version",
]
