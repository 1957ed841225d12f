"""Receivers: where notifications go, and what a delivery attempt came to.

Every receiver takes the same notification (Alertmanager's webhook payload, version "4") and
answers a :class:`Delivery`: delivered, failed for good (an HTTP 4xx, an SMTP 5xx: retrying
cannot help), or failed for now (HTTP 5xx, 408, 429, a timeout, a refused connection, an SMTP
4xx: retry with backoff).

* ``webhook`` — POSTs the payload as-is: any existing Alertmanager webhook receiver works.
* ``slack`` — a Slack-compatible incoming webhook (``{"text": …}``; Mattermost, Rocket.Chat…).
* ``email`` — plain-text mail over SMTP (``smtplib``).
* ``alertmanager`` — ``POST /api/v2/alerts`` of a Prometheus Alertmanager.
* ``log`` — one JSON line per notification appended to a local file.

**A deadline on every attempt.** The receiver's ``timeout_s`` bounds each network operation
(httpx's and smtplib's timeouts are per operation, so a receiver that trickles bytes could
stretch them); :func:`send` also bounds the whole attempt: it runs in a thread of its own and is
answered "no answer within …" (retried) once ``timeout_s + DEADLINE_GRACE_S`` has passed. The
abandoned attempt ends at its next per-operation timeout; should it still reach the receiver,
the retry carries the same idempotency key (at-least-once).
"""

from __future__ import annotations

import json
import smtplib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import httpx

ReceiverType = Literal["webhook", "slack", "email", "alertmanager", "log"]
RETRYABLE_HTTP = {408, 425, 429}
DEADLINE_GRACE_S = 0.5
_CLIENT: httpx.Client | None = None


def _client() -> httpx.Client:
    """One pooled client per process: a new one per request costs ~50 ms (its TLS context)."""
    global _CLIENT
    if _CLIENT is None:
        _CLIENT = httpx.Client()
    return _CLIENT


@dataclass(frozen=True)
class Delivery:
    ok: bool
    retry: bool
    detail: str


@dataclass(frozen=True)
class Receiver:
    name: str
    type: ReceiverType
    url: str = ""
    path: str = ""
    timeout_s: float = 5.0
    headers: Mapping[str, str] = field(default_factory=dict)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    email_from: str = "shipyard@localhost"
    email_to: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.type == "log":
            return self.path
        if self.type == "email":
            return f"{', '.join(self.email_to)} via {self.smtp_host}:{self.smtp_port}"
        return self.url


def send(receiver: Receiver, payload: Mapping[str, Any], idempotency_key: str) -> Delivery:
    """One delivery attempt, over within ``receiver.timeout_s + DEADLINE_GRACE_S``; never raises
    for a receiver's failure."""
    answers: list[Delivery] = []

    def attempt() -> None:
        try:
            answers.append(_attempt(receiver, payload, idempotency_key))
        except Exception as exc:  # a bug in a receiver's body must not kill the sender
            answers.append(Delivery(False, True, f"{type(exc).__name__}: {exc}"))

    worker = threading.Thread(target=attempt, name=f"send-{receiver.name}", daemon=True)
    worker.start()
    worker.join(receiver.timeout_s + DEADLINE_GRACE_S)
    if answers:
        return answers[0]
    return Delivery(False, True, f"timed out: no answer within {receiver.timeout_s:g}s")


def _attempt(receiver: Receiver, payload: Mapping[str, Any], idempotency_key: str) -> Delivery:
    if receiver.type == "log":
        return _to_log(receiver, payload)
    if receiver.type == "email":
        return _to_email(receiver, payload)
    if receiver.type == "slack":
        body: Any = {"text": slack_text(payload)}
        url = receiver.url
    elif receiver.type == "alertmanager":
        body = alertmanager_alerts(payload)
        url = receiver.url.rstrip("/") + "/api/v2/alerts"
    else:
        body = payload
        url = receiver.url
    headers = {"Idempotency-Key": idempotency_key, **receiver.headers}
    try:
        response = _client().post(url, json=body, headers=headers, timeout=receiver.timeout_s)
    except httpx.TimeoutException:
        return Delivery(False, True, f"timed out after {receiver.timeout_s:g}s")
    except httpx.HTTPError as exc:
        return Delivery(False, True, f"cannot reach {url}: {exc}")
    code = response.status_code
    if 200 <= code < 300:
        return Delivery(True, False, f"HTTP {code}")
    detail = f"HTTP {code}: {response.text[:200]}"
    return Delivery(False, code >= 500 or code in RETRYABLE_HTTP, detail)


def slack_text(payload: Mapping[str, Any]) -> str:
    status = str(payload.get("status", "firing")).upper()
    lines = [f"[{status}] {payload.get('groupKey', '')}"]
    for alert in payload.get("alerts", []):
        notes = alert.get("annotations", {})
        summary = notes.get("summary") or alert.get("labels", {}).get("alertname", "alert")
        lines.append(f"• {alert.get('status')}: {summary}")
        if notes.get("runbook_url"):
            lines.append(f"  runbook: {notes['runbook_url']}")
    return "\n".join(lines)


def alertmanager_alerts(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The v2 API's body: ``[{labels, annotations, startsAt, endsAt, generatorURL}]``.

    A firing alert is sent without ``endsAt``, so Alertmanager keeps it for its
    ``resolve_timeout`` (5 min by default); route it with a ``repeat_interval`` below that.
    """
    alerts = []
    for alert in payload.get("alerts", []):
        body = {
            "labels": alert["labels"],
            "annotations": alert.get("annotations", {}),
            "startsAt": alert["startsAt"],
            "generatorURL": alert.get("generatorURL", ""),
        }
        if alert.get("status") == "resolved":
            body["endsAt"] = alert["endsAt"]
        alerts.append(body)
    return alerts


def _to_log(receiver: Receiver, payload: Mapping[str, Any]) -> Delivery:
    try:
        path = Path(receiver.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(payload, sort_keys=True) + "\n")
    except OSError as exc:
        return Delivery(False, True, f"cannot write {receiver.path}: {exc}")
    return Delivery(True, False, f"appended to {receiver.path}")


def _to_email(receiver: Receiver, payload: Mapping[str, Any]) -> Delivery:
    message = EmailMessage()
    message["From"] = receiver.email_from
    message["To"] = ", ".join(receiver.email_to)
    message["Subject"] = slack_text(payload).splitlines()[0]
    message.set_content(slack_text(payload) + "\n\n" + json.dumps(payload, indent=2))
    try:
        with smtplib.SMTP(receiver.smtp_host, receiver.smtp_port, timeout=receiver.timeout_s) as s:
            s.send_message(message)
    except smtplib.SMTPResponseException as exc:
        # SMTP reverses HTTP: 4xx is transient, 5xx permanent (RFC 5321 §4.2.1).
        return Delivery(False, 400 <= exc.smtp_code < 500, f"SMTP {exc.smtp_code}: {exc}")
    except smtplib.SMTPRecipientsRefused as exc:
        return Delivery(False, False, f"recipients refused: {exc.recipients}")
    except (TimeoutError, OSError, smtplib.SMTPException) as exc:
        return Delivery(False, True, f"cannot reach {receiver.smtp_host}: {exc}")
    return Delivery(True, False, f"mailed {', '.join(receiver.email_to)}")
