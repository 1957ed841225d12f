from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import inspect

from shipyard.clock import FakeClock
from shipyard.errors import ArtifactError, ArtifactTampered, InvalidInput, NotFound
from shipyard.registry import Registry, Signature
from shipyard.store import Store


def test_store_creates_registry_tables(store: Store) -> None:
    names = set(inspect(store.engine).get_table_names())
    assert {"registered_models", "model_versions", "model_aliases", "model_alias_events"} <= names
    assert "0003_registry" in store.applied_revisions()


class TestRegister:
    def test_versions_count_up_and_keep_signature_metrics_lineage(
        self,
        registry: Registry,
        fitted: LogisticRegression,
        iris_like: tuple[pd.DataFrame, np.ndarray],
    ) -> None:
        x, _ = iris_like
        v1 = registry.register(
            "churn", fitted, training_data=x, metrics={"auc": 0.9}, run_id="r1", data_digests=["d"]
        )
        v2 = registry.register("churn", fitted, training_data=x, tags={"team": "ml"})
        assert (v1.version, v2.version) == (1, 2)
        got = registry.get("churn", version=1)
        assert got.signature.names == ("a", "b", "c")
        assert got.metrics == {"auc": 0.9}
        assert got.lineage == {"run_id": "r1", "data": ["d"]}
        assert got.flavor == "sklearn"
        assert registry.get("churn", version=2).tags == {"team": "ml"}

    def test_loaded_model_predicts_like_the_original(
        self,
        registry: Registry,
        fitted: LogisticRegression,
        iris_like: tuple[pd.DataFrame, np.ndarray],
    ) -> None:
        x, _ = iris_like
        registry.register("churn", fitted, training_data=x, alias="champion")
        info, predictor = registry.load("churn")
        assert info.version == 1
        np.testing.assert_array_equal(predictor.predict(x.to_numpy()), fitted.predict(x.to_numpy()))
        proba = predictor.predict_proba(x.to_numpy())
        assert proba is not None
        np.testing.assert_allclose(proba, fitted.predict_proba(x.to_numpy()))

    def test_python_callable_flavor(self, registry: Registry) -> None:
        sig = Signature.from_json({"inputs": [{"name": "x", "type": "double"}]})
        registry.register("double", np.negative, flavor="python", signature=sig, alias="champion")
        _, predictor = registry.load("double")
        np.testing.assert_array_equal(predictor.predict(np.array([[2.0]])), [[-2.0]])

    def test_bad_name_and_missing_signature_are_refused(
        self, registry: Registry, fitted: LogisticRegression
    ) -> None:
        with pytest.raises(InvalidInput, match="model name"):
            registry.register("bad name!", fitted, training_data=pd.DataFrame({"a": [1.0]}))
        with pytest.raises(InvalidInput, match="signature"):
            registry.register("ok", fitted)
        with pytest.raises(InvalidInput, match="pandas DataFrame"):
            registry.register("ok", fitted, training_data=np.ones((3, 1)))
        assert registry.models() == []

    def test_tampered_artifact_is_refused_at_load(
        self,
        registry: Registry,
        fitted: LogisticRegression,
        iris_like: tuple[pd.DataFrame, np.ndarray],
    ) -> None:
        info = registry.register("churn", fitted, training_data=iris_like[0], alias="champion")
        path = registry.artifacts.uri(info.artifact_digest)
        with open(path, "r+b") as fh:
            fh.seek(100)
            fh.write(b"\x00\x01\x02")
        with pytest.raises(ArtifactTampered):
            registry.load("churn")

    def test_skops_with_untrusted_type_is_refused(self, registry: Registry) -> None:
        from shipyard.registry import flavors

        class Custom:
            def predict(self, x: object) -> object:
                return x

        import skops.io as sio

        data = sio.dumps({"model": LogisticRegression(), "extra": Custom()})
        with pytest.raises(ArtifactError, match="untrusted"):
            flavors.load("sklearn", data)


class TestAliases:
    def test_alias_moves_are_recorded_with_who_when_from_to(
        self,
        store: Store,
        registry: Registry,
        fitted: LogisticRegression,
        iris_like: tuple[pd.DataFrame, np.ndarray],
    ) -> None:
        clock = registry.clock
        assert isinstance(clock, FakeClock)
        x, _ = iris_like
        registry.register("m", fitted, training_data=x, alias="champion")
        registry.register("m", fitted, training_data=x)
        clock.advance(10)
        registry.set_alias("m", "champion", 2, reason="better auc")
        clock.advance(10)
        registry.set_alias("m", "champion", None, reason="retired")
        history = registry.alias_history("m", "champion")
        assert [(h.from_version, h.to_version) for h in history] == [(None, 1), (1, 2), (2, None)]
        assert history[1].actor == "alice" and history[1].reason == "better auc"
        assert history[2].ts - history[0].ts == 20
        with pytest.raises(NotFound):
            registry.get("m")

    def test_alias_to_missing_version_changes_nothing(
        self,
        registry: Registry,
        fitted: LogisticRegression,
        iris_like: tuple[pd.DataFrame, np.ndarray],
    ) -> None:
        registry.register("m", fitted, training_data=iris_like[0], alias="champion")
        with pytest.raises(NotFound, match="m/7"):
            registry.set_alias("m", "champion", 7)
        with pytest.raises(NotFound):
            registry.set_alias("nope", "champion", 1)
        assert registry.aliases("m") == {"champion": 1}
        assert len(registry.alias_history("m")) == 1
