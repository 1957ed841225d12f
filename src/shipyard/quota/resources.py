"""Arithmetic on resource amounts (``{resource: amount}``): sums, differences, the first
excess over a limit.

Parsing and formatting quantities (``"4Gi"``, ``"500m"``) live in the base,
:mod:`shipyard.quantities`, shared with the pipeline DSL; they are re-exported here for quota's
callers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shipyard.quantities import Amounts, format_amount, parse_amounts, parse_quantity

EPSILON = 1e-9


def add(a: Mapping[str, float], b: Mapping[str, float]) -> Amounts:
    out = dict(a)
    for name, value in b.items():
        out[name] = out.get(name, 0.0) + value
    return out


def subtract(a: Mapping[str, float], b: Mapping[str, float]) -> Amounts:
    out = dict(a)
    for name, value in b.items():
        out[name] = out.get(name, 0.0) - value
    return out


def total(many: Iterable[Mapping[str, float]]) -> Amounts:
    out: Amounts = {}
    for amounts in many:
        out = add(out, amounts)
    return out


def first_excess(
    wanted: Mapping[str, float], limit: Mapping[str, float]
) -> tuple[str, float, float] | None:
    """The first resource (by name) where ``wanted`` exceeds ``limit``: (name, wanted, limit)."""
    for name in sorted(wanted):
        if wanted[name] > limit.get(name, 0.0) + EPSILON:
            return name, wanted[name], limit.get(name, 0.0)
    return None


__all__ = [
    "EPSILON",
    "Amounts",
    "add",
    "first_excess",
    "format_amount",
    "parse_amounts",
    "parse_quantity",
    "subtract",
    "total",
]
