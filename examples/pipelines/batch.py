"""The demo's scoring batch: a batch of "new" digits, published to monitoring and compared with
the training set that the data pipeline published as the ``digits`` reference.

    shipyard run examples/pipelines/batch.py                    # an i.i.d. batch: not flagged
    shipyard run examples/pipelines/batch.py --param shift=true # a covariate shift: flagged
    shipyard monitors list

The i.i.d. batch is a random sample of the held-out test split. The shifted batch is made by
selection on a real feature of the images, as a scanner or a form that makes strokes heavier in
the middle would: only the images whose mean ink in the central 4×4 pixels is at or above the
split's ``quantile`` are kept. The pixels of that region (and the classes whose strokes cross
it, so the labels too) then drift, and the monitors name them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipyard.monitoring import observe
from shipyard.pipelines import Pipeline, Resources, latest_output, log, step


def central_ink(frame: pd.DataFrame) -> np.ndarray:
    """Mean intensity (0–16) of the central 4×4 pixels (rows and columns 2–5) of each 8×8 image."""
    pixels = frame[[f"pixel_{r}_{c}" for r in range(2, 6) for c in range(2, 6)]]
    return np.asarray(pixels.to_numpy(dtype=float).mean(axis=1))


@step(resources=Resources(cpu=1, memory="512Mi"))
def draw(shift: bool, quantile: float, seed: int) -> pd.DataFrame:
    """The batch: the test split's images selected on central ink (shift), or an equally large
    random sample of them (i.i.d.)."""
    test: pd.DataFrame = latest_output("digits-data", "split", "test")
    ink = central_ink(test)
    selected = test[ink >= np.quantile(ink, quantile)]
    batch = selected if shift else test.sample(len(selected), random_state=seed)
    log.info(
        "batch", rows=len(batch), shift=shift, mean_central_ink=float(central_ink(batch).mean())
    )
    return batch.reset_index(drop=True)


@step(resources=Resources(cpu=1, memory="512Mi"))
def monitor(batch: pd.DataFrame) -> dict[str, object]:
    """Publish the batch; return the monitors' verdicts (also in `shipyard monitors list`)."""
    seen = observe(
        "digits", batch, role="current", label="target", reference_pipeline="digits-data"
    )
    verdicts = {c.monitor: {"status": c.status, "summary": c.summary} for c in seen.checks}
    for name, verdict in verdicts.items():
        log.info("monitor", monitor=name, **verdict)
    return verdicts


pipeline = Pipeline("digits-batch", kind="data")


@pipeline
def build(shift: bool = False, quantile: float = 0.7, seed: int = 0) -> None:
    monitor(draw(shift=shift, quantile=quantile, seed=seed))
