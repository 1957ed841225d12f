"""``shipyard drift``, ``shipyard profile`` and ``shipyard schema``: statistics for two files.

For people who just have a reference and a current data set (CSV or Parquet); a stored profile
(JSON from ``shipyard profile``) can stand in for the reference so the training data need not
be re-read.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from shipyard import stats  # its kernels (scipy, pandas) load when a command runs
from shipyard.cli.output import FittedTable, console, flag, print_json, table
from shipyard.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from shipyard.stats import ColumnDrift, DatasetProfile, DriftReport

DRIFT_EXIT_CODE = 3

schema_app = typer.Typer(
    help="Infer a schema from data, or validate data against one.", no_args_is_help=True
)


def _read_frame(path: Path) -> pa.Table | pd.DataFrame:
    """A Parquet file as an Arrow table (the statistics take one without loading pandas), a CSV
    file as a pandas DataFrame."""
    if not path.exists():
        raise NotFound("file", str(path))
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            if path.is_dir():  # a partitioned data set
                return pq.read_table(path)
            with pq.ParquetFile(path) as file:  # not read_table: pyarrow.dataset loads pandas
                return file.read()
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise InvalidInput(_cannot_read(path, exc)) from exc
    if suffix in (".csv", ".txt", ".gz"):
        import pandas as pd

        try:
            return pd.read_csv(path)
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise InvalidInput(_cannot_read(path, exc)) from exc
    raise InvalidInput(f"cannot read {path}: expected a .csv or .parquet file")


def _cannot_read(path: Path, exc: Exception) -> str:
    return f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}"


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise NotFound("file", str(path))
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc


def _reference_profile(path: Path) -> DatasetProfile:
    if path.suffix.lower() == ".json":
        return stats.DatasetProfile.from_json(_read_json(path))
    return stats.DatasetProfile.from_frame(_read_frame(path))


def _write_json(path: Path, data: Any) -> None:
    try:
        path.write_text(json.dumps(data, separators=(",", ":"), allow_nan=False))
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from exc


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _drift_table(report: DriftReport) -> FittedTable:
    columns = table(
        "column",
        "test",
        "statistic",
        "p-value",
        "distance",
        "threshold",
        "verdict",
        "missing ref → cur",
        title="Drift by column",
    )
    for c in report.columns:
        verdict = "[bold red]DRIFT[/]" if c.drifted else "[green]ok[/]"
        columns.add_row(
            c.column,
            c.test,
            _fmt(c.statistic),
            _fmt(c.p_value),
            f"{stats.SHORT_NAMES.get(c.effect_name, c.effect_name)} {_fmt(c.effect)}",
            _fmt(c.threshold),
            verdict,
            f"{c.missing_ref:.1%} → {c.missing_cur:.1%}",
        )
    return columns


def drift(
    reference: Path = typer.Argument(
        ..., help="Reference data (CSV/Parquet) or a stored profile (.json)."
    ),
    current: Path = typer.Argument(..., help="Current data (CSV/Parquet)."),
    as_json: bool = flag("--json", help="Print the report as JSON."),
    html_file: Path | None = typer.Option(
        None, "--html", help="Also write a self-contained HTML report."
    ),
    fail_on_drift: bool = flag(
        "--fail-on-drift", help=f"Exit with {DRIFT_EXIT_CODE} when the data set drifts."
    ),
    alpha: float = typer.Option(
        0.05, help="Significance level after the correction across columns."
    ),
    drift_share: float = typer.Option(
        0.5, help="Share of drifted columns that makes the data set drift."
    ),
) -> None:
    """Compare CURRENT with REFERENCE column by column and say what drifted."""
    config = stats.DriftConfig(alpha=alpha, dataset_drift_share=drift_share)
    ref = _reference_profile(reference)
    cur = stats.DatasetProfile.from_frame(_read_frame(current), reference=ref)
    report = stats.compare(ref, cur, config)
    if html_file is not None:
        try:
            html_file.write_text(
                render_html(report, str(reference), str(current)), encoding="utf-8"
            )
        except OSError as exc:
            raise InvalidInput(f"cannot write {html_file}: {exc.strerror or exc}") from exc
    if as_json:
        print_json(report.to_json())
    else:
        console.print(_drift_table(report))
        verdict = "[bold red]drifted[/]" if report.drifted else "[green]not drifted[/]"
        console.print(
            f"{len(report.drifted_columns)} of {len(report.columns)} columns drifted "
            f"({report.share_drifted:.0%}); data set {verdict} "
            f"(threshold {config.dataset_drift_share:.0%} of columns)"
        )
        if report.new_columns:
            console.print(f"new columns not in the reference: {', '.join(report.new_columns)}")
    if fail_on_drift and report.drifted:
        raise typer.Exit(DRIFT_EXIT_CODE)


def profile(
    data: Path = typer.Argument(..., help="Data to profile (CSV/Parquet)."),
    out: Path = typer.Option(..., "--out", help="Where to write the profile JSON."),
) -> None:
    """Profile DATA in one pass and store the profile (it can stand in for a drift reference)."""
    prof = stats.DatasetProfile.from_frame(_read_frame(data))
    _write_json(out, prof.to_json())
    console.print(f"[green]✓[/] profiled {prof.rows} rows × {len(prof.columns)} columns → {out}")


@schema_app.command("infer")
def schema_infer(
    data: Path = typer.Argument(..., help="Reference data (CSV/Parquet)."),
    out: Path = typer.Option(..., "--out", help="Where to write the schema JSON."),
) -> None:
    """Infer kinds, nullability, ranges and category domains from DATA."""
    schema = stats.infer_schema(_read_frame(data))
    _write_json(out, schema.to_json())
    console.print(f"[green]✓[/] schema of {len(schema.columns)} columns → {out}")


@schema_app.command("validate")
def schema_validate(
    data: Path = typer.Argument(..., help="Data to check (CSV/Parquet)."),
    schema_file: Path = typer.Option(
        ..., "--schema", help="Schema JSON from `shipyard schema infer`."
    ),
    as_json: bool = flag("--json", help="Print the anomalies as JSON."),
    fail_on_anomaly: bool = flag(
        "--fail-on-anomaly", help=f"Exit with {DRIFT_EXIT_CODE} when any anomaly is found."
    ),
) -> None:
    """List every anomaly of DATA against the schema."""
    schema = stats.Schema.from_json(_read_json(schema_file))
    anomalies = stats.validate(_read_frame(data), schema)
    if as_json:
        print_json([a.to_json() for a in anomalies])
    elif not anomalies:
        console.print("[green]✓[/] no anomalies")
    else:
        found = table(
            "column",
            "kind",
            "rows",
            "example",
            "detail",
            title=f"{len(anomalies)} anomalies",
            free={"example", "detail"},
        )
        for a in anomalies:
            found.add_row(
                a.column,
                a.kind,
                str(a.rows),
                "-" if a.example is None else repr(a.example),
                a.detail,
            )
        console.print(found)
    if fail_on_anomaly and anomalies:
        raise typer.Exit(DRIFT_EXIT_CODE)


def _svg_histogram(c: ColumnDrift, width: int = 360, height: int = 90) -> str:
    """Reference (grey) and current (red) bin shares side by side, as inline SVG."""
    ref_n, cur_n = sum(c.reference_counts) or 1, sum(c.current_counts) or 1
    bins = list(zip(c.bins, c.reference_counts, c.current_counts, strict=True))[:60]
    top = max([max(r / ref_n, k / cur_n) for _, r, k in bins] + [1e-12])
    step = width / max(len(bins), 1)
    bar = step * 0.42
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    for i, (label, r, k) in enumerate(bins):
        for j, (share, color) in enumerate(((r / ref_n, "#999"), (k / cur_n, "#d33"))):
            h = share / top * (height - 2)
            x = i * step + j * bar
            parts.append(
                f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{color}">'
                f"<title>{html.escape(str(label))}: {share:.2%}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: DriftReport, reference_name: str, current_name: str) -> str:
    """A self-contained page: a summary, one row per column, a histogram per drifted column."""
    rows = []
    for c in report.columns:
        verdict = '<b class="bad">DRIFT</b>' if c.drifted else "ok"
        rows.append(
            f"<tr><td>{html.escape(c.column)}</td><td>{c.test}</td><td>{_fmt(c.statistic)}</td>"
            f"<td>{_fmt(c.p_value)}</td><td>{c.effect_name} {_fmt(c.effect)}</td>"
            f"<td>{_fmt(c.threshold)}</td><td>{verdict}</td>"
            f"<td>{c.missing_ref:.1%} → {c.missing_cur:.1%}</td></tr>"
        )
    plots = [
        f"<figure><figcaption><b>{html.escape(c.column)}</b> — {html.escape(c.reason)}"
        f"</figcaption>{_svg_histogram(c)}</figure>"
        for c in report.columns
        if c.drifted and c.bins
    ]
    summary = (
        f"{len(report.drifted_columns)} of {len(report.columns)} columns drifted "
        f"({report.share_drifted:.0%}); data set {'drifted' if report.drifted else 'not drifted'}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Shipyard drift report</title>"
        "<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border-bottom:1px solid #ddd;padding:2px 8px;text-align:left}.bad{color:#d33}"
        "figure{display:inline-block;margin:1em}</style></head><body>"
        f"<h1>Drift: {html.escape(current_name)} vs {html.escape(reference_name)}</h1>"
        f"<p>{summary}. "
        "Grey: reference, red: current (share of rows per bin).</p>"
        f"<section>{''.join(plots)}</section><table><tr><th>column</th><th>test</th>"
        "<th>statistic</th><th>p-value</th><th>distance</th><th>threshold</th><th>verdict</th>"
        f"<th>missing ref → cur</th></tr>{''.join(rows)}</table></body></html>"
    )


def register(app: typer.Typer) -> None:
    app.command()(drift)
    app.command()(profile)
    app.add_typer(schema_app, name="schema")
