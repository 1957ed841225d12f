"""Alert rules and their evaluation over the store's metric series.

Four kinds, each answering "which label sets are in trouble right now?":

* ``threshold`` — the newest point of each series within ``lookback_s`` compared with a number
  (PromQL ``metric{…} > 0.2``).
* ``absence`` — no point of the selected series for ``lookback_s`` (PromQL
  ``absent_over_time(metric{…}[5m])``): a model that stopped answering. With ``seen_within_s``
  the rule is per series: each series that had points in the last ``seen_within_s`` but none
  in the last ``lookback_s`` is an alert with its own labels (PromQL ``max_over_time(m[1d])
  unless max_over_time(m[10m])``), so one rule watches every model, pool or pipeline that
  stops reporting, and a series that never existed alerts nothing.
* ``burn_rate`` — multi-window, multi-burn-rate SLO alerts (Google SRE workbook, ch. 5
  "Alerting on SLOs", table 5-8): the error ratio ``Δerrors / Δrequests`` over a long and a
  short window, divided by the error budget ``1 − objective``; a pair fires when *both* windows
  exceed its factor, pairs are OR-ed. Factor = budget share × period / long window, e.g.
  0.02 × 720 h / 1 h = 14.4.
* ``forecast`` — time to exhaustion: a least-squares line through the series over
  ``lookback_s`` (as PromQL's ``predict_linear``) reaches ``bound`` within ``horizon_s``.

The state machine that turns these hits into pending/firing/resolved alerts is in
:mod:`shipyard.alerting.state`.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.alerting.matchers import Matcher, match_all
from shipyard.errors import InvalidInput
from shipyard.store.tables import MetricPoint

RuleKind = Literal["threshold", "absence", "burn_rate", "forecast"]
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str | float | int) -> float:
    """``"30s"``, ``"5m"``, ``"4h"``, ``"3d"`` or a number of seconds → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise InvalidInput(f"a duration cannot be negative: {value}")
        return float(value)
    found = _DURATION.match(str(value).strip())
    if not found:
        raise InvalidInput(f"bad duration {value!r}: expected e.g. 30s, 5m, 4h, 3d")
    return float(found.group(1)) * _UNIT_S[found.group(2)]


def format_duration(seconds: float) -> str:
    """Seconds → the largest Prometheus unit that divides them (``3600`` → ``"1h"``)."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_S[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def fingerprint(labels: Mapping[str, Any]) -> str:
    """A stable 16-hex-digit hash of a label set (sha256 of its canonical JSON)."""
    canonical = json.dumps({k: str(v) for k, v in labels.items()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BurnWindow:
    """One pair of the multi-window rule: both windows must burn faster than ``factor``."""

    long_s: float
    short_s: float
    factor: float


PAGE_WINDOWS = (BurnWindow(3600, 300, 14.4), BurnWindow(6 * 3600, 1800, 6.0))
TICKET_WINDOWS = (BurnWindow(3 * 86400, 6 * 3600, 1.0),)


@dataclass(frozen=True)
class Rule:
    """One alert rule. ``name`` becomes the ``alertname`` label of its alerts."""

    name: str
    kind: RuleKind
    metric: str
    matchers: tuple[Matcher, ...] = ()
    op: str = ">"
    threshold: float = 0.0
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    lookback_s: float = 300.0
    error_metric: str = ""
    objective: float = 0.999
    windows: tuple[BurnWindow, ...] = ()
    horizon_s: float = 3600.0
    seen_within_s: float | None = None
    severity: str = "warning"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    info_labels: tuple[str, ...] = ()
    """Series labels that describe an alert (its annotations may name them) but are not part of
    its identity: the newest series of each identity counts, so a description that changes
    (what a pipeline holds, who waits) updates the alert instead of opening another."""

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise InvalidInput(f"rule {self.name}: unknown operator {self.op!r}")
        if self.seen_within_s is not None and (
            self.kind != "absence" or self.seen_within_s <= self.lookback_s
        ):
            raise InvalidInput(
                f"rule {self.name}: seen_within is for absence rules, longer than the lookback"
            )
        if self.kind == "burn_rate":
            if not self.error_metric or not self.windows:
                raise InvalidInput(f"rule {self.name}: burn_rate needs error_metric and windows")
            if not 0 < self.objective < 1:
                raise InvalidInput(f"rule {self.name}: objective must be between 0 and 1")

    def alert_labels(self, series_labels: Mapping[str, Any]) -> dict[str, str]:
        merged = {k: str(v) for k, v in series_labels.items() if k not in self.info_labels}
        merged.update(self.labels)
        merged["alertname"] = self.name
        merged["severity"] = self.severity
        return merged

    def render_annotations(self, labels: Mapping[str, str], value: float) -> dict[str, str]:
        """Expands ``{{ $labels.name }}`` and ``{{ $value }}`` as Prometheus templates do."""

        def expand(text: str) -> str:
            text = re.sub(
                r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), text
            )
            return re.sub(r"\{\{\s*\$value\s*\}\}", f"{value:g}", text)

        return {k: expand(v) for k, v in self.annotations.items()}


@dataclass(frozen=True)
class Hit:
    """One label set for which a rule's condition holds now, with the value that made it so."""

    labels: dict[str, str]
    value: float
    info: dict[str, str] = field(default_factory=dict)
    """The rule's ``info_labels`` of the series, for its annotations (not its identity)."""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)


@dataclass
class Series:
    labels: dict[str, Any]
    ts: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def load_series(
    session: Session, metric: str, since: float, until: float, matchers: Iterable[Matcher] = ()
) -> dict[str, Series]:
    """Every series of ``metric`` with points in ``[since, until]``, by canonical labels key."""
    rows = session.execute(
        select(MetricPoint.labels_key, MetricPoint.labels, MetricPoint.ts, MetricPoint.value)
        .where(MetricPoint.name == metric, MetricPoint.ts >= since, MetricPoint.ts <= until)
        .order_by(MetricPoint.ts, MetricPoint.id)
    )
    wanted = tuple(matchers)
    found: dict[str, Series] = {}
    rejected: set[str] = set()
    for key, labels, ts, value in rows:
        series = found.get(key)
        if series is None:
            if key in rejected:
                continue
            if not match_all(wanted, labels or {}):
                rejected.add(key)
                continue
            series = found[key] = Series(dict(labels or {}))
        series.ts.append(ts)
        series.values.append(value)
    return found


def counter_increase(ts: list[float], values: list[float], start: float, end: float) -> float:
    """How much a counter grew in ``(start, end]``; a drop is a reset (the new value counts).

    The baseline is the last point at or before ``start`` (else the first point inside).
    """
    base: float | None = None
    total = 0.0
    for t, v in zip(ts, values, strict=True):
        if t > end:
            break
        if t <= start:
            base = v
            continue
        if base is None:
            base = v
            continue
        total += v - base if v >= base else v
        base = v
    return total


def time_to_exhaustion(ts: list[float], values: list[float], bound: float) -> float:
    """Seconds until the least-squares line through the points reaches ``bound``.

    ``0`` if the fitted line is already at or past it, ``inf`` if it never gets there.
    Same fit as PromQL's ``predict_linear`` (ordinary least squares on the window's points).
    """
    if len(ts) < 2:
        return math.inf
    t = np.asarray(ts) - ts[-1]
    slope, intercept = np.polyfit(t, np.asarray(values), 1)
    if intercept >= bound:
        return 0.0
    if slope <= 0:
        return math.inf
    return float((bound - intercept) / slope)


def evaluate_rule(session: Session, rule: Rule, now: float) -> list[Hit]:
    """The label sets for which ``rule`` holds at ``now``."""
    if rule.kind == "threshold":
        compare = OPERATORS[rule.op]
        newest: dict[str, Series] = {}  # one series per identity (see Rule.info_labels)
        for series in load_series(
            session, rule.metric, now - rule.lookback_s, now, rule.matchers
        ).values():
            identity = fingerprint(rule.alert_labels(series.labels))
            if identity not in newest or series.ts[-1] > newest[identity].ts[-1]:
                newest[identity] = series
        hits = []
        for series in newest.values():
            value = series.values[-1]
            if compare(value, rule.threshold):
                info = {k: str(series.labels.get(k, "")) for k in rule.info_labels}
                hits.append(Hit(rule.alert_labels(series.labels), value, info))
        return hits
    if rule.kind == "absence":
        recent = load_series(session, rule.metric, now - rule.lookback_s, now, rule.matchers)
        if rule.seen_within_s is not None:
            before = load_series(
                session, rule.metric, now - rule.seen_within_s, now - rule.lookback_s, rule.matchers
            )
            return [
                Hit(rule.alert_labels(series.labels), now - series.ts[-1])
                for key, series in before.items()
                if key not in recent
            ]
        if recent:
            return []
        equal = {m.name: m.value for m in rule.matchers if m.is_equal and not m.is_regex}
        return [Hit(rule.alert_labels(equal), 1.0)]
    if rule.kind == "forecast":
        hits = []
        for series in load_series(
            session, rule.metric, now - rule.lookback_s, now, rule.matchers
        ).values():
            eta_s = time_to_exhaustion(series.ts, series.values, rule.threshold)
            if eta_s <= rule.horizon_s:
                hits.append(Hit(rule.alert_labels(series.labels), eta_s))
        return hits
    return _evaluate_burn_rate(session, rule, now)


def burn_rate(
    requests: Series, errors: Series, window_s: float, now: float, objective: float
) -> float:
    """(Δerrors / Δrequests over the window) / (1 − objective)."""
    total = counter_increase(requests.ts, requests.values, now - window_s, now)
    if total <= 0:
        return 0.0
    bad = counter_increase(errors.ts, errors.values, now - window_s, now)
    return (bad / total) / (1.0 - objective)


def _evaluate_burn_rate(session: Session, rule: Rule, now: float) -> list[Hit]:
    longest = max(w.long_s for w in rule.windows)
    since = now - longest - rule.lookback_s
    requests = load_series(session, rule.metric, since, now, rule.matchers)
    errors = load_series(session, rule.error_metric, since, now, rule.matchers)
    hits = []
    for key, req in requests.items():
        err = errors.get(key, Series(req.labels))
        for window in rule.windows:
            long_rate = burn_rate(req, err, window.long_s, now, rule.objective)
            if long_rate <= window.factor:
                continue
            if burn_rate(req, err, window.short_s, now, rule.objective) > window.factor:
                hits.append(Hit(rule.alert_labels(req.labels), long_rate))
                break
    return hits
