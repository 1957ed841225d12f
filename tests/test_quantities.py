"""Resource quantities are parsed once, in the base, for the DSL and quota alike."""

from __future__ import annotations

import doctest

import shipyard.quantities as quantities
from shipyard.pipelines import Resources
from shipyard.quota import resources


def test_the_dsl_and_quota_read_a_quantity_with_the_same_parser() -> None:
    assert resources.parse_quantity is quantities.parse_quantity
    assert Resources(cpu="500m", memory="4Gi").amounts()["memory"] == quantities.parse_quantity(
        "4Gi"
    )


def test_the_docstring_examples_run() -> None:
    result = doctest.testmod(quantities)
    assert result.attempted >= 2 and result.failed == 0
