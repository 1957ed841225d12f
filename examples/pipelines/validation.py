"""The demo's validation pipeline: the latest trained model on the held-out ``test`` split, and
a gate that fails the run when accuracy is below the threshold. The test set is published to
monitoring and compared with the training set (the data pipeline's ``digits`` reference).

    shipyard run examples/pipelines/validation.py --param min_accuracy=0.9
"""

from __future__ import annotations

from typing import Any

from sklearn.metrics import accuracy_score, f1_score

from shipyard.monitoring import observe
from shipyard.pipelines import Pipeline, Resources, latest_output, log, step


@step(resources=Resources(cpu=1, memory="512Mi"))
def evaluate() -> dict[str, float]:
    model: Any = latest_output("digits-training", "fit")
    test = latest_output("digits-data", "split", "test")
    observe("digits", test, role="current", label="target", reference_pipeline="digits-data")
    predicted = model.predict(test.drop(columns="target"))
    metrics = {
        "accuracy": float(accuracy_score(test["target"], predicted)),
        "macro_f1": float(f1_score(test["target"], predicted, average="macro")),
        "rows": float(len(test)),
    }
    log.info("evaluated", **metrics)
    return metrics


@step(resources=Resources(cpu="100m"))
def gate(metrics: dict[str, float], min_accuracy: float) -> dict[str, object]:
    """Pass, or fail the run with the reason."""
    if metrics["accuracy"] < min_accuracy:
        raise ValueError(f"accuracy {metrics['accuracy']:.4f} is below {min_accuracy}")
    return {"passed": True, "accuracy": metrics["accuracy"], "min_accuracy": min_accuracy}


pipeline = Pipeline("digits-validation", kind="validation")


@pipeline
def build(min_accuracy: float = 0.9) -> None:
    gate(evaluate(), min_accuracy=min_accuracy)
