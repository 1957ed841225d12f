"""Rules as a Prometheus rule file (``promtool check rules`` accepts it).

Each Shipyard rule becomes the PromQL that means the same thing over the same series, scraped
from Shipyard's ``/metrics``:

* threshold → the newest value, ``m{…} > t``
  (Prometheus' lookback delta plays the part of ``lookback``);
* absence → ``absent_over_time(m{…}[lookback])``; per series (``seen_within``):
  ``max_over_time(m{…}[seen_within]) unless max_over_time(m{…}[lookback])``;
* burn rate → per window pair ``(rate(errors[long]) / rate(total[long]) > f·(1−o)) and
  (rate(errors[short]) / rate(total[short]) > f·(1−o))``, pairs joined by ``or``;
* forecast → ``predict_linear(m{…}[lookback], horizon) >= bound``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from shipyard.alerting.rules import Rule, format_duration


def _selector(metric: str, rule: Rule) -> str:
    if not rule.matchers:
        return metric
    return metric + "{" + ",".join(str(m) for m in rule.matchers) + "}"


def promql(rule: Rule) -> str:
    """The PromQL expression equivalent to ``rule``."""
    if rule.kind == "threshold":
        return f"{_selector(rule.metric, rule)} {rule.op} {rule.threshold:g}"
    if rule.kind == "absence":
        selector, lookback = _selector(rule.metric, rule), format_duration(rule.lookback_s)
        if rule.seen_within_s is not None:
            seen = format_duration(rule.seen_within_s)
            return f"max_over_time({selector}[{seen}]) unless max_over_time({selector}[{lookback}])"
        return f"absent_over_time({selector}[{lookback}])"
    if rule.kind == "forecast":
        window = format_duration(rule.lookback_s)
        return (
            f"predict_linear({_selector(rule.metric, rule)}[{window}], {rule.horizon_s:g}) "
            f">= {rule.threshold:g}"
        )
    budget = 1.0 - rule.objective
    pairs = []
    for w in rule.windows:
        parts = []
        for window_s in (w.long_s, w.short_s):
            d = format_duration(window_s)
            parts.append(
                f"(rate({_selector(rule.error_metric, rule)}[{d}]) / "
                f"rate({_selector(rule.metric, rule)}[{d}]) > {w.factor * budget:.6g})"
            )
        pairs.append(f"({parts[0]} and {parts[1]})")
    return " or ".join(pairs)


def prometheus_rules(rules: Iterable[Rule], group: str = "shipyard") -> dict[str, Any]:
    """The rule file as a dict (``groups: [{name, rules: [{alert, expr, for, …}]}]``)."""
    out = []
    for rule in rules:
        if not rule.enabled:
            continue
        entry: dict[str, Any] = {"alert": rule.name, "expr": promql(rule)}
        if rule.for_s:
            entry["for"] = format_duration(rule.for_s)
        if rule.keep_firing_for_s:
            entry["keep_firing_for"] = format_duration(rule.keep_firing_for_s)
        entry["labels"] = {**rule.labels, "severity": rule.severity}
        if rule.annotations:
            entry["annotations"] = dict(rule.annotations)
        out.append(entry)
    return {"groups": [{"name": group, "rules": out}]}


def prometheus_rule_file(rules: Iterable[Rule], group: str = "shipyard") -> str:
    return yaml.safe_dump(
        prometheus_rules(rules, group), sort_keys=False, allow_unicode=True, width=10_000
    )
