"""The registry as other wings read it: models and where each default alias points, as frozen
views, on both backends."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from shipyard.errors import NotFound
from shipyard.registry import (
    AliasPointer,
    Registry,
    default_aliases_in,
    model_in,
    models_in,
    require_model_in,
)
from shipyard.store.registry import RegisteredModel


def test_default_aliases_follow_each_models_own_default_alias(
    registry: Registry, fitted: LogisticRegression, iris_like: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, _ = iris_like
    registry.register("a", fitted, training_data=x, alias="champion")
    registry.register("b", fitted, training_data=x)
    registry.register("b", fitted, training_data=x, alias="champion")
    registry.register("c", fitted, training_data=x)  # no alias: nothing to serve
    registry.set_alias("b", "stable", 1)
    with registry.store.session() as s:
        row = s.get(RegisteredModel, "b")
        assert row is not None
        row.default_alias = "stable"
    with registry.store.session(readonly=True) as s:
        assert sorted(default_aliases_in(s), key=lambda p: p.model) == [
            AliasPointer("a", "champion", 1),
            AliasPointer("b", "stable", 1),
        ]
        assert default_aliases_in(s, "b") == [AliasPointer("b", "stable", 1)]
        assert default_aliases_in(s, "c") == []
        assert [(m.name, m.default_alias) for m in models_in(s)] == [
            ("a", "champion"),
            ("b", "stable"),
            ("c", "champion"),
        ]


def test_a_missing_model_reads_as_none_or_as_one_line_naming_the_closest(
    registry: Registry, fitted: LogisticRegression, iris_like: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, _ = iris_like
    registry.register("churn", fitted, training_data=x)
    with registry.store.session(readonly=True) as s:
        found = model_in(s, "churn")
        assert found is not None
        assert (found.name, found.default_alias, found.created_by) == ("churn", "champion", "alice")
        assert require_model_in(s, "churn") == found
        assert model_in(s, "chrun") is None
        with pytest.raises(NotFound, match=r"did you mean 'churn'.*shipyard models list"):
            require_model_in(s, "chrun")
