"""Who is acting: an authenticated identity and what its roles let it do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shipyard.errors import Forbidden
from shipyard.identity.roles import ACTIONS, Binding, roles_allowing

if TYPE_CHECKING:  # a name for two strings: the audit's tables are no business of a principal
    from shipyard.audit.chain import Mode

EMBEDDED: Mode = "embedded"
SERVER: Mode = "server"


@dataclass(frozen=True)
class Principal:
    """An identity as the control plane knows it.

    ``mode`` is ``server`` when the control plane authenticated it (``via`` says how: ``token
    ID`` or ``oidc``) and ``embedded`` for the CLI working on the database directly, where the
    name is ``SHIPYARD_USER``/``--as`` and nothing checks it (whoever holds the database holds
    everything, so the embedded principal may do anything; the audit says which mode acted).
    """

    name: str
    kind: str = "user"
    mode: Mode = "server"
    via: str = ""
    bindings: tuple[Binding, ...] = field(default=())
    expires_at: float | None = field(default=None, compare=False)
    """When the credential it was authenticated with expires (epoch s; None: never or unknown)."""

    @classmethod
    def embedded(cls, name: str) -> Principal:
        return cls(name=name, mode=EMBEDDED, via=EMBEDDED, bindings=(Binding("admin", "*"),))

    def allows(self, action: str, subject: str | None = None) -> bool:
        return any(b.covers(action, subject) for b in self.bindings)

    def require(self, action: str, subject: str | None = None) -> None:
        """Raise :class:`~shipyard.errors.Forbidden`, naming what is missing, unless allowed."""
        if self.allows(action, subject):
            return
        over = f" over {subject}" if subject else ""
        needs = " or ".join(roles_allowing(action))
        scope = subject or "*"
        where = f"{subject} or *" if subject else "*"
        raise Forbidden(
            f"{self.name} may not {ACTIONS.get(action, action)}{over}: that needs the role "
            f"{needs} over {where}; an admin can grant it with "
            f"`shipyard roles bind {self.name} {roles_allowing(action)[0]} --scope {scope}`"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "mode": self.mode,
            "via": self.via,
            "roles": [{"role": b.role, "scope": b.scope} for b in self.bindings],
        }
