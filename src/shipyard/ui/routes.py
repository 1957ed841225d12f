"""The dashboard's routes under ``/ui``: pages (HTML, or their data as JSON), the live
fragments the pages refetch, the form posts behind the buttons, signing in and out, and the
static files (our CSS and script; plotly.js from the installed plotly package).

A page is ``(path, template, data function)``: the data function reads through the registered
operations as the signed-in identity (:mod:`shipyard.ui.pages`), so what a page shows and
refuses is what the API shows and refuses. ``?format=json`` (or ``Accept: application/json``)
answers the data itself; ``?fragment=live`` answers the part of the page that a script swaps in
every few seconds. A button is a form post to an action that calls one operation, after
:func:`shipyard.ui.session.check_origin`; a refusal (four-eyes, a missing role, a state that
does not allow it) is the page again with the operation's message and status.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from shipyard import __version__
from shipyard.api.operations import Context
from shipyard.audit import acting
from shipyard.errors import InvalidInput, ShipyardError, Unauthenticated
from shipyard.identity import Principal
from shipyard.ui import monitoring, pages, session
from shipyard.workspace import Workspace

PREFIX = "/ui"
LIVE_INTERVAL_MS = 5000
MAX_FORM_BYTES = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
YEAR_S = 365 * 86400
DONE = {
    "approve": "Approved.",
    "promote": "Promoted.",
    "pause": "Paused.",
    "resume": "Resumed.",
    "abort": "Aborted.",
    "rollback": "Rolled back.",
    "cancel": "Cancelled.",
    "start": "Started.",
    "silence": "Silence created.",
    "expire": "Silence expired.",
}


@dataclass(frozen=True)
class Page:
    path: str
    section: str
    title: str
    template: str
    data: Callable[..., dict[str, Any]]
    live: bool = False


PAGES = (
    Page("/", "overview", "Overview", "overview.html", pages.overview, live=True),
    Page("/runs", "runs", "Runs", "runs.html", pages.runs, live=True),
    Page("/runs/{run_id}", "runs", "Run", "run.html", pages.run, live=True),
    Page("/runs/{run_id}/logs/{step}", "runs", "Step log", "log.html", pages.run_log, live=True),
    Page("/rollouts", "rollouts", "Rollouts", "rollouts.html", pages.rollouts, live=True),
    Page("/rollouts/{rollout_id}", "rollouts", "Rollout", "rollout.html", pages.rollout, True),
    Page("/models", "models", "Models", "models.html", pages.models),
    Page("/models/{name}", "models", "Model", "model.html", pages.model),
    Page("/quota", "quota", "Quota", "quota.html", pages.quota, live=True),
    Page("/monitors", "monitors", "Monitors", "monitors.html", monitoring.monitors),
    Page("/monitors/{pipeline}", "monitors", "Monitors", "monitor.html", monitoring.monitor),
    Page(
        "/monitors/{pipeline}/features/{feature}",
        "monitors",
        "Feature drift",
        "feature.html",
        monitoring.feature,
    ),
    Page("/monitors/served/{model}", "monitors", "Served model", "served.html", monitoring.served),
    Page("/alerts", "alerts", "Alerts", "alerts.html", pages.alerts, live=True),
    Page("/alerts/{fingerprint}", "alerts", "Alert", "alert.html", pages.alert, live=True),
    Page("/audit", "audit", "Audit", "audit.html", pages.audit),
)
NAV = (
    ("overview", "Overview", "/ui/"),
    ("runs", "Runs", "/ui/runs"),
    ("rollouts", "Rollouts", "/ui/rollouts"),
    ("models", "Models", "/ui/models"),
    ("monitors", "Monitors", "/ui/monitors"),
    ("alerts", "Alerts", "/ui/alerts"),
    ("quota", "Quota", "/ui/quota"),
    ("audit", "Audit", "/ui/audit"),
)


# -- formatting ------------------------------------------------------------------------------


def when(ts: float | None) -> str:
    if not _number(ts):
        return "—"
    assert ts is not None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def duration(seconds: float | None) -> str:
    if not _number(seconds):
        return "—"
    assert seconds is not None
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def size(n: float | None) -> str:
    if not _number(n):
        return "—"
    assert n is not None
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def num(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def pct(x: float | None) -> str:
    return f"{100 * x:.0f}%" if _number(x) and x is not None else "—"


def amount(resource: str, value: float | None) -> str:
    return size(value) if resource == "memory" else num(value)


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("shipyard.ui", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, duration=duration, size=size, num=num, pct=pct, amount=amount)
    env.filters["pretty"] = lambda x: json.dumps(x, indent=1, sort_keys=True, default=str)
    env.globals.update(nav=NAV, version=__version__, about=pages.about)
    return env


# -- static files ----------------------------------------------------------------------------


@functools.cache
def plotly_js() -> tuple[bytes, bytes, str]:
    """plotly.js as the installed plotly package ships it, plain and gzipped, and its version
    (part of its URL, so that it may be cached for a year)."""
    import plotly

    path = resources.files("plotly") / "package_data" / "plotly.min.js"
    body = path.read_bytes()
    return body, gzip.compress(body, 6), plotly.__version__


@functools.cache
def own_static(name: str) -> bytes:
    return (resources.files("shipyard.ui") / "static" / name).read_bytes()


STATIC_TYPES = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}


def static(request: Request) -> Response:
    name = request.path_params["name"]
    headers = {"X-Content-Type-Options": "nosniff"}
    if name == "plotly.min.js":
        plain, packed, _ = plotly_js()
        headers["Cache-Control"] = f"public, max-age={YEAR_S}, immutable"
        headers["Vary"] = "Accept-Encoding"
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(packed, media_type="text/javascript", headers=headers)
        return Response(plain, media_type="text/javascript", headers=headers)
    if name not in STATIC_TYPES:
        return Response("not found", status_code=404, media_type="text/plain")
    headers["Cache-Control"] = "public, max-age=3600"
    return Response(own_static(name), media_type=STATIC_TYPES[name], headers=headers)


# -- rendering -------------------------------------------------------------------------------


def wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    return accept.split(",")[0].strip().startswith("application/json")


def render(
    request: Request,
    template: str,
    status: int = 200,
    *,
    fragment: bool = False,
    **context: Any,
) -> Response:
    tmpl = environment().get_template(template)
    context.setdefault("plotly_url", f"{PREFIX}/static/plotly.min.js?v={plotly_js()[2]}")
    context.setdefault("live_ms", LIVE_INTERVAL_MS)
    context.setdefault("path", request.url.path)
    if fragment:
        body = "".join(tmpl.blocks["live"](tmpl.new_context(context)))
    else:
        body = tmpl.render(context)
    return Response(body, status_code=status, media_type="text/html", headers=SECURITY_HEADERS)


def error_page(request: Request, exc: ShipyardError, who: Principal | None) -> Response:
    if wants_json(request):
        return JSONResponse(
            {"error": str(exc), "type": type(exc).__name__}, status_code=exc.http_status
        )
    return render(
        request,
        "error.html",
        exc.http_status,
        who=who,
        title="Error",
        section="",
        message=str(exc),
        kind=type(exc).__name__,
    )


def to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303)


def _query(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k not in ("format", "fragment")}


def show(
    request: Request,
    ws: Workspace,
    page: Page,
    who: Principal,
    *,
    status: int = 200,
    notice: str = "",
    error: str = "",
) -> Response:
    ctx = Context(ws, who)
    try:
        with acting(who.name, who.mode):
            data = page.data(ctx, _query(request), **request.path_params)
    except ShipyardError as exc:
        return error_page(request, exc, who)
    if wants_json(request):
        return JSONResponse(data, status_code=status)
    done = request.query_params.get("done", "")
    return render(
        request,
        page.template,
        status,
        fragment=request.query_params.get("fragment") == "live",
        who=who,
        d=data,
        title=page.title,
        section=page.section,
        live=page.live,
        notice=notice or DONE.get(done, ""),
        error=error,
        charts=data.get("charts", {}),
        query=_query(request),
    )


def _page_handler(ws: Workspace, page: Page) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        try:
            who = session.principal(request)
        except Unauthenticated as exc:
            if wants_json(request):
                return error_page(request, exc, None)
            return to_login(request)
        except ShipyardError as exc:
            return error_page(request, exc, None)
        return show(request, ws, page, who)

    handler.__name__ = f"ui_{page.template.removesuffix('.html')}"
    return handler


# -- actions ---------------------------------------------------------------------------------


async def read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput("the form is too large")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in fields.items()}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        raise InvalidInput("params: not JSON") from None
    if not isinstance(value, dict):
        raise InvalidInput("params: a JSON object")
    return value


@dataclass(frozen=True)
class Action:
    path: str
    verb: str
    op: str
    params: Callable[[dict[str, str], dict[str, str]], dict[str, Any]]
    back: Callable[[dict[str, str], dict[str, Any] | None], str]
    """The page to show afterwards, from the path parameters and the operation's answer."""


Form = dict[str, str]


def _rollout_params(verb: str) -> Callable[[Form, Form], dict[str, Any]]:
    def params(p: Form, f: Form) -> dict[str, Any]:
        out: dict[str, Any] = {"rollout_id": p["rollout_id"]}
        if verb == "approve":
            out["purpose"] = f.get("purpose") or "start"
        if verb in ("pause", "abort"):
            out["reason"] = f.get("reason", "")
        return out

    return params


def _rollout_back(p: Form, _: Any) -> str:
    return f"/rollouts/{p['rollout_id']}"


def _rollback(p: Form, f: Form) -> dict[str, Any]:
    return {"model": p["name"], "reason": f.get("reason", ""), "to_version": f.get("to_version")}


def _start(p: Form, f: Form) -> dict[str, Any]:
    return {"name": p["name"], "params": _json_object(f.get("params", ""))}


def _started(p: Form, out: dict[str, Any] | None) -> str:
    return f"/runs/{out['id']}" if out else f"/runs?pipeline={p['name']}"


def _silence(p: Form, f: Form) -> dict[str, Any]:
    return {"matchers": _lines(f.get("matchers", "")), "duration": f.get("duration") or "1h",
            "comment": f.get("comment", "")}  # fmt: skip


ACTIONS = (
    *(
        Action(
            f"/rollouts/{{rollout_id}}/{verb}",
            verb,
            f"rollouts.{verb}",
            _rollout_params(verb),
            _rollout_back,
        )
        for verb in ("approve", "promote", "pause", "resume", "abort")
    ),
    Action(
        "/models/{name}/rollback",
        "rollback",
        "rollouts.rollback",
        _rollback,
        lambda p, _: f"/models/{p['name']}",
    ),
    Action(
        "/runs/{run_id}/cancel",
        "cancel",
        "runs.cancel",
        lambda p, f: {"run_id": p["run_id"], "wait_s": 5.0},
        lambda p, _: f"/runs/{p['run_id']}",
    ),
    Action("/pipelines/{name}/start", "start", "runs.start", _start, _started),
    Action("/silences", "silence", "alerts.silence", _silence, lambda p, _: "/alerts"),
    Action(
        "/silences/{silence_id}/expire",
        "expire",
        "alerts.unsilence",
        lambda p, f: {"silence_id": p["silence_id"]},
        lambda p, _: "/alerts",
    ),
)
PAGE_OF = {p.path: p for p in PAGES}


def _page_for(path: str) -> tuple[Page, dict[str, str]] | None:
    """The page at ``path`` (below /ui) and its path parameters."""
    clean = path.split("?", 1)[0]
    parts = clean.strip("/").split("/") if clean.strip("/") else []
    for page in PAGES:
        pattern = page.path.strip("/").split("/") if page.path.strip("/") else []
        if len(pattern) != len(parts):
            continue
        params = {}
        for want, got in zip(pattern, parts, strict=True):
            if want.startswith("{"):
                params[want[1:-1]] = got
            elif want != got:
                break
        else:
            return page, params
    return None


def _action_handler(ws: Workspace, action: Action) -> Callable[[Request], Any]:
    async def handler(request: Request) -> Response:
        try:
            session.check_origin(request)
        except ShipyardError as exc:
            return error_page(request, exc, None)
        try:
            who = session.principal(request)
        except Unauthenticated:
            return to_login(request)
        except ShipyardError as exc:
            return error_page(request, exc, None)
        try:
            form = await read_form(request)
        except ShipyardError as exc:
            return error_page(request, exc, who)
        params = dict(request.path_params)

        def act() -> dict[str, Any]:
            with acting(who.name, who.mode):
                answer: dict[str, Any] = pages.call(
                    Context(ws, who), action.op, **action.params(params, form)
                )
                return answer

        try:
            out = await run_in_threadpool(act)
        except ShipyardError as exc:
            back = action.back(params, None)
            found = _page_for(back)
            if found is None or wants_json(request):
                return error_page(request, exc, who)
            page, page_params = found
            request.scope["path_params"] = page_params
            request.scope["query_string"] = back.partition("?")[2].encode()
            message = f"{action.verb.capitalize()} refused: {exc}"
            return await run_in_threadpool(
                show, request, ws, page, who, status=exc.http_status, error=message
            )
        except TypeError as exc:  # a form that does not fit the operation
            return error_page(request, InvalidInput(str(exc)), who)
        back = action.back(params, out)
        sep = "&" if "?" in back else "?"
        return RedirectResponse(f"{PREFIX}{back}{sep}done={action.verb}", status_code=303)

    handler.__name__ = f"ui_action_{action.verb}"
    return handler


# -- signing in and out ----------------------------------------------------------------------


def _next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path, never another site."""
    if target and target.startswith(f"{PREFIX}/") and "\\" not in target and "//" not in target:
        return target
    return f"{PREFIX}/"


def login_page(request: Request) -> Response:
    return render(
        request,
        "login.html",
        who=None,
        title="Sign in",
        section="",
        next=_next(request.query_params.get("next")),
        message="",
    )


async def login(request: Request) -> Response:
    try:
        session.check_origin(request)
        form = await read_form(request)
    except ShipyardError as exc:
        return error_page(request, exc, None)
    target = _next(form.get("next"))
    token = form.get("token", "")
    try:
        await run_in_threadpool(session.sign_in, request, token)
    except ShipyardError as exc:
        return render(
            request,
            "login.html",
            exc.http_status,
            who=None,
            title="Sign in",
            section="",
            next=target,
            message=str(exc),
        )
    response = RedirectResponse(target, status_code=303)
    session.keep(response, request, token)
    return response


async def logout(request: Request) -> Response:
    try:
        session.check_origin(request)
    except ShipyardError as exc:
        return error_page(request, exc, None)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    session.forget(response)
    return response


def root(request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


def mount(app: FastAPI) -> None:
    """Serve the dashboard from ``app`` (``shipyard server``'s) under ``/ui``, with ``/``
    sending browsers there. The app's ``state`` holds the workspace and the authenticator."""
    ws: Workspace = app.state.workspace
    add = functools.partial(app.add_api_route, include_in_schema=False)
    add("/", root, methods=["GET"])
    add(f"{PREFIX}", root, methods=["GET"])
    add(f"{PREFIX}/static/{{name}}", static, methods=["GET"])
    add(f"{PREFIX}/login", login_page, methods=["GET"])
    add(f"{PREFIX}/login", login, methods=["POST"])
    add(f"{PREFIX}/logout", logout, methods=["POST"])
    for page in PAGES:
        add(PREFIX + page.path, _page_handler(ws, page), methods=["GET"])
    for action in ACTIONS:
        add(PREFIX + action.path, _action_handler(ws, action), methods=["POST"])


__all__ = ["PAGES", "mount"]
