"""The runnable examples in the statistics modules' docstrings still run and still hold."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from shipyard.stats import (
    attribution,
    canary,
    divergence,
    estimation,
    multivariate,
    profile,
    schema,
)


@pytest.mark.parametrize(
    "module",
    [attribution, canary, divergence, estimation, multivariate, profile, schema],
    ids=lambda m: m.__name__,
)
def test_docstring_examples_hold(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
