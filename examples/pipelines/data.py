"""The demo's data pipeline: scikit-learn's bundled handwritten-digits set (1,797 images of
8×8 pixels, 10 classes; UCI "Optical Recognition of Handwritten Digits", test part), checked and
split into train/test Parquet artifacts. The training split is published to monitoring as the
reference of the ``digits`` data set: batches scored later (``batch.py``) and the test set
(``validation.py``) are compared with it.

    shipyard run examples/pipelines/data.py --param test_fraction=0.25
"""

from __future__ import annotations

import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from shipyard.monitoring import observe
from shipyard.pipelines import Pipeline, Resources, log, step


@step(resources=Resources(cpu=1, memory="512Mi"), retries=1)
def load() -> pd.DataFrame:
    """The bundled data set as one frame: 64 pixel columns and ``target``."""
    frame = load_digits(as_frame=True).frame
    log.info("loaded digits", rows=len(frame), columns=frame.shape[1])
    return frame


@step(resources=Resources(cpu=1, memory="512Mi"))
def check(frame: pd.DataFrame) -> dict[str, object]:
    """Refuse data with missing values or labels outside 0–9."""
    missing = int(frame.isna().sum().sum())
    bad_labels = int((~frame["target"].between(0, 9)).sum())
    if missing or bad_labels:
        raise ValueError(f"{missing} missing values, {bad_labels} labels outside 0-9")
    counts = frame["target"].value_counts().sort_index()
    return {"rows": len(frame), "class_counts": {str(k): int(v) for k, v in counts.items()}}


@step(resources=Resources(cpu=1, memory="512Mi"), outputs=("train", "test"))
def split(
    frame: pd.DataFrame, summary: dict[str, object], test_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stratified split, so both parts keep the class balance."""
    train, test = train_test_split(
        frame, test_size=test_fraction, random_state=seed, stratify=frame["target"]
    )
    log.info("split", train_rows=len(train), test_rows=len(test), checked_rows=summary["rows"])
    train, test = train.reset_index(drop=True), test.reset_index(drop=True)
    observe("digits", train, role="reference", label="target")
    return train, test


pipeline = Pipeline("digits-data", kind="data", schedule="0 2 * * *")


@pipeline
def build(test_fraction: float = 0.25, seed: int = 0) -> None:
    frame = load()
    split(frame, check(frame), test_fraction=test_fraction, seed=seed)
