"""Every error Shipyard raises on purpose, and what each one means to a client.

The CLI turns each into one clear line on stderr and the class's exit code
(``shipyard.cli.Group.invoke``); the HTTP faces turn each into one JSON error body with the
class's HTTP status (``shipyard.serving.app.HTTPError.of``, the daemon's ``/metrics``). Both read
the class attributes :attr:`ShipyardError.http_status` and :attr:`ShipyardError.exit_code`, never
the message text. A traceback reaching a user is a bug.

::

    class                               HTTP exit  raised when
    ShipyardError                       500    1  (root) an error with no more precise meaning
    ├── ConfigError(ValueError)         500    1  a broken setting, shipyard.toml or policy file
    ├── NotFound(LookupError)           404    1  a run, pipeline, model, pool… that is not there
    ├── InvalidInput(ValueError)        400    1  a bad parameter, request body or data file
    │   ├── SchemaViolation             400    1  data that does not match its schema/signature
    │   │   └── RequestTooLarge         413    1  a request over its model's cost bound
    │   └── UnsupportedMediaType        415    1  a body neither JSON nor CSV
    ├── StoreError(RuntimeError)        503    1  the metadata database cannot be used
    │   ├── StoreBusy                   503    1  other writers held it past the retry bound
    │   └── StoreDamaged                503    1  the database file is corrupt or truncated
    ├── ArtifactError(RuntimeError)     500    1  an artifact cannot be written or read
    │   └── ArtifactTampered            500    1  content does not hash to its address
    ├── PipelineError(RuntimeError)     500    1  (base) a pipeline cannot be built or run
    │   └── PipelineDefinitionError     400    1  a malformed pipeline file, DAG or step option
    ├── QuotaError(RuntimeError)        409    1  a lease lost, expired or waited for in vain
    │   ├── QuotaExceeded               409    1  a request that can never fit its pool
    │   ├── QueueFull                   409    1  a pipeline has its limit of runs queued
    │   └── LeasePreempted              409    1  a lease taken back; its holder stops by then
    ├── DeployError(RuntimeError)       409    1  a rollout action its state or policy refuses
    │   └── ApprovalRequired            409    1  a transition that lacks the approvals it needs
    ├── Overloaded(RuntimeError)        503    1  every slot of a server's pool is taken
    ├── Unauthenticated(PermissionError) 401   4  no valid credential (token or OIDC bearer)
    ├── Forbidden(PermissionError)      403    4  the identity's roles do not allow the action
    └── TooManyAttempts(RuntimeError)   429    4  failed sign-ins past the limit, for a while

A subclass inherits its parent's status and exit code unless it says otherwise; a 503 goes out
with ``Retry-After`` (``retry_after_s`` of :class:`StoreBusy` and :class:`Overloaded`, else 1 s),
and so does a 429 (:class:`TooManyAttempts`).
A 500 is the server's own fault: ``ConfigError`` there is the server's configuration (a file a
client sends is :class:`InvalidInput`). ``tests/test_errors.py`` checks this drawing against the
classes.

Exit codes of ``shipyard``: 0 done; 1 an error above, as one ``error: …`` line (and a run that
failed, a quota plan that does not fit, a receiver that refused a test); 2 a command line Click
cannot parse; 3 a verdict the command was asked to enforce (``drift --fail-on-drift``, ``schema
validate --fail-on-anomaly``, a validation gate that refuses); 4 the control plane refused who
you are or what you may do (401, 403, 429); 130 interrupted. Every error is 1,
as the README and scripts read it; a class that needs a code of its own sets ``exit_code``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import ClassVar


class ShipyardError(Exception):
    """Root of every error Shipyard raises on purpose.

    ``http_status`` is the status an HTTP face answers it with, ``exit_code`` the code the CLI
    exits with; every subclass inherits both unless it sets its own (the table above)."""

    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1


class ConfigError(ShipyardError, ValueError):
    """A setting, a configuration file or a policy file is broken."""


class NotFound(ShipyardError, LookupError):
    """A named thing (run, pipeline, model, pool, rollout…) does not exist.

    Every unknown name reads the same: ``no model named 'cancr'; did you mean 'cancer'?`` —
    the suggestions are the ``candidates`` closest to the name (:func:`difflib.get_close_matches`).
    """

    http_status = 404

    def __init__(
        self, kind: str, name: object, hint: str = "", candidates: Iterable[object] = ()
    ) -> None:
        self.kind = kind
        self.name = name
        known = sorted({str(c) for c in candidates})
        self.suggestions = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
        message = f"no {kind} named {str(name)!r}"
        if self.suggestions:
            message += f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?"
        super().__init__(f"{message}; {hint}" if hint else message)


class InvalidInput(ShipyardError, ValueError):
    """A parameter, request body or data file that cannot be used as given."""

    http_status = 400


class SchemaViolation(InvalidInput):
    """Data that does not match its schema or a model's signature."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class RequestTooLarge(SchemaViolation):
    """A request over one of its model's cost bounds (:mod:`shipyard.serving.limits`); ``limit``
    names the bound, e.g. ``max_rows=100000``."""

    http_status = 413

    def __init__(self, message: str, field: str, limit: str) -> None:
        self.limit = limit
        super().__init__(
            f"{message} (limit {limit}; the model's 'serving.limits' tag sets it)", field=field
        )


class UnsupportedMediaType(InvalidInput):
    """A request body of a content type the protocol does not read (MLflow scoring: JSON or
    CSV)."""

    http_status = 415


class StoreError(ShipyardError, RuntimeError):
    """The metadata database cannot be used (unreachable, or made by a newer Shipyard)."""

    http_status = 503


class StoreBusy(StoreError):
    """Other writers held the database's write lock for longer than the retry bound.

    Nothing was changed; the same request may succeed after ``retry_after_s`` (HTTP: 503 with
    ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class StoreDamaged(StoreError):
    """The database file is corrupt or truncated; ``path`` is the file, the message says how to
    recover (a back-up, ``sqlite3 FILE .recover``, or a fresh workspace)."""

    def __init__(self, message: str, path: str) -> None:
        self.path = path
        super().__init__(message)


class ArtifactError(ShipyardError, RuntimeError):
    """An artifact cannot be written or read."""


class ArtifactTampered(ArtifactError):
    """An artifact's content no longer hashes to its address."""

    def __init__(self, digest: str, actual: str, location: str) -> None:
        self.digest = digest
        self.actual = actual
        self.location = location
        super().__init__(
            f"artifact {digest[:12]} at {location} is corrupted or tampered with: "
            f"its content hashes to {actual[:12]}; refusing to use it"
        )


class PipelineError(ShipyardError, RuntimeError):
    """A pipeline cannot be built or run."""


class PipelineDefinitionError(PipelineError):
    """A pipeline file or DAG is malformed (or a step's or monitor's options)."""

    http_status = 400


class QuotaError(ShipyardError, RuntimeError):
    """Quota cannot be granted or managed as asked."""

    http_status = 409


class QuotaExceeded(QuotaError):
    """A request that can never fit: it asks more than the pool (or the pipeline's cap) holds."""

    def __init__(
        self, pool: str, resource: str, requested: float, available: float, why: str = ""
    ) -> None:
        self.pool = pool
        self.resource = resource
        self.requested = requested
        self.available = available
        tail = f" ({why})" if why else ""
        super().__init__(
            f"pool {pool!r} cannot ever grant {resource}={requested:g}: "
            f"at most {available:g} is available{tail}"
        )


class QueueFull(QuotaError):
    """A pipeline already has as many runs waiting in a pool's queue as the pool allows."""

    def __init__(self, pool: str, pipeline: str, queued: int, limit: int) -> None:
        self.pool, self.pipeline, self.queued, self.limit = pool, pipeline, queued, limit
        super().__init__(
            f"pool {pool!r} refuses another run of pipeline {pipeline!r}: {queued} of its runs "
            f"already wait in the queue (limit {limit}, max_queued_runs); retry once one starts"
        )


class LeasePreempted(QuotaError):
    """A held lease is being taken back (quota preemption): its holder must stop its work by
    ``stop_by`` (wall-clock seconds), SIGTERM first, and give the lease back."""

    def __init__(self, lease_id: str, pool: str, stop_by: float, why: str) -> None:
        self.lease_id, self.pool, self.stop_by, self.why = lease_id, pool, stop_by, why
        super().__init__(f"lease {lease_id} in pool {pool!r} is preempted: {why}")


class DeployError(ShipyardError, RuntimeError):
    """A deployment action cannot be carried out."""

    http_status = 409


class ApprovalRequired(DeployError):
    """A transition that lacks the approvals its policy demands."""


class Overloaded(ShipyardError, RuntimeError):
    """Every slot of a pool is taken: the request is refused rather than queued
    (:class:`shipyard.serving.execution.BoundedPool`)."""

    http_status = 503

    def __init__(self, what: str, capacity: int, retry_after_s: int = 1) -> None:
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        super().__init__(
            f"the server is busy: {capacity} {what} are already running or waiting; "
            f"retry in {retry_after_s} s"
        )


class Unauthenticated(ShipyardError, PermissionError):
    """A request to the control plane (or a guarded door of the model server) without a valid
    credential: no token, an unknown, expired or revoked one, or a token of a disabled identity.
    The message never repeats the credential."""

    http_status = 401
    exit_code = 4


class Forbidden(ShipyardError, PermissionError):
    """An authenticated identity whose roles do not allow the action on its subject."""

    http_status = 403
    exit_code = 4


class TooManyAttempts(ShipyardError, RuntimeError):
    """Too many failed sign-ins from one identity or address: refused for a while."""

    http_status = 429
    exit_code = 4

    def __init__(self, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            f"too many failed sign-ins from this identity or address; retry in {retry_after_s} s"
        )
