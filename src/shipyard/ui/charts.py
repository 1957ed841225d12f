"""The dashboard's charts as plotly.js figures (``{"data": [...], "layout": {...}}``), built
from what the operations answered. The browser draws them with plotly.js, served from the
plotly package installed beside Shipyard; these functions only choose traces and axes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

Figure = dict[str, Any]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _layout(title: str, y_title: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 14}},
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "height": 300,
        "xaxis": {"type": "date"},
        "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"},
        "legend": {"orientation": "h"},
        **extra,
    }


def lines(
    title: str,
    ts: Sequence[float],
    series: Iterable[tuple[str, Sequence[float | None]]],
    y_title: str = "",
    *,
    capacity: float | None = None,
) -> Figure:
    """One line per series over shared times, each point marked (a point between two gaps has
    no line to show it); ``capacity`` draws the ceiling as a dashed line."""
    x = [iso(t) for t in ts]
    data: list[dict[str, Any]] = [
        {"type": "scatter", "mode": "lines+markers", "marker": {"size": 4}, "name": name,
         "x": x, "y": list(values), "connectgaps": False}
        for name, values in series
    ]  # fmt: skip
    if capacity is not None and x:
        data.append(
            {"type": "scatter", "mode": "lines", "name": "capacity", "x": [x[0], x[-1]],
             "y": [capacity, capacity], "line": {"dash": "dash"}}
        )  # fmt: skip
    return {"data": data, "layout": _layout(title, y_title)}


def heatmap(
    title: str, ts: Sequence[float], rows: Sequence[tuple[str, Sequence[float | None]]]
) -> Figure:
    """Rows (features) × time, the value as colour."""
    height = max(260, 60 + 18 * len(rows))
    return {
        "data": [
            {
                "type": "heatmap",
                "x": [iso(t) for t in ts],
                "y": [name for name, _ in rows],
                "z": [list(values) for _, values in rows],
                "colorscale": "YlOrRd",
                "reversescale": True,  # plotly.js orders YlOrRd dark red first: high = red
                "colorbar": {"title": {"text": "effect"}},
                "hoverongaps": False,
            }
        ],
        "layout": _layout(title, height=height, yaxis={"automargin": True, "type": "category"}),
    }


def timeline(title: str, bars: Sequence[dict[str, Any]]) -> Figure:
    """Horizontal bars from ``start`` to ``end`` (epoch s), one row per ``row``, coloured by
    ``group`` (a legend entry each)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for bar in bars:
        groups.setdefault(bar["group"], []).append(bar)
    data = []
    for group, mine in groups.items():
        data.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": group,
                "y": [b["row"] for b in mine],
                "base": [iso(b["start"]) for b in mine],
                "x": [max(b["end"] - b["start"], 1.0) * 1000 for b in mine],
                "hovertext": [b.get("text", "") for b in mine],
            }
        )
    height = max(200, 80 + 28 * len({b["row"] for b in bars}))
    return {
        "data": data,
        "layout": _layout(
            title, height=height, barmode="overlay", yaxis={"automargin": True,
            "type": "category", "autorange": "reversed"}
        ),
    }  # fmt: skip


def steps(title: str, points: Sequence[tuple[float, float, str]], y_title: str) -> Figure:
    """A step line (value held until the next point), each point labelled."""
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "line": {"shape": "hv"},
                "x": [iso(t) for t, _, _ in points],
                "y": [v for _, v, _ in points],
                "text": [label for _, _, label in points],
                "name": y_title,
            }
        ],
        "layout": _layout(title, y_title, yaxis={"title": {"text": y_title}, "range": [0, 105]}),
    }


def scatter(title: str, groups: dict[str, list[tuple[float, float]]], y_title: str) -> Figure:
    return {
        "data": [
            {"type": "scatter", "mode": "markers", "name": name,
             "x": [iso(t) for t, _ in pts], "y": [v for _, v in pts]}
            for name, pts in groups.items()
        ],
        "layout": _layout(title, y_title),
    }  # fmt: skip
