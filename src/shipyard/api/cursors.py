"""The cursors of keyset lists: the sort key of a page's last item, checked and in URL-safe
base64, which the next page starts after (:func:`encode_cursor`). Pydantic-free, so that a
command reading a list straight from the database (``shipyard runs list``) pages it the same
way as the operation does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from typing import Any

from shipyard.errors import InvalidInput

KeyPart = float | int | str
"""One part of an item's sort key, as a cursor carries it."""
CURSOR_MAX = 1200
"""The longest cursor a list accepts: a time and a 200-character name in any script, encoded
(UTF-8, then base64), fit."""
_CURSOR_CHECK_BYTES = 6
_CURSOR_TEXT = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY_STR_MAX = 200
_KEY_INT_MAX = 2**63 - 1


def encode_cursor(listing: str, *key: KeyPart) -> str:
    """The ``next`` of a page of the list ``listing`` (an operation's name): the sort key of the
    page's last item, which :func:`decode_cursor` reads back exactly.

    The key goes as JSON (a float's shortest repr keeps every bit, so the page after starts
    exactly after the item), then a BLAKE2b check over the list's name and the JSON, all in
    URL-safe base64 (a shell word, too). The check is no secret: it makes a cursor that was
    edited, cut short, or given to another list an error naming ``cursor`` instead of a page
    that starts somewhere else. Keyset lists stay as cheap deep as shallow; the cursor never
    widens what the filters and the caller's roles select."""
    payload = json.dumps(key, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()
    raw = payload + _cursor_check(listing, payload)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(
    listing: str, cursor: str | None, *types: type[KeyPart]
) -> tuple[Any, ...] | None:
    """The key :func:`encode_cursor` put in ``cursor`` for the list ``listing``, its parts of
    ``types`` (floats finite, ints from 0 to 2**63-1, strings of at most 200 characters);
    ``None`` for no cursor (the first page).

    A cursor that is not one, was edited or belongs to another list is
    :class:`~shipyard.errors.InvalidInput` naming ``query.cursor``.

    >>> c = encode_cursor("runs.list", 1717171717.25, "a1b2")
    >>> decode_cursor("runs.list", c, float, str)
    (1717171717.25, 'a1b2')
    """
    if cursor is None:
        return None
    if not _CURSOR_TEXT.match(cursor) or len(cursor) % 4 == 1:
        raise _bad_cursor("not a cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise _bad_cursor("not a cursor") from None
    payload, check = raw[:-_CURSOR_CHECK_BYTES], raw[-_CURSOR_CHECK_BYTES:]
    # base64 leaves spare bits in the last character: only the one spelling encode writes
    canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") == cursor
    if (
        not payload
        or not canonical
        or not hmac.compare_digest(check, _cursor_check(listing, payload))
    ):
        raise _bad_cursor("edited, or not one of this list")
    try:
        key = json.loads(payload, parse_constant=_no_constant)
    except ValueError:
        raise _bad_cursor("not a cursor") from None
    if not isinstance(key, list) or len(key) != len(types):
        raise _bad_cursor("not a key of this list")
    for part, kind in zip(key, types, strict=True):
        if type(part) is not kind or not _part_in_bounds(part):
            raise _bad_cursor("not a key of this list")
    return tuple(key)


def _cursor_check(listing: str, payload: bytes) -> bytes:
    digest = hashlib.blake2b(digest_size=_CURSOR_CHECK_BYTES, person=b"shipyard-cursor")
    digest.update(listing.encode() + b"\0" + payload)
    return digest.digest()


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _part_in_bounds(part: KeyPart) -> bool:
    if isinstance(part, float):
        return math.isfinite(part)
    if isinstance(part, int):
        return 0 <= part <= _KEY_INT_MAX
    return len(part) <= _KEY_STR_MAX


def _bad_cursor(why: str) -> InvalidInput:
    return InvalidInput(f"query.cursor: {why}; use the `next` of the previous page")
