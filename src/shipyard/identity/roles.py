"""Roles, the actions each allows, and the scopes a binding covers.

A binding gives a principal one role over one scope: ``*`` (everything), ``model:NAME``,
``pool:NAME`` or ``pipeline:NAME``. An action is checked against a subject (``model:digits``);
a binding covers it when its scope is ``*`` or that very subject. Reading is global: any binding
at all lets its holder read every list and page (per-object read restrictions are not modelled).

=============  ==============================================================================
role           allows
=============  ==============================================================================
viewer         read
operator       read; start and cancel runs; create and expire silences; post feedback labels
deployer       read; deploy, pause, resume, promote, abort and roll back; move aliases
approver       read; approve rollouts (four-eyes still applies: never one's own version)
quota-admin    read; apply pools and change quota settings
admin          everything, including tokens for others and role bindings
=============  ==============================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shipyard.errors import InvalidInput

READ = "read"
RUNS_WRITE = "runs.write"
SILENCES_WRITE = "silences.write"
FEEDBACK_WRITE = "feedback.write"
PREDICT = "predict"
DEPLOY = "rollouts.deploy"
APPROVE = "rollouts.approve"
QUOTA_ADMIN = "quota.admin"
IDENTITY_ADMIN = "identity.admin"

ACTIONS: dict[str, str] = {
    # action: what it reads as in a refusal ("may not …")
    READ: "read",
    RUNS_WRITE: "start or cancel runs",
    SILENCES_WRITE: "create or expire silences",
    FEEDBACK_WRITE: "post feedback labels",
    PREDICT: "ask for predictions",
    DEPLOY: "deploy, steer or roll back",
    APPROVE: "approve rollouts",
    QUOTA_ADMIN: "change quota pools",
    IDENTITY_ADMIN: "manage identities, tokens and roles",
}

ROLES: dict[str, frozenset[str]] = {
    "viewer": frozenset({READ, PREDICT}),
    "operator": frozenset({READ, PREDICT, RUNS_WRITE, SILENCES_WRITE, FEEDBACK_WRITE}),
    "deployer": frozenset({READ, PREDICT, DEPLOY}),
    "approver": frozenset({READ, PREDICT, APPROVE}),
    "quota-admin": frozenset({READ, PREDICT, QUOTA_ADMIN}),
    "admin": frozenset(ACTIONS),
}

SCOPE_KINDS = ("model", "pool", "pipeline")
_SCOPE = re.compile(r"^(\*|(model|pool|pipeline):[A-Za-z0-9][A-Za-z0-9_.\-]{0,199})$")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role {role!r}: use one of {', '.join(ROLES)}")
    return role


def check_scope(scope: str) -> str:
    if not _SCOPE.match(scope):
        raise InvalidInput(
            f"scope {scope!r}: use * (everything), model:NAME, pool:NAME or pipeline:NAME"
        )
    return scope


def roles_allowing(action: str) -> list[str]:
    return [role for role, allowed in ROLES.items() if action in allowed]


@dataclass(frozen=True)
class Binding:
    role: str
    scope: str = "*"

    def covers(self, action: str, subject: str | None) -> bool:
        """Whether this binding allows ``action`` on ``subject`` (``model:digits``; ``None``
        for an action on no one object, which only a ``*`` binding covers, reading aside)."""
        if action not in ROLES.get(self.role, ()):
            return False
        if action == READ or self.scope == "*":
            return True
        return subject is not None and self.scope == subject

    def __str__(self) -> str:
        return f"{self.role}@{self.scope}"
