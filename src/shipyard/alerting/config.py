"""``alerting.yaml``: rules, the routing tree, receivers and inhibition, validated at the edge.

Where it is read from: an explicit path, else ``$SHIPYARD_ALERTING_CONFIG``, else
``<SHIPYARD_HOME>/alerting.yaml``; with none, the defaults apply (every default rule, one
``log`` receiver writing ``<home>/logs/alerts.log``).

::

    route:
      receiver: team-log
      group_by: [alertname]
      group_wait: 30s
      group_interval: 5m
      repeat_interval: 4h
      routes:
        - matchers: ['severity="page"']
          receiver: oncall
    receivers:
      - {name: team-log, type: log, path: alerts.log}
      - {name: oncall, type: webhook, url: "http://127.0.0.1:9000/hook"}
    inhibit_rules:
      - source_matchers: ['severity="page"']
        target_matchers: ['severity="ticket"']
        equal: [alertname]
    defaults:
      ModelOutage: false            # switch a default rule off
      DataDrift: {threshold: 0.3}   # or change it
    rules:
      - name: HighLatency
        kind: threshold
        metric: shipyard_serving_request_duration_seconds
        matchers: ['model="churn"', 'quantile="0.99"']
        op: ">"
        threshold: 0.25
        for: 1m
        severity: page
        annotations: {summary: "p99 {{ $value }} s"}
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipyard.alerting.defaults import default_rules
from shipyard.alerting.grouping import Route
from shipyard.alerting.inhibition import DEFAULT_INHIBIT_RULES, InhibitRule
from shipyard.alerting.matchers import parse_matchers
from shipyard.alerting.receivers import Receiver
from shipyard.alerting.rules import PAGE_WINDOWS, TICKET_WINDOWS, BurnWindow, Rule, parse_duration
from shipyard.alerting.state import rule_key
from shipyard.config import yaml_error_line
from shipyard.errors import ConfigError, InvalidInput

Duration = str | float | int


class _Edge(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WindowModel(_Edge):
    long: Duration
    short: Duration
    factor: float = Field(gt=0)


class RuleModel(_Edge):
    name: str = Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    kind: Literal["threshold", "absence", "burn_rate", "forecast"] = "threshold"
    metric: str = Field(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    matchers: list[str] = []
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    threshold: float = 0.0
    for_: Duration = Field(0, alias="for")
    keep_firing_for: Duration = 0
    lookback: Duration = "5m"
    error_metric: str = ""
    objective: float = Field(0.999, gt=0, lt=1)
    windows: list[WindowModel] | Literal["page", "ticket"] = "page"
    horizon: Duration = "1h"
    seen_within: Duration | None = None
    severity: str = "warning"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    enabled: bool = True


class RouteModel(_Edge):
    receiver: str | None = None
    matchers: list[str] = []
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    continue_: bool = Field(False, alias="continue")
    routes: list[RouteModel] = []


class ReceiverModel(_Edge):
    name: str
    type: Literal["webhook", "slack", "email", "alertmanager", "log"]
    url: str = ""
    path: str = ""
    timeout: Duration = "5s"
    headers: dict[str, str] = {}
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=1, le=65535)
    email_from: str = "shipyard@localhost"
    to: list[str] = []

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class InhibitModel(_Edge):
    source_matchers: list[str]
    target_matchers: list[str]
    equal: list[str] = []


class ConfigModel(_Edge):
    route: RouteModel = RouteModel()
    receivers: list[ReceiverModel] = []
    inhibit_rules: list[InhibitModel] | None = None
    defaults: dict[str, bool | dict[str, Any]] = {}
    rules: list[RuleModel] = []
    external_url: str = ""


@dataclass(frozen=True)
class AlertingConfig:
    """Everything the loop needs to evaluate, route and deliver."""

    rules: tuple[Rule, ...]
    route: Route
    receivers: dict[str, Receiver]
    inhibit_rules: tuple[InhibitRule, ...] = DEFAULT_INHIBIT_RULES
    external_url: str = ""
    source: str = "defaults"
    rule_origin: dict[str, str] = field(default_factory=dict)


def _rule(model: RuleModel) -> Rule:
    windows: tuple[BurnWindow, ...]
    if isinstance(model.windows, str):
        windows = PAGE_WINDOWS if model.windows == "page" else TICKET_WINDOWS
    else:
        windows = tuple(
            BurnWindow(parse_duration(w.long), parse_duration(w.short), w.factor)
            for w in model.windows
        )
    return Rule(
        name=model.name,
        kind=model.kind,
        metric=model.metric,
        matchers=parse_matchers(model.matchers),
        op=model.op,
        threshold=model.threshold,
        for_s=parse_duration(model.for_),
        keep_firing_for_s=parse_duration(model.keep_firing_for),
        lookback_s=parse_duration(model.lookback),
        error_metric=model.error_metric,
        objective=model.objective,
        windows=windows if model.kind == "burn_rate" else (),
        horizon_s=parse_duration(model.horizon),
        seen_within_s=None if model.seen_within is None else parse_duration(model.seen_within),
        severity=model.severity,
        labels=model.labels,
        annotations=model.annotations,
        enabled=model.enabled,
    )


_DEFAULT_FIELDS: dict[str, Callable[[Any], Any]] = {
    "threshold": float,
    "for": parse_duration,
    "keep_firing_for": parse_duration,
    "lookback": parse_duration,
    "horizon": parse_duration,
    "severity": str,
    "enabled": bool,
    "objective": float,
}
_FIELD_NAMES = {
    "for": "for_s",
    "keep_firing_for": "keep_firing_for_s",
    "lookback": "lookback_s",
    "horizon": "horizon_s",
}


def _adjusted_defaults(changes: dict[str, bool | dict[str, Any]]) -> list[Rule]:
    rules = default_rules()
    known = {r.name for r in rules}
    for name in changes:
        if name not in known:
            raise InvalidInput(f"defaults: no default rule named {name!r} (known: {sorted(known)})")
    adjusted = []
    for rule in rules:
        change = changes.get(rule.name, True)
        if change is False:
            continue
        if isinstance(change, dict):
            values: dict[str, Any] = {}
            for key, raw in change.items():
                if key not in _DEFAULT_FIELDS:
                    raise InvalidInput(
                        f"defaults.{rule.name}: cannot change {key!r} "
                        f"(can change: {sorted(_DEFAULT_FIELDS)})"
                    )
                try:
                    values[_FIELD_NAMES.get(key, key)] = _DEFAULT_FIELDS[key](raw)
                except (TypeError, ValueError) as exc:
                    raise InvalidInput(f"defaults.{rule.name}.{key}: {exc}") from None
            rule = dataclasses.replace(rule, **values)
        adjusted.append(rule)
    return adjusted


def _route(model: RouteModel, parent: Route | None) -> Route:
    base = parent or Route(receiver="")
    node = Route(
        receiver=model.receiver or base.receiver,
        matchers=parse_matchers(model.matchers),
        group_by=tuple(model.group_by) if model.group_by is not None else base.group_by,
        group_wait_s=parse_duration(model.group_wait)
        if model.group_wait is not None
        else base.group_wait_s,
        group_interval_s=parse_duration(model.group_interval)
        if model.group_interval is not None
        else base.group_interval_s,
        repeat_interval_s=parse_duration(model.repeat_interval)
        if model.repeat_interval is not None
        else base.repeat_interval_s,
        continue_=model.continue_,
    )
    children = tuple(_route(child, node) for child in model.routes)
    return dataclasses.replace(node, routes=children)


def build_config(data: Any, *, home: Path, source: str = "alerting.yaml") -> AlertingConfig:
    """Validate parsed YAML and build the config; every problem is one :class:`ConfigError`."""
    try:
        model = ConfigModel.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None
    try:
        receivers = {
            r.name: Receiver(
                name=r.name,
                type=r.type,
                url=r.url,
                path=str(home / "logs" / (r.path or "alerts.log"))
                if r.type == "log" and not Path(r.path).is_absolute()
                else r.path,
                timeout_s=parse_duration(r.timeout),
                headers=r.headers,
                smtp_host=r.smtp_host,
                smtp_port=r.smtp_port,
                email_from=r.email_from,
                email_to=tuple(r.to),
            )
            for r in model.receivers
        }
        for r in receivers.values():
            if r.type in ("webhook", "slack", "alertmanager") and not r.url:
                raise InvalidInput(f"receiver {r.name}: type {r.type} needs a url")
            if r.type == "email" and not r.email_to:
                raise InvalidInput(f"receiver {r.name}: type email needs 'to'")
        if not receivers:
            receivers["log"] = Receiver("log", "log", path=str(home / "logs" / "alerts.log"))
        if model.route.receiver is None:
            model.route.receiver = next(iter(receivers))
        route = _route(model.route, None)
        for node in route.walk():
            if node.receiver not in receivers:
                raise InvalidInput(
                    f"route names receiver {node.receiver!r}, which is not among the receivers "
                    f"({', '.join(sorted(receivers))})"
                )
        rules = [*_adjusted_defaults(model.defaults), *(_rule(r) for r in model.rules)]
        origin: dict[str, str] = {}
        for rule in rules:
            key = rule_key(rule)
            if key in origin:
                raise InvalidInput(f"two rules named {rule.name} with severity {rule.severity}")
            origin[key] = "default" if rule.name in {d.name for d in default_rules()} else source
        inhibit = (
            DEFAULT_INHIBIT_RULES
            if model.inhibit_rules is None
            else tuple(
                InhibitRule(
                    parse_matchers(i.source_matchers),
                    parse_matchers(i.target_matchers),
                    tuple(i.equal),
                )
                for i in model.inhibit_rules
            )
        )
    except InvalidInput as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return AlertingConfig(
        tuple(rules), route, receivers, inhibit, model.external_url, source, origin
    )


@functools.lru_cache(maxsize=4)
def _defaults(home: Path) -> AlertingConfig:
    """The configuration with no file: built once (it is frozen, and the same every time)."""
    return build_config({}, home=home, source="defaults")


def load_config(home: Path, path: Path | None = None) -> AlertingConfig:
    """Read ``alerting.yaml`` (see the module docstring for where from)."""
    if path is None:
        explicit = os.environ.get("SHIPYARD_ALERTING_CONFIG")
        if explicit:
            path = Path(explicit)
            if not path.is_file():
                raise ConfigError(f"SHIPYARD_ALERTING_CONFIG names {path}, which does not exist")
        elif (home / "alerting.yaml").is_file():
            path = home / "alerting.yaml"
    if path is None:
        return _defaults(home)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {yaml_error_line(exc)}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return build_config(data, home=home, source=str(path))
