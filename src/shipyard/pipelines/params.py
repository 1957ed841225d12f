"""Typed pipeline parameters from ``--param k=v``, typed by the build function's annotations."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from shipyard.errors import InvalidInput

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _to_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(text)


_CONVERTERS: dict[Any, Callable[[str], Any]] = {
    int: int,
    float: float,
    bool: _to_bool,
    str: str,
    Path: Path,
}


def _declared_type(build_fn: Callable[..., Any], param: inspect.Parameter) -> Any:
    try:
        hints = typing.get_type_hints(build_fn)
    except Exception:
        hints = {}
    hint = hints.get(param.name, param.annotation)
    if hint is inspect.Parameter.empty:
        default = param.default
        return type(default) if default not in (inspect.Parameter.empty, None) else str
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        return args[0]
    return hint


def parse_params(build_fn: Callable[..., Any] | None, raw: Iterable[str]) -> dict[str, Any]:
    """``["C=0.5", "rows=100"]`` → ``{"C": 0.5, "rows": 100}``; clear errors for unknown
    names, malformed pairs and values that do not convert to the declared type."""
    parameters = dict(inspect.signature(build_fn).parameters) if build_fn else {}
    out: dict[str, Any] = {}
    for item in raw:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidInput(f"--param {item!r}: expected NAME=VALUE")
        if name not in parameters:
            known = ", ".join(parameters) or "none"
            raise InvalidInput(f"unknown parameter {name!r}; known parameters: {known}")
        wanted = _declared_type(build_fn, parameters[name])  # type: ignore[arg-type]
        convert = _CONVERTERS.get(wanted)
        if convert is None:
            raise InvalidInput(
                f"parameter {name!r} has type {wanted!r}, which --param cannot set "
                "(int, float, bool, str, Path)"
            )
        try:
            out[name] = convert(text)
        except ValueError:
            raise InvalidInput(
                f"parameter {name!r} expects {wanted.__name__}, got {text!r}"
            ) from None
    return out


def describe(build_fn: Callable[..., Any] | None) -> dict[str, dict[str, Any]]:
    """Each parameter's type name and default, for listings."""
    if build_fn is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, param in inspect.signature(build_fn).parameters.items():
        wanted = _declared_type(build_fn, param)
        default = None if param.default is inspect.Parameter.empty else param.default
        out[name] = {"type": getattr(wanted, "__name__", str(wanted)), "default": default}
    return out
