"""The demo's training pipeline: a scaled logistic regression on the data pipeline's latest
``train`` split (read with :func:`shipyard.pipelines.latest_output`, recorded as lineage).

    shipyard run examples/pipelines/training.py --param C=0.5

With ``--param deploy=true`` it ends with the automated path: ``register → validate → deploy``.
The fitted model becomes a new version of ``digits`` (lineage: this run and the data it read),
the validation gate of the model's policy judges it on the held-out ``test`` split against the
version in production, and a blessed version starts its rollout by itself (which still waits
for the approvals the policy demands). A version the gate refuses fails the run, with why.

``invert=true`` flips every pixel to ``16 − value`` (dark ink on a light background) before
training and validation: a feature refactor done in the training code only. The model validates
as well as ever on equally flipped test data, but clients still send raw pixels: the
training/serving skew that only the canary, watching live traffic, can catch.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import StandardScaler

from shipyard.pipelines import Pipeline, Resources, latest_output, log, step

MODEL = "digits"


def _features(frame: pd.DataFrame, invert: bool) -> pd.DataFrame:
    """The features as this version of the training code prepares them."""
    x = frame.drop(columns="target")
    return 16.0 - x if invert else x


@step(resources=Resources(cpu=1, memory="512Mi"))
def training_data() -> pd.DataFrame:
    frame: pd.DataFrame = latest_output("digits-data", "split", "train")
    log.info("training data", rows=len(frame))
    return frame


@step(resources=Resources(cpu=2, memory="1Gi"), timeout_s=600)
def fit(train: pd.DataFrame, C: float, max_iter: int, invert: bool) -> SkPipeline:
    """StandardScaler → LogisticRegression (lbfgs, multinomial)."""
    model = SkPipeline(
        [("scale", StandardScaler()), ("clf", LogisticRegression(C=C, max_iter=max_iter))]
    )
    model.fit(_features(train, invert), train["target"])
    return model


@step(resources=Resources(cpu=1, memory="512Mi"))
def training_score(model: SkPipeline, train: pd.DataFrame, invert: bool) -> dict[str, float]:
    accuracy = float(model.score(_features(train, invert), train["target"]))
    log.info("fitted", train_accuracy=accuracy)
    return {"train_accuracy": accuracy}


@step(resources=Resources(cpu=1, memory="512Mi"))
def register(
    model: SkPipeline, train: pd.DataFrame, score: dict[str, float], C: float, invert: bool
) -> int:
    """One call: the model, its signature and reference profile (from the training features),
    its metrics, and its lineage (this run, the data split it read)."""
    from shipyard.registry import register_model

    info = register_model(
        MODEL,
        model,
        training_data=_features(train, invert),
        metrics=score,
        tags={"C": C, "invert": invert},
    )
    log.info("registered", model=MODEL, version=info.version)
    return info.version


@step(resources=Resources(cpu=1, memory="512Mi"))
def validate_and_deploy(version: int, invert: bool) -> dict[str, Any]:
    """The policy's gate on the held-out split; a blessed version starts its rollout."""
    from shipyard import deploy
    from shipyard.registry import Registry

    test: pd.DataFrame = latest_output("digits-data", "split", "test")
    outcome, rollout = deploy.validate_and_deploy(
        Registry.here(), MODEL, version, _features(test, invert), test["target"]
    )
    log.info("gate", passed=outcome.passed, reasons="; ".join(outcome.reasons))
    if not outcome.passed:
        raise ValueError(f"{MODEL} v{version} is not blessed: {'; '.join(outcome.reasons)}")
    assert rollout is not None
    log.info("rollout started", rollout=rollout.id, state=rollout.state)
    return {"version": version, "rollout": rollout.id, "state": rollout.state, **outcome.metrics}


pipeline = Pipeline("digits-training", kind="training", schedule="0 3 * * *")


@pipeline
def build(C: float = 1.0, max_iter: int = 2000, invert: bool = False, deploy: bool = False) -> None:
    train = training_data()
    model = fit(train, C=C, max_iter=max_iter, invert=invert)
    score = training_score(model, train, invert=invert)
    if deploy:
        version = register(model, train, score, C=C, invert=invert)
        validate_and_deploy(version, invert=invert)
