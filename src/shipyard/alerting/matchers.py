"""Label matchers as Alertmanager writes them: ``name="v"``, ``name!="v"``, ``name=~"re"``,
``name!~"re"``. Regular expressions are anchored, as in Prometheus (``^(?:re)$``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shipyard.errors import InvalidInput

_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


@dataclass(frozen=True)
class Matcher:
    """One condition on one label (Alertmanager's ``name, value, isRegex, isEqual``)."""

    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def __post_init__(self) -> None:
        if self.is_regex:
            try:
                re.compile(self.value)
            except re.error as exc:
                raise InvalidInput(f"matcher {self.name}: bad regular expression: {exc}") from None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """``'severity="page"'`` → ``Matcher("severity", "page")``."""
        found = _MATCHER.match(text)
        if not found:
            raise InvalidInput(
                f'bad matcher {text!r}: expected name="value", name!="value", '
                'name=~"regex" or name!~"regex"'
            )
        name, op, value = found.groups()
        return cls(name, value, is_regex="~" in op, is_equal=not op.startswith("!"))

    def matches(self, labels: Mapping[str, Any]) -> bool:
        value = str(labels.get(self.name, ""))
        hit = re.fullmatch(self.value, value) is not None if self.is_regex else value == self.value
        return hit == self.is_equal

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": self.is_regex,
            "isEqual": self.is_equal,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Matcher:
        return cls(
            str(data["name"]),
            str(data["value"]),
            bool(data.get("isRegex", False)),
            bool(data.get("isEqual", True)),
        )

    def __str__(self) -> str:
        op = (
            ("=" if self.is_equal else "!=")
            if not self.is_regex
            else ("=~" if self.is_equal else "!~")
        )
        return f'{self.name}{op}"{self.value}"'


def parse_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    return tuple(Matcher.parse(t) for t in texts)


def match_all(matchers: Iterable[Matcher], labels: Mapping[str, Any]) -> bool:
    return all(m.matches(labels) for m in matchers)
