"""Quality in service (monitoring/serving/quality.py): late labels joined to the logged
predictions, and the estimate before they arrive, over a socket."""

from __future__ import annotations

import pytest
from serving_testkit import infer, wait_flushed
from sklearn.metrics import accuracy_score, f1_score
from sqlalchemy import func, select

from serving.conftest import Running, bearer, fit_classifier, training_frame
from shipyard.monitoring import ServingMonitor
from shipyard.store.serving import FeedbackRecord


def test_feedback_joins_predictions_and_gives_quality(served: Running) -> None:
    served.app.proba_sample_rate = 1.0
    clf, _ = fit_classifier()
    x, y = training_frame(seed=9, n=80)
    rows = x.to_numpy()
    olga = bearer(served.ws, "olga", "operator")
    with served.client() as c:
        ids = infer(c, rows, "fb")
        flipped = y.copy()
        flipped[:8] = 1 - flipped[:8]  # some labels disagree with the model
        r = c.post(
            "/v2/models/iris/feedback",
            json={"request_ids": ids, "labels": flipped.tolist()},
            headers=olga,
        )
        assert r.json() == {"accepted": 80}
        bad = c.post("/v2/models/iris/feedback", json={"request_ids": ["a"], "labels": []},
                     headers=olga)  # fmt: skip
        assert bad.status_code == 400 and "1 request_ids but 0 labels" in bad.json()["error"]
        ghost = c.post("/v2/models/ghost/feedback", json={"request_ids": ["a"], "labels": [1]},
                       headers=olga)  # fmt: skip
        assert ghost.status_code == 404
    wait_flushed(served, 80)
    monitor = ServingMonitor(served.ws.store, served.registry)
    info = served.registry.get("iris")
    quality = monitor.quality(info)
    expected = accuracy_score(flipped, clf.predict(rows))
    assert quality.evidence["metrics"]["accuracy"] == pytest.approx(expected)
    assert quality.evidence["metrics"]["f1"] == pytest.approx(f1_score(flipped, clf.predict(rows)))
    assert "auc" in quality.evidence["metrics"]
    assert quality.evidence["rows"] == 80
    estimated = monitor.estimated_quality(info)
    assert estimated.evidence["rows"] == 80
    assert "calibration_error" in estimated.evidence
    with served.ws.store.session() as s:
        assert s.scalar(select(func.count(FeedbackRecord.id))) == 80
