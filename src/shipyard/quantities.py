"""Resource quantities: ``"4Gi"``, ``"500m"``, ``2`` → plain floats, and back to human form.

Quantities follow Kubernetes' notation (``k8s.io/apimachinery`` ``resource.Quantity``):
binary suffixes ``Ki Mi Gi Ti Pi`` (powers of 1024), decimal suffixes ``k M G T P`` (powers of
1000) and ``m`` (milli, 1/1000) — so ``memory: 4Gi`` is 4 × 2³⁰ bytes and ``cpu: 500m`` is half
a CPU. Amounts are plain floats inside Shipyard: bytes for memory, cores for cpu, devices for
accelerators.

One parser for every wing that reads a quantity: the pipeline DSL (``Resources``), quota's pool
files and the CLI. It sits in the base so that none of them imports another for it.

>>> parse_quantity("4Gi"), parse_quantity("500m"), parse_quantity(2)
(4294967296.0, 0.5, 2.0)
>>> format_amount("memory", 3 * 1024**3), format_amount("cpu", 1.5)
('3.0Gi', '1.5')
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from shipyard.errors import InvalidInput

Amounts = dict[str, float]
"""``{resource: amount}``: cores for cpu, bytes for memory, devices otherwise."""

_SUFFIX = {
    "Ki": 1024.0,
    "Mi": 1024.0**2,
    "Gi": 1024.0**3,
    "Ti": 1024.0**4,
    "Pi": 1024.0**5,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "m": 1e-3,
    "": 1.0,
}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([KMGTP]i|[kKMGTPm]?)B?\s*$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,62}$")


def parse_quantity(value: object, *, what: str = "quantity") -> float:
    """``"4Gi"`` → 4294967296.0, ``"500m"`` → 0.5, ``2`` → 2.0; a clear error otherwise."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what}: {value!r} is not a quantity")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        match = _QUANTITY.match(value)
        if not match:
            raise InvalidInput(
                f"{what}: {value!r} is not a quantity (examples: 2, 0.5, 500m, 4Gi, 512Mi)"
            )
        number = float(match.group(1)) * _SUFFIX[match.group(2)]
    else:
        raise InvalidInput(f"{what}: {value!r} is not a quantity")
    if not math.isfinite(number) or number < 0:
        raise InvalidInput(f"{what}: {value!r} must be a finite amount ≥ 0")
    return number


def parse_amounts(raw: Mapping[str, object] | None, *, what: str = "resources") -> Amounts:
    """Parse ``{"cpu": 2, "memory": "4Gi", "a100": 1}``; resource names are lower-case words."""
    amounts: Amounts = {}
    for name, value in (raw or {}).items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidInput(f"{what}: {name!r} is not a resource name (e.g. cpu, memory, a100)")
        amounts[name] = parse_quantity(value, what=f"{what}.{name}")
    return amounts


def format_amount(resource: str, value: float) -> str:
    """Human form: memory in binary units, other resources as plain numbers."""
    if resource == "memory":
        for unit, size in (("Gi", 1024.0**3), ("Mi", 1024.0**2), ("Ki", 1024.0)):
            if value >= size:
                return f"{value / size:.1f}{unit}"
        return f"{value:.0f}B"
    return f"{value:g}"


__all__ = ["Amounts", "format_amount", "parse_amounts", "parse_quantity"]
