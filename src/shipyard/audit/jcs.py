"""Canonical JSON: one byte string per value, so that a hash over it means the same everywhere.

The encoding is the JSON Canonicalization Scheme, RFC 8785 (JCS): no whitespace; object members
sorted by their names' UTF-16 code units; strings as ECMAScript's ``JSON.stringify`` writes them
(only ``"``, ``\\`` and control characters escaped, everything else as UTF-8); numbers as
ECMAScript's ``Number.prototype.toString`` writes a double (the shortest digits that read back
as the same double: ``1.0`` is ``1``, ``1e21`` is ``1e+21``, ``1e-7`` is ``1e-7``).

Two departures, both for values JCS cannot carry (it refuses them): an integer beyond ±2**53
is written with all its digits (a double would lose some, and two audit details would hash
alike), and :func:`normalize` turns a NaN or an infinity into the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"`` (JSON has no such numbers; SQLite would keep Python's ``NaN``
token and PostgreSQL refuse it).

>>> canonical({"b": [1.0, 1e21, None], "a": "€\\n"}).decode()
'{"a":"€\\\\n","b":[1,1e+21,null]}'
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from shipyard.errors import InvalidInput

NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def canonical(value: Any) -> bytes:
    """``value`` (None, bool, int, float, str, list/tuple, mapping with str keys) as RFC 8785
    canonical JSON, UTF-8 encoded."""
    try:
        return "".join(_encode(value)).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"a lone surrogate, which JSON cannot carry: {exc}") from None


def normalize(value: Any) -> Any:
    """``value`` as JSON gives it back: tuples as lists, non-finite floats as strings.

    Stored details are normalized first, so that what a reader decodes from the database
    encodes (:func:`canonical`) to the same bytes as what the writer hashed.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE[repr(value)]
    if isinstance(value, Mapping):
        return {_key(k): normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    return value


def number(x: float) -> str:
    """A finite double as ECMAScript's ``Number.prototype.toString`` writes it (ECMA-262,
    Number::toString; RFC 8785 section 3.2.2.3)."""
    if not math.isfinite(x):
        raise InvalidInput(f"JSON has no number {x!r}")
    if x == 0:
        return "0"  # -0 too
    if x < 0:
        return "-" + number(-x)
    # repr gives the shortest digits that read back as x, as ECMAScript asks; only the layout
    # differs
    _, digit_tuple, exponent = Decimal(repr(x)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    stripped = digits.rstrip("0")  # '100.0' is 1 × 10**2
    exponent += len(digits) - len(stripped)
    digits = stripped
    k = len(digits)
    n = exponent + k  # x = 0.digits × 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise InvalidInput(f"a JSON object's names are strings, not {type(key).__name__} {key!r}")
    return key


def _encode(value: Any) -> Any:
    if value is None:
        yield "null"
    elif value is True:
        yield "true"
    elif value is False:
        yield "false"
    elif isinstance(value, int):
        yield str(int(value))
    elif isinstance(value, float):
        yield number(float(value))
    elif isinstance(value, str):
        yield json.dumps(value, ensure_ascii=False)
    elif isinstance(value, Mapping):
        members = sorted(((_key(k), v) for k, v in value.items()), key=_utf16)
        yield "{"
        for i, (k, v) in enumerate(members):
            if i:
                yield ","
            yield json.dumps(k, ensure_ascii=False)
            yield ":"
            yield from _encode(v)
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for i, v in enumerate(value):
            if i:
                yield ","
            yield from _encode(v)
        yield "]"
    else:
        raise InvalidInput(f"JSON cannot carry a {type(value).__name__}: {value!r}")


def _utf16(member: tuple[str, Any]) -> bytes:
    return member[0].encode("utf-16-be", "surrogatepass")
