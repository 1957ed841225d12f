"""A pipeline gets its kind's monitors; its definition configures them or switches them off."""

from __future__ import annotations

import pytest

from shipyard.errors import PipelineDefinitionError
from shipyard.monitoring.config import MonitorSet, resolve_monitors
from shipyard.pipelines import Pipeline


class TestDefaults:
    def test_each_kind_gets_the_monitors_of_the_design_table(self) -> None:
        def on(kind: str) -> list[str]:
            s = resolve_monitors(kind)
            return [n for n in s.monitors if s.enabled(n)]

        assert on("data") == [
            "feature_drift",
            "label_drift",
            "data_problems",
            "multivariate_drift",
            "performance_estimation",
            "run_progress",
        ]
        assert on("validation") == ["test_set_drift", "run_progress"]
        assert on("training") == ["training_time", "training_failures", "run_progress"]
        assert on("serving") == []

    def test_settings_round_trip_through_json(self) -> None:
        s = resolve_monitors("training", {"training_time": {"factor": 3}})
        assert MonitorSet.from_json(s.to_json()) == s


class TestDefinition:
    def test_a_monitor_is_switched_off_in_the_pipeline_definition(self) -> None:
        p = Pipeline("p", kind="data", monitors={"label_drift": False})
        assert not p.monitors.enabled("label_drift")
        assert p.monitors.enabled("feature_drift")

    def test_options_replace_defaults_and_keep_the_rest(self) -> None:
        p = Pipeline("t", kind="training", monitors={"training_time": {"factor": 3}})
        assert p.monitors.get("training_time").options == {
            "factor": 3.0,
            "min_history": 5,
            "history": 30,
        }

    def test_a_monitor_of_another_kind_can_be_switched_on(self) -> None:
        p = Pipeline("v", kind="validation", monitors={"data_problems": True})
        assert p.monitors.enabled("data_problems") and p.monitors.enabled("test_set_drift")

    def test_drift_options_become_the_drift_config(self) -> None:
        p = Pipeline("d", monitors={"feature_drift": {"wasserstein_floor": 0.2, "alpha": 0.01}})
        config = p.monitors.get("feature_drift").drift_config()
        assert (config.wasserstein_floor, config.alpha) == (0.2, 0.01)

    @pytest.mark.parametrize(
        ("monitors", "message"),
        [
            ({"feature_drfit": False}, "unknown monitor 'feature_drfit'"),
            ({"training_time": {"factr": 2}}, "has no option 'factr'"),
            ({"training_time": {"factor": "fast"}}, "'factor' must be a float"),
            ({"training_time": {"factor": 0}}, "factor must be > 0"),
            ({"feature_drift": {"alpha": 2.0}}, "alpha must be in (0, 1)"),
            ({"label_drift": "off"}, "give True, False or a mapping"),
        ],
    )
    def test_a_bad_monitor_setting_is_refused_at_definition(
        self, monitors: dict[str, object], message: str
    ) -> None:
        with pytest.raises(PipelineDefinitionError, match="pipeline 'p'") as err:
            Pipeline("p", kind="training", monitors=monitors)
        assert message in str(err.value)


class TestPublicNames:
    def test_observe_stays_the_function_after_its_module_is_imported(self) -> None:
        """Regression: a module named observe.py replaced the function on the package."""
        import shipyard.monitoring.observation  # noqa: F401 - the import that used to shadow it
        from shipyard.monitoring import evaluate_monitors, observe, on_run_finished

        assert [f.__name__ for f in (observe, evaluate_monitors, on_run_finished)] == [
            "observe",
            "evaluate_monitors",
            "on_run_finished",
        ]

    def test_every_public_name_resolves(self) -> None:
        import shipyard.monitoring as monitoring

        assert all(getattr(monitoring, name) is not None for name in monitoring.__all__)
        with pytest.raises(AttributeError):
            _ = monitoring.no_such_name


def test_the_docstring_examples_run() -> None:
    import doctest

    import shipyard.monitor_config as config  # the settings language, in the base

    result = doctest.testmod(config)
    assert result.attempted >= 2 and result.failed == 0
