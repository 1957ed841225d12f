"""Cursors of :mod:`shipyard.api.operations`: one encoding for every paged list."""

from __future__ import annotations

import base64
import json

import pytest

from shipyard.api.client import LocalClient
from shipyard.api.operations import CURSOR_MAX, decode_cursor, encode_cursor, load_all
from shipyard.errors import InvalidInput
from shipyard.identity import Principal
from shipyard.workspace import Workspace


class TestCursor:
    def test_a_key_comes_back_exactly(self) -> None:
        """Every bit of a float, an int, and any text (a name of 200 characters) round-trip."""
        at = 1_700_000_000.123456789
        for key, types in (
            ((at, "ab12"), (float, str)),
            ((0.1 + 0.2, 7), (float, int)),
            ((2**63 - 1,), (int,)),
            (("n" * 200,), (str,)),
            ((1e300, "名" * 100 + "\U0001f6a2" * 100), (float, str)),
        ):
            cursor = encode_cursor("runs.list", *key)
            assert decode_cursor("runs.list", cursor, *types) == key
            assert len(cursor) <= CURSOR_MAX and cursor.replace("-", "").replace("_", "").isalnum()

    def test_no_cursor_is_the_first_page(self) -> None:
        assert decode_cursor("runs.list", None, float, str) is None

    @pytest.mark.parametrize(
        "cursor",
        ["yesterday!", "nan_abc", "1.5~abc", "a", "", "=", "a" * 5, "é"],
    )
    def test_a_malformed_cursor_names_the_field(self, cursor: str) -> None:
        with pytest.raises(InvalidInput, match=r"^query\.cursor: .*`next` of the previous page"):
            decode_cursor("runs.list", cursor, float, str)

    def test_an_edited_cursor_names_the_field(self) -> None:
        """Any one character changed, or the cursor cut short, is refused, never read as
        another place in the list."""
        cursor = encode_cursor("alerts.list", 1.5, "fp")
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        for i, c in enumerate(cursor):
            for other in (alphabet[(alphabet.index(c) + 1) % 64], alphabet[alphabet.index(c) ^ 1]):
                edited = cursor[:i] + other + cursor[i + 1 :]
                with pytest.raises(InvalidInput, match=r"^query\.cursor: "):
                    decode_cursor("alerts.list", edited, float, str)
        with pytest.raises(InvalidInput, match=r"^query\.cursor: "):
            decode_cursor("alerts.list", cursor[:-4], float, str)

    def test_a_key_rewritten_without_its_check_is_refused(self) -> None:
        raw = base64.urlsafe_b64decode(encode_cursor("runs.list", 1.5, "ab") + "==")
        forged = json.dumps([9.5, "ab"]).encode() + raw[-6:]
        cursor = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
        with pytest.raises(InvalidInput, match=r"^query\.cursor: edited, or not one of this list"):
            decode_cursor("runs.list", cursor, float, str)

    def test_a_cursor_of_another_list_is_refused(self) -> None:
        cursor = encode_cursor("runs.list", 1.5, "ab")
        with pytest.raises(InvalidInput, match=r"^query\.cursor: edited, or not one of this list"):
            decode_cursor("rollouts.list", cursor, float, str)

    @pytest.mark.parametrize(
        ("key", "types"),
        [
            (("1.5", "ab"), (float, str)),
            ((1.5,), (float, str)),
            ((1.5, "ab", 3), (float, str)),
            ((True,), (int,)),
            ((-1,), (int,)),
            (("x" * 201,), (str,)),
        ],
    )
    def test_a_key_of_the_wrong_shape_is_refused(
        self, key: tuple[float | int | str, ...], types: tuple[type[float | int | str], ...]
    ) -> None:
        cursor = encode_cursor("runs.list", *key)
        with pytest.raises(InvalidInput, match=r"^query\.cursor: not a key of this list"):
            decode_cursor("runs.list", cursor, *types)

    def test_infinity_is_never_a_key(self) -> None:
        with pytest.raises(ValueError):
            encode_cursor("runs.list", float("inf"), "ab")


PATHS = {"name": "digits"}


def test_every_paged_list_refuses_a_cursor_of_another_list(workspace: Workspace) -> None:
    """Each operation with a ``cursor`` decodes it (an error naming ``query.cursor``), before
    reading anything: none takes a cursor as it is."""
    client = LocalClient(workspace, Principal.embedded("tester"))
    paged = [op for op in load_all().values() if op.query and "cursor" in op.query.model_fields]
    assert len(paged) >= 14
    foreign = encode_cursor("no.such.list", 1.5, "ab")
    for op in paged:
        params = {p: PATHS[p] for p in op.path_params}
        with pytest.raises(InvalidInput, match=r"^query\.cursor: ") as refused:
            client.call(op.name, cursor=foreign, **params)
        assert "edited, or not one of this list" in str(refused.value), op.name
