"""Infer a schema from reference data and validate batches against it.

A :class:`Schema` records, per column, its kind (numeric or categorical), whether it may be null
and how often, the numeric range and the category domain seen in the reference. ``validate``
returns one :class:`Anomaly` per problem found, each with the number of rows concerned and an
example value, in the spirit of TFDV's anomalies (``validate_statistics``).

>>> import pandas as pd
>>> schema = infer_schema(pd.DataFrame({"age": [30, 40], "city": ["Oslo", "Rome"]}))
>>> batch = pd.DataFrame({"age": [50], "city": ["Paris"]})
>>> [(a.column, a.kind, a.rows) for a in validate(batch, schema)]
[('age', 'out_of_range', 1), ('city', 'unseen_category', 1)]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from shipyard.errors import InvalidInput
from shipyard.stats.profile import Kind, _as_pandas, _infer_kind

AnomalyKind = Literal[
    "missing_column",
    "new_column",
    "wrong_type",
    "nulls_above_expectation",
    "out_of_range",
    "unseen_category",
    "nan_or_inf",
]
DOMAIN_CAP = 1_000  # a categorical column with more distinct values gets no domain check
NULL_SHARE_TOLERANCE = 0.05  # nulls are anomalous above the reference share + 5 points


@dataclass(frozen=True)
class Anomaly:
    """One problem in a batch: which column, what kind, how many rows, one example value."""

    column: str
    kind: AnomalyKind
    rows: int
    example: Any
    detail: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["example"] = None if self.example is None else str(self.example)
        return d


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    kind: Kind
    nullable: bool
    max_null_share: float
    minimum: float | None = None
    maximum: float | None = None
    allow_infinite: bool = False
    domain: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Schema:
    columns: dict[str, ColumnSchema]

    def to_json(self) -> dict[str, Any]:
        cols = {}
        for name, c in self.columns.items():
            d = asdict(c)
            d.pop("name")
            d["domain"] = None if c.domain is None else list(c.domain)
            cols[name] = d
        return {"format": "shipyard.schema", "version": 1, "columns": cols}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schema:
        if not isinstance(data, dict) or data.get("format") != "shipyard.schema":
            raise InvalidInput("not a Shipyard schema (expected format 'shipyard.schema')")
        try:
            columns = {}
            for name, d in data["columns"].items():
                if d["kind"] not in ("numeric", "categorical"):
                    raise InvalidInput(f"column {name!r}: unknown kind {d['kind']!r}")
                columns[name] = ColumnSchema(
                    name=name,
                    kind=d["kind"],
                    nullable=bool(d["nullable"]),
                    max_null_share=float(d["max_null_share"]),
                    minimum=None if d.get("minimum") is None else float(d["minimum"]),
                    maximum=None if d.get("maximum") is None else float(d["maximum"]),
                    allow_infinite=bool(d.get("allow_infinite", False)),
                    domain=None if d.get("domain") is None else tuple(str(v) for v in d["domain"]),
                )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"malformed schema: {exc}") from exc
        return cls(columns)


def infer_schema(frame: Any) -> Schema:
    """The schema the reference data satisfy: kinds, null shares, ranges, category domains."""
    df = _as_pandas(frame)
    columns: dict[str, ColumnSchema] = {}
    for raw_name in df.columns:
        name = str(raw_name)
        series = df[raw_name]
        kind = _infer_kind(series)
        null = series.isna()
        share = float(null.mean()) if len(series) else 0.0
        if kind == "numeric":
            values = pd.to_numeric(series[~null], errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            finite = values[np.isfinite(values)]
            columns[name] = ColumnSchema(
                name,
                kind,
                nullable=bool(null.any()),
                max_null_share=share,
                minimum=float(finite.min()) if finite.size else None,
                maximum=float(finite.max()) if finite.size else None,
                allow_infinite=bool(np.isinf(values).any()),
            )
        else:
            uniques = series[~null].astype(str).unique()
            domain = tuple(sorted(uniques)) if len(uniques) <= DOMAIN_CAP else None
            columns[name] = ColumnSchema(
                name, kind, nullable=bool(null.any()), max_null_share=share, domain=domain
            )
    return Schema(columns)


def validate(frame: Any, schema: Schema) -> list[Anomaly]:
    """Every anomaly of ``frame`` against ``schema``, in column order."""
    df = _as_pandas(frame)
    present = {str(c): c for c in df.columns}
    anomalies: list[Anomaly] = []
    for name, col in schema.columns.items():
        if name not in present:
            anomalies.append(
                Anomaly(name, "missing_column", len(df), None, "column absent from the data")
            )
            continue
        anomalies.extend(_validate_column(df[present[name]], col))
    for name in present:
        if name not in schema.columns:
            example = df[present[name]].dropna()
            anomalies.append(
                Anomaly(
                    name,
                    "new_column",
                    len(df),
                    example.iloc[0] if len(example) else None,
                    "column not in the schema",
                )
            )
    return anomalies


def _first(series: pd.Series, mask: np.ndarray) -> Any:
    idx = np.flatnonzero(mask)
    value = series.iloc[int(idx[0])]
    return value.item() if isinstance(value, np.generic) else value


def _validate_column(series: pd.Series, col: ColumnSchema) -> list[Anomaly]:
    out: list[Anomaly] = []
    null = series.isna().to_numpy()
    n_null = int(null.sum())
    share = n_null / len(series) if len(series) else 0.0
    limit = col.max_null_share + NULL_SHARE_TOLERANCE if col.nullable else 0.0
    if n_null and share > limit:
        out.append(
            Anomaly(
                col.name,
                "nulls_above_expectation",
                n_null,
                None,
                f"{share:.1%} null, expected at most {limit:.1%}",
            )
        )
    if col.kind == "numeric":
        if pd.api.types.is_bool_dtype(series.dtype):
            parsed = pd.Series(np.full(len(series), np.nan))
        else:
            parsed = pd.to_numeric(series.where(~null), errors="coerce")
        values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
        wrong = np.isnan(values) & ~null
        if wrong.any():
            out.append(
                Anomaly(
                    col.name, "wrong_type", int(wrong.sum()), _first(series, wrong), "not a number"
                )
            )
        inf = np.isinf(values)
        if inf.any() and not col.allow_infinite:
            out.append(Anomaly(col.name, "nan_or_inf", int(inf.sum()), _first(series, inf), "±inf"))
        finite = np.isfinite(values)
        lo = -np.inf if col.minimum is None else col.minimum
        hi = np.inf if col.maximum is None else col.maximum
        outside = finite & ((values < lo) | (values > hi))
        if outside.any():
            out.append(
                Anomaly(
                    col.name,
                    "out_of_range",
                    int(outside.sum()),
                    _first(series, outside),
                    f"outside [{col.minimum:g}, {col.maximum:g}]",
                )
            )
    else:
        if (
            pd.api.types.is_numeric_dtype(series.dtype)
            and not pd.api.types.is_bool_dtype(series.dtype)
            and col.domain is not None
            and not _domain_is_numeric(col.domain)
        ):
            wrong = ~null
        else:
            wrong = np.zeros(len(series), dtype=bool)
        if wrong.any():
            out.append(
                Anomaly(
                    col.name,
                    "wrong_type",
                    int(wrong.sum()),
                    _first(series, wrong),
                    "not a category label",
                )
            )
        if col.domain is not None:
            text = series.astype(str).to_numpy()
            unseen = ~null & ~wrong & ~np.isin(text, np.asarray(col.domain, dtype=object))
            if unseen.any():
                out.append(
                    Anomaly(
                        col.name,
                        "unseen_category",
                        int(unseen.sum()),
                        _first(series, unseen),
                        f"{len(set(text[unseen]))} value(s) outside the domain",
                    )
                )
    return out


def _domain_is_numeric(domain: tuple[str, ...]) -> bool:
    return bool(len(domain)) and bool(
        pd.to_numeric(pd.Series(domain), errors="coerce").notna().all()
    )
