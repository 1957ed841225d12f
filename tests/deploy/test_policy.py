"""Deployment policies: defaults, validation with errors that name the field, storage."""

from __future__ import annotations

import pytest
from deploy_testkit import TEST_POLICY

from shipyard.deploy.policy import DEFAULT_POLICY, load_policy, parse_policy, set_policy
from shipyard.errors import ConfigError
from shipyard.store import Store


def test_a_model_without_policy_gets_safe_defaults(store: Store) -> None:
    policy = load_policy(store, "nobody-wrote-one")
    assert policy == DEFAULT_POLICY
    assert policy.approvals.start.count == 1 and policy.approvals.start.four_eyes
    assert policy.environments == ["staging", "canary", "production"]
    assert [s.weight_pct for s in policy.canary.steps] == [10, 50]
    assert {m.name for m in policy.analysis.metrics} == {
        "error_rate",
        "latency",
        "latency_spread",
        "prediction_shift",
    }
    assert policy.on_failure == ["rollback", "notify"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("canary: {steps: [{weight_pct: 50}, {weight_pct: 10}]}", "canary.steps: .*strictly grow"),
        ("analysis: {on_no_data: ignore}", "analysis.on_no_data"),
        ("approvals: {start: {count: 1, roles: [leads]}}", "roles \\['leads'\\]"),
        ("environments: [canary, staging, production]", "order staging"),
        ("on_failure: [rollback, pause]", "cannot both roll back and pause"),
        ("analysis: {metrics: [{name: latency, direction: decrease}]}", "direction"),
        ("canary: {steps: [{weight_pct: 150}]}", "weight_pct"),
        ("colour: blue", "colour: Extra inputs"),
        ("roles: [a, b", "not valid YAML"),
        ("- just a list", "must be a mapping"),
        ("roles: {a: [x]}\napprovals: {start: {count: 3, roles: [a]}}", "fewer members"),
    ],
)
def test_a_broken_policy_is_refused_with_the_field_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_policy(text, "churn.yaml")


def test_a_broken_policy_changes_nothing_in_the_store(store: Store) -> None:
    set_policy(store, "churn", TEST_POLICY, actor="admin")
    with pytest.raises(ConfigError):
        set_policy(store, "churn", "canary: {interval_s: -1}", actor="admin")
    assert load_policy(store, "churn").approvals.speedup.count == 2


@pytest.mark.parametrize("text", ["", "  \n", "# nothing but a comment\n", "~\n"])
def test_setting_a_policy_from_an_empty_text_is_refused(store: Store, text: str) -> None:
    """An empty file reset the policy to the defaults without a word; ``{}`` still does."""
    set_policy(store, "churn", TEST_POLICY, actor="admin")
    with pytest.raises(ConfigError, match=r"churn\.yaml is empty; nothing was changed"):
        set_policy(store, "churn", text, actor="admin", source="churn.yaml")
    assert load_policy(store, "churn").approvals.speedup.count == 2
    assert parse_policy(text) == DEFAULT_POLICY  # a stored or parsed empty text: the defaults
    set_policy(store, "churn", "{}", actor="admin")
    assert load_policy(store, "churn") == DEFAULT_POLICY


def test_alpha_is_split_over_steps_and_metrics() -> None:
    policy = parse_policy(TEST_POLICY)
    assert policy.alpha_per_test() == pytest.approx(0.01 / (2 * 4))
