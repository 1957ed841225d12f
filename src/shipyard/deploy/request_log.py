"""What deploy asks of the model servers' sampled request log before a release replays it:
whether a version has one at all (a policy that replays needs it before a rollout starts).

Light on purpose (no numpy, no scipy): the rollout's start reads it, and the CLI imports that.
The rows themselves are read by :func:`shipyard.serving.records.logged_inputs`."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.store.tables import ArtifactRecord

REQUEST_LOG_KIND = "serving_request_log"
"""The ``kind`` of a request-log artifact's metadata (what the model servers flush)."""


def has_request_log(s: Session, model: str, version: int, since: float) -> bool:
    """Whether a server flushed a request-log file of ``version`` after ``since``."""
    query = select(ArtifactRecord.meta).where(ArtifactRecord.created_at > since)
    for meta in s.scalars(query.order_by(ArtifactRecord.created_at.desc())):
        meta = meta or {}
        if (
            meta.get("kind") == REQUEST_LOG_KIND
            and meta.get("model") == model
            and int(meta.get("version", -1)) == version
        ):
            return True
    return False


def no_log_message(model: str, version: int, since_s: float) -> str:
    """The one clear line when a policy asks for a replay and there is no log to replay."""
    return (
        f"the policy replays the stable version's request log before live traffic "
        f"(canary.replay), but {model}/{version} has no request log from the last "
        f"{since_s:g} s: serve it with request logging on (serving.request_log_sample_rate > 0) "
        f"until it has, or remove canary.replay from the policy"
    )
