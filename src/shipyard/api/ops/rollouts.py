"""``/rollouts`` and a model's ``/deployments``, ``/rollback`` and ``/policy``: deploy a model
version, approve it, steer the rollout, roll production back, read and set the policy.

Who may: reading needs any role; approving needs ``approver`` over ``model:NAME`` (or ``*``);
deploying, pausing, resuming, promoting, aborting, rolling back and setting a policy need
``deployer`` over ``model:NAME`` (or ``*``). Four-eyes is on top of the roles: the approver is
the authenticated identity and nobody else (no field of a request names one), and none of the
version's authors (:func:`shipyard.deploy.authorship.version_authors`) may approve it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from shipyard.api.operations import (
    Context,
    PageQuery,
    Params,
    decode_cursor,
    encode_cursor,
    operation,
    page,
)
from shipyard.errors import ConfigError, InvalidInput
from shipyard.identity import APPROVE, DEPLOY, READ
from shipyard.identity.roles import ROLES
from shipyard.statuses import ROLLOUT_MOVING, RolloutState

MODEL = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$"
STATE = Literal[
    "waiting_for_approvals", "staging", "canary", "paused", "production", "rolled_back", "failed"
]
LEADER_LEASE = "daemon"
"""The row of ``leader_leases`` the control loop holds (``shipyard.daemon.LEADER``)."""


class RolloutsQuery(PageQuery):
    model: str | None = Field(None, pattern=MODEL, description="Only this model's rollouts.")
    state: list[STATE] = Field(
        default_factory=list, max_length=7, description="Only rollouts in these states."
    )


class DeployBody(Params):
    model: str = Field(..., pattern=MODEL, description="The registered model.")
    version: int = Field(..., ge=1, le=2**31 - 1, description="The version to roll out.")


class ApproveBody(Params):
    purpose: Literal["start", "speedup"] = Field(
        "start", description="`start` the rollout, or `speedup` a canary step (then promote)."
    )


class ReasonBody(Params):
    reason: str = Field("", max_length=1000, description="Why (kept in the audit trail).")


class RollbackBody(ReasonBody):
    to_version: int | None = Field(
        None,
        ge=1,
        le=2**31 - 1,
        description="Put this version back (default: the last one healthy in production).",
    )


class HistoryQuery(Params):
    limit: int = Field(
        200, ge=1, le=1000, description="At most this many of the latest rollouts and spans."
    )


class PolicyBody(Params):
    text: str = Field(..., max_length=100_000, description="The policy, as YAML.")
    source: str | None = Field(None, max_length=500, description="Where it came from (a file).")


# -- helpers ---------------------------------------------------------------------------------


def _may_at_all(ctx: Context, action: str) -> None:
    """Refuse at once a principal none of whose roles allows ``action`` on anything, before a
    lookup could tell it whether a rollout exists."""
    if not any(action in ROLES.get(b.role, ()) for b in ctx.principal.bindings):
        ctx.require(action)


def _rollout_model(ctx: Context, rollout_id: str, action: str) -> str:
    """The model of ``rollout_id``, once ``ctx`` may do ``action`` over it."""
    from shipyard.deploy.rollout import get_rollout

    _may_at_all(ctx, action)
    model = get_rollout(ctx.ws.store, _rollout_id(rollout_id)).model
    ctx.require(action, f"model:{model}")
    return model


def _rollout_id(text: str) -> str:
    if not text.isalnum() or len(text) > 32:
        from shipyard.errors import NotFound

        raise NotFound("rollout", text, "see `shipyard deployments history MODEL`")
    return text


def _require_model(ctx: Context, model: str) -> None:
    """:class:`~shipyard.errors.NotFound`, naming the closest models, unless ``model`` exists."""
    from shipyard.registry import require_model_in

    with ctx.ws.store.session(readonly=True) as s:
        require_model_in(s, model)


def daemon_leads(ctx: Context) -> bool:
    """Whether a control loop holds the leader lease now (what
    :func:`shipyard.daemon.current_leader` reads; the daemon is a face beside this one)."""
    from shipyard.store.alerting import LeaderLease

    with ctx.ws.store.session(readonly=True) as s:
        row = s.get(LeaderLease, LEADER_LEASE)
        return row is not None and row.expires_at > ctx.now


def _out(ctx: Context, view: Any, *, full: bool = False) -> dict[str, Any]:
    """A rollout as every operation answers it: the view, where it stands under its policy,
    what it waits for and whether a control loop is running to move it; ``full`` adds the
    diagnosis of a failed canary."""
    from shipyard.deploy.rollout import progress_of

    data: dict[str, Any] = view.to_json()
    data.update(progress_of(ctx.ws.store, view.id, ctx.now))
    moving = view.state in ROLLOUT_MOVING
    leads = daemon_leads(ctx) if moving else None
    data["daemon_leads"] = leads
    if moving and not leads and view.state != RolloutState.WAITING:
        data["waits_for"].append("a control loop: no `shipyard daemon` is running")
    if full:
        from shipyard.deploy.diagnosis import diagnosis_of

        with ctx.ws.store.session(readonly=True) as s:
            data["diagnosis"] = diagnosis_of(s, view.id)
    return data


# -- reading ---------------------------------------------------------------------------------


@operation("GET", "/rollouts", name="rollouts.list")
def list_rollouts(ctx: Context, *, query: RolloutsQuery) -> dict[str, Any]:
    """Rollouts, newest first; filter by model and state.

    Each item is the rollout without its approvals and verdicts (`GET /rollouts/{id}` has
    them). Paged by a keyset cursor: a deep page costs what the first one does."""
    from sqlalchemy import select

    from shipyard.deploy.rollout import list_rollouts as listing
    from shipyard.errors import NotFound
    from shipyard.store.registry import RegisteredModel

    ctx.require(READ)
    after = decode_cursor("rollouts.list", query.cursor, float, str)
    if query.model is not None:
        with ctx.ws.store.session(readonly=True) as s:
            if s.get(RegisteredModel, query.model) is None:
                known = list(s.scalars(select(RegisteredModel.name)))
                raise NotFound("model", query.model, candidates=known)
    found = listing(
        ctx.ws.store,
        model=query.model,
        states=query.state,
        limit=query.limit,
        after=after,
    )
    nxt = encode_cursor("rollouts.list", *found.next) if found.next is not None else None
    return page([v.summary() for v in found.rollouts], nxt)


@operation("GET", "/rollouts/{rollout_id}", name="rollouts.get")
def get_rollout(ctx: Context, *, rollout_id: str) -> dict[str, Any]:
    """One rollout: state, canary step, approvals, each look's verdicts, what it waits for, and
    the diagnosis when its canary failed."""
    from shipyard.deploy.rollout import get_rollout as get

    ctx.require(READ)
    return _out(ctx, get(ctx.ws.store, _rollout_id(rollout_id)), full=True)


@operation("GET", "/models/{model}/deployments", name="rollouts.history")
def history(ctx: Context, *, model: str, query: HistoryQuery) -> dict[str, Any]:
    """Which version of the model was in production when, and its rollouts (oldest first)."""
    from sqlalchemy import select

    from shipyard.deploy.rollout import list_rollouts as listing
    from shipyard.store.deploy import ProductionRecord

    ctx.require(READ)
    _require_model(ctx, model)
    with ctx.ws.store.session(readonly=True) as s:
        spans = list(
            s.scalars(
                select(ProductionRecord)
                .where(ProductionRecord.model == model)
                .order_by(ProductionRecord.since.desc(), ProductionRecord.id.desc())
                .limit(query.limit + 1)
            )
        )
    found = listing(ctx.ws.store, model=model, limit=query.limit, details=True)
    return {
        "production": [
            {
                "version": p.version,
                "since": p.since,
                "until": p.until,
                "via": p.via,
                "rollout": p.rollout_id,
                "actor": p.actor,
                "reason": p.reason,
            }
            for p in reversed(spans[: query.limit])
        ],
        "rollouts": [v.to_json() for v in reversed(found.rollouts)],
        "truncated": len(spans) > query.limit or found.next is not None,
    }


@operation("GET", "/models/{model}/policy", name="rollouts.policy")
def get_policy(ctx: Context, *, model: str) -> dict[str, Any]:
    """The model's deployment policy with every default filled in (`custom`: whether one was
    set, else these are the defaults)."""
    from shipyard.deploy.policy import load_policy, policy_text

    ctx.require(READ)
    custom = policy_text(ctx.ws.store, model) is not None
    if not custom:
        _require_model(ctx, model)
    return {
        "model": model,
        "custom": custom,
        "policy": load_policy(ctx.ws.store, model).model_dump(mode="json"),
    }


# -- writing ---------------------------------------------------------------------------------


@operation("PUT", "/models/{model}/policy", name="rollouts.policy.set")
def set_policy(ctx: Context, *, model: str, body: PolicyBody) -> dict[str, Any]:
    """Validate a policy (YAML) and make it the model's (deployer over the model).

    A broken or empty policy is refused and changes nothing; `{}` sets the defaults on purpose.
    Rollouts already started keep the policy they started with."""
    from shipyard.deploy.policy import set_policy as store_policy

    ctx.require(DEPLOY, f"model:{model}")
    _require_model(ctx, model)
    try:
        policy = store_policy(
            ctx.ws.store, model, body.text, actor=ctx.actor, clock=ctx.ws.clock, source=body.source
        )
    except ConfigError as exc:  # the caller's document, not the server's configuration: a 400
        raise InvalidInput(str(exc)) from None
    return {"model": model, "custom": True, "policy": policy.model_dump(mode="json")}


@operation("POST", "/rollouts", name="rollouts.deploy")
def deploy(ctx: Context, *, body: DeployBody) -> dict[str, Any]:
    """Start a rollout of a model version under the model's policy (deployer over the model):
    approvals → staging, replay and shadow (when the policy has them) → canary steps →
    production.

    The version's authors (who registered it, and who started the run that trained it) are
    recorded on the rollout: four-eyes keeps each of them from approving it."""
    from shipyard.deploy.authorship import version_authors
    from shipyard.deploy.rollout import start_rollout
    from shipyard.registry import Registry

    ctx.require(DEPLOY, f"model:{body.model}")
    registry = Registry(ctx.ws.store, ctx.ws.artifacts, ctx.ws.clock, ctx.actor)
    authors = version_authors(registry, body.model, body.version)
    view = start_rollout(
        ctx.ws.store, body.model, body.version, actor=ctx.actor, author=authors, clock=ctx.ws.clock
    )
    return _out(ctx, view)


@operation("POST", "/rollouts/{rollout_id}/approve", name="rollouts.approve")
def approve(ctx: Context, *, rollout_id: str, body: ApproveBody) -> dict[str, Any]:
    """Approve a rollout as yourself, to start it or to speed a canary step up (approver over
    the model; never an author of the version, whatever your roles)."""
    from shipyard.deploy.rollout import approve as approve_rollout

    _rollout_model(ctx, rollout_id, APPROVE)
    view = approve_rollout(
        ctx.ws.store, rollout_id, actor=ctx.actor, purpose=body.purpose, clock=ctx.ws.clock
    )
    return _out(ctx, view)


@operation("POST", "/rollouts/{rollout_id}/pause", name="rollouts.pause")
def pause(ctx: Context, *, rollout_id: str, body: ReasonBody) -> dict[str, Any]:
    """Hold a rollout where it is; its traffic stays as it is (deployer over the model)."""
    from shipyard.deploy.rollout import pause as pause_rollout

    _rollout_model(ctx, rollout_id, DEPLOY)
    view = pause_rollout(
        ctx.ws.store, rollout_id, actor=ctx.actor, reason=body.reason, clock=ctx.ws.clock
    )
    return _out(ctx, view)


@operation("POST", "/rollouts/{rollout_id}/resume", name="rollouts.resume")
def resume(ctx: Context, *, rollout_id: str) -> dict[str, Any]:
    """Continue a paused rollout from where it was (deployer over the model)."""
    from shipyard.deploy.rollout import resume as resume_rollout

    _rollout_model(ctx, rollout_id, DEPLOY)
    return _out(ctx, resume_rollout(ctx.ws.store, rollout_id, actor=ctx.actor, clock=ctx.ws.clock))


@operation("POST", "/rollouts/{rollout_id}/promote", name="rollouts.promote")
def promote(ctx: Context, *, rollout_id: str) -> dict[str, Any]:
    """Skip the rest of the current canary step (deployer over the model); needs the policy's
    speed-up approvals, which it uses up."""
    from shipyard.deploy.rollout import promote as promote_rollout

    _rollout_model(ctx, rollout_id, DEPLOY)
    return _out(ctx, promote_rollout(ctx.ws.store, rollout_id, actor=ctx.actor, clock=ctx.ws.clock))


@operation("POST", "/rollouts/{rollout_id}/abort", name="rollouts.abort")
def abort(ctx: Context, *, rollout_id: str, body: ReasonBody) -> dict[str, Any]:
    """Stop a rollout now: its traffic goes back to the stable version (deployer over the
    model)."""
    from shipyard.deploy.rollout import abort as abort_rollout

    _rollout_model(ctx, rollout_id, DEPLOY)
    view = abort_rollout(
        ctx.ws.store, rollout_id, actor=ctx.actor, reason=body.reason, clock=ctx.ws.clock
    )
    return _out(ctx, view)


@operation("POST", "/models/{model}/rollback", name="rollouts.rollback")
def rollback(ctx: Context, *, model: str, body: RollbackBody) -> dict[str, Any]:
    """Put the model's last version that was healthy in production (or `to_version`) back in
    production at once (deployer over the model).

    A rollout in progress ends rolled back. A named version that was not healthy is put back
    all the same, with a `warning`. The model's default alias follows, so model servers that
    route by it switch within their refresh (0.5 s by default)."""
    from shipyard.deploy.loop import sync_aliases
    from shipyard.deploy.rollback import rollback as roll_back
    from shipyard.errors import NotFound
    from shipyard.registry import Registry

    ctx.require(DEPLOY, f"model:{model}")
    _require_model(ctx, model)
    registry = Registry(ctx.ws.store, ctx.ws.artifacts, ctx.ws.clock, ctx.actor)

    def exists(name: str, v: int) -> bool:
        try:
            registry.get(name, v)
        except NotFound:
            return False
        return True

    result = roll_back(
        ctx.ws.store,
        model,
        actor=ctx.actor,
        to_version=body.to_version,
        reason=body.reason,
        clock=ctx.ws.clock,
        version_exists=exists,
    )
    sync_aliases(ctx.ws, ctx.ws.clock, actor=ctx.actor, model=model)
    return result
