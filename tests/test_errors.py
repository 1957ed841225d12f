"""The one unknown-name line (issue 19): ``no <kind> named 'X'``, with the closest names."""

from __future__ import annotations

from shipyard.errors import NotFound


def test_an_unknown_name_reads_the_same_for_every_kind() -> None:
    assert str(NotFound("model", "cancr")) == "no model named 'cancr'"
    assert str(NotFound("pool", "x", "declare it")) == "no pool named 'x'; declare it"


def test_close_candidates_are_suggested_best_first() -> None:
    err = NotFound("model", "cancr", candidates=["digits", "cancer", "canceled-v2"])
    assert str(err) == "no model named 'cancr'; did you mean 'cancer'?"
    assert err.suggestions == ["cancer"]


def test_several_close_names_and_a_hint() -> None:
    err = NotFound("pipeline", "digits-dat", "see pipelines list", ["digits-data", "digits-date"])
    assert str(err).startswith("no pipeline named 'digits-dat'; did you mean 'digits-dat")
    assert " or " in str(err) and str(err).endswith("; see pipelines list")


def test_nothing_close_suggests_nothing() -> None:
    assert str(NotFound("rollout", "zzz", candidates=["a1b2c3"])) == "no rollout named 'zzz'"
