"""``traceparent`` is read as W3C Trace Context (Recommendation 2021-11-23, §3.2) says: the
cases below are those of the specification's text and of its test suite
(github.com/w3c/trace-context, test/test.py), each named after the rule it checks."""

from __future__ import annotations

import pytest

from shipyard.observability.tracecontext import TraceParent, continue_trace, parse

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


class TestParse:
    def test_the_specifications_example_is_read_field_by_field(self) -> None:
        tp = parse(VALID)
        assert tp == TraceParent(TRACE, SPAN, 1)
        assert tp is not None and tp.sampled and tp.header == VALID

    def test_bytes_as_asgi_hands_them_over_are_read_alike(self) -> None:
        assert parse(VALID.encode()) == parse(VALID)

    def test_an_unsampled_trace_is_valid_and_says_so(self) -> None:
        tp = parse(f"00-{TRACE}-{SPAN}-00")
        assert tp is not None and not tp.sampled

    def test_whitespace_around_the_value_is_not_part_of_it(self) -> None:
        assert parse(f" \t{VALID}\t ") == parse(VALID)

    @pytest.mark.parametrize(
        "value",
        [
            None,
            "",
            "garbage",
            VALID.upper(),  # uppercase hex (§3.2.2.2: HEXDIGLC)
            f"00-{TRACE.upper()}-{SPAN}-01",
            f"00-{TRACE}-{SPAN.upper()}-01",
            f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
            f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
            f"ff-{TRACE}-{SPAN}-01",  # version ff is forbidden
            f"00-{TRACE}-{SPAN}-01-extra",  # version 00 is exactly 55 characters
            f"00-{TRACE}-{SPAN}-0",  # short flags
            f"00-{TRACE}-{SPAN}-0g",
            f"00-{TRACE[:-1]}-{SPAN}-01",  # short trace id
            f"00-{TRACE}z-{SPAN}-01",
            f"00_{TRACE}_{SPAN}_01",  # wrong delimiters
            f"0-{TRACE}-{SPAN}-01",
            f"cc-{TRACE}-{SPAN}-01x",  # a future version's 56th character must be "-"
        ],
    )
    def test_a_value_the_specification_rejects_is_ignored(self, value: str | None) -> None:
        assert parse(value) is None

    def test_a_future_version_is_read_as_version_00_of_its_first_55_characters(self) -> None:
        assert parse(f"cc-{TRACE}-{SPAN}-01-what-the-future-adds") == TraceParent(TRACE, SPAN, 1)
        assert parse(f"cc-{TRACE}-{SPAN}-01") == TraceParent(TRACE, SPAN, 1)


class TestContinue:
    def test_a_valid_header_is_continued_in_the_callers_trace_with_a_new_span(self) -> None:
        ours, caller = continue_trace(VALID.encode())
        assert caller == TraceParent(TRACE, SPAN, 1)
        assert ours.trace_id == TRACE and ours.span_id != SPAN and ours.sampled
        assert parse(ours.header) == ours

    def test_unknown_flags_are_not_propagated(self) -> None:
        ours, caller = continue_trace(f"00-{TRACE}-{SPAN}-ff")
        assert caller is not None and caller.flags == 0xFF
        assert ours.flags == 0x01

    @pytest.mark.parametrize("header", [None, b"00-zz", VALID.upper().encode()])
    def test_a_missing_or_malformed_header_starts_a_new_trace(self, header: bytes | None) -> None:
        ours, caller = continue_trace(header)
        assert caller is None
        assert parse(ours.header) == ours and ours.trace_id != TRACE
        other, _ = continue_trace(header)
        assert other.trace_id != ours.trace_id  # random, per request

    def test_a_new_trace_takes_the_id_it_is_given(self) -> None:
        ours, _ = continue_trace(None, TRACE)
        assert ours.trace_id == TRACE and len(ours.span_id) == 16
