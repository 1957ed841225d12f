"""The cost bound of one inference request, checked before anything is built from it.

A request may cost a worker only so much: its body (bytes), the values it holds (elements),
its rows, how deep its JSON nests, how many dimensions a tensor declares, how long one string
is. Each bound is checked at the first moment its number is known and before the request
allocates anything in proportion to it: the body's declared length before it is read, a
tensor's declared shape before its array exists (the shape's product is taken in Python
integers, so ``[2**32, 2**32]`` is refused, not overflowed), a JSON body's values level by level
before the next level is materialised. A request over a bound is answered ``413`` naming the
field and the bound.

The defaults keep what one request can take from the others on its worker small: decoding a
JSON body holds the GIL, so the body bound is what bounds the wait. 1 MiB of body (a quarter of
gRPC's default message size): beside clients sending maximum-size requests, the p99 of one-row
requests was about 3× its quiet value with 1 MiB and 7× with 4 MiB (``benchmarks/serving.py``,
head-of-line row, on a loaded 2-core machine); 2**20 values, 100,000 rows, 16 levels of JSON,
8 dimensions, 64 KiB per string. The numbers live in the settings
(:class:`shipyard.config.RequestLimitsSettings`, ``[serving.limits]`` in ``shipyard.toml`` or
``SHIPYARD_SERVING__LIMITS__MAX_ROWS``…), which set them for a whole server; a model version
raises or lowers them with the tag
``serving.limits``: an object (or its JSON text, as ``shipyard models register --tag`` gives
it) of the fields of :class:`RequestLimits`, e.g. ``{"max_rows": 1000000}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from itertools import chain
from typing import Any

import pydantic_core

from shipyard.config import RequestLimitsSettings
from shipyard.errors import InvalidInput, RequestTooLarge, SchemaViolation

LIMITS_TAG = "serving.limits"
CONTAINERS = (list, dict)
_DEFAULTS = RequestLimitsSettings()


@dataclass(frozen=True)
class RequestLimits:
    """The most one request may hold; see the module doc."""

    max_body_bytes: int = _DEFAULTS.max_body_bytes
    max_elements: int = _DEFAULTS.max_elements
    max_rows: int = _DEFAULTS.max_rows
    max_depth: int = _DEFAULTS.max_depth
    max_dims: int = _DEFAULTS.max_dims
    max_string_bytes: int = _DEFAULTS.max_string_bytes

    @classmethod
    def from_settings(cls, settings: RequestLimitsSettings) -> RequestLimits:
        """The limits a server's settings (``serving.limits``) give every model."""
        return cls(**settings.model_dump())

    def with_tags(self, tags: dict[str, Any]) -> RequestLimits:
        """These limits overridden by a version's ``serving.limits`` tag (InvalidInput if the tag
        is malformed)."""
        spec = tags.get(LIMITS_TAG)
        if spec is None:
            return self
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"tag {LIMITS_TAG!r} is not a JSON object: {exc}") from None
        if not isinstance(spec, dict):
            raise InvalidInput(f"tag {LIMITS_TAG!r} must be an object of limits")
        known = {f.name for f in fields(self)}
        for key, value in spec.items():
            if key not in known:
                raise InvalidInput(
                    f"tag {LIMITS_TAG!r}: unknown limit {key!r}; the limits are {sorted(known)}"
                )
            if type(value) is not int or value <= 0:
                raise InvalidInput(f"tag {LIMITS_TAG!r}: {key} must be a positive integer")
        return replace(self, **spec)

    # -- the checks ----------------------------------------------------------------------------
    def check_body(self, size: int, what: str = "body") -> None:
        if size > self.max_body_bytes:
            raise RequestTooLarge(
                f"the {what} holds more than {self.max_body_bytes} bytes",
                what,
                f"max_body_bytes={self.max_body_bytes}",
            )

    def check_rows(self, rows: int, field: str) -> None:
        if rows > self.max_rows:
            raise RequestTooLarge(f"{field!r} has {rows} rows", field, f"max_rows={self.max_rows}")

    def check_elements(self, count: int, field: str) -> None:
        if count > self.max_elements:
            raise RequestTooLarge(
                f"{field!r} holds {count} values", field, f"max_elements={self.max_elements}"
            )

    def check_string(self, size: int, field: str, unit: str = "bytes") -> None:
        if size > self.max_string_bytes:
            raise RequestTooLarge(
                f"{field!r} holds a string of {size} {unit}",
                field,
                f"max_string_bytes={self.max_string_bytes}",
            )

    def check_shape(self, shape: Any, field: str) -> tuple[list[int], int]:
        """``shape`` and the number of values it declares, after checking that it is a list of
        at most ``max_dims`` non-negative integers (not booleans) and within the bounds."""
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise SchemaViolation(
                f"input {field!r}: 'shape' must be a list of non-negative integers", field=field
            )
        if len(shape) > self.max_dims:
            raise RequestTooLarge(
                f"input {field!r} has {len(shape)} dimensions", field, f"max_dims={self.max_dims}"
            )
        count = math.prod(shape)  # Python integers: no overflow, however large the shape
        self.check_elements(count, field)
        if shape:
            self.check_rows(shape[0], field)
        return shape, count

    def check_json(self, doc: Any, field: str) -> set[type]:
        """Walk a decoded JSON document level by level: its depth, its values, its strings;
        returns the types of the scalars it holds.

        Each level is counted (``len`` of its containers) before it is materialised, so a
        document over the bound is refused having cost no more than the bound. Each step is one
        C-speed pass over a level (``map``, ``chain``), not a Python step per value."""
        level = [doc] if isinstance(doc, CONTAINERS) else []
        scalars = set() if level else {type(doc)}
        depth = 0
        values = 0
        while level:
            depth += 1
            if depth > self.max_depth:
                raise RequestTooLarge(
                    f"{field!r} nests deeper than {self.max_depth} levels",
                    field,
                    f"max_depth={self.max_depth}",
                )
            values += sum(map(len, level))
            self.check_elements(values, field)
            if dict in set(map(type, level)):
                dicts = [c for c in level if type(c) is dict]
                # keys are strings too: a 1 MiB column name would come back in an error
                longest_key = max(map(len, chain.from_iterable(dicts)), default=0)
                self.check_string(longest_key, field, "characters")
                children = list(
                    chain.from_iterable(c.values() if type(c) is dict else c for c in level)
                )
            else:
                children = list(chain.from_iterable(level))
            types = set(map(type, children))
            if str in types:
                longest = max(map(len, [v for v in children if type(v) is str]))
                self.check_string(longest, field, "characters")
            scalars |= types - {list, dict}
            if types <= {list, dict}:
                level = children
            elif types & {list, dict}:
                level = [c for c in children if type(c) in CONTAINERS]
            else:
                level = []
        return scalars


DEFAULT_LIMITS = RequestLimits()


def load_json(
    body: bytes, limits: RequestLimits, what: str = "the request"
) -> tuple[Any, set[type]]:
    """Decode a JSON body (InvalidInput if it is not JSON) and check it against ``limits``;
    returns it with the types of the scalars it holds.

    pydantic-core's decoder (jiter) parses several times faster than :mod:`json` and refuses
    documents nested deeper than 200 levels itself, so nothing recurses without a bound."""
    try:
        doc = pydantic_core.from_json(body)
    except ValueError as exc:
        raise SchemaViolation(f"{what} is not valid JSON: {exc}", field="body") from None
    return doc, limits.check_json(doc, "body")
