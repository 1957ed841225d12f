"""MLflow's scoring protocol (``mlflow models serve``, 3.x): ``POST /invocations``.

A JSON body holds exactly one of ``dataframe_split`` (pandas ``orient="split"``),
``dataframe_records``, ``instances`` (TF-serving rows) or ``inputs`` (TF-serving columns), and
optionally ``params``; ``text/csv`` bodies have a header row. The answer is
``{"predictions": …}``; errors are ``{"error_code": …, "message": …}``.
Every format is validated straight into a NumPy array — no pandas on the request path.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np

from shipyard.errors import InvalidInput, SchemaViolation
from shipyard.registry.signature import NUMERIC, Signature

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


class UnsupportedMediaType(InvalidInput):
    """A content type other than JSON or CSV (answered with 415)."""


def parse(body: bytes, content_type: str, signature: Signature) -> np.ndarray[Any, Any]:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in ("application/json", ""):
        return parse_json(body, signature)
    if kind == "text/csv":
        return parse_csv(body, signature)
    raise UnsupportedMediaType(
        f"content type {content_type!r} is not supported; use application/json or text/csv"
    )


def parse_json(body: bytes, signature: Signature) -> np.ndarray[Any, Any]:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the request is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"the JSON body must be an object with one of {list(FORMATS)}")
    present = [k for k in FORMATS if k in doc]
    extra = [k for k in doc if k not in FORMATS and k != "params"]
    if len(present) != 1 or extra:
        raise InvalidInput(
            f"the JSON body must hold exactly one of {list(FORMATS)} (and optionally 'params'); "
            f"got {sorted(doc)}"
        )
    key = present[0]
    value = doc[key]
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


def parse_csv(body: bytes, signature: Signature) -> np.ndarray[Any, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the CSV body is not UTF-8") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise SchemaViolation("the CSV body is empty", field="csv") from None
    types = {c.name: c.type for c in signature.inputs}
    records = []
    for i, row in enumerate(reader):
        if not row:
            continue
        if len(row) != len(header):
            raise SchemaViolation(
                f"CSV row {i + 1} has {len(row)} values for {len(header)} columns", field="csv"
            )
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
                        f"column {name!r} row {i}: {cell!r} is not a number", field=name
                    ) from None
            elif kind == "boolean":
                rec[name] = cell.strip().lower() in ("true", "1")
            else:
                rec[name] = cell
        records.append(rec)
    return signature.records_to_array(records)


def encode_predictions(predictions: np.ndarray[Any, Any]) -> bytes:
    return json.dumps({"predictions": predictions.tolist()}).encode()


def encode_error(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()
