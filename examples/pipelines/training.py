"""The demo's training pipeline: a scaled logistic regression on the data pipeline's latest
``train`` split (read with :func:`shipyard.pipelines.latest_output`, recorded as lineage).

    shipyard run examples/pipelines/training.py --param C=0.5
"""

from __future__ import annotations

import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import StandardScaler

from shipyard.pipelines import Pipeline, Resources, latest_output, log, step


@step(resources=Resources(cpu=1, memory="512Mi"))
def training_data() -> pd.DataFrame:
    frame: pd.DataFrame = latest_output("digits-data", "split", "train")
    log.info("training data", rows=len(frame))
    return frame


@step(resources=Resources(cpu=2, memory="1Gi"), timeout_s=600)
def fit(train: pd.DataFrame, C: float, max_iter: int) -> SkPipeline:
    """StandardScaler → LogisticRegression (lbfgs, multinomial)."""
    model = SkPipeline(
        [("scale", StandardScaler()), ("clf", LogisticRegression(C=C, max_iter=max_iter))]
    )
    model.fit(train.drop(columns="target"), train["target"])
    return model


@step(resources=Resources(cpu=1, memory="512Mi"))
def training_score(model: SkPipeline, train: pd.DataFrame) -> dict[str, float]:
    accuracy = float(model.score(train.drop(columns="target"), train["target"]))
    log.info("fitted", train_accuracy=accuracy)
    return {"train_accuracy": accuracy}


pipeline = Pipeline("digits-training", kind="training", schedule="0 3 * * *")


@pipeline
def build(C: float = 1.0, max_iter: int = 2000) -> None:
    train = training_data()
    model = fit(train, C=C, max_iter=max_iter)
    training_score(model, train)
