"""Who is acting on the control plane: principals, API tokens, OIDC sign-in, roles.

A base-level service (it imports only the store, the audit and the errors): the control plane
(:mod:`shipyard.api`) authenticates every request through :class:`Authenticator`, and the model
server's guarded doors through the same class.
"""

from __future__ import annotations

from shipyard.identity.principal import EMBEDDED, SERVER, Principal
from shipyard.identity.roles import (
    ACTIONS,
    APPROVE,
    DEPLOY,
    FEEDBACK_WRITE,
    IDENTITY_ADMIN,
    PREDICT,
    QUOTA_ADMIN,
    READ,
    ROLES,
    RUNS_WRITE,
    SILENCES_WRITE,
    Binding,
)

__all__ = [
    "ACTIONS",
    "APPROVE",
    "DEPLOY",
    "EMBEDDED",
    "FEEDBACK_WRITE",
    "IDENTITY_ADMIN",
    "PREDICT",
    "QUOTA_ADMIN",
    "READ",
    "ROLES",
    "RUNS_WRITE",
    "SERVER",
    "SILENCES_WRITE",
    "Binding",
    "Principal",
]
