"""The 28 tests of the ML Test Score, and which of them Shipyard judges.

Breck, Cai, Nielsen, Salib and Sculley, "The ML Test Score: A Rubric for ML Production
Readiness and Technical Debt Reduction", *IEEE International Conference on Big Data*, 2017
(pp. 1123–1132). Seven tests in each of four sections: features and data, model development,
ML infrastructure, monitoring. Per test, half a point for running it by hand with the results
written down and shared, a full point for running it automatically and repeatedly; a section's
score is the sum of its tests, and the final score is the *minimum* over the four sections
("all sections matter").

A test is ``automated`` here when Shipyard can judge it from what it records (its items, in
:mod:`shipyard.readiness.items`); the others stay with people, and ``why`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Section = Literal["data", "model", "infrastructure", "monitoring"]
SECTIONS: tuple[Section, ...] = ("data", "model", "infrastructure", "monitoring")
AUTOMATED_POINTS = 1.0
MANUAL_POINTS = 0.5
"""What the paper gives a test run by hand; Shipyard cannot see that, so it never awards it."""


@dataclass(frozen=True)
class MLTest:
    id: str
    """As the paper numbers them: ``Data 1`` … ``Monitor 7``."""
    section: Section
    title: str
    automated: bool
    why: str
    """How Shipyard judges it, or why it cannot."""


TESTS: tuple[MLTest, ...] = (
    MLTest("Data 1", "data", "Feature expectations are captured in a schema", True,
           "each published data set has a reference whose schema was inferred and is checked"),
    MLTest("Data 2", "data", "All features are beneficial", False,
           "needs ablations of each feature; Shipyard records no per-feature importance"),
    MLTest("Data 3", "data", "No feature's cost is too much", True,
           "each pipeline declares its resources and its measured usage is recorded (the whole "
           "pipeline's cost; a single feature's share is not separated)"),
    MLTest("Data 4", "data", "Features adhere to meta-level requirements", False,
           "which features are allowed (policy, law) is not something Shipyard is told"),
    MLTest("Data 5", "data", "The data pipeline has appropriate privacy controls", False,
           "access controls on the sources live outside Shipyard"),
    MLTest("Data 6", "data", "New features can be added quickly", True,
           "lead time from a version's registration to its production, within 7 days"),
    MLTest("Data 7", "data", "All input feature code is tested", False,
           "unit tests of users' feature code run in their CI, not here"),
    MLTest("Model 1", "model", "Model specs are reviewed and submitted", True,
           "the version's lineage names its code and author; the policy demands a four-eyes "
           "approval before it serves"),
    MLTest("Model 2", "model", "Offline and online metrics correlate", True,
           "registered (offline) metrics and the serving quality measured on late labels"),
    MLTest("Model 3", "model", "All hyperparameters have been tuned", False,
           "tuning happens inside users' training code"),
    MLTest("Model 4", "model", "The impact of model staleness is known", False,
           "needs quality measured against model age; no such experiment is recorded"),
    MLTest("Model 5", "model", "A simpler model is not better", True,
           "the validation gate compares each version with a baseline (the serving version); "
           "a deliberately simple baseline model is the team's to register"),
    MLTest("Model 6", "model", "Model quality is sufficient on all important data slices", False,
           "slices are not declared to Shipyard"),
    MLTest("Model 7", "model", "The model has been tested for considerations of inclusion", False,
           "a fairness review needs people and protected attributes Shipyard does not hold"),
    MLTest("Infra 1", "infrastructure", "Training is reproducible", True,
           "the version's lineage: the run, its code file, its parameters and data digests"),
    MLTest("Infra 2", "infrastructure", "Model specs are unit tested", True,
           "the policy's staging smoke check (loads, answers a sample), passed by a rollout"),
    MLTest("Infra 3", "infrastructure", "The ML pipeline is integration tested", True,
           "training → validation gate → rollout automated end to end, and exercised"),
    MLTest("Infra 4", "infrastructure", "Model quality is validated before serving", True,
           "a required validation gate with thresholds, passed by the serving version"),
    MLTest("Infra 5", "infrastructure", "The model is debuggable", True,
           "serving windows flushed and a sample of requests logged with their ids"),
    MLTest("Infra 6", "infrastructure", "Models are canaried before serving", True,
           "the policy's canary steps and analysis, and a rollout that was judged in canary"),
    MLTest("Infra 7", "infrastructure", "Serving models can be rolled back", True,
           "a rollback done, or rehearsed by a drill, within 30 days"),
    MLTest("Monitor 1", "monitoring", "Dependency changes result in notification", True,
           "feature and label drift of the data pipelines monitored and alerted, receivers that "
           "delivered, and a drift drill that reached one within 30 days"),
    MLTest("Monitor 2", "monitoring", "Data invariants hold in training and serving inputs", True,
           "the data-type monitor validates every batch against the reference's schema"),
    MLTest("Monitor 3", "monitoring", "Training and serving features compute the same values",
           True, "serving inputs compared with the training data's profile (skew)"),
    MLTest("Monitor 4", "monitoring", "Models are not too stale", True,
           "the serving version's age, within 30 days"),
    MLTest("Monitor 5", "monitoring", "The model is numerically stable", True,
           "missing, NaN/inf and wrongly typed serving inputs checked and alerted"),
    MLTest("Monitor 6", "monitoring", "Computing performance has not regressed", True,
           "training time against its history and serving latency, alerted"),
    MLTest("Monitor 7", "monitoring", "Prediction quality has not regressed", True,
           "prediction drift and quality (measured or estimated) checked and alerted"),
)  # fmt: skip

BY_ID = {t.id: t for t in TESTS}
