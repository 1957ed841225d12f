"""A model's signature: its input columns and types, its outputs; and turning requests into arrays.

Column types follow MLflow's schema names (``double``, ``float``, ``long``, ``integer``,
``boolean``, ``string``) so that an imported MLflow signature keeps its meaning.

Validation is built for the request path: an all-numeric batch goes through one
``numpy.asarray`` call; only a batch that fails that fast path is walked value by value, to name
the column and row that is wrong (:class:`~shipyard.errors.SchemaViolation` with ``field``).
``numpy.asarray([True, 1.5])`` makes the boolean 1.0, so a batch whose array holds a 0 or a 1
has its values' types checked too (one C-speed pass) before the fast path takes it. An integer
beyond a float's range (``10**400``) is refused naming its column, not left to overflow.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from shipyard.errors import InvalidInput, SchemaViolation

NUMERIC = {"double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32}
INTEGRAL = {"long", "integer"}
TYPES = {*NUMERIC, "boolean", "string"}

_PANDAS_TO_TYPE = {"f": "double", "i": "long", "u": "long", "b": "boolean"}
_FLOAT_MAX = sys.float_info.max


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str = "double"
    required: bool = True

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise InvalidInput(
                f"column {self.name!r}: unknown type {self.type!r}; use one of {sorted(TYPES)}"
            )

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "required": self.required}


@dataclass(frozen=True)
class Signature:
    """Inputs (in the order the model expects them) and outputs of a model."""

    inputs: tuple[ColumnSpec, ...]
    outputs: tuple[ColumnSpec, ...] = ()
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    numeric: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(c.name for c in self.inputs))
        object.__setattr__(self, "numeric", all(c.type in NUMERIC for c in self.inputs))
        if len(set(self.names)) != len(self.names):
            raise InvalidInput(f"signature repeats a column name: {list(self.names)}")

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [c.to_json() for c in self.inputs],
            "outputs": [c.to_json() for c in self.outputs],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature:
        try:
            return cls(
                tuple(ColumnSpec(**c) for c in data.get("inputs", [])),
                tuple(ColumnSpec(**c) for c in data.get("outputs", [])),
            )
        except TypeError as exc:
            raise InvalidInput(f"malformed signature: {exc}") from None

    @classmethod
    def from_mlflow(cls, inputs_json: str, outputs_json: str | None = None) -> Signature:
        """From the JSON strings under ``signature.inputs``/``outputs`` of an MLflow ``MLmodel``."""

        def columns(text: str | None, default_name: str) -> tuple[ColumnSpec, ...]:
            if not text:
                return ()
            try:
                specs = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"MLmodel signature is not JSON: {exc}") from None
            if not isinstance(specs, list) or not all(isinstance(x, dict) for x in specs):
                raise InvalidInput("MLmodel signature must be a JSON list of column objects")
            out = []
            for i, spec in enumerate(specs):
                kind = spec.get("type", "double")
                if kind == "tensor":
                    kind = "double"
                out.append(
                    ColumnSpec(
                        spec.get("name", f"{default_name}{i}"),
                        kind,
                        bool(spec.get("required", True)),
                    )
                )
            return tuple(out)

        return cls(columns(inputs_json, "input-"), columns(outputs_json, "output-"))

    @classmethod
    def infer(cls, frame: Any, predictions: Any = None) -> Signature:
        """The signature of a pandas DataFrame (and optionally of the model's predictions)."""
        if not hasattr(frame, "dtypes") or not hasattr(frame.dtypes, "items"):
            raise InvalidInput(
                f"training_data must be a pandas DataFrame (its columns name the model's "
                f"inputs), not {type(frame).__name__}: wrap it, "
                f"pandas.DataFrame(X, columns=[...]), or pass signature=..."
            )
        inputs = []
        for name, dtype in frame.dtypes.items():
            inputs.append(ColumnSpec(str(name), _PANDAS_TO_TYPE.get(dtype.kind, "string")))
        outputs: tuple[ColumnSpec, ...] = ()
        if predictions is not None:
            kind = np.asarray(predictions).dtype.kind
            outputs = (ColumnSpec("prediction", _PANDAS_TO_TYPE.get(kind, "string")),)
        return cls(tuple(inputs), outputs)

    # -- validation ----------------------------------------------------------------------------
    def rows_to_array(self, rows: Any) -> np.ndarray[Any, Any]:
        """Validate a list of rows (each a list in signature order) into a 2-D array."""
        if not isinstance(rows, list) or not rows:
            raise SchemaViolation("expected a non-empty list of rows", field="data")
        width = len(self.inputs)
        if self.numeric:
            try:
                arr = np.asarray(rows)
            except (ValueError, TypeError):
                arr = None
            if (
                arr is not None
                and arr.ndim == 2
                and arr.shape[1] == width
                and arr.dtype.kind in "fiu"
                and not _may_hide_booleans(arr, rows)
            ):
                return self.check_numeric(arr.astype(np.float64, copy=False))
        return self._slow_rows(rows)

    def columns_to_array(self, columns: dict[str, Any]) -> np.ndarray[Any, Any]:
        """Validate ``{column: [values…]}`` into a 2-D array in signature order."""
        if not isinstance(columns, dict):
            raise SchemaViolation("expected an object of columns", field="inputs")
        unknown = [k for k in columns if k not in self.names]
        if unknown:
            raise SchemaViolation(
                f"unknown column {unknown[0]!r}; the model expects {list(self.names)}",
                field=unknown[0],
            )
        n: int | None = None
        cols: list[list[Any] | None] = []
        for spec in self.inputs:
            if spec.name not in columns:
                if spec.required:
                    raise SchemaViolation(f"missing required column {spec.name!r}", field=spec.name)
                cols.append(None)
                continue
            values = columns[spec.name]
            if not isinstance(values, list):
                values = [values]
            if n is None:
                n = len(values)
            elif len(values) != n:
                raise SchemaViolation(
                    f"column {spec.name!r} has {len(values)} values, others have {n}",
                    field=spec.name,
                )
            cols.append(values)
        if not n:
            raise SchemaViolation("no rows in the request", field="inputs")
        rows = [[None if c is None else c[i] for c in cols] for i in range(n)]
        return self.rows_to_array(rows)

    def records_to_array(self, records: Any) -> np.ndarray[Any, Any]:
        """Validate ``[{column: value}, …]`` into a 2-D array in signature order."""
        if not isinstance(records, list) or not records:
            raise SchemaViolation("expected a non-empty list of records", field="records")
        rows = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise SchemaViolation(f"record {i} is not an object", field="records")
            for k in rec:
                if k not in self.names:
                    raise SchemaViolation(
                        f"record {i}: unknown column {k!r}; the model expects {list(self.names)}",
                        field=str(k),
                    )
            rows.append([rec.get(name) for name in self.names])
        return self.rows_to_array(rows)

    def frame_to_array(self, columns: Sequence[Any], data: Any) -> np.ndarray[Any, Any]:
        """Validate pandas ``split`` orientation (``columns`` + ``data``) into a 2-D array."""
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise SchemaViolation("'columns' must be a list of names", field="columns")
        if list(columns) == list(self.names):
            return self.rows_to_array(data)
        if not isinstance(data, list):
            raise SchemaViolation("'data' must be a list of rows", field="data")
        index = {c: i for i, c in enumerate(columns)}
        records = []
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(columns):
                raise SchemaViolation(
                    f"row {i} has {len(row) if isinstance(row, list) else 'no'} values "
                    f"for {len(columns)} columns",
                    field="data",
                )
            records.append({c: row[j] for c, j in index.items()})
        return self.records_to_array(records)

    def check_numeric(self, arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        bad = ~np.isfinite(arr)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            spec = self.inputs[col]
            if spec.required or not np.isnan(arr[row, col]):
                raise SchemaViolation(
                    f"column {spec.name!r} row {row}: {arr[row, col]!r} is not a finite number",
                    field=spec.name,
                )
        for j, spec in enumerate(self.inputs):
            if spec.type in INTEGRAL:
                column = arr[:, j]
                frac = np.isfinite(column) & (column != np.floor(column))
                if frac.any():
                    row = int(np.argmax(frac))
                    raise SchemaViolation(
                        f"column {spec.name!r} row {row}: {column[row]!r} is not an integer",
                        field=spec.name,
                    )
        return arr

    def _slow_rows(self, rows: list[Any]) -> np.ndarray[Any, Any]:
        width = len(self.inputs)
        out: list[list[Any]] = []
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                raise SchemaViolation(f"row {i} is not a list of values", field="data")
            if len(row) != width:
                raise SchemaViolation(
                    f"row {i} has {len(row)} values; the model expects {width}: {list(self.names)}",
                    field="data",
                )
            out.append([_check_value(spec, v, i) for spec, v in zip(self.inputs, row, strict=True)])
        if self.numeric:
            return self.check_numeric(np.asarray(out, dtype=np.float64))
        return np.asarray(out, dtype=object)


def _may_hide_booleans(arr: np.ndarray[Any, Any], rows: list[Any]) -> bool:
    """Whether ``rows`` may hold a boolean that ``numpy.asarray`` turned into 0 or 1: checked by
    the values' types only when the array holds a 0 or a 1."""
    if not ((arr == 0) | (arr == 1)).any():
        return False
    return bool in set(map(type, chain.from_iterable(rows)))


def _check_value(spec: ColumnSpec, value: Any, row: int) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if spec.required:
            raise SchemaViolation(
                f"column {spec.name!r} row {row}: missing value in a required column",
                field=spec.name,
            )
        return math.nan if spec.type in NUMERIC else None
    if spec.type in NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SchemaViolation(
                f"column {spec.name!r} row {row}: expected {spec.type}, "
                f"got {type(value).__name__} {value!r}",
                field=spec.name,
            )
        if not -_FLOAT_MAX <= value <= _FLOAT_MAX:
            raise SchemaViolation(
                f"column {spec.name!r} row {row}: {_short(value)} is out of range for {spec.type}",
                field=spec.name,
            )
        return value
    if spec.type == "boolean":
        if not isinstance(value, bool):
            raise SchemaViolation(
                f"column {spec.name!r} row {row}: expected boolean, got {value!r}",
                field=spec.name,
            )
        return value
    if not isinstance(value, str):
        raise SchemaViolation(
            f"column {spec.name!r} row {row}: expected string, got {value!r}", field=spec.name
        )
    return value


def _short(value: Any) -> str:
    """``repr(value)``, cut to a readable length (``10**400`` has 401 digits; Python refuses to
    write an integer of more than 4,300)."""
    if type(value) is int and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"
