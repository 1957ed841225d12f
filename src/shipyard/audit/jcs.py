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

import math
from collections.abc import Mapping
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

from shipyard.errors import InvalidInput

_string = encode_basestring
"""A string as ``JSON.stringify`` writes it: quotes, ``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``,
other control characters as ``\\u00xx``; nothing else escaped (json's C encoder)."""

NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def canonical(value: Any) -> bytes:
    """``value`` (None, bool, int, float, str, list/tuple, mapping with str keys) as RFC 8785
    canonical JSON, UTF-8 encoded."""
    out: list[str] = []
    _encode(value, out)
    try:
        return "".join(out).encode("utf-8")
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
    # differs, and not at all where repr writes no exponent (1e-4 <= x < 1e16) but for a '.0'
    shortest = repr(x)
    if "e" not in shortest:
        return shortest[:-2] if shortest.endswith(".0") else shortest
    _, digit_tuple, exponent = Decimal(shortest).as_tuple()
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


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(number(float(value)))
    elif isinstance(value, Mapping):
        members = [(_key(k), v) for k, v in value.items()]
        if all(k.isascii() for k, _ in members):
            members.sort(key=_first)  # code points and UTF-16 code units agree on ASCII
        else:
            members.sort(key=_utf16)
        out.append("{")
        for i, (k, v) in enumerate(members):
            if i:
                out.append(",")
            out.append(_string(k))
            out.append(":")
            _encode(v, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _encode(v, out)
        out.append("]")
    else:
        raise InvalidInput(f"JSON cannot carry a {type(value).__name__}: {value!r}")


def _first(member: tuple[str, Any]) -> str:
    return member[0]


def _utf16(member: tuple[str, Any]) -> bytes:
    return member[0].encode("utf-16-be", "surrogatepass")
