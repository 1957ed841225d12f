"""MLflow's scoring protocol (``mlflow models serve``, 3.x): ``POST /invocations``.

A JSON body holds exactly one of ``dataframe_split`` (pandas ``orient="split"``),
``dataframe_records``, ``instances`` (TF-serving rows) or ``inputs`` (TF-serving columns), and
optionally ``params``; ``text/csv`` bodies have a header row. The answer is
``{"predictions": …}``; errors are ``{"error_code": …, "message": …}``.
Every format is validated straight into a NumPy array — no pandas on the request path. For a
numeric model a boolean is not a number (NumPy would make ``True`` 1.0) and an integer beyond a
float's range is refused, naming its column; rows, values and strings are held to the request's
limits (:mod:`shipyard.serving.limits`).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Any

import numpy as np
import pydantic_core

from shipyard.errors import SchemaViolation, UnsupportedMediaType
from shipyard.registry.signature import NUMERIC, Signature
from shipyard.serving.limits import RequestLimits, load_json

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_FLOAT_MAX = sys.float_info.max
_CSV_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def parse(
    body: bytes, content_type: str, signature: Signature, limits: RequestLimits
) -> np.ndarray[Any, Any]:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in ("application/json", ""):
        return parse_json(body, signature, limits)
    if kind == "text/csv":
        return parse_csv(body, signature, limits)
    raise UnsupportedMediaType(
        f"content type {content_type[:100]!r} is not supported; use application/json or text/csv"
    )


def parse_json(body: bytes, signature: Signature, limits: RequestLimits) -> np.ndarray[Any, Any]:
    doc, scalars = load_json(body, limits)
    if not isinstance(doc, dict):
        raise SchemaViolation(
            f"the JSON body must be an object with one of {list(FORMATS)}", field="body"
        )
    present = [k for k in FORMATS if k in doc]
    extra = [k for k in doc if k not in FORMATS and k != "params"]
    if len(present) != 1 or extra:
        raise SchemaViolation(
            f"the JSON body must hold exactly one of {list(FORMATS)} (and optionally 'params'); "
            f"got {sorted(doc)[:10]}",
            field="body",
        )
    key = present[0]
    value = doc[key]
    _check_rows(value, key, limits)
    if signature.numeric and bool in scalars:
        _refuse(key, value, signature, bool)
    try:
        return _to_array(key, value, signature)
    except OverflowError:  # an integer beyond a float's range, e.g. 10**400
        _refuse(key, value, signature, int)
        raise SchemaViolation(f"'{key}' holds a number out of range", field=key) from None


def _to_array(key: str, value: Any, signature: Signature) -> np.ndarray[Any, Any]:
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise SchemaViolation("dataframe_split needs 'data' (and 'columns')", field="data")
        if "columns" in value:
            return signature.frame_to_array(value["columns"], value["data"])
        return signature.rows_to_array(value["data"])
    if key == "dataframe_records":
        return signature.records_to_array(value)
    if isinstance(value, dict):
        return signature.columns_to_array(value)
    if isinstance(value, list) and value:
        first = value[0]
        if isinstance(first, dict):
            return signature.records_to_array(value)
        if not isinstance(first, list) and len(signature.names) == 1:
            return signature.rows_to_array([[v] for v in value])
        return signature.rows_to_array(value)
    raise SchemaViolation(f"'{key}' must be a non-empty list or an object of columns", field=key)


def _check_rows(value: Any, key: str, limits: RequestLimits) -> None:
    """The number of rows, whichever way the format holds them."""
    if isinstance(value, list):
        limits.check_rows(len(value), key)
    elif isinstance(value, dict):
        data = value.get("data") if key == "dataframe_split" else None
        if isinstance(data, list):
            limits.check_rows(len(data), "data")
        elif key != "dataframe_split":
            for name, column in value.items():
                if isinstance(column, list):
                    limits.check_rows(len(column), str(name))


def _refuse(key: str, value: Any, signature: Signature, kind: type) -> None:
    """Refuse the first value of type ``kind`` that a numeric column cannot take: a boolean
    (``numpy.asarray([True, 1.5])`` would make it 1.0) or an integer beyond a float's range.
    The signature's own checks name strings and missing values."""
    for column, row, v in _cells(key, value, signature, kind):
        if type(v) is not kind:
            continue
        number: Any = v
        if kind is bool or not -_FLOAT_MAX <= number <= _FLOAT_MAX:
            spec = next((c for c in signature.inputs if c.name == column), None)
            raise SchemaViolation(
                f"column {column!r} row {row}: expected {spec.type if spec else 'a number'}, "
                f"got {kind.__name__} {_short(v)}",
                field=str(column),
            )


def _cells(
    key: str, value: Any, signature: Signature, kind: type
) -> Iterator[tuple[Any, int, Any]]:
    """(column, row, value) of the request's data, walked only where a value of type ``kind``
    is present (the usual request, all floats, costs one C-speed pass)."""
    names = signature.names
    if key == "dataframe_split" and isinstance(value, dict):
        columns = value.get("columns")
        yield from _cells_of_rows(
            value.get("data"), columns if isinstance(columns, list) else names, kind
        )
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        records = [r for r in value if isinstance(r, dict)]
        if _holds(chain.from_iterable(r.values() for r in records), kind):
            for i, rec in enumerate(records):
                for column, v in rec.items():
                    yield column, i, v
    elif isinstance(value, dict):
        for column, values in value.items():
            values = values if isinstance(values, list) else [values]
            if _holds(values, kind):
                for i, v in enumerate(values):
                    yield column, i, v
    elif isinstance(value, list):
        if value and not isinstance(value[0], list) and len(names) == 1:
            value = [[v] for v in value]
        yield from _cells_of_rows(value, names, kind)


def _cells_of_rows(rows: Any, columns: Sequence[Any], kind: type) -> Iterator[tuple[Any, int, Any]]:
    if not isinstance(rows, list):
        return
    if not _holds(chain.from_iterable(r for r in rows if isinstance(r, list)), kind):
        return
    for i, row in enumerate(rows):
        if isinstance(row, list):
            for j, v in enumerate(row):
                yield (columns[j] if j < len(columns) else f"#{j}"), i, v


def _holds(values: Iterable[Any], kind: type) -> bool:
    return kind in set(map(type, values))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def parse_csv(body: bytes, signature: Signature, limits: RequestLimits) -> np.ndarray[Any, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SchemaViolation("the CSV body is not UTF-8", field="csv") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
        types = {c.name: c.type for c in signature.inputs}
        records: list[dict[str, Any]] = []
        for i, row in enumerate(reader):
            if not row:
                continue
            limits.check_rows(len(records) + 1, "csv")
            limits.check_elements((len(records) + 1) * len(header), "csv")
            if len(row) != len(header):
                raise SchemaViolation(
                    f"CSV row {i + 1} has {len(row)} values for {len(header)} columns",
                    field="csv",
                )
            records.append(_csv_record(header, row, i, types, limits))
    except StopIteration:
        raise SchemaViolation("the CSV body is empty", field="csv") from None
    except csv.Error as exc:  # a NUL byte, a field over the csv module's own size limit…
        raise SchemaViolation(f"the CSV body cannot be read: {exc}", field="csv") from None
    return signature.records_to_array(records)


def _csv_record(
    header: list[str], row: list[str], i: int, types: dict[str, str], limits: RequestLimits
) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    for name, cell in zip(header, row, strict=True):
        kind = types.get(name)
        if cell == "":
            rec[name] = None
        elif kind in NUMERIC:
            try:
                rec[name] = float(cell)
            except ValueError:
                raise SchemaViolation(
                    f"column {name!r} row {i}: {_short(cell)} is not a number", field=name
                ) from None
        elif kind == "boolean":
            flag = cell.strip().lower()
            if flag not in _CSV_BOOLEANS:
                raise SchemaViolation(
                    f"column {name!r} row {i}: {_short(cell)} is not a boolean "
                    f"({'/'.join(_CSV_BOOLEANS)})",
                    field=name,
                )
            rec[name] = _CSV_BOOLEANS[flag]
        else:
            limits.check_string(len(cell), name, "characters")
            rec[name] = cell
    return rec


def encode_predictions(predictions: np.ndarray[Any, Any]) -> bytes:
    """The answer's body. pydantic-core's encoder writes a 12,000-row answer in a quarter of the
    time :mod:`json` takes (an eighth for floats), and it holds the worker's GIL all that time."""
    return pydantic_core.to_json({"predictions": predictions.tolist()})


def encode_error(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()
