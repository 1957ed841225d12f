"""A run's DAG as data and as a plotly.js figure: steps as nodes coloured by state, an edge
from each upstream step, laid out in layers by depth (a step sits one layer right of its
deepest upstream). Nothing but plotly's own scatter traces: no graph library in the browser."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from shipyard.ui.charts import Figure

NOT_STARTED = "not started"
COLOURS = {
    "succeeded": "#2e8540",
    "failed": "#d62728",
    "running": "#1f77b4",
    "pending": "#9aa0a6",
    "cancelled": "#ff7f0e",
    "skipped": "#bcbd22",
    NOT_STARTED: "#c7c7c7",
}
ARROWS_UP_TO = 150
"""Edges drawn with an arrowhead each (a layout annotation); past this, plain lines only."""
BOW = 0.5
"""How far (in rows) an edge that skips layers bows away from the nodes it passes."""
ARROW_AT = 0.85
"""Where along an edge its arrowhead points: short of the node's marker."""


def _latest_attempts(steps: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    latest: dict[str, Mapping[str, Any]] = {}
    for s in steps:
        kept = latest.get(s["step"])
        if kept is None or (s.get("attempt") or 0) >= (kept.get("attempt") or 0):
            latest[s["step"]] = s
    return latest


def dag(steps: Sequence[Mapping[str, Any]], specs: Mapping[str, Any]) -> dict[str, Any]:
    """The run's graph: ``nodes`` (name, state, depth, layer position, duration, usage against
    declared) and ``edges`` (``[upstream, step]``).

    ``steps`` are the run's step records (``runs.show``; the latest attempt of each counts),
    ``specs`` the pipeline's step declarations (``pipelines.show``'s ``step_specs``: each with
    its ``upstream``), in an order where a step follows its upstream. A declared step with no
    record yet is ``not started``; a recorded step the declarations do not name (the pipeline
    changed since) is a node without edges."""
    ran = _latest_attempts(steps)
    names = list(dict.fromkeys([*specs, *ran]))
    upstream = {
        n: [u for u in (specs.get(n) or {}).get("upstream", []) if u in specs] for n in names
    }
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            ups = [u for u in upstream[name] if u not in seen]
            depth[name] = 1 + max((depth_of(u, seen | {name}) for u in ups), default=-1)
        return depth[name]

    layers: dict[int, list[str]] = {}
    for n in names:
        layers.setdefault(depth_of(n), []).append(n)
    nodes = []
    for d, members in sorted(layers.items()):
        for i, n in enumerate(members):
            record = ran.get(n) or {}
            declared = record.get("resources") or (specs.get(n) or {}).get("resources") or {}
            nodes.append(
                {
                    "step": n,
                    "status": record.get("status") or NOT_STARTED,
                    "depth": d,
                    "row": i - (len(members) - 1) / 2,
                    "attempt": record.get("attempt"),
                    "duration_s": record.get("duration_s"),
                    "usage": record.get("usage") or {},
                    "declared": declared,
                }
            )
    edges = [[u, n] for n in names for u in upstream[n]]
    return {"nodes": nodes, "edges": edges}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _hover(node: Mapping[str, Any]) -> str:
    lines = [
        f"<b>{html.escape(node['step'])}</b>: {node['status']}",
        f"duration {_duration(node['duration_s'])}",
    ]
    for resource, unit, scale in (("cpu", "cores", 1.0), ("memory", "MiB", 2.0**-20)):
        use = node["usage"].get(resource) or {}
        used, declared = use.get("used"), use.get("declared")
        if used is None and declared is None:
            continue
        shown = [f"{v * scale:.3g}" if v is not None else "?" for v in (used, declared)]
        lines.append(f"{resource} {shown[0]} / {shown[1]} {unit} used / declared")
    return "<br>".join(lines)


def _path(a: tuple[float, float], b: tuple[float, float]) -> list[tuple[float, float]]:
    """An edge's points: straight between neighbouring layers; bowed above the layers it
    skips (through a point half a row up), so that it does not run behind their nodes."""
    if b[0] - a[0] <= 1:
        return [a, b]
    return [a, ((a[0] + b[0]) / 2, min(a[1], b[1]) - BOW), b]


def dag_figure(graph: Mapping[str, Any], title: str = "Steps as a graph") -> Figure:
    """The graph of :func:`dag` as scatter traces: one line trace for the edges (and an arrow
    per edge while they are few), one marker trace per state, so the legend names the
    states."""
    at = {n["step"]: (float(n["depth"]), float(n["row"])) for n in graph["nodes"]}
    paths = [_path(at[u], at[v]) for u, v in graph["edges"]]
    ex: list[float | None] = []
    ey: list[float | None] = []
    for path in paths:
        ex += [x for x, _ in path] + [None]
        ey += [y for _, y in path] + [None]
    data: list[dict[str, Any]] = [
        {"type": "scatter", "mode": "lines", "x": ex, "y": ey, "hoverinfo": "skip",
         "line": {"width": 1.5, "color": "#888"},
         "showlegend": False, "name": "edges"}
    ]  # fmt: skip
    by_state: dict[str, list[Mapping[str, Any]]] = {}
    for n in graph["nodes"]:
        by_state.setdefault(n["status"], []).append(n)
    for state, mine in by_state.items():
        data.append(
            {
                "type": "scatter",
                "mode": "markers+text",
                "name": state,
                "x": [n["depth"] for n in mine],
                "y": [n["row"] for n in mine],
                "text": [n["step"] for n in mine],
                "textposition": "top center",
                "hovertext": [_hover(n) for n in mine],
                "hoverinfo": "text",
                "marker": {"size": 22, "color": COLOURS.get(state, "#7f7f7f"),
                           "line": {"width": 1, "color": "#444"}},
            }
        )  # fmt: skip
    arrows = []
    if len(graph["edges"]) <= ARROWS_UP_TO:
        arrows = [
            {"x": a[0] + (b[0] - a[0]) * ARROW_AT, "y": a[1] + (b[1] - a[1]) * ARROW_AT,
             "ax": a[0], "ay": a[1], "xref": "x", "yref": "y", "axref": "x",
             "ayref": "y", "showarrow": True, "arrowhead": 2, "arrowsize": 1.2,
             "arrowwidth": 1.2, "arrowcolor": "#888", "text": ""}
            for a, b in (path[-2:] for path in paths)
        ]  # fmt: skip
    widest = max(Counter(n["depth"] for n in graph["nodes"]).values(), default=1)
    hidden = {"visible": False, "zeroline": False, "showgrid": False}
    return {
        "data": data,
        "layout": {
            "title": {"text": title, "font": {"size": 14}},
            "margin": {"l": 20, "r": 20, "t": 40, "b": 20},
            "height": max(220, 90 + 70 * widest),
            "xaxis": {**hidden, "range": [-0.5, max((x for x, _ in at.values()), default=0) + 0.5]},
            "yaxis": {**hidden, "autorange": "reversed"},
            "legend": {"orientation": "h"},
            "annotations": arrows,
            "hovermode": "closest",
        },
    }
