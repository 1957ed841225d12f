"""Alert rules and their state machine, grouping, silences, inhibition, receivers and the
notification outbox. The control loop that drives them is :mod:`shipyard.daemon`."""

from shipyard.alerting.config import AlertingConfig, build_config, load_config
from shipyard.alerting.cycle import CycleResult, evaluate
from shipyard.alerting.defaults import default_rules
from shipyard.alerting.export import prometheus_rule_file, promql
from shipyard.alerting.exposition import MetricsServer
from shipyard.alerting.grouping import Route
from shipyard.alerting.inhibition import InhibitRule
from shipyard.alerting.matchers import Matcher
from shipyard.alerting.outbox import deliver_due
from shipyard.alerting.receivers import Delivery, Receiver, send
from shipyard.alerting.rules import BurnWindow, Rule, evaluate_rule
from shipyard.alerting.silences import Silence, create_silence, expire_silence

__all__ = [
    "AlertingConfig",
    "BurnWindow",
    "CycleResult",
    "Delivery",
    "InhibitRule",
    "Matcher",
    "MetricsServer",
    "Receiver",
    "Route",
    "Rule",
    "Silence",
    "build_config",
    "create_silence",
    "default_rules",
    "deliver_due",
    "evaluate",
    "evaluate_rule",
    "expire_silence",
    "load_config",
    "prometheus_rule_file",
    "promql",
    "send",
]
