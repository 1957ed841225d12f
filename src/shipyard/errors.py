"""Every error Shipyard raises on purpose.

The CLI turns each into one clear line and a non-zero exit code; the HTTP faces turn each into
one JSON error body. A traceback reaching a user is a bug.

::

    ShipyardError
    ├── ConfigError(ValueError)            a broken setting, shipyard.toml or policy file
    ├── NotFound(LookupError)              a run, pipeline, model, pool… that does not exist
    ├── InvalidInput(ValueError)           a bad parameter, request body or data file
    │   └── SchemaViolation                data that does not match its schema/signature
    ├── StoreError(RuntimeError)           the metadata database is unreachable or too new
    │   ├── StoreBusy                      other writers held it past the retry bound (503)
    │   └── StoreDamaged                   the database file is corrupt or truncated
    ├── ArtifactError(RuntimeError)
    │   └── ArtifactTampered               content does not hash to its address
    ├── PipelineError(RuntimeError)
    │   ├── PipelineDefinitionError        a malformed DAG, a missing step input
    │   └── StepFailed                     a step ended badly (exception, signal, exit code)
    ├── QuotaError(RuntimeError)
    │   └── QuotaExceeded                  a request that can never fit its pool
    └── DeployError(RuntimeError)
        └── ApprovalRequired               a transition that lacks the approvals its policy asks
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ShipyardError(Exception):
    """Root of every error Shipyard raises on purpose."""

    exit_code = 1


class ConfigError(ShipyardError, ValueError):
    """A setting, a configuration file or a policy file is broken."""


class NotFound(ShipyardError, LookupError):
    """A named thing (run, pipeline, model, pool, rollout…) does not exist.

    Every unknown name reads the same: ``no model named 'cancr'; did you mean 'cancer'?`` —
    the suggestions are the ``candidates`` closest to the name (:func:`difflib.get_close_matches`).
    """

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


class SchemaViolation(InvalidInput):
    """Data that does not match its schema or a model's signature."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class StoreError(ShipyardError, RuntimeError):
    """The metadata database cannot be used (unreachable, or made by a newer Shipyard)."""


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
    """A pipeline file or DAG is malformed."""


class StepFailed(PipelineError):
    """A step ended badly: an exception, a signal, a non-zero exit, a timeout or a quota kill."""

    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"step {step!r} failed: {reason}")


class QuotaError(ShipyardError, RuntimeError):
    """Quota cannot be granted or managed as asked."""


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


class DeployError(ShipyardError, RuntimeError):
    """A deployment action cannot be carried out."""


class ApprovalRequired(DeployError):
    """A transition that lacks the approvals its policy demands."""
