"""Mergeable one-pass profiles of a data set: per column counts, moments, histogram, sketches.

A :class:`DatasetProfile` is what Shipyard keeps instead of the data: it is built in one pass
(``from_frame``), grows with further batches (``update``), combines with profiles of other
partitions or replicas (``merge``), and round-trips through compact JSON. Numeric columns are
binned on fixed edges taken from the *reference's* quantiles, so that reference and current are
binned alike and drift tests compare exact counts.

A pandas DataFrame or an Arrow table can be profiled. An Arrow table whose columns are all
numbers, strings or booleans (what ``shipyard drift`` reads from Parquet) is profiled from its
Arrow columns, without pandas, whose import costs ``shipyard drift`` more than profiling 20,000
rows does; its profile is the one its pandas frame gets. Any other table goes through pandas.

>>> import pandas as pd
>>> ref = DatasetProfile.from_frame(pd.DataFrame({"x": [1.0, 2.0, None], "c": ["a", "b", "a"]}))
>>> ref.rows, ref.columns["x"].missing, ref.columns["c"].frequencies
(3, 1, {'a': 2, 'b': 1})
"""

from __future__ import annotations

import base64
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import datasketches
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shipyard.errors import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

Kind = Literal["numeric", "categorical"]

# Interior histogram edges are the reference's 5 %, 10 %, …, 95 % quantiles (deduplicated),
# plus two open-ended outer bins: 20 bins where the data allow it.
EDGE_RANKS = np.linspace(0.05, 0.95, 19)
KLL_K = 400  # KLL accuracy parameter: normalised rank error ≈ 0.8 % (99 % bound), ~10 KB
CATEGORY_CAP = 10_000  # frequencies are exact up to this many distinct values…
CATEGORY_TOP_K = 1_000  # …then only the top-k are kept and the rest is counted as "other"
HLL_LG_K = 12
FORMAT_VERSION = 1


def _infer_kind(series: pd.Series) -> Kind:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series.dtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(series.dtype):
        return "numeric"
    if pd.api.types.is_object_dtype(series.dtype):
        present = series.dropna()
        if len(present) == 0:
            return "numeric"
        if not isinstance(present.iloc[0], (str, bytes, bool)):
            parsed = pd.to_numeric(present, errors="coerce")
            if parsed.notna().mean() >= 0.5:
                return "numeric"
    return "categorical"


def _float(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class ColumnProfile:
    """The summary of one column. Numeric fields are unused for categorical columns and back.

    ``missing`` counts nulls and NaN; ``type_violations`` values not of the column's kind (a
    string in a numeric column, a number in an object column of labels); ``infinite`` ±inf.
    Everything else describes the *valid* values. Numbers: mean and variance (Chan et al. 1979
    pairwise update, exact under merge), min, max, a histogram on ``edges`` (bin i holds
    edges[i-1] ≤ x < edges[i]; the outer bins are open) with each bin's sum of values, and a
    KLL quantile sketch (Karnin, Lang, Liberty 2016; Apache DataSketches). Categories: exact
    frequencies up to a cap, then the top values and an ``other`` mass, and an HLL sketch of
    the distinct count.
    """

    name: str
    kind: Kind
    count: int = 0
    missing: int = 0
    type_violations: int = 0
    infinite: int = 0
    # numeric
    valid: int = 0
    mean: float = 0.0
    m2: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    edges: list[float] | None = None
    histogram: list[int] = field(default_factory=list)
    bin_sums: list[float] = field(default_factory=list)
    sketch: Any = None
    # categorical
    frequencies: dict[str, int] = field(default_factory=dict)
    other: int = 0
    capped: bool = False
    hll: Any = None

    @property
    def invalid(self) -> int:
        """Rows that carry no usable value: missing, wrong type or ±inf (the "null bucket")."""
        return self.missing + self.type_violations + self.infinite

    @property
    def missing_share(self) -> float:
        return self.invalid / self.count if self.count else 0.0

    @property
    def variance(self) -> float:
        """Population variance (ddof = 0) of the valid values."""
        return self.m2 / self.valid if self.valid else math.nan

    @property
    def std(self) -> float:
        return math.sqrt(self.variance) if self.valid else math.nan

    @property
    def distinct(self) -> int:
        """Distinct valid categories: exact until the cap, then the HLL estimate."""
        if not self.capped:
            return len(self.frequencies)
        return round(self.hll.get_estimate())

    def quantiles(self, ranks: np.ndarray) -> np.ndarray:
        """Approximate quantiles of the valid values at normalised ranks in [0, 1]."""
        if self.sketch is None or self.sketch.is_empty():
            raise InvalidInput(f"column {self.name!r} has no valid values")
        return np.asarray(self.sketch.get_quantiles(ranks.tolist()), dtype=np.float64)

    @classmethod
    def empty(cls, name: str, kind: Kind, edges: list[float] | None = None) -> ColumnProfile:
        col = cls(name=name, kind=kind)
        if kind == "numeric":
            col.edges = list(edges) if edges is not None else None
            col.histogram = [0] * (len(edges) + 1) if edges is not None else []
            col.bin_sums = [0.0] * len(col.histogram)
            col.sketch = datasketches.kll_doubles_sketch(KLL_K)
        else:
            col.hll = datasketches.hll_sketch(HLL_LG_K)
        return col

    def update(self, series: pd.Series | pa.ChunkedArray) -> None:
        """Fold one batch of this column's values in: a pandas Series, or an Arrow column of
        the type :func:`_arrow_kind` gives this column's kind."""
        self.count += len(series)
        if isinstance(series, pa.ChunkedArray):
            if self.kind == "numeric":
                values = _arrow_numbers(series)
                self.missing += int(np.isnan(values).sum())
                self._fold_numbers(values)
            else:
                self.missing += series.null_count
                counts = pc.value_counts(series.drop_null())
                labels = [str(v) for v in counts.field("values").to_pylist()]  # True → "True"
                self._fold_labels(labels, counts.field("counts").to_pylist())
        elif self.kind == "numeric":
            self._update_numeric(series)
        else:
            self._update_categorical(series)

    def _update_numeric(self, series: pd.Series) -> None:
        import pandas as pd

        if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
            series.dtype
        ):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            self.missing += int(np.isnan(values).sum())
        else:
            null = series.isna().to_numpy()
            parsed = pd.to_numeric(series.where(~null), errors="coerce")
            values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
            nan = np.isnan(values)
            self.missing += int(null.sum())
            self.type_violations += int((nan & ~null).sum())
        self._fold_numbers(values)

    def _fold_numbers(self, values: np.ndarray) -> None:
        """Fold float64 values in whose NaN were counted missing already."""
        finite_mask = np.isfinite(values)
        self.infinite += int(np.isinf(values).sum())
        x = values[finite_mask] if not finite_mask.all() else values
        if x.size == 0:
            if self.edges is None:
                self.edges = []
                self.histogram = [0]
                self.bin_sums = [0.0]
            return
        if self.edges is None:
            self.edges = np.unique(np.quantile(x, EDGE_RANKS, method="lower")).tolist()
            self.histogram = [0] * (len(self.edges) + 1)
            self.bin_sums = [0.0] * len(self.histogram)
        n_b = x.size
        mean_b = float(x.mean())
        m2_b = float(np.sum((x - mean_b) ** 2))
        self._combine_moments(n_b, mean_b, m2_b, float(x.min()), float(x.max()))
        bins = np.searchsorted(np.asarray(self.edges), x, side="right")
        counts = np.bincount(bins, minlength=len(self.edges) + 1)
        self.histogram = (np.asarray(self.histogram, dtype=np.int64) + counts).tolist()
        sums = np.bincount(bins, weights=x, minlength=len(self.edges) + 1)
        self.bin_sums = (np.asarray(self.bin_sums) + sums).tolist()
        # the sketch's binding only takes writeable arrays (pandas hands out read-only views)
        self.sketch.update(x if x.flags.writeable else x.copy())

    def _combine_moments(self, n_b: int, mean_b: float, m2_b: float, lo: float, hi: float) -> None:
        # Chan, Golub, LeVeque (1979): M2 = M2_a + M2_b + δ² · n_a · n_b / n.
        n_a = self.valid
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta * delta * n_a * n_b / n
        self.valid = n
        self.minimum = min(self.minimum, lo)
        self.maximum = max(self.maximum, hi)

    def _update_categorical(self, series: pd.Series) -> None:
        null = series.isna()
        self.missing += int(null.sum())
        present = series[~null]
        if present.dtype == object:
            # a number (or any non-label object) in a column of labels is a type violation
            is_label = present.map(lambda v: isinstance(v, (str, bytes, bool))).to_numpy(bool)
            if not is_label.all():
                self.type_violations += int((~is_label).sum())
                present = present[is_label]
        counts = present.astype(str).value_counts(sort=False)
        self._fold_labels(list(counts.index), counts.to_numpy().tolist())

    def _fold_labels(self, labels: list[str], counts: list[int]) -> None:
        """Fold in each label's count, labels in order of first appearance."""
        for value in labels:
            self.hll.update(value)
        self._add_frequencies(dict(zip(labels, counts, strict=True)))

    def _add_frequencies(self, counts: dict[str, int]) -> None:
        merged = Counter(self.frequencies)
        merged.update(counts)
        if len(merged) > CATEGORY_CAP:
            kept = dict(merged.most_common(CATEGORY_TOP_K))
            self.other += sum(merged.values()) - sum(kept.values())
            self.capped = True
            self.frequencies = kept
        else:
            self.frequencies = dict(merged)

    def merge(self, other: ColumnProfile) -> ColumnProfile:
        """A new profile equal to profiling both columns' rows together."""
        if other.kind != self.kind:
            raise InvalidInput(
                f"cannot merge column {self.name!r}: kinds differ ({self.kind} vs {other.kind})"
            )
        out = ColumnProfile.from_json(self.to_json(), self.name)
        out.count += other.count
        out.missing += other.missing
        out.type_violations += other.type_violations
        out.infinite += other.infinite
        if self.kind == "numeric":
            if other.valid == 0 and not other.histogram:
                return out
            if out.edges is None or (out.valid == 0 and not any(out.histogram)):
                out.edges = list(other.edges or [])
                out.histogram = [0] * (len(out.edges) + 1)
                out.bin_sums = [0.0] * len(out.histogram)
            if other.edges is not None and other.edges != out.edges and other.valid:
                raise InvalidInput(
                    f"cannot merge column {self.name!r}: histogram edges differ; profile both "
                    "batches with the same reference"
                )
            if other.valid:
                out._combine_moments(
                    other.valid, other.mean, other.m2, other.minimum, other.maximum
                )
                out.histogram = [a + b for a, b in zip(out.histogram, other.histogram, strict=True)]
                out.bin_sums = [a + b for a, b in zip(out.bin_sums, other.bin_sums, strict=True)]
                out.sketch.merge(other.sketch)
        else:
            out.other += other.other
            out.capped = out.capped or other.capped
            out._add_frequencies(other.frequencies)
            union = datasketches.hll_union(HLL_LG_K)
            union.update(out.hll)
            union.update(other.hll)
            out.hll = union.get_result()
        return out

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "count": self.count,
            "missing": self.missing,
            "type_violations": self.type_violations,
            "infinite": self.infinite,
        }
        if self.kind == "numeric":
            d.update(
                valid=self.valid,
                mean=self.mean,
                m2=self.m2,
                min=_float(self.minimum),
                max=_float(self.maximum),
                edges=self.edges,
                histogram=self.histogram,
                bin_sums=self.bin_sums,
                kll=base64.b64encode(self.sketch.serialize()).decode("ascii"),
            )
        else:
            d.update(
                frequencies=self.frequencies,
                other=self.other,
                capped=self.capped,
                hll=base64.b64encode(self.hll.serialize_compact()).decode("ascii"),
            )
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], name: str | None = None) -> ColumnProfile:
        try:
            kind = d["kind"]
            if kind not in ("numeric", "categorical"):
                raise InvalidInput(f"unknown column kind {kind!r}")
            col = cls(
                name=name if name is not None else str(d.get("name", "")),
                kind=kind,
                count=int(d["count"]),
                missing=int(d["missing"]),
                type_violations=int(d["type_violations"]),
                infinite=int(d["infinite"]),
            )
            if kind == "numeric":
                col.valid = int(d["valid"])
                col.mean = float(d["mean"])
                col.m2 = float(d["m2"])
                col.minimum = math.inf if d["min"] is None else float(d["min"])
                col.maximum = -math.inf if d["max"] is None else float(d["max"])
                col.edges = None if d["edges"] is None else [float(e) for e in d["edges"]]
                col.histogram = [int(h) for h in d["histogram"]]
                col.bin_sums = [float(v) for v in d["bin_sums"]]
                if len(col.bin_sums) != len(col.histogram):
                    raise InvalidInput(f"column {name!r}: bin_sums and histogram differ in length")
                col.sketch = datasketches.kll_doubles_sketch.deserialize(base64.b64decode(d["kll"]))
            else:
                col.frequencies = {str(k): int(v) for k, v in d["frequencies"].items()}
                col.other = int(d["other"])
                col.capped = bool(d["capped"])
                col.hll = datasketches.hll_sketch.deserialize(base64.b64decode(d["hll"]))
        except InvalidInput:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InvalidInput(f"malformed column profile {name!r}: {exc}") from exc
        return col


class DatasetProfile:
    """Profiles of every column of a data set, built in one pass and mergeable.

    ``from_frame(df, reference=ref)`` bins numeric columns on the reference's edges and keeps the
    reference's column kinds; without a reference, kinds are inferred and edges come from this
    frame's own quantiles.
    """

    def __init__(self, columns: dict[str, ColumnProfile] | None = None, rows: int = 0) -> None:
        self.columns: dict[str, ColumnProfile] = columns or {}
        self.rows = rows

    @classmethod
    def from_frame(cls, frame: Any, reference: DatasetProfile | None = None) -> DatasetProfile:
        profile = cls.empty_like(reference) if reference is not None else cls()
        return profile.update(frame)

    @classmethod
    def empty_like(cls, reference: DatasetProfile) -> DatasetProfile:
        """An empty profile with the reference's columns, kinds and edges."""
        return cls(
            {
                name: ColumnProfile.empty(name, col.kind, col.edges)
                for name, col in reference.columns.items()
            }
        )

    def update(self, frame: Any) -> DatasetProfile:
        """Fold another batch in (binned on this profile's edges); returns self."""
        arrow = self._arrow_columns(frame)
        if arrow is not None:
            columns: dict[str, Any] = dict(arrow)
            rows = frame.num_rows
        else:
            df = _as_pandas(frame)
            columns = {str(name): df[name] for name in df.columns}
            rows = len(df)
        for key, series in columns.items():
            if key not in self.columns:
                kind = _arrow_kind(series.type) if arrow is not None else _infer_kind(series)
                assert kind is not None  # _arrow_columns took only columns of a known kind
                self.columns[key] = ColumnProfile.empty(key, kind)
                # a column first seen now was absent (missing) in the rows seen before
                self.columns[key].count = self.rows
                self.columns[key].missing = self.rows
            self.columns[key].update(series)
        for key, col in self.columns.items():
            if key not in columns:  # a column absent from this batch is missing in all its rows
                col.count += rows
                col.missing += rows
        self.rows += rows
        return self

    def _arrow_columns(self, frame: Any) -> dict[str, pa.ChunkedArray] | None:
        """An Arrow table's columns by name, if each can be profiled without pandas: a number,
        string or boolean column, of this profile's kind where it has the column already, with
        a valid value where it does not (pandas may infer an empty column's kind otherwise).
        The columns a pandas index was stored in are left out, as pandas makes them the index.
        None: the table goes through pandas."""
        if isinstance(frame, pa.RecordBatch):
            frame = pa.Table.from_batches([frame])
        if not isinstance(frame, pa.Table) or len(set(frame.column_names)) < frame.num_columns:
            return None
        metadata = frame.schema.pandas_metadata or {}
        index = {c for c in metadata.get("index_columns", ()) if isinstance(c, str)}
        columns: dict[str, pa.ChunkedArray] = {}
        for name, column in zip(frame.column_names, frame.columns, strict=True):
            if name in index:
                continue
            kind = _arrow_kind(column.type)
            known = self.columns.get(name)
            if kind is None:
                return None
            if known is not None and known.kind != kind:
                return None
            if known is None and column.null_count == len(column):
                return None
            columns[name] = column
        return columns

    def merge(self, other: DatasetProfile) -> DatasetProfile:
        """A new profile equal to profiling the concatenation of both data sets."""
        merged: dict[str, ColumnProfile] = {}
        for name in {**self.columns, **other.columns}:
            a, b = self.columns.get(name), other.columns.get(name)
            if a is not None and b is not None:
                merged[name] = a.merge(b)
            else:
                present = a if a is not None else b
                assert present is not None
                absent_rows = other.rows if a is not None else self.rows
                filler = ColumnProfile.empty(name, present.kind, present.edges)
                filler.count = filler.missing = absent_rows
                merged[name] = present.merge(filler)
        return DatasetProfile(merged, self.rows + other.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "shipyard.profile",
            "version": FORMAT_VERSION,
            "rows": self.rows,
            "columns": {name: col.to_json() for name, col in self.columns.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetProfile:
        if not isinstance(data, dict) or data.get("format") != "shipyard.profile":
            raise InvalidInput("not a Shipyard profile (expected format 'shipyard.profile')")
        if data.get("version") != FORMAT_VERSION:
            raise InvalidInput(f"unsupported profile version {data.get('version')!r}")
        columns = data.get("columns")
        if not isinstance(columns, dict):
            raise InvalidInput("malformed profile: 'columns' must be an object")
        return cls(
            {name: ColumnProfile.from_json(col, name) for name, col in columns.items()},
            int(data.get("rows", 0)),
        )


def _arrow_kind(arrow_type: pa.DataType) -> Kind | None:
    """The kind of an Arrow column profiled without pandas (the kind its pandas Series gets);
    None for the types left to pandas."""
    types = pa.types
    if arrow_type in _NUMPY_TYPES:
        return "numeric"
    if (
        types.is_boolean(arrow_type)
        or types.is_string(arrow_type)
        or types.is_large_string(arrow_type)
    ):
        return "categorical"
    return None


_NUMPY_TYPES: dict[pa.DataType, np.dtype[Any]] = {
    pa.int8(): np.dtype(np.int8),
    pa.int16(): np.dtype(np.int16),
    pa.int32(): np.dtype(np.int32),
    pa.int64(): np.dtype(np.int64),
    pa.uint8(): np.dtype(np.uint8),
    pa.uint16(): np.dtype(np.uint16),
    pa.uint32(): np.dtype(np.uint32),
    pa.uint64(): np.dtype(np.uint64),
    pa.float32(): np.dtype(np.float32),
    pa.float64(): np.dtype(np.float64),
}


def _arrow_numbers(column: pa.ChunkedArray) -> np.ndarray:
    """A number column as float64 with its nulls as NaN, the values pandas gives it, read from
    the Arrow buffers (validity bitmap, values): every pyarrow conversion to NumPy loads pandas.
    """
    dtype = _NUMPY_TYPES[column.type]
    parts = [np.empty(0)]
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        validity, data = chunk.buffers()
        values = np.frombuffer(
            data, dtype=dtype, count=len(chunk), offset=chunk.offset * dtype.itemsize
        ).astype(np.float64)
        if chunk.null_count:
            bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
            values[bits[chunk.offset : chunk.offset + len(chunk)] == 0] = np.nan
        parts.append(values)
    return np.concatenate(parts)


def _as_pandas(frame: Any) -> pd.DataFrame:
    import pandas as pd

    if isinstance(frame, pd.DataFrame):
        return frame
    if isinstance(frame, (pa.Table, pa.RecordBatch)):
        return frame.to_pandas()
    raise InvalidInput(f"expected a pandas DataFrame or an Arrow table, got {type(frame).__name__}")
