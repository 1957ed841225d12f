"""A model's deployment policy: who must approve, where it goes, how the canary is judged, what
happens when it fails, how to roll back. YAML written by people, validated here with errors that
name the field; sensible defaults when a model has no policy.

Example (every field optional)::

    roles:
      approver: [alice, bob]
    approvals:
      start:   {count: 1, roles: [approver], four_eyes: true}
      speedup: {count: 2, roles: [approver], four_eyes: true}
    environments: [staging, canary, production]
    staging: {smoke: true, sample_rows: 5, max_latency_ms: 500}
    canary:
      interval_s: 60
      exclude_recent_days: 14      # keep recent canary users of this model out (0: off)
      replay: {min_rows: 200, max_rows: 1000, since_s: 86400}   # before any live traffic
      shadow: {share_pct: 100, min_rows: 200, max_wait_s: 900}  # copies of live requests, no user
      steps:
        - {match: {header: x-user-group, values: [internal]}, min_duration_s: 300, min_samples: 50}
        - {weight_pct: 10, min_duration_s: 300, min_samples: 200}
        - {weight_pct: 50, min_duration_s: 300, min_samples: 500}
    analysis:
      alpha: 0.01
      budget: release              # one alpha over every look of every stage
      on_no_data: extend
      metrics:
        - {name: error_rate, threshold: 0.005}
        - {name: latency, threshold: 0.10}
        - {name: latency_spread, threshold: 1.25}
        - {name: prediction_shift, threshold: 0.10}
    on_failure: [rollback, notify]
    rollback: {to: previous}
    gate: {required: true, minimum: {accuracy: 0.8}, no_regression: [accuracy], tolerance: 0.01}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shipyard import audit
from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.config import yaml_error_line
from shipyard.errors import ConfigError
from shipyard.serving.routing import TOKEN, Match
from shipyard.store import Store
from shipyard.store.deploy import DeployPolicyRecord

MetricName = Literal["error_rate", "latency", "latency_spread", "prediction_shift", "quality"]

METRIC_DEFAULTS: dict[str, dict[str, Any]] = {
    # threshold = the effect floor a failing metric must reach (see stats.canary.verdict)
    "error_rate": {"direction": "increase", "threshold": 0.005},  # +0.5 percentage points
    "latency": {"direction": "increase", "threshold": 0.10},  # HL shift ≥ 10 % of stable median
    "latency_spread": {"direction": "increase", "threshold": 1.25},  # MAD ratio ≥ 1.25
    "prediction_shift": {"direction": "any", "threshold": 0.10},  # KS D (or Cramér's V) ≥ 0.1
    # share of wrong predictions among those whose late label arrived: ≥ 2 points worse
    "quality": {"direction": "decrease", "threshold": 0.02},
}
DEFAULT_METRICS = ("error_rate", "latency", "latency_spread", "prediction_shift")
"""Judged when a policy names no metrics; ``quality`` is opt-in (labels arrive late, if ever)."""
ALLOWED_DIRECTIONS = {
    "error_rate": {"increase"},
    "latency": {"increase"},
    "latency_spread": {"increase"},
    "prediction_shift": {"any"},
    "quality": {"decrease"},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApprovalRule(_Strict):
    """How many distinct people must approve, from which roles (empty: anyone), four-eyes or not."""

    count: int = Field(1, ge=0, le=20)
    roles: list[str] = Field(default_factory=list)
    four_eyes: bool = True


class Approvals(_Strict):
    start: ApprovalRule = ApprovalRule()
    speedup: ApprovalRule = ApprovalRule()


class Staging(_Strict):
    smoke: bool = True
    sample_rows: int = Field(5, ge=1, le=10_000)
    max_latency_ms: float = Field(1000.0, gt=0)


class StepMatch(_Strict):
    """A targeted step's rule: requests whose header (or cookie) has one of ``values``."""

    header: str | None = None
    cookie: str | None = None
    values: list[str] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one_name(self) -> StepMatch:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("a match names exactly one of header or cookie")
        name = self.header if self.header is not None else self.cookie
        if not TOKEN.match(name or ""):
            raise ValueError(f"{name!r} is not a header or cookie name (an HTTP token)")
        if any(not v or v != v.strip() or len(v) > 200 for v in self.values):
            raise ValueError("each value is a non-empty string of at most 200 characters, unpadded")
        if self.header is not None and self.header.lower() in (
            "x-shipyard-routing-key",
            "x-user-id",
            "cookie",
        ):
            raise ValueError(f"header {self.header!r} cannot be matched: it routes by weight")
        return self

    def rule(self) -> Match:
        if self.header is not None:
            return Match("header", self.header, tuple(self.values))
        return Match("cookie", self.cookie or "", tuple(self.values))


class CanaryStep(_Strict):
    """One stage on live traffic: a weighted step (``weight_pct`` of the users, drawn afresh
    for each rollout) or a targeted step (``match``: the users whose header or cookie matches)."""

    weight_pct: float = Field(0.0, ge=0, lt=100)
    match: StepMatch | None = None
    min_duration_s: float = Field(300.0, ge=0)
    min_samples: int = Field(200, ge=0)
    max_duration_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _max_after_min(self) -> CanaryStep:
        if self.max_duration_s is not None and self.max_duration_s < self.min_duration_s:
            raise ValueError("max_duration_s must be ≥ min_duration_s")
        if self.match is None and self.weight_pct <= 0:
            raise ValueError(
                "a step needs weight_pct > 0, or a match (header or cookie) to be a targeted step"
            )
        if self.match is not None and self.weight_pct > 0:
            raise ValueError(
                "a targeted step routes the users its match selects and takes no weight_pct; "
                "put a weighted step after it"
            )
        return self

    @property
    def targeted(self) -> bool:
        return self.match is not None

    def describe(self) -> str:
        if self.match is not None:
            return f"targeted: {self.match.rule().describe()}"
        return f"{self.weight_pct:g} % of users"

    def max_duration(self, interval_s: float) -> float:
        """How long the step may extend for lack of data: 3 × its minimum unless set."""
        if self.max_duration_s is not None:
            return self.max_duration_s
        return max(3 * self.min_duration_s, self.min_duration_s + interval_s)

    def max_looks(self, interval_s: float) -> int:
        """The judged looks a step can take: one per interval until ``min_duration_s``.

        Intervals with too little data are not judged (no alpha is spent on them), and the
        step ends at its first passing look once ``min_duration_s`` has passed, so a step
        never takes more judged looks than this; the alpha-spending fractions are k / this.
        """
        return max(1, math.ceil(self.min_duration_s / interval_s))


def _default_steps() -> list[CanaryStep]:
    return [
        CanaryStep(weight_pct=10, min_duration_s=300, min_samples=200),
        CanaryStep(weight_pct=50, min_duration_s=300, min_samples=500),
    ]


class Replay(_Strict):
    """The replay stage: before any user is routed to it, the candidate answers the rows the
    stable version answered in its sampled request log over the last ``since_s`` (at most
    ``max_rows``, newest first), and is judged against the stable version's recorded answers
    (:mod:`shipyard.deploy.replay`). Fewer than ``min_rows`` logged rows end the rollout
    ``failed`` with the reason; nothing was served.

    ``max_changed`` is the floor of the answers' paired test: the share of rows a classifier
    may answer differently, or a regressor's typical change in standard deviations of the
    stable answers (the metric ``prediction_shift`` at replay; its own threshold is a
    distribution distance, a different quantity)."""

    min_rows: int = Field(200, ge=1, le=100_000)
    max_rows: int = Field(1000, ge=1, le=100_000)
    since_s: float = Field(7 * 86_400.0, gt=0)
    max_changed: float = Field(0.10, ge=0, lt=1)

    @model_validator(mode="after")
    def _max_above_min(self) -> Replay:
        if self.max_rows < self.min_rows:
            raise ValueError("max_rows must be ≥ min_rows")
        return self


class Shadow(_Strict):
    """The shadow stage, after the replay and before any user is routed to the candidate: the
    model servers copy ``share_pct`` of the stable version's answered requests to the candidate
    off the request path (:mod:`shipyard.serving.shadow`), and once ``min_rows`` rows are in the
    shadow log the candidate's answers are judged against the stable version's answers to the
    same inputs with the replay's paired tests (:mod:`shipyard.deploy.shadow`). Fewer than
    ``min_rows`` rows after ``max_wait_s`` end the rollout ``failed`` with the reason; no user
    was served by the candidate. ``max_changed`` is the floor of the answers' paired test, as
    at replay."""

    share_pct: float = Field(100.0, gt=0, le=100)
    min_rows: int = Field(200, ge=1, le=100_000)
    max_rows: int = Field(5000, ge=1, le=100_000)
    max_wait_s: float = Field(900.0, gt=0)
    max_changed: float = Field(0.10, ge=0, lt=1)

    @model_validator(mode="after")
    def _max_above_min(self) -> Shadow:
        if self.max_rows < self.min_rows:
            raise ValueError("max_rows must be ≥ min_rows")
        return self


class Canary(_Strict):
    interval_s: float = Field(120.0, gt=0)
    steps: list[CanaryStep] = Field(default_factory=_default_steps)
    replay: Replay | None = None
    """The replay stage before the first live step (off when absent)."""
    shadow: Shadow | None = None
    """The shadow stage after the replay, before the first live step (off when absent)."""
    exclude_recent_days: float = Field(0.0, ge=0, le=365)
    """Keep out of the canary the users who were in a canary of this model in the last N days
    (recomputed from earlier rollouts' buckets; 0: no exclusion)."""

    @field_validator("steps")
    @classmethod
    def _growing(cls, steps: list[CanaryStep]) -> list[CanaryStep]:
        first_weighted = next((i for i, s in enumerate(steps) if not s.targeted), len(steps))
        late = [i + 1 for i, s in enumerate(steps) if s.targeted and i > first_weighted]
        if late:
            raise ValueError(
                f"targeted steps (match) go before every weighted step; step(s) {late} come after"
            )
        weights = [s.weight_pct for s in steps if not s.targeted]
        if weights != sorted(set(weights)):
            raise ValueError(f"step weights must strictly grow, got {weights}")
        rules = [s.match.rule() for s in steps if s.match is not None]
        if len(rules) != len(set(rules)):
            raise ValueError("two targeted steps have the same match")
        return steps


class MetricRule(_Strict):
    name: MetricName
    direction: str | None = None
    threshold: float | None = Field(None, ge=0)
    required: bool | None = None

    @model_validator(mode="after")
    def _direction_fits(self) -> MetricRule:
        allowed = ALLOWED_DIRECTIONS[self.name]
        if self.direction is not None and self.direction not in allowed:
            raise ValueError(
                f"metric {self.name} can only be judged in direction {sorted(allowed)}, "
                f"not {self.direction!r}"
            )
        return self

    @property
    def is_required(self) -> bool:
        """Whether missing data holds the step (extend/pause/fail); quality is optional unless
        the policy says otherwise, since labels may never arrive within a step."""
        return self.required if self.required is not None else self.name != "quality"

    @property
    def floor(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return float(METRIC_DEFAULTS[self.name]["threshold"])


def _default_metrics() -> list[MetricRule]:
    return [MetricRule.model_validate({"name": name}) for name in DEFAULT_METRICS]


class Analysis(_Strict):
    alpha: float = Field(0.01, gt=0, lt=0.5)
    spending: Literal["pocock", "obrien_fleming"] = "pocock"
    budget: Literal["release", "per_stage"] = "release"
    """How ``alpha`` is shared over the release's stages (:func:`~shipyard.stats.staged_alpha`):
    one spending function over every look of every stage, or an even split per stage."""
    confidence: float = Field(0.98, gt=0.5, lt=1)
    on_no_data: Literal["fail", "pause", "extend"] = "extend"
    metrics: list[MetricRule] = Field(default_factory=_default_metrics)

    @field_validator("metrics")
    @classmethod
    def _unique(cls, metrics: list[MetricRule]) -> list[MetricRule]:
        names = [m.name for m in metrics]
        if len(names) != len(set(names)):
            raise ValueError(f"each metric may appear once, got {names}")
        return metrics


class Gate(_Strict):
    """The validation gate: absolute thresholds, and no regression against the serving version.

    ``minimum``/``maximum`` map a metric (accuracy, f1, roc_auc, rmse, mae…) to its bound;
    ``no_regression`` lists the metrics that may not get worse than the serving version's on
    the same evaluation data by more than ``tolerance`` (absolute).
    """

    required: bool = False
    minimum: dict[str, float] = Field(default_factory=dict)
    maximum: dict[str, float] = Field(default_factory=dict)
    no_regression: list[str] = Field(default_factory=lambda: ["accuracy"])
    tolerance: float = Field(0.0, ge=0)


class Rollback(_Strict):
    to: Literal["previous"] = "previous"
    notify: bool = True


FailureAction = Literal["rollback", "notify", "pause"]
Environment = Literal["staging", "canary", "production"]
ENVIRONMENTS: tuple[Environment, ...] = ("staging", "canary", "production")
DEFAULT_ON_FAILURE: tuple[FailureAction, ...] = ("rollback", "notify")


class Policy(_Strict):
    """The whole policy of one model."""

    roles: dict[str, list[str]] = Field(default_factory=dict)
    approvals: Approvals = Approvals()
    environments: list[Environment] = Field(default_factory=lambda: list(ENVIRONMENTS))
    staging: Staging = Staging()
    canary: Canary = Canary()
    analysis: Analysis = Analysis()
    on_failure: list[FailureAction] = Field(default_factory=lambda: list(DEFAULT_ON_FAILURE))
    rollback: Rollback = Rollback()
    gate: Gate = Gate()

    @field_validator("environments")
    @classmethod
    def _order(cls, envs: list[str]) -> list[str]:
        order = ["staging", "canary", "production"]
        if "production" not in envs:
            raise ValueError("environments must end with production")
        if envs != [e for e in order if e in envs]:
            raise ValueError(f"environments go in the order staging → canary → production: {envs}")
        return envs

    @field_validator("on_failure")
    @classmethod
    def _consistent(cls, actions: list[str]) -> list[str]:
        if "rollback" in actions and "pause" in actions:
            raise ValueError("on_failure cannot both roll back and pause")
        if not actions:
            raise ValueError("on_failure needs at least one action")
        return actions

    @model_validator(mode="after")
    def _roles_exist(self) -> Policy:
        for purpose in ("start", "speedup"):
            rule: ApprovalRule = getattr(self.approvals, purpose)
            missing = [r for r in rule.roles if r not in self.roles]
            if missing:
                raise ValueError(
                    f"approvals.{purpose} names roles {missing} that `roles` does not define"
                )
            if rule.roles and rule.count > len({m for r in rule.roles for m in self.roles[r]}):
                raise ValueError(
                    f"approvals.{purpose} asks {rule.count} approvers but its roles have fewer "
                    "members"
                )
        return self

    # -- what the rest of deploy asks ----------------------------------------------------------
    def roles_of(self, user: str) -> list[str]:
        return sorted(role for role, members in self.roles.items() if user in members)

    def uses_canary(self) -> bool:
        return "canary" in self.environments and bool(self.canary.steps)

    def alpha_per_test(self) -> float:
        """The family budget split evenly (Bonferroni) over stages × metrics: the mean level of a
        stage's metric under ``budget: per_stage``."""
        tests = max(1, len(self._stage_looks())) * max(1, len(self.analysis.metrics))
        return self.analysis.alpha / tests

    def replays(self) -> bool:
        """Whether the release begins with a replay of the stable version's request log."""
        return self.uses_canary() and self.canary.replay is not None

    def shadows(self) -> bool:
        """Whether the release copies live requests to the candidate before any user sees it."""
        return self.uses_canary() and self.canary.shadow is not None

    def _before_steps(self) -> int:
        """How many stages come before canary step 0 (the replay, the shadow)."""
        return int(self.replays()) + int(self.shadows())

    def _stage_looks(self) -> list[int]:
        """The judged looks of each stage in release order: replay and shadow (one look each),
        then the steps."""
        interval = self.canary.interval_s
        steps = [s.max_looks(interval) for s in self.canary.steps]
        return [1] * self._before_steps() + steps

    def stages(self) -> list[Stage]:
        """The release's judged stages in order, with the alpha each may spend in all.

        The replay stage (when the policy has one) comes first, then the shadow stage (when it
        has one), then the targeted steps, then the weighted canary steps, all under one
        budget."""
        if not self.uses_canary():
            return []
        looks = self._stage_looks()
        metrics = max(1, len(self.analysis.metrics))
        out = []
        if self.replays():
            replay = self.canary.replay
            assert replay is not None
            out.append(
                Stage(
                    index=0,
                    step=None,
                    kind="replay",
                    description=(
                        f"no user: the stable version's logged requests "
                        f"({replay.min_rows}–{replay.max_rows} rows)"
                    ),
                    weight_pct=0.0,
                    max_looks=1,
                    alpha=self.replay_alpha() * metrics,
                )
            )
        if self.shadows():
            shadow = self.canary.shadow
            assert shadow is not None
            out.append(
                Stage(
                    index=len(out),
                    step=None,
                    kind="shadow",
                    description=(
                        f"no user: copies of {shadow.share_pct:g}% of live requests "
                        f"({shadow.min_rows}+ rows within {shadow.max_wait_s:g} s)"
                    ),
                    weight_pct=0.0,
                    max_looks=1,
                    alpha=self.shadow_alpha() * metrics,
                )
            )
        for i, step in enumerate(self.canary.steps):
            looks_i = looks[len(out)]
            spendable = sum(self.alpha_at(i, k) for k in range(1, looks_i + 1)) * metrics
            out.append(
                Stage(
                    index=len(out),
                    step=i,
                    kind="targeted" if step.targeted else "canary",
                    description=step.describe(),
                    weight_pct=step.weight_pct,
                    max_looks=looks_i,
                    alpha=spendable,
                )
            )
        return out

    def stage_of_step(self, step_index: int) -> Stage:
        """The stage of canary step ``step_index``."""
        return self.stages()[step_index + self._before_steps()]

    def _level(self, stage: int, look: int) -> float:
        from shipyard.stats.canary import staged_alpha  # scipy: only when a look is judged

        level = staged_alpha(
            self._stage_looks(),
            stage,
            look,
            self.analysis.alpha,
            self.analysis.spending,
            self.analysis.budget,
        )
        return level / max(1, len(self.analysis.metrics))

    def alpha_at(self, step_index: int, look: int) -> float:
        """The level each metric is tested at on look ``look`` (1-based) of canary step
        ``step_index``: the release's one budget (:func:`staged_alpha`, the replay's look
        first when there is one), split evenly over the metrics (Bonferroni)."""
        return self._level(step_index + self._before_steps(), look)

    def replay_alpha(self) -> float:
        """The level each metric is tested at in the replay stage (its one look): the first
        share of the release's budget; 0 when the policy has no replay."""
        return self._level(0, 1) if self.replays() else 0.0

    def shadow_alpha(self) -> float:
        """The level each metric is tested at in the shadow stage (its one look): the share of
        the release's budget after the replay's; 0 when the policy has no shadow."""
        return self._level(int(self.replays()), 1) if self.shadows() else 0.0

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


REPLAY_STEP = -1
"""The ``step_index`` of the replay's verdict row: the stage before canary step 0."""
SHADOW_STEP = -2
"""The ``step_index`` of the shadow's verdict row, and of a rollout in its shadow stage."""


@dataclass(frozen=True)
class Stage:
    """One judged stage of a release as the policy lays it out (for the runbook, status and
    the audit)."""

    index: int
    """The stage's place in the release (0-based)."""
    step: int | None
    """The canary step it is (``policy.canary.steps[step]``); None for the replay and shadow."""
    kind: Literal["replay", "shadow", "targeted", "canary"]
    description: str
    weight_pct: float
    max_looks: int
    alpha: float
    """The share of the release's alpha this stage may spend over all its looks and metrics."""

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "step": self.step,
            "kind": self.kind,
            "description": self.description,
            "weight_pct": self.weight_pct,
            "max_looks": self.max_looks,
            "alpha": self.alpha,
        }


DEFAULT_POLICY = Policy()


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_policy(text: str, source: str = "policy", *, allow_empty: bool = True) -> Policy:
    """Read a YAML policy; a :class:`ConfigError` that names the field when it is wrong.

    An empty text (nothing, or only comments) is the defaults, unless ``allow_empty`` is false:
    a person who sets a policy from an empty file has almost surely given the wrong file, and
    ``{}`` says "the defaults" on purpose."""
    try:
        data = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {yaml_error_line(exc)}") from None
    if data is None:
        if not allow_empty:
            raise ConfigError(
                f"{source} is empty; nothing was changed (to reset a policy to the defaults, "
                "set it from a file that holds `{}`)"
            )
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping of fields, got {type(data).__name__}")
    data.pop("model", None)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"{source} is invalid: {problems}") from None


def policy_from_dict(data: dict[str, Any]) -> Policy:
    """A policy stored as JSON on a rollout (a snapshot taken when it started)."""
    return Policy.model_validate(data)


def load_policy(store: Store, model: str) -> Policy:
    """The model's stored policy, or the defaults when it has none."""
    with store.session(readonly=True) as s:
        row = s.get(DeployPolicyRecord, model)
        text = row.text if row is not None else None
    if text is None:
        return DEFAULT_POLICY
    return parse_policy(text, f"the stored policy of {model}")


def policy_text(store: Store, model: str) -> str | None:
    with store.session(readonly=True) as s:
        row = s.get(DeployPolicyRecord, model)
        return row.text if row is not None else None


def set_policy(
    store: Store,
    model: str,
    text: str,
    *,
    actor: str,
    clock: Clock = SYSTEM_CLOCK,
    source: str | None = None,
) -> Policy:
    """Validate and store a model's policy; a broken or empty file changes nothing."""
    policy = parse_policy(text, source or f"policy for {model}", allow_empty=False)
    now = clock.time()
    with store.session() as s:
        row = s.get(DeployPolicyRecord, model, with_for_update=True)
        if row is None:
            s.add(DeployPolicyRecord(model=model, text=text, updated_at=now, updated_by=actor))
        else:
            row.text, row.updated_at, row.updated_by = text, now, actor
        audit.record(
            s,
            actor=actor,
            action="policy.set",
            subject=("model", model),
            details={"policy": policy.model_dump(mode="json")},
            now=now,
        )
    return policy
