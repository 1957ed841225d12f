"""Late labels: ``POST /v2/models/{m}/feedback`` records ground truth by request id.

Body: ``{"request_ids": [...], "labels": [...]}`` (one label, or one list of labels per request
for multi-row requests) or ``{"feedback": [{"request_id": ..., "label": ...}, ...]}``. The labels
are joined later to the predictions logged under the same request ids
(:meth:`shipyard.monitoring.serving.ServingMonitor.quality`). Feedback is not on the prediction
path, so it is written at once, in one transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shipyard.clock import Clock
from shipyard.errors import InvalidInput, NotFound
from shipyard.registry import model_in
from shipyard.serving.limits import DEFAULT_LIMITS, RequestLimits, load_json
from shipyard.store.serving import FeedbackRecord

if TYPE_CHECKING:
    from shipyard.store import Store

MAX_FEEDBACK_ITEMS = 100_000


def parse_feedback(
    body: bytes, limits: RequestLimits = DEFAULT_LIMITS
) -> list[tuple[str, list[Any]]]:
    doc, _ = load_json(body, limits, "feedback")
    if not isinstance(doc, dict):
        raise InvalidInput("feedback must be an object with request_ids and labels")
    if "feedback" in doc:
        items = doc["feedback"]
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and "request_id" in i and "label" in i for i in items
        ):
            raise InvalidInput("'feedback' must be a list of {request_id, label} objects")
        pairs = [(i["request_id"], i["label"]) for i in items]
    else:
        ids, labels = doc.get("request_ids"), doc.get("labels")
        if not isinstance(ids, list) or not isinstance(labels, list):
            raise InvalidInput("feedback needs 'request_ids' and 'labels' lists")
        if len(ids) != len(labels):
            raise InvalidInput(f"{len(ids)} request_ids but {len(labels)} labels")
        pairs = list(zip(ids, labels, strict=True))
    if not pairs:
        raise InvalidInput("feedback holds no labels")
    if len(pairs) > MAX_FEEDBACK_ITEMS:
        raise InvalidInput(f"at most {MAX_FEEDBACK_ITEMS} labels per call")
    out = []
    for rid, label in pairs:
        if not isinstance(rid, str) or not rid or len(rid) > 100:
            raise InvalidInput(
                f"request id {str(rid)[:120]!r} must be a non-empty string (≤ 100 chars)"
            )
        values = label if isinstance(label, list) else [label]
        if not all(isinstance(v, int | float | str | bool) for v in values):
            raise InvalidInput(f"labels of {rid!r} must be numbers or strings")
        out.append((rid, values))
    return out


def record_feedback(
    store: Store, model: str, body: bytes, clock: Clock, limits: RequestLimits = DEFAULT_LIMITS
) -> int:
    """Validate and store the labels; returns how many requests got labels.

    A store that cannot take the write (a locked SQLite file, a database away) raises
    :class:`~shipyard.errors.StoreError`: the server's fault, not the client's."""
    pairs = parse_feedback(body, limits)
    now = clock.time()
    with store.session() as s:
        if model_in(s, model) is None:
            raise NotFound("model", model)
        s.add_all(
            FeedbackRecord(request_id=rid, model=model, labels=labels, ts=now)
            for rid, labels in pairs
        )
    return len(pairs)
