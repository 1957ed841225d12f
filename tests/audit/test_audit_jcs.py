"""Canonical JSON against RFC 8785's own examples (section 3.2.2 and appendix B)."""

from __future__ import annotations

import json
import struct

import pytest

from shipyard.audit.jcs import canonical, normalize, number
from shipyard.errors import InvalidInput

# RFC 8785 appendix B: IEEE 754 doubles (hex) and how ECMAScript writes them
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_a_double_is_written_as_ecmascript_writes_it(bits: str, expected: str) -> None:
    assert number(struct.unpack(">d", bytes.fromhex(bits))[0]) == expected


def test_the_rfcs_example_object_canonicalizes_to_its_published_bytes() -> None:
    """RFC 8785 section 3.2.2: sorted members, numbers in ECMAScript form, minimal escapes."""
    source = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical(json.loads(source)) == expected.encode("utf-8")


def test_members_sort_by_utf16_code_units_not_code_points() -> None:
    """RFC 8785 section 3.2.3: U+1F600 (a surrogate pair, 0xD83D…) sorts before U+FB01."""
    text = canonical({"\ufb01": 1, "\U0001f600": 2, "a": 3}).decode()
    assert text == '{"a":3,"\U0001f600":2,"\ufb01":1}'


def test_an_integer_and_the_equal_double_encode_alike() -> None:
    """What JSON gives back (1 or 1.0, depending on the database) hashes the same."""
    assert canonical({"n": 3}) == canonical({"n": 3.0}) == b'{"n":3}'


def test_an_integer_beyond_two_to_the_53_keeps_every_digit() -> None:
    assert canonical(2**63 + 1) == b"9223372036854775809"


def test_non_finite_numbers_are_normalized_to_strings_and_refused_raw() -> None:
    assert normalize({"a": (float("nan"), float("inf"), -float("inf"))}) == {
        "a": ["NaN", "Infinity", "-Infinity"]
    }
    with pytest.raises(InvalidInput, match="no number"):
        canonical(float("nan"))


@pytest.mark.parametrize("value", [{1: "a"}, {"a": object()}, {"a": {2.5}}, "\ud800"])
def test_what_json_cannot_carry_is_refused_in_one_line(value: object) -> None:
    with pytest.raises(InvalidInput):
        canonical(value)
