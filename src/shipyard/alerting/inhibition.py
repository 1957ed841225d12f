"""Inhibition, as Alertmanager does it: a firing alert that matches ``source_matchers`` mutes
every alert that matches ``target_matchers`` and has the same values for the ``equal`` labels
(a missing label counts as the empty value on both sides). An alert never inhibits itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shipyard.alerting.matchers import Matcher, match_all


@dataclass(frozen=True)
class InhibitRule:
    source_matchers: tuple[Matcher, ...]
    target_matchers: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()


DEFAULT_INHIBIT_RULES = (
    InhibitRule(
        (Matcher("severity", "page"),),
        (Matcher("severity", "ticket"),),
        ("alertname", "pipeline", "model", "dataset", "column", "pool", "resource"),
    ),
)


def inhibited(
    labels: Mapping[str, Any],
    firing: Iterable[Mapping[str, Any]],
    rules: Iterable[InhibitRule],
) -> bool:
    """Whether ``labels`` is muted by one of the ``firing`` alerts under one of ``rules``."""
    sources = list(firing)
    for rule in rules:
        if not match_all(rule.target_matchers, labels):
            continue
        for source in sources:
            if source is labels or dict(source) == dict(labels):
                continue
            if not match_all(rule.source_matchers, source):
                continue
            if all(str(source.get(n, "")) == str(labels.get(n, "")) for n in rule.equal):
                return True
    return False
