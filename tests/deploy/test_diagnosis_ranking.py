"""A failed canary's diagnosis ranks causes: a planted causal feature first among 50 drifted
inputs with near-constant decoys (ranked by how much of the prediction change each explains),
and a column constant in training cannot top the robust effect sizes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipyard.deploy.diagnosis import annotate_effects, rank_causes
from shipyard.stats import DatasetProfile, compare

ROWS = 3000


def frames(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and canary inputs: ``cause`` moves by one σ; 49 decoys are near-constant in
    training and move a little on the canary: a constant 0 that now has 5 % ones and 10 %
    missing values (it drifts by its missing share), or 0 with a 10⁻⁴ jitter shifted by ten
    times the jitter."""
    rng = np.random.default_rng(seed)
    train: dict[str, np.ndarray] = {"cause": rng.normal(size=ROWS)}
    canary: dict[str, np.ndarray] = {"cause": rng.normal(1.0, 1.0, ROWS)}
    for k in range(49):
        name = f"decoy_{k:02d}"
        if k % 2:  # constant in training, a few ones and missing values now
            train[name] = np.zeros(ROWS)
            u = rng.uniform(size=ROWS)
            canary[name] = np.where(u < 0.1, np.nan, (u > 0.95).astype(float))
        else:  # a tiny jitter, shifted by ten times it
            train[name] = rng.normal(0, 1e-4, ROWS)
            canary[name] = rng.normal(1e-3, 1e-4, ROWS)
    return pd.DataFrame(train), pd.DataFrame(canary)


class Model:
    """The canary's model: it reads ``cause`` (and, barely, the decoys)."""

    def __init__(self, names: list[str]) -> None:
        self.weights = np.array([3.0 if n == "cause" else 1e-3 for n in names])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(x @ self.weights)))


def test_the_planted_cause_ranks_first_among_fifty_with_near_constant_decoys() -> None:
    train, canary = frames(0)
    names = list(train.columns)
    reference = DatasetProfile.from_frame(train)
    report = compare(reference, DatasetProfile.from_frame(canary, reference=reference))
    drifted = report.drifted_columns
    assert len(drifted) == 50  # every column drifted: the effect sizes alone cannot tell
    by_old_effect = max(report.columns, key=lambda c: c.effect)
    assert by_old_effect.column != "cause"  # what the demo showed: a decoy first

    sampled = canary.fillna(0.0).to_numpy()[:500]  # what the request log holds: answered rows
    ranked = rank_causes(Model(names).predict, sampled, names, reference, drifted)
    causes = ranked["causes"]
    assert causes[0]["column"] == "cause"
    assert causes[0]["explains"] > 0.9  # putting it back undoes nearly all of the change
    assert max(c["explains"] for c in causes[1:]) < 0.05


def test_a_column_constant_in_training_does_not_top_the_robust_effects() -> None:
    train, canary = frames(1)
    keep = ["cause"] + [c for c in train.columns if c != "cause" and train[c].std() == 0]
    reference = DatasetProfile.from_frame(train[keep])
    current = DatasetProfile.from_frame(canary[keep], reference=reference)
    columns = annotate_effects(compare(reference, current), reference, current)
    assert columns[0]["column"] == "cause"
    assert columns[0]["robust_effect"] > 0.9
    decoy = columns[1]
    assert decoy["effect"] > 10  # W1 / max(σ_ref, 0.001): 0.05 / 0.001
    assert decoy["robust_effect"] < 0.3  # W1 / σ of the canary's own values
