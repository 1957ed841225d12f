"""Canary analysis judged on traces served by real model servers: false rollbacks, detection
power and rollback speed, against a Kayenta-style Mann–Whitney-only judge on the same traces.

Run from the repository root::

    .venv/bin/python benchmarks/canary.py            # the default run: about 10 minutes
    .venv/bin/python benchmarks/canary.py --quick    # a short check: 20 000 requests, 20 rollouts

1. **Judging, on served traces.** What is served, and what is resampled:

   *Served and recorded.* ``shipyard.serving`` runs under Uvicorn on 127.0.0.1 in its own
   process, assembled as ``build_app`` does it, from a temporary workspace (SQLite, local
   artifacts, the default flush and refresh intervals). Six models are live at once, one per
   scenario, each with a stable version (v1) and a canary (v2) that the rollout engine put live
   under a one-step policy at 50 % (so both arms fill at the same pace: what one request does
   does not depend on the weight). The versions are real models: a scikit-learn
   ``LogisticRegression`` fitted on a generated tabular problem, registered with the Python
   flavor inside :class:`canary_models.ScoringModel`, which answers the score P(y = 1) and
   fails or sleeps according to a hash of the row, so that a bad version is bad by its own
   doing, not by the load generator's:

   - A/A: the stable artifact registered twice (the same bytes, the same digest); both fail
     1 % of rows;
   - +2 pp errors: the canary fails the stable's 1 % of rows and 2 % more (1 % → 3 %);
   - prediction shift only: the canary adds 0.55 to the decision function (KS D ≈ 0.14
     against the stable's scores, like the simulated Beta(2, 5) → Beta(2.6, 5) it replaces);
     the same failing rows, the same latency;
   - latency spread ×2, same median: both sleep a lognormal extra per row, median 1 ms,
     σ 0.4 (stable) and 0.8 (canary) (spinnaker #6278);
   - prediction spread, same mean: the canary's decision function × 1.75 (D ≈ 0.15; the scores
     spread, their mean stays near 0.5 because they are near-symmetric around it);
   - sparse errors against an error-free stable: the canary fails 0.5 % of rows (kayenta #426);
   - a skewed model: the canary's classifier was fitted on mirrored features (−x) and is served
     raw rows, as the demo's v3 was trained on pixels flipped to 16 − value (a feature refactor
     in the training code only); the same failing rows, the same latency.

   One closed-loop client (httpx, keep-alive) sends one fresh row per request to a random
   scenario's model (A/A gets 40 % of them: it is the scenario whose goal is strictest) with a
   random ``x-user-id``, and records per request which version answered
   (``X-Shipyard-Model-Version``), the HTTP status, the score returned and the latency it saw.
   The server notes per request the latency it measured itself — the value
   :mod:`shipyard.serving.telemetry` folds into the latency histogram it flushes — through a
   subclass of its ``Telemetry`` that notes each request and then hands it to the real one.
   Both judges use the **server's** latency (the judge reads the flushed histograms; Kayenta
   reads the same server's Prometheus histogram, whose sum/count is a sub-window's exact
   mean); the client's is printed beside it. The recording is checked: every request was
   answered by the version its user routes to; and the windows the server flushed, read back
   by the control loop's own reader (:func:`shipyard.deploy.canary.arm_from_store`), hold the
   same requests, errors and latency histogram per version as the per-request records.

   *The staged release.* Four more rows run a release of five stages under the release's one
   α (``analysis.budget: release``): the replay (``canary.replay``, 1 000 rows), the shadow
   (``canary.shadow``, 100 % of the stable version's requests, judged on 200 rows), a targeted
   step (a header match whose cohort sends 5 % of requests), then the default 10 % and 50 %
   steps. The replay is the control loop's own: the server logs 10 % of answered requests
   (:data:`REQUEST_LOG_SAMPLE_RATE`; the default 1 % would log too few of the recording's),
   and after the recording :meth:`shipyard.deploy.replay.LogReplay.replayed` runs both
   versions side by side on every row of each scenario's stable request log; each rollout
   draws 1 000 of those rows with replacement and judges them with
   :func:`~shipyard.deploy.replay.judge_replay`. The shadow is the server's own: while
   recording, each of these four scenarios also has the candidate registered again (v3, the
   canary's artifact) as the stable version's shadow at 100 %, so the server's shadow helper
   answers a copy of every request the stable version answered and writes the pairs to its
   shadow log; after the recording :func:`shipyard.serving.records.shadow_pairs` reads them
   back, and each rollout that passed its replay draws 200 pairs (``min_rows``: the stage
   judges once the log holds them) with replacement and judges them with
   :func:`~shipyard.deploy.shadow.judge_shadow` at the policy's shadow level. Only a rollout
   that passes both goes on to the live steps (on the same resampled requests as the plain
   rows). Reported: A/A false rollbacks over the whole release (1 000 rollouts, the pooled A/A
   requests; at replay the two timings of each drawn row are swapped with probability ½, the
   permutation null of one artifact), and for the +2 pp errors, prediction shift and skewed
   canaries the share stopped before any user answer, at replay or at the shadow stage
   (200 rollouts each), with 95 % Wilson intervals and the metrics that failed, and beside it
   the share the shadow stage alone would stop (its verdict, judged in every rollout).

   *Resampled.* 200 rollouts × 12 minutes of 50 req/s per scenario cannot be served in real
   time (about 3 days on loopback), so each rollout draws requests with replacement (a seeded
   bootstrap) from its scenario's recorded pool, per arm: Poisson(50 req/s × the interval)
   requests per analysis interval, split binomially by the step's weight, each in a random
   10 s sub-window. The plan is the default policy's (steps of 10 % and 50 % of traffic, an
   analysis every 120 s, at least 5 minutes per step; ``--interval 60`` shows the cost of
   judging every minute), judged by :func:`shipyard.deploy.canary.judge_arms` exactly as the
   control loop does it (each step's cumulative data, a latency as its histogram bucket's
   upper bound, the scores of answered requests, the same looks, extension rule and alpha
   spending). What resampling loses: the time order (a slow second of the machine is spread
   over a rollout instead of hitting one interval of both arms), and independence from the
   recording: the chance difference between the two recorded pools is shared by every rollout,
   and a rollout that draws more requests than a pool holds (up to 16 200 per arm in the
   first step) magnifies it. That matters for A/A, where the rare slow requests (a few per
   thousand outside the 0.5 ms bucket) decide the latency-spread test, so A/A is replayed
   twice: from each version's own pool, and from the two versions' requests pooled — valid
   because they are one artifact (a permutation null), and the estimate of the false rollback
   rate free of the recording's chance difference. Each A/A row replays 1000 rollouts
   (``--aa-rollouts``), with a 95 % interval: with 200, a 1 % rate cannot be told from 2 %.
   ``--save-recording`` / ``--replay`` keep a recording and judge it again without serving.

   Peer: a Kayenta-style judge (NetflixACAJudge as documented in
   /work/shared/reference/canary-and-quota.md) on the same resampled requests: per metric,
   Mann–Whitney U with a 98 % Hodges–Lehmann interval over 10-second sub-window values (error
   rate, mean latency, mean score), "high" when the whole interval lies above zero and the mean
   ratio ≥ 1.1, score = 100 × passed / metrics, fail below 75, any failing interval ends the
   canary.
2. **Rollback speed (real store, real control loop).** Two replica threads each refresh the
   live split from a SQLite store every 0.5 s (the model server's refresh interval) and route
   25 requests/s each by :func:`shipyard.serving.routing.choose_version`; the rollout engine
   judges a canary whose flushed windows show 10 % errors and rolls it back. Measured: time
   from the committed failing verdict to the last request any replica sent to the canary.
   The same on the real model server: ``shipyard.serving`` under Uvicorn on 127.0.0.1
   (refresh 0.5 s) serves the canary to 10 % of users (``x-user-id``); the engine rolls it back;
   measured: time from the committed verdict to the last answer a canary user got from it.
3. **Production rollback on a real model server.** ``shipyard.serving`` under Uvicorn on
   127.0.0.1 (refresh 0.5 s) serves the production version; ``rollback`` (what the one
   command runs) commits and points the default alias back; measured: time from the commit to
   the last answer any request got from the rolled-back version.

Measured (default run, 2-core machine shared with other work, load 3.8 before it; 8 min 18 s
in all: 169 s of serving 150 000 requests at 887 req/s, 214 s of replay and judging, the rest
rollback timings). Served pools per arm: A/A about 28 000, the others 4 100–11 400; server
latency p50 0.22 ms (the latency scenario 1.4 ms), the client's p50 0.86 ms; replayed request
logs: 2 849 (A/A), 969 (+2 pp errors), 700 (shift) and 392 (skewed) rows. Rolled back,
Shipyard / Kayenta-style, within 3 intervals and in the whole rollout (1000 rollouts per A/A
row, 200 per other scenario):

=====================================  =============  =============  =====================
scenario                               Shipyard       Kayenta-style  goal
=====================================  =============  =============  =====================
A/A, each version's own requests       0.7 / 1.0 %    0.6 / 6.4 %    ≤ 1 % (met, just)
A/A, both versions' requests pooled    0.2 / 0.2 %    0.5 / 2.7 %    ≤ 1 % (met)
+2 pp errors                           98.5 / 100 %   94.0 / 100 %   ≥ 95 % within 3 (met)
prediction shift only                  100 / 100 %    100 / 100 %    detected (met)
latency spread ×2, same median         100 / 100 %    100 / 100 %
prediction spread, same mean           100 / 100 %    1.5 / 11.0 %
sparse errors vs error-free stable     31.0 / 46.0 %  0 / 31.0 %
skewed model (the demo's v3)           100 / 100 %    0 / 0 %
=====================================  =============  =============  =====================

The staged release with its shadow stage (replay → shadow → targeted 5 % → 10 % → 50 %, 11
looks, the levels of all looks × 4 metrics sum to α = 0.01: replay 0.0015, shadow 0.0013,
targeted 0.0031, 10 % 0.0023, 50 % 0.0019), from another run (2026-11-30, load 3.9 before
it, ``--rollback-trials 3``, 621 s in all: 150 000 requests recorded in 243 s with every
staged scenario's stable answers shadowed, 334 s of replay and judging). Its shadow logs held
28 102 (A/A), 9 852 (+2 pp errors; the shadow failed 208 of them), 6 934 (shift) and
4 135 (skewed) pairs:

==========================================  ====================  ===========================
staged release                              rolled back           stopped before any user
==========================================  ====================  ===========================
A/A (1 000)                                 0.0 % [0.0, 0.4]      0 % (rolled back ≤ 1 %: met)
+2 pp errors (200)                          100 %                 96.0 % [92.3, 98.0] (≥ 95 %)
prediction shift only (200)                 100 %                 100 % [98.1, 100] (≥ 95 %)
skewed model, the demo's v3 (200)           100 %                 100 % [98.1, 100] (≥ 95 %)
==========================================  ====================  ===========================

Every stop before a user was the replay's (192, 200, 200); judged on its own, the shadow
stage stopped the shift and skewed canaries in 100 % of rollouts but the +2 pp errors one in
0.5 %: 200 pairs hold about 4 of its failures, too few for McNemar at the shadow's level
(about 0.0003 per metric: it needs 12 failures against none). The replay's 1 000 rows carry
the errors scenario; a larger shadow ``min_rows`` would too. The run before the shadow
stage (replay → targeted → 10 % → 50 %, 10 looks) stopped +2 pp errors at replay in 99.5 %
[97.2, 99.9] and rolled back 0.1 % [0.0, 0.6] of staged A/A releases.

Every false rollback of the earlier run is the error-rate test's (A/A own pools: 10 of 10; pooled:
2 of 2) or the prediction test's (staged: 1); none is the latency-spread test's. A run before
the spread test's fix, on another recording (p99 4.5 ms: more slow requests), rolled back
0.5 % / 0.3 % / 0.6 % (own / pooled / staged without replay), 4 of 5, 3 of 3 and 5 of 6 of them
on latency spread, and 5 sparse-error rollouts on spread as well; the same recording judged
again by the fixed test with the same seeds (``--replay``): 0.4 % / 0.1 % / 0.2 %, spread
3 / 1 / 1, sparse errors 3. An earlier recording's staged row reached 3.9 % (38 of 39 on
spread). Brown–Forsythe with a t reference is anti-conservative with a 5 % arm on skewed
latency; the spread test now refers the same statistic to its bootstrap distribution
(saddlepoint), see :func:`shipyard.stats.canary.spread_test`. The A/A row on each version's
own requests carries the recording's chance difference in error rates (1.07 % vs 0.98 %),
which every rollout shares; the pooled row is free of it. The skewed model's live rollbacks
are on predictions (its scores' D = 0.175); Kayenta-style compares sub-window means of the
score and misses it. Sparse errors: the canary's pool failed 0.37 % of rows (0.5 % designed),
against a 0.5 pp floor.
Verdict → last canary answer: median 0.32 s, max 0.49 s on the real model server (≤ 2 s, met;
0.40 s at most with the two replica threads); production rollback → last answer from the old
version: median 0.19 s, max 0.38 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import random
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from canary_models import ScoringModel  # benchmarks/, sys.path[0]: the pickles' module
from scipy import stats as sps

from shipyard.deploy.canary import ArmData, judge_arms
from shipyard.deploy.policy import DEFAULT_POLICY, Policy
from shipyard.serving.telemetry import LATENCY_BUCKETS_S, Telemetry

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event


RATE_RPS = 50.0
SUBWINDOW_S = 10.0
BOUNDS_MS = np.asarray([*LATENCY_BUCKETS_S, 2 * LATENCY_BUCKETS_S[-1]]) * 1000.0
FEATURES = 8
RECORD_WEIGHT_PCT = 50.0
AA_POOLED = "A/A, the two versions' requests pooled"
DEFAULT_RECORD_REQUESTS = 150_000

Seen = tuple[str, int, int, int, float, float, int]
"""What the client saw: request id, scenario, X-Shipyard-Model-Version (0 when the answer has
none), HTTP status, latency, score (NaN for an error), the version its user routes to."""
Noted = tuple[str, str, int, int, float, float]
"""What the server noted: request id, model, version, HTTP status, latency, score."""


# -- the served scenarios ---------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One model on the server: its stable and canary behaviour, and its share of the recording."""

    name: str
    model: str
    stable: dict[str, float]
    canary: dict[str, float] | None  # None: the stable artifact registered again (A/A)
    share: float
    skewed: bool = False
    """The canary's classifier was fitted on mirrored features (−x), served raw rows: the
    demo's skewed model (pixels flipped to 16 − value in training and validation only)."""


BASE = {"fail_share": 0.01}
SLOW = {"delay_median_s": 0.001}
SCENARIOS = (
    Scenario("A/A (same artifact)", "aa", BASE, None, 0.40),
    Scenario("+2 pp errors", "errors", BASE, {"fail_share": 0.03}, 0.14),
    Scenario("prediction shift only", "shift", BASE, {**BASE, "bias": 0.55}, 0.10),
    Scenario(
        "latency spread x2, same median",
        "spread",
        {**BASE, **SLOW, "delay_sigma": 0.4},
        {**BASE, **SLOW, "delay_sigma": 0.8},
        0.10,
    ),
    Scenario("prediction spread, same mean", "sharp", BASE, {**BASE, "sharpness": 1.75}, 0.10),
    Scenario("sparse errors vs error-free stable", "sparse", {}, {"fail_share": 0.005}, 0.16),
    Scenario("skewed model (the demo's v3)", "skew", BASE, BASE, 0.06, skewed=True),
)
REQUEST_LOG_SAMPLE_RATE = 0.1
"""The share of answered requests the server logs (the replay stage's rows); the default
setting, 0.01, would log too few of the recording's requests to replay 1 000 rows."""


def fit_classifier(seed: int, rows: int) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """A logistic regression on a generated tabular problem, the same fitted on mirrored
    features (the skewed model's training code), the training rows and the unseen rows."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(
        n_samples=5_000 + rows,
        n_features=FEATURES,
        n_informative=5,
        n_redundant=1,
        class_sep=0.8,
        flip_y=0.03,
        random_state=seed,
    )
    clf = LogisticRegression().fit(x[:5_000], y[:5_000])
    skewed = LogisticRegression().fit(-x[:5_000], y[:5_000])
    return clf, skewed, x[:5_000], x[5_000:]


class RecordingTelemetry(Telemetry):
    """The server's own telemetry, noting per request what it is about to fold in.

    ``latency_s`` is the one the server measured (parsed request → answer), the value the real
    :meth:`Telemetry.ok` / :meth:`Telemetry.error` put into the flushed latency histogram.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.noted: list[Noted] = []

    def ok(
        self,
        info: Any,
        x: np.ndarray,
        predictions: np.ndarray,
        proba: np.ndarray | None,
        latency_s: float,
        request_id: str,
        trace: Any = None,
        parent: Any = None,
    ) -> None:
        score = float(np.asarray(predictions).ravel()[0])
        self.noted.append((request_id, info.model, info.version, 200, latency_s, score))
        super().ok(info, x, predictions, proba, latency_s, request_id, trace, parent)

    def error(
        self,
        info: Any,
        kind: str,
        status: int,
        latency_s: float,
        request_id: str,
        message: str,
        trace: Any = None,
        parent: Any = None,
    ) -> None:
        self.noted.append((request_id, info.model, info.version, status, latency_s, math.nan))
        super().error(info, kind, status, latency_s, request_id, message, trace, parent)


def serve_and_note(home: str, port: int, ready: Event, stop: Event, out: str) -> None:
    """The model server process: ``shipyard.serving`` as ``build_app`` assembles it (with the
    workspace's flush and refresh settings), under Uvicorn on 127.0.0.1 until ``stop``; then
    the per-request notes go to ``out`` (JSON)."""
    import uvicorn

    from shipyard.registry import Registry
    from shipyard.serving.app import ServingApp
    from shipyard.serving.live import LiveModels
    from shipyard.workspace import Workspace

    # a failing row logs a warning per request; thousands of them would bury the tables
    logging.getLogger("shipyard.serving").addHandler(logging.NullHandler())
    logging.getLogger("shipyard.serving").propagate = False
    ws = Workspace.open(home=Path(home))
    cfg = ws.settings.serving
    telemetry = RecordingTelemetry(
        ws.store,
        ws.artifacts,
        flush_interval_s=cfg.flush_interval_s,
        sample_rate=REQUEST_LOG_SAMPLE_RATE,
        clock=ws.clock,
    )
    app = ServingApp(LiveModels(Registry.of(ws), cfg.refresh_interval_s), telemetry, clock=ws.clock)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http="httptools", lifespan="on",
        log_level="warning", access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.02)
    ready.set()
    stop.wait()
    server.should_exit = True
    thread.join(timeout=30)  # the app's shutdown flushes the last windows
    Path(out).write_text(json.dumps(telemetry.noted))
    ws.store.dispose()


@dataclass
class Pool:
    """The recorded requests of one version: what the server measured and what the client saw."""

    errors: np.ndarray  # bool: HTTP status ≥ 500
    latency_s: np.ndarray  # as the server measured it
    client_latency_s: np.ndarray  # as the client saw it (request sent → answer read)
    scores: np.ndarray  # the score answered; NaN for errors

    @property
    def size(self) -> int:
        return int(self.errors.size)


@dataclass
class ReplayPool:
    """Both versions of a scenario run side by side (:meth:`LogReplay.replayed`, the control
    loop's replay) on every row of the stable version's request log that the server wrote,
    one entry per row."""

    recorded: np.ndarray  # the stable version's logged answer
    answers: np.ndarray  # the candidate's answer; NaN where it failed
    candidate_ms: np.ndarray  # the paired timings; NaN where the candidate failed
    stable_ms: np.ndarray

    @property
    def size(self) -> int:
        return int(self.recorded.size)


REPLAY_FIELDS = ("recorded", "answers", "candidate_ms", "stable_ms")


@dataclass
class ShadowPool:
    """The pairs of a scenario's shadow log (:func:`shipyard.serving.records.shadow_pairs`): the
    server copied every request the stable version answered to the candidate, registered a
    second time as the stable version's shadow, one entry per row."""

    recorded: np.ndarray  # the stable version's answer, as the user got it
    answers: np.ndarray  # the shadow's answer to the same row; NaN where it failed

    @property
    def size(self) -> int:
        return int(self.recorded.size)


SHADOW_FIELDS = ("recorded", "answers")


@dataclass
class Recording:
    pools: dict[str, tuple[Pool, Pool]]  # scenario → (canary, stable)
    seconds: float
    requests: int
    checks: list[str] = field(default_factory=list)
    replays: dict[str, ReplayPool] = field(default_factory=dict)  # scenario → its replay
    shadows: dict[str, ShadowPool] = field(default_factory=dict)  # scenario → its shadow log


def save_recording(recording: Recording, path: Path) -> None:
    arrays: dict[str, Any] = {}
    for k, sc in enumerate(SCENARIOS):
        for arm, pool in zip(("canary", "stable"), recording.pools[sc.name], strict=True):
            for name in ("errors", "latency_s", "client_latency_s", "scores"):
                arrays[f"{k}:{arm}:{name}"] = getattr(pool, name)
        if sc.name in recording.replays:
            for name in REPLAY_FIELDS:
                arrays[f"{k}:replay:{name}"] = getattr(recording.replays[sc.name], name)
        if sc.name in recording.shadows:
            for name in SHADOW_FIELDS:
                arrays[f"{k}:shadow:{name}"] = getattr(recording.shadows[sc.name], name)
    meta = {
        "seconds": recording.seconds,
        "requests": recording.requests,
        "checks": recording.checks,
    }
    np.savez_compressed(path, meta=np.asarray(json.dumps(meta)), **arrays)


def load_recording(path: Path) -> Recording:
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        pools = {
            sc.name: (
                Pool(
                    *(
                        f[f"{k}:canary:{n}"]
                        for n in ("errors", "latency_s", "client_latency_s", "scores")
                    )
                ),
                Pool(
                    *(
                        f[f"{k}:stable:{n}"]
                        for n in ("errors", "latency_s", "client_latency_s", "scores")
                    )
                ),
            )
            for k, sc in enumerate(SCENARIOS)
            if f"{k}:canary:errors" in f  # a recording made before a scenario was added
        }
        replays = {
            sc.name: ReplayPool(*(f[f"{k}:replay:{n}"] for n in REPLAY_FIELDS))
            for k, sc in enumerate(SCENARIOS)
            if f"{k}:replay:recorded" in f
        }
        shadows = {
            sc.name: ShadowPool(*(f[f"{k}:shadow:{n}"] for n in SHADOW_FIELDS))
            for k, sc in enumerate(SCENARIOS)
            if f"{k}:shadow:recorded" in f
        }
    return Recording(
        pools,
        meta["seconds"],
        meta["requests"],
        [*meta["checks"], f"replayed from {path}"],
        replays,
        shadows,
    )


def _register_scenarios(ws: Any, clf: Any, skewed: Any, train: np.ndarray) -> None:
    import pandas as pd

    from shipyard.checks import Check
    from shipyard.clock import SYSTEM_CLOCK
    from shipyard.deploy import production
    from shipyard.deploy.canary import ServingAnalyzer
    from shipyard.deploy.engine import Engine
    from shipyard.deploy.policy import parse_policy, set_policy
    from shipyard.deploy.rollout import start_rollout
    from shipyard.registry import Registry
    from shipyard.registry.models import reference_profile_of
    from shipyard.serving import split as traffic
    from shipyard.statuses import CheckStatus

    frame = pd.DataFrame(train, columns=[f"x{i}" for i in range(FEATURES)])
    reference = reference_profile_of(frame, ScoringModel(clf))
    reg = Registry(ws.store, ws.artifacts, actor="bench")
    policy_text = (
        "approvals: {start: {count: 0}}\nstaging: {smoke: false}\n"
        f"canary: {{interval_s: 3600, steps: [{{weight_pct: {RECORD_WEIGHT_PCT:g}, "
        "min_duration_s: 86400}]}\n"
    )
    engine = Engine(
        ws.store,
        SYSTEM_CLOCK,
        smoke=lambda m, v, p: Check.of_model("staging.smoke", m, v, CheckStatus.OK, "not run"),
        analyzer=ServingAnalyzer(ws.store),
    )
    for sc in SCENARIOS:
        stable = reg.register(
            sc.model, ScoringModel(clf, **sc.stable), training_data=frame,
            reference_profile=reference,
        )  # fmt: skip
        canary = reg.register(
            sc.model,
            ScoringModel(
                skewed if sc.skewed else clf, **(sc.canary if sc.canary is not None else sc.stable)
            ),
            training_data=frame,
            reference_profile=reference,
        )
        if sc.canary is None and canary.artifact_digest != stable.artifact_digest:
            raise RuntimeError("the A/A versions should be one artifact")
        set_policy(ws.store, sc.model, policy_text, actor="bench")
        with ws.store.session() as s:
            production.put_in_production(
                s, sc.model, stable.version, now=time.time(), via="initial", actor="bench",
                reason="",
            )  # fmt: skip
        rid = start_rollout(
            ws.store, sc.model, canary.version, actor="bench", policy=parse_policy(policy_text)
        ).id
        for _ in range(5):
            split = traffic.live_split(ws.store, sc.model)
            if split is not None and split.canary == canary.version:
                break
            engine.advance(rid)
        else:
            raise RuntimeError(f"{sc.model}: the canary did not go live")
        if sc.name in STAGED_OF.values():
            # the candidate again, as the stable version's shadow: the shadow stage's pairs
            shadow = reg.register(
                sc.model,
                ScoringModel(
                    skewed if sc.skewed else clf,
                    **(sc.canary if sc.canary is not None else sc.stable),
                ),
                training_data=frame,
                reference_profile=reference,
            )
            if shadow.artifact_digest != canary.artifact_digest:
                raise RuntimeError(f"{sc.model}: the shadow should be the canary's artifact")
            live = traffic.live_split(ws.store, sc.model)
            assert live is not None
            with ws.store.session(immediate=True) as s:
                traffic.set_split(
                    s, sc.model, stable=live.stable, canary=live.canary,
                    canary_weight_pct=live.canary_weight_pct, rollout_id=live.rollout_id,
                    cohort=live.cohort, shadow=shadow.version, shadow_pct=100.0, now=time.time(),
                )  # fmt: skip


def record(total_requests: int, seed: int) -> Recording:
    """Serve every scenario's two versions and record ``total_requests`` requests."""
    import httpx

    from shipyard.serving.split import live_splits
    from shipyard.workspace import Workspace

    clf, skewed, train, rows = fit_classifier(seed, total_requests)
    rng = np.random.default_rng(seed)
    shares = np.asarray([sc.share for sc in SCENARIOS])
    which = rng.choice(len(SCENARIOS), size=total_requests, p=shares / shares.sum())
    users = rng.integers(0, 10**9, size=total_requests)
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        ws = Workspace.open(home=home)
        _register_scenarios(ws, clf, skewed, train)
        cohorts = {m: sp.cohort for m, sp in live_splits(ws.store).items()}
        notes_path = str(Path(tmp) / "notes.json")
        with socket_port() as port:
            pass
        ready, stop = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=serve_and_note, args=(str(home), port, ready, stop, notes_path))
        proc.start()
        if not ready.wait(60):
            proc.kill()
            raise RuntimeError("the model server did not start")
        seen: list[Seen] = []
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                seconds = _send(client, rows, which, users, seen, cohorts)
        finally:
            stop.set()
            proc.join(60)
            if proc.is_alive():
                proc.kill()
        noted: dict[str, Noted] = {
            n[0]: (n[0], n[1], n[2], n[3], n[4], n[5])
            for n in json.loads(Path(notes_path).read_text())
        }
        recording = _pools(seen, noted, seconds)
        recording.checks.append(_check_flushed(ws, recording, seen, noted))
        recording.replays = _replay_pools(ws)
        recording.shadows = _shadow_pools(ws, recording)
        recording.checks.append(
            "the replay pools: both versions on every row of the stable version's request log "
            f"(the server logged {REQUEST_LOG_SAMPLE_RATE:g} of its answered requests), run by "
            "the control loop's replay: "
            + ", ".join(f"{MODEL_OF[k]} {v.size} rows" for k, v in recording.replays.items())
        )
        ws.store.dispose()
    return recording


def _replay_pools(ws: Any) -> dict[str, ReplayPool]:
    """What the control loop's replay (:class:`shipyard.deploy.replay.LogReplay`) does on the
    stable version's request log, on every logged row, for each scenario a staged release
    replays."""
    from shipyard.deploy.replay import LogReplay
    from shipyard.registry import Registry

    replayer = LogReplay(ws.store, ws.artifacts, Registry(ws.store, ws.artifacts, actor="bench"))
    policy = policy_with_interval(DEFAULT_POLICY.canary.interval_s, staged=True)
    assert policy.canary.replay is not None
    every_row = policy.canary.replay.model_copy(update={"min_rows": 1, "max_rows": 100_000})
    everything = policy.model_copy(
        update={"canary": policy.canary.model_copy(update={"replay": every_row})}
    )
    out: dict[str, ReplayPool] = {}
    for sc in SCENARIOS:
        if sc.name not in STAGED_OF.values():
            continue
        arms, _ = replayer.replayed(sc.model, 2, 1, everything, time.time() + 1)
        answered = np.asarray([a is not None for a in arms.answers])
        if arms.candidate_ms.size != answered.sum():
            raise RuntimeError(f"{sc.model}: the stable version failed a logged row at replay")
        c_ms = np.full(arms.rows, np.nan)
        s_ms = np.full(arms.rows, np.nan)
        c_ms[answered] = arms.candidate_ms
        s_ms[answered] = arms.stable_ms
        out[sc.name] = ReplayPool(
            recorded=np.asarray(arms.recorded, dtype=np.float64),
            answers=np.asarray([np.nan if a is None else a for a in arms.answers], dtype=float),
            candidate_ms=c_ms,
            stable_ms=s_ms,
        )
    return out


def _shadow_pools(ws: Any, recording: Recording) -> dict[str, ShadowPool]:
    """Every pair of each staged scenario's shadow log, read as the control loop's shadow stage
    reads them (:func:`shipyard.serving.records.shadow_pairs`,
    :func:`shipyard.deploy.shadow.shadow_arms`), after the server stopped (its shadow helper
    wrote the last of its log as it ended)."""
    from shipyard.deploy.shadow import shadow_arms
    from shipyard.serving import records

    out: dict[str, ShadowPool] = {}
    for sc in SCENARIOS:
        if sc.name not in STAGED_OF.values():
            continue
        with ws.store.session(readonly=True) as s:
            pairs = records.shadow_pairs(
                s, ws.artifacts, sc.model, 3, 1, since=0.0, max_rows=10_000_000
            )
        arms = shadow_arms(pairs)
        out[sc.name] = ShadowPool(
            recorded=np.asarray(arms.recorded, dtype=np.float64),
            answers=np.asarray([np.nan if a is None else a for a in arms.answers], dtype=float),
        )
        answered = int((~recording.pools[sc.name][1].errors).sum())
        recording.checks.append(
            f"{sc.model}: the shadow log holds {out[sc.name].size} pairs, the shadow failed "
            f"{len(arms.errors)} (the stable version answered {answered} recorded requests)"
        )
    return out


def _send(
    client: Any,
    rows: np.ndarray,
    which: np.ndarray,
    users: np.ndarray,
    seen: list[Seen],
    cohorts: dict[str, Any],
) -> float:
    """Wait until every version answers, then send one request per row; returns the seconds.
    ``cohorts``: each scenario model's canary cohort (its rollout salts the buckets)."""
    from shipyard.serving.routing import choose_version

    for sc in SCENARIOS:
        deadline = time.monotonic() + 30
        got: set[str] = set()
        while got != {"1", "2"} and time.monotonic() < deadline:
            r = client.post(
                f"/v2/models/{sc.model}/infer",
                json=_body(rows[0]),
                headers={"x-user-id": uuid.uuid4().hex},
            )
            if "x-shipyard-model-version" in r.headers:  # an error answer names no version
                got.add(r.headers["x-shipyard-model-version"])
            time.sleep(0.01)
        if got != {"1", "2"}:
            raise RuntimeError(f"{sc.model}: both versions should answer, got {got}")
    split = {1: 100 - RECORD_WEIGHT_PCT, 2: RECORD_WEIGHT_PCT}
    started = time.perf_counter()
    for i, row in enumerate(rows):
        sc = SCENARIOS[which[i]]
        rid, user = f"r{i}", f"u{users[i]}"
        t0 = time.perf_counter()
        r = client.post(
            f"/v2/models/{sc.model}/infer",
            json=_body(row),
            headers={"x-user-id": user, "x-request-id": rid},
        )
        waited = time.perf_counter() - t0
        score = float(r.json()["outputs"][0]["data"][0]) if r.status_code == 200 else math.nan
        version = int(r.headers.get("x-shipyard-model-version", 0))
        routed = choose_version(f"user:{user}", split, 2, cohorts[sc.model])
        seen.append((rid, int(which[i]), version, r.status_code, waited, score, routed))
    return time.perf_counter() - started


def _body(row: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "x", "shape": [1, FEATURES], "datatype": "FP64", "data": [row.tolist()]}
        ]
    }


def _pools(seen: list[Seen], noted: dict[str, Noted], seconds: float) -> Recording:
    """Each request in its version's pool, the version being the one the server noted; the
    client's header (when the answer has one) and the sticky routing rule must agree with it."""
    by_arm: dict[tuple[int, int], list[tuple[Seen, Noted]]] = {}
    unnamed = 0
    for s in seen:
        n = noted[s[0]]
        sc = SCENARIOS[s[1]]
        if n[1] != sc.model or n[3] != s[3] or s[6] != n[2] or s[2] not in (0, n[2]):
            raise RuntimeError(f"request {s[0]}: the client saw {s}, the server noted {n}")
        unnamed += s[2] == 0
        by_arm.setdefault((s[1], n[2]), []).append((s, n))
    pools: dict[str, tuple[Pool, Pool]] = {}
    for k, sc in enumerate(SCENARIOS):
        arms = []
        for version in (2, 1):
            pairs = by_arm.get((k, version), [])
            arms.append(
                Pool(
                    errors=np.asarray([s[3] >= 500 for s, _ in pairs], dtype=bool),
                    latency_s=np.asarray([n[4] for _, n in pairs]),
                    client_latency_s=np.asarray([s[4] for s, _ in pairs]),
                    scores=np.asarray([s[5] for s, _ in pairs]),
                )
            )
        pools[sc.name] = (arms[0], arms[1])
    checks = [
        "every request was answered by the version its x-user-id routes to (sticky sha256 rule), "
        f"as the server noted it; {unnamed} error answers carried no X-Shipyard-Model-Version"
    ]
    return Recording(pools, seconds, len(seen), checks)


def _check_flushed(
    ws: Any,
    recording: Recording,
    seen: list[Seen],
    noted: dict[str, Noted],
) -> str:
    """The windows the server flushed, read as the control loop reads them, hold the same
    requests, errors and latency histogram as the per-request records."""
    from shipyard.deploy.canary import arm_from_store

    warmup = {n[0] for n in noted.values()} - {s[0] for s in seen}
    for sc in SCENARIOS:
        canary, stable = recording.pools[sc.name]
        for version, pool in ((2, canary), (1, stable)):
            arm = arm_from_store(ws.store, sc.model, version, 0.0, time.time() + 3600, fine=False)
            extra = [noted[r] for r in warmup if noted[r][1] == sc.model and noted[r][2] == version]
            lat = np.concatenate([pool.latency_s, np.asarray([n[4] for n in extra])])
            expected = np.sort(BOUNDS_MS[np.searchsorted(LATENCY_BUCKETS_S, lat, side="left")])
            errors = int(pool.errors.sum()) + sum(n[3] >= 500 for n in extra)
            if (
                arm.requests != pool.size + len(extra)
                or arm.errors != errors
                or not np.array_equal(np.sort(arm.latencies_ms), expected)
            ):
                raise RuntimeError(
                    f"{sc.model} v{version}: the flushed windows ({arm.requests} requests, "
                    f"{arm.errors} errors) differ from the records ({pool.size + len(extra)}, "
                    f"{errors})"
                )
    return (
        "the windows the server flushed (read by the control loop's arm_from_store) hold the "
        "same requests, errors and latency histogram per version as the per-request records"
    )


# -- replay: the rollouts, judged by both judges -----------------------------------------------


def _draw(rng: np.random.Generator, pool: Pool, n: int, subwindows: int) -> dict[str, np.ndarray]:
    """``n`` requests drawn with replacement from ``pool``, in both judges' shapes."""
    idx = rng.integers(0, pool.size, n)
    lat_s = pool.latency_s[idx]
    bucket = np.searchsorted(np.asarray(LATENCY_BUCKETS_S), lat_s, side="left")
    return {
        "errors": pool.errors[idx],
        "lat_ms": BOUNDS_MS[bucket],  # what the flushed histogram says: the bucket's bound
        "raw_lat_ms": lat_s * 1000,  # what a Prometheus sum/count says: the exact mean
        "preds": pool.scores[idx],
        "sub": rng.integers(0, subwindows, n),
    }


class Arm:
    """Cumulative data of one version over a step, in both judges' shapes."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.lat: list[np.ndarray] = []
        self.preds: list[np.ndarray] = []
        self.sub_err: list[float] = []
        self.sub_lat: list[float] = []
        self.sub_pred: list[float] = []

    def add(self, d: dict[str, np.ndarray], subwindows: int) -> None:
        self.requests += d["errors"].size
        self.errors += int(d["errors"].sum())
        ok = ~d["errors"]
        self.lat.append(d["lat_ms"])
        self.preds.append(d["preds"][ok])
        for w in range(subwindows):
            m = d["sub"] == w
            if m.any():
                self.sub_err.append(float(d["errors"][m].mean()))
                self.sub_lat.append(float(d["raw_lat_ms"][m].mean()))
                okm = m & ok
                if okm.any():
                    self.sub_pred.append(float(d["preds"][okm].mean()))

    def data(self) -> ArmData:
        return ArmData(
            requests=self.requests,
            errors=self.errors,
            latencies_ms=np.concatenate(self.lat) if self.lat else np.empty(0),
            predictions=np.concatenate(self.preds).tolist() if self.preds else [],
        )


def kayenta_fails(canary: Arm, stable: Arm) -> bool:
    """NetflixACAJudge-style: MW + 98 % HL interval per metric, scored; < 75 fails."""
    passed = 0
    metrics = [
        (canary.sub_err, stable.sub_err),
        (canary.sub_lat, stable.sub_lat),
        (canary.sub_pred, stable.sub_pred),
    ]
    for c, s in metrics:
        x, y = np.asarray(c), np.asarray(s)
        if x.size < 2 or y.size < 2 or np.unique(np.concatenate([x, y])).size == 1:
            passed += 1
            continue
        diffs = np.subtract.outer(x, y).ravel()
        mn = diffs.size
        z = float(sps.norm.isf(0.01))
        k = math.floor(mn / 2 - z * math.sqrt(mn * (x.size + y.size + 1) / 12))
        lo = float(np.partition(diffs, k - 1)[k - 1]) if k >= 1 else -math.inf
        mean_s = float(y.mean())
        ratio = float(x.mean()) / mean_s if mean_s > 0 else (math.inf if x.mean() > 0 else 1.0)
        high = lo > 0 and ratio >= 1.1
        passed += not high
    return 100.0 * passed / len(metrics) < 75.0


@dataclass
class Outcome:
    ours_failed_at: int | None  # analysis interval (1-based, whole rollout) of the rollback
    kayenta_failed_at: int | None
    ours_failed_on: tuple[str, ...] = ()  # the metrics that failed Shipyard's verdict
    stopped_at_replay: bool = False  # failed at replay: no user was routed to the canary
    stopped_at_shadow: bool = False  # passed the replay, failed at the shadow stage: no user
    shadow_alone: bool = False  # the shadow stage's verdict failed, whatever the replay's was


def policy_with_interval(interval_s: float, staged: bool = False) -> Policy:
    """The default policy judged every ``interval_s``; ``staged``: a targeted step (a header
    match) first, then the default weighted steps, all under the release's one α."""
    data = DEFAULT_POLICY.model_dump(mode="json")
    data["canary"]["interval_s"] = interval_s
    if staged:
        data["canary"]["replay"] = {"min_rows": 200, "max_rows": 1000}
        data["canary"]["shadow"] = {"share_pct": 100.0, "min_rows": 200}
        targeted = {"match": {"header": "x-user-group", "values": ["internal"]}}
        data["canary"]["steps"] = [{**data["canary"]["steps"][0], **targeted, "weight_pct": 0}]
        data["canary"]["steps"] += DEFAULT_POLICY.model_dump(mode="json")["canary"]["steps"]
    return Policy.model_validate(data)


STAGED_TARGETED_PCT = 5.0
"""The share of requests the staged release's targeted cohort (internal users) sends."""
STAGED = "staged A/A: replay → shadow → targeted → 10 % → 50 %"
MODEL_OF = {sc.name: sc.model for sc in SCENARIOS}
STAGED_OF = {
    STAGED: SCENARIOS[0].name,
    "staged: +2 pp errors": "+2 pp errors",
    "staged: prediction shift only": "prediction shift only",
    "staged: skewed model (the demo's v3)": "skewed model (the demo's v3)",
}
"""Each staged row and the scenario whose replay pool (and, past the replay, requests) it
draws; the staged A/A row's live requests are the pooled A/A ones."""


def total_intervals(policy: Policy) -> int:
    return sum(s.max_looks(policy.canary.interval_s) for s in policy.canary.steps)


_POOLS: dict[str, tuple[Pool, Pool]] = {}
_REPLAYS: dict[str, ReplayPool] = {}
_SHADOWS: dict[str, ShadowPool] = {}


def _set_pools(
    pools: dict[str, tuple[Pool, Pool]],
    replays: dict[str, ReplayPool],
    shadows: dict[str, ShadowPool],
) -> None:
    _POOLS.update(pools)
    _REPLAYS.update(replays)
    _SHADOWS.update(shadows)


def replay_stage(
    rng: np.random.Generator, pool: ReplayPool, policy: Policy, exchangeable: bool
) -> list[Any]:
    """The replay stage's verdicts on ``max_rows`` rows drawn with replacement from every row
    of the scenario's replayed log (:func:`shipyard.deploy.replay.judge_replay`, the control loop's
    judge). ``exchangeable`` (A/A: one artifact): each drawn row's two timings are swapped
    with probability ½, the permutation null, free of the one replay's chance difference."""
    from shipyard.deploy.replay import ReplayArms, judge_replay

    assert policy.canary.replay is not None
    idx = rng.integers(0, pool.size, policy.canary.replay.max_rows)
    answers = pool.answers[idx]
    failed = np.isnan(answers)
    c_ms, s_ms = pool.candidate_ms[idx][~failed], pool.stable_ms[idx][~failed]
    if exchangeable:
        swap = rng.random(c_ms.size) < 0.5
        c_ms, s_ms = np.where(swap, s_ms, c_ms), np.where(swap, c_ms, s_ms)
    arms = ReplayArms(
        recorded=pool.recorded[idx].tolist(),
        answers=[None if f else float(a) for a, f in zip(answers, failed, strict=True)],
        candidate_ms=c_ms,
        stable_ms=s_ms,
        errors=[f"row {i}" for i in np.flatnonzero(failed)],
    )
    return judge_replay(arms, policy)


def shadow_stage(rng: np.random.Generator, pool: ShadowPool, policy: Policy) -> list[Any]:
    """The shadow stage's verdicts on ``min_rows`` pairs drawn with replacement from every pair
    of the scenario's shadow log (:func:`shipyard.deploy.shadow.judge_shadow`, the control
    loop's judge, at :meth:`Policy.shadow_alpha`): the stage judges once the log holds
    ``min_rows`` rows."""
    from shipyard.deploy.replay import ReplayArms
    from shipyard.deploy.shadow import judge_shadow

    assert policy.canary.shadow is not None
    idx = rng.integers(0, pool.size, policy.canary.shadow.min_rows)
    answers = pool.answers[idx]
    failed = np.isnan(answers)
    arms = ReplayArms(
        recorded=pool.recorded[idx].tolist(),
        answers=[None if f else float(a) for a, f in zip(answers, failed, strict=True)],
        errors=[f"row {i}" for i in np.flatnonzero(failed)],
    )
    return judge_shadow(arms, policy)


def replay(args: tuple[int, str, float]) -> Outcome:
    """One rollout of the policy's plan on requests resampled from the scenario's pools; a
    staged row (:data:`STAGED_OF`) first replays the stable version's logged rows, and goes on
    to the live steps (targeted, then weighted) only if the replay passes."""
    seed, scenario, interval_s = args
    staged = scenario in STAGED_OF
    base = STAGED_OF.get(scenario, scenario)
    canary_pool, stable_pool = _POOLS[AA_POOLED if scenario == STAGED else base]
    rng = np.random.default_rng(seed)
    policy = policy_with_interval(interval_s, staged)
    if staged:
        verdicts = replay_stage(rng, _REPLAYS[base], policy, exchangeable=scenario == STAGED)
        failed = tuple(f"replay {v.metric}" for v in verdicts if v.outcome == "fail")
        shadow_failed: tuple[str, ...] = ()
        if base in _SHADOWS:  # judged either way: what the shadow stage alone would stop
            verdicts = shadow_stage(rng, _SHADOWS[base], policy)
            shadow_failed = tuple(f"shadow {v.metric}" for v in verdicts if v.outcome == "fail")
        if failed:
            return Outcome(
                0, None, failed, stopped_at_replay=True, shadow_alone=bool(shadow_failed)
            )
        if shadow_failed:
            return Outcome(0, None, shadow_failed, stopped_at_shadow=True, shadow_alone=True)
    max_intervals = total_intervals(policy)
    interval = policy.canary.interval_s
    subwindows = int(interval / SUBWINDOW_S)
    ours: int | None = None
    kayenta: int | None = None
    failed_on: tuple[str, ...] = ()
    t = 0
    for index, step in enumerate(policy.canary.steps):
        c, s = Arm(), Arm()
        looks, elapsed = 0, 0.0
        while True:
            t += 1
            elapsed += interval
            n = rng.poisson(RATE_RPS * interval)
            share = STAGED_TARGETED_PCT if step.targeted else step.weight_pct
            n_c = int(rng.binomial(n, share / 100))
            c.add(_draw(rng, canary_pool, n_c, subwindows), subwindows)
            s.add(_draw(rng, stable_pool, n - n_c, subwindows), subwindows)
            if ours is None:
                verdicts = judge_arms(c.data(), s.data(), policy, index, looks + 1)
                outcome = (
                    "fail"
                    if any(v.outcome == "fail" for v in verdicts)
                    else ("extend" if any(v.outcome == "extend" for v in verdicts) else "pass")
                )
                if outcome == "fail":
                    ours = t
                    failed_on = tuple(v.metric for v in verdicts if v.outcome == "fail")
                elif outcome != "extend":
                    looks += 1
            if kayenta is None and not staged and kayenta_fails(c, s):
                kayenta = t
            if (ours is not None and (kayenta is not None or staged)) or t >= max_intervals:
                return Outcome(ours, kayenta, failed_on)
            if elapsed >= step.min_duration_s:
                break
    return Outcome(ours, kayenta, failed_on)


def pooled_aa(recording: Recording) -> tuple[Pool, Pool]:
    """Both A/A versions' requests in one pool that both arms draw from.

    The two versions are one artifact, so which of them served a request is exchangeable
    (a permutation null): this replays the judge on the served requests without the chance
    difference between the two recorded pools, which every rollout of the per-version replay
    shares and which resampling more requests than were recorded magnifies.
    """
    canary, stable = recording.pools[SCENARIOS[0].name]
    merged = Pool(
        *(
            np.concatenate([getattr(canary, f), getattr(stable, f)])
            for f in ("errors", "latency_s", "client_latency_s", "scores")
        )
    )
    return merged, merged


def run_scenario(
    name: str, rollouts: int, interval_s: float, pool: ProcessPoolExecutor
) -> list[Outcome]:
    base = zlib.crc32(name.encode())
    jobs = [(base + 1000 * i, name, interval_s) for i in range(rollouts)]
    return list(pool.map(replay, jobs, chunksize=4))


def rate(outcomes: list[Outcome], who: str, within: int | None = None) -> float:
    hits = 0
    for o in outcomes:
        at = o.ours_failed_at if who == "ours" else o.kayenta_failed_at
        hits += at is not None and (within is None or at <= within)
    return hits / len(outcomes)


def median_interval(outcomes: list[Outcome], who: str) -> float:
    """The median interval of the rollback among the rollouts rolled back (NaN if none)."""
    at = [o.ours_failed_at if who == "ours" else o.kayenta_failed_at for o in outcomes]
    hit = [a for a in at if a is not None]
    return float(np.median(hit)) if hit else math.nan


# -- rollback speed ---------------------------------------------------------------------------


def flush_failing_canary(store: Any, model: str, now: float) -> None:
    """One second of flushed windows in which the canary (v2) fails 10 % of its requests and
    the stable (v1) 1 %: what makes the engine's next look fail and roll back."""
    from shipyard.store.serving import ServingWindow

    with store.session() as s:
        for version, requests, errors in ((2, 100, 10), (1, 900, 9)):
            s.add(
                ServingWindow(
                    model=model,
                    version=version,
                    worker="bench",
                    window_start=now - 1,
                    window_end=now,
                    requests=requests,
                    errors=errors,
                    latency_s={},
                )
            )


def rollback_speed(trials: int) -> list[float]:
    from shipyard.checks import Check
    from shipyard.clock import SYSTEM_CLOCK
    from shipyard.deploy import production
    from shipyard.deploy.canary import ServingAnalyzer
    from shipyard.deploy.engine import Engine
    from shipyard.deploy.policy import parse_policy, set_policy
    from shipyard.deploy.rollout import start_rollout
    from shipyard.serving import split as traffic
    from shipyard.serving.routing import choose_version
    from shipyard.statuses import CheckStatus, RolloutState
    from shipyard.store import Store

    policy_text = """
approvals: {start: {count: 0}}
staging: {smoke: false}
canary:
  interval_s: 1
  steps: [{weight_pct: 10, min_duration_s: 30, min_samples: 50}]
analysis: {metrics: [{name: error_rate}]}
"""
    deltas: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        for trial in range(trials):
            model = f"m{trial}"
            set_policy(store, model, policy_text, actor="bench")
            with store.session() as s:
                production.put_in_production(
                    s, model, 1, now=time.time(), via="initial", actor="bench", reason=""
                )
            engine = Engine(
                store,
                SYSTEM_CLOCK,
                smoke=lambda m, v, p: Check.of_model(
                    "staging.smoke", m, v, CheckStatus.OK, "not run"
                ),
                analyzer=ServingAnalyzer(store),
            )
            rid = start_rollout(store, model, 2, actor="bench", policy=parse_policy(policy_text)).id
            engine.advance(rid)  # staging → canary 10 %
            served: list[tuple[float, int]] = []
            stop = threading.Event()

            def replica(seed: int) -> None:
                rnd = random.Random(seed)
                split = traffic.live_splits(store)[model]  # noqa: B023
                last_refresh = time.monotonic()
                while not stop.is_set():  # noqa: B023
                    if time.monotonic() - last_refresh >= 0.5:
                        split = traffic.live_splits(store)[model]  # noqa: B023
                        last_refresh = time.monotonic()
                    key = f"request:{rnd.random()}"
                    v = choose_version(key, split.weights, split.canary, split.cohort)
                    served.append((time.time(), v))  # noqa: B023
                    time.sleep(1 / 25)

            threads = [threading.Thread(target=replica, args=(trial * 10 + i,)) for i in range(2)]
            for th in threads:
                th.start()
            time.sleep(1.0 + random.random() * 0.5)
            now = time.time()
            flush_failing_canary(store, model, now)
            while True:
                step = engine.advance(rid)
                if step is not None and step.action == RolloutState.ROLLED_BACK:
                    verdict_at = time.time()
                    break
                time.sleep(0.05)
            time.sleep(2.5)
            stop.set()
            for th in threads:
                th.join()
            last_canary = max((ts for ts, v in served if v == 2), default=verdict_at)
            deltas.append(max(0.0, last_canary - verdict_at))
        store.dispose()
    return deltas


def production_rollback_on_a_real_server(trials: int) -> list[float]:
    """`shipyard rollback` against the real model server (Uvicorn on 127.0.0.1): seconds from
    the committed rollback to the first answer from the previous version, and no answer from
    the rolled-back version after it."""
    import httpx
    from sklearn.linear_model import LogisticRegression

    from shipyard.deploy.loop import advance_rollouts, sync_aliases
    from shipyard.deploy.policy import set_policy
    from shipyard.deploy.rollback import rollback
    from shipyard.deploy.rollout import start_rollout
    from shipyard.registry import Registry
    from shipyard.serving.server import build_app
    from shipyard.workspace import Workspace

    rng = np.random.default_rng(0)
    xs = rng.normal(size=(300, 2))
    ys = (xs[:, 0] > 0).astype(int)
    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(home=Path(tmp) / "home")
        reg = Registry(ws.store, ws.artifacts, actor="bench")
        import pandas as pd

        frame = pd.DataFrame(xs, columns=["a", "b"])
        for _ in range(2):
            reg.register("churn", LogisticRegression().fit(frame, ys), training_data=frame)
        set_policy(
            ws.store,
            "churn",
            "approvals: {start: {count: 0}}\ncanary: {steps: []}\n",
            actor="bench",
        )
        for v in (1, 2):
            start_rollout(ws.store, "churn", v, actor="bench")
            advance_rollouts(ws)
        app = build_app(ws, monitoring=False, refresh_interval_s=0.5)
        server, thread, port = start_in_a_thread(app)
        body = {
            "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": xs[:1].tolist()}]
        }
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            current = 2
            for _ in range(trials):
                time.sleep(0.3 + rng.random() * 0.5)
                target = 1 if current == 2 else 2
                rollback(ws.store, "churn", actor="bench", to_version=target)
                sync_aliases(ws)
                t0 = time.monotonic()
                last_old = t0
                while time.monotonic() - t0 < 2.5:
                    got = int(
                        c.post("/v2/models/churn/infer", json=body).headers[
                            "x-shipyard-model-version"
                        ]
                    )
                    if got == current:
                        last_old = time.monotonic()
                    time.sleep(0.005)
                out.append(last_old - t0)
                current = target
        server.should_exit = True
        thread.join(timeout=10)
        ws.store.dispose()
    return out


def canary_rollback_on_a_real_server(trials: int) -> list[float]:
    """The control loop rolls back a failing canary that a real model server (Uvicorn on
    127.0.0.1, refresh 0.5 s) serves to 10 % of users: seconds from the committed verdict to
    the last answer any canary user got from the canary."""
    import httpx
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from shipyard.checks import Check
    from shipyard.clock import SYSTEM_CLOCK
    from shipyard.deploy import production
    from shipyard.deploy.canary import ServingAnalyzer
    from shipyard.deploy.engine import Engine
    from shipyard.deploy.policy import parse_policy, set_policy
    from shipyard.deploy.rollout import start_rollout
    from shipyard.registry import Registry
    from shipyard.serving import split as traffic
    from shipyard.serving.routing import choose_version
    from shipyard.serving.server import build_app
    from shipyard.statuses import CheckStatus, RolloutState
    from shipyard.workspace import Workspace

    policy_text = """
approvals: {start: {count: 0}}
staging: {smoke: false}
canary:
  interval_s: 1
  steps: [{weight_pct: 10, min_duration_s: 30, min_samples: 50}]
analysis: {metrics: [{name: error_rate}]}
"""
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(300, 2))
    frame = pd.DataFrame(xs, columns=["a", "b"])
    ys = (xs[:, 0] > 0).astype(int)
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": xs[:1].tolist()}]}
    users = [f"u{i}" for i in range(300)]
    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(home=Path(tmp) / "home")
        reg = Registry(ws.store, ws.artifacts, actor="bench")
        app = build_app(ws, monitoring=False, refresh_interval_s=0.5)
        server, thread, port = start_in_a_thread(app)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:

            def served(model: str, user: str) -> int:
                r = c.post(f"/v2/models/{model}/infer", json=body, headers={"x-user-id": user})
                return int(r.headers.get("x-shipyard-model-version", "0"))

            for trial in range(trials):
                model = f"m{trial}"
                for _ in range(2):
                    reg.register(model, LogisticRegression().fit(frame, ys), training_data=frame)
                set_policy(ws.store, model, policy_text, actor="bench")
                with ws.store.session() as s:
                    production.put_in_production(
                        s, model, 1, now=time.time(), via="initial", actor="bench", reason=""
                    )
                engine = Engine(
                    ws.store,
                    SYSTEM_CLOCK,
                    smoke=lambda m, v, p: Check.of_model(
                        "staging.smoke", m, v, CheckStatus.OK, "not run"
                    ),
                    analyzer=ServingAnalyzer(ws.store),
                )
                policy = parse_policy(policy_text)
                rid = start_rollout(ws.store, model, 2, actor="bench", policy=policy).id
                engine.advance(rid)  # staging → canary 10 %
                split = traffic.live_split(ws.store, model)
                assert split is not None and split.cohort is not None
                canary_users = [
                    u
                    for u in users
                    if choose_version(f"user:{u}", split.weights, 2, split.cohort) == 2
                ][:10]
                deadline = time.monotonic() + 5
                while served(model, canary_users[0]) != 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(rng.random() * 0.5)  # the verdict lands anywhere in a refresh period
                now = time.time()
                flush_failing_canary(ws.store, model, now)
                while True:
                    step = engine.advance(rid)
                    if step is not None and step.action == RolloutState.ROLLED_BACK:
                        verdict_at = time.monotonic()
                        break
                    time.sleep(0.05)
                last_canary = verdict_at
                i = 0
                while time.monotonic() - verdict_at < 2.5:
                    if served(model, canary_users[i % len(canary_users)]) == 2:
                        last_canary = time.monotonic()
                    i += 1
                    time.sleep(0.005)
                out.append(last_canary - verdict_at)
        server.should_exit = True
        thread.join(timeout=10)
        ws.store.dispose()
    return out


def start_in_a_thread(app: Any) -> tuple[Any, threading.Thread, int]:
    """``app`` under Uvicorn on a free port of 127.0.0.1, in a daemon thread, once it listens."""
    import uvicorn

    with socket_port() as port:
        pass
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, port


@contextmanager
def socket_port() -> Iterator[int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def _describe(recording: Recording) -> None:
    print(
        f"\nRecorded {recording.requests} requests in {recording.seconds:.0f} s "
        f"({recording.requests / recording.seconds:.0f} req/s, one closed-loop client) from "
        "shipyard.serving under Uvicorn on 127.0.0.1; canary weight "
        f"{RECORD_WEIGHT_PCT:g} % by x-user-id while recording"
    )
    for check in recording.checks:
        print(f"  checked: {check}")
    header = (
        f"{'scenario':38} {'arm':7} {'requests':>8} {'errors':>7} "
        f"{'server p50/p90/p99 ms':>22} {'client p50 ms':>13} {'mean score':>10} {'KS D':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, (canary, stable) in recording.pools.items():
        ok_c = canary.scores[~canary.errors]
        ok_s = stable.scores[~stable.errors]
        d = float(sps.ks_2samp(ok_c, ok_s).statistic) if ok_c.size and ok_s.size else math.nan
        for arm, p in (("canary", canary), ("stable", stable)):
            q = np.percentile(p.latency_s * 1000, [50, 90, 99])
            ok = p.scores[~p.errors]
            print(
                f"{name if arm == 'canary' else '':38} {arm:7} {p.size:>8} "
                f"{p.errors.mean():>7.2%} {q[0]:>8.2f}/{q[1]:.2f}/{q[2]:.2f} "
                f"{np.median(p.client_latency_s) * 1000:>13.2f} "
                f"{ok.mean() if ok.size else math.nan:>10.3f} "
                f"{(f'{d:.3f}' if arm == 'canary' else ''):>6}"
            )


SHORT = {
    "error_rate": "errors",
    "latency": "latency",
    "latency_spread": "spread",
    "prediction_shift": "predictions",
}


def _failed_on(outcomes: list[Outcome]) -> str:
    counts: dict[str, int] = {}
    for o in outcomes:
        for m in o.ours_failed_on:
            counts[SHORT.get(m, m)] = counts.get(SHORT.get(m, m), 0) + 1
    return ", ".join(f"{m} {n}" for m, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (Wilson 1927, JASA 22:209–212)."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _judging_table(results: dict[str, list[Outcome]], policy: Policy) -> None:
    goals = {
        SCENARIOS[0].name: "≤ 1 %",
        AA_POOLED: "≤ 1 %",
        "+2 pp errors": "≥ 95 % ≤3",
        "prediction shift only": "detected",
    }
    print(
        "\nJudging on resampled served traces: "
        + ", ".join(
            f"{n} rollouts per {k}"
            for n, k in (
                (len(results[SCENARIOS[0].name]), "A/A row"),
                (len(results[SCENARIOS[1].name]), "other scenario"),
            )
        )
        + ", "
        f"{RATE_RPS:g} req/s, steps {[s.weight_pct for s in policy.canary.steps]} %, analysis "
        f"every {policy.canary.interval_s:g} s, {total_intervals(policy)} intervals per "
        f"rollout, α = {policy.analysis.alpha:g} per rollout"
    )
    print(
        "rolled back within 3 intervals (≤3) / in the whole rollout (all); median interval of "
        "the rollback (med); the metrics that failed Shipyard's verdicts (rollouts)"
    )
    header = (
        f"{'scenario':38} {'Shipyard ≤3':>11} {'all':>6} {'med':>4}  "
        f"{'Kayenta ≤3':>10} {'all':>6} {'med':>4}  {'goal':10} Shipyard failed on"
    )
    print(header)
    print("-" * (len(header) + 12))
    for name, o in results.items():
        cells = []
        for who, width in (("ours", 11), ("kayenta", 10)):
            med = median_interval(o, who)
            cells.append(
                f"{rate(o, who, 3):>{width}.1%} {rate(o, who):>6.1%} "
                f"{'—' if math.isnan(med) else f'{med:g}':>4}"
            )
        print(f"{name:38} {cells[0]}  {cells[1]}  {goals.get(name, ''):10} {_failed_on(o)}")
    for name in (SCENARIOS[0].name, AA_POOLED):
        if name not in results:
            continue
        o = results[name]
        line = []
        for who, label in (("ours", "Shipyard"), ("kayenta", "Kayenta-style")):
            hits = sum(
                (o_.ours_failed_at if who == "ours" else o_.kayenta_failed_at) is not None
                for o_ in o
            )
            lo, hi = wilson(hits, len(o))
            line.append(f"{label} {hits / len(o):.1%} [{lo:.1%}, {hi:.1%}]")
        print(f"false rollbacks, {name}, 95 % interval: " + "; ".join(line))


def _staged_table(results: dict[str, list[Outcome]], interval_s: float) -> None:
    staged = policy_with_interval(interval_s, staged=True)
    stages = staged.stages()
    looks = [
        staged.replay_alpha(),
        staged.shadow_alpha(),
        *(
            staged.alpha_at(i, k)
            for i, step in enumerate(staged.canary.steps)
            for k in range(1, step.max_looks(interval_s) + 1)
        ),
    ]
    metrics = len(staged.analysis.metrics)
    print(
        f"\nThe staged release: {' → '.join(st.kind for st in stages)} "
        f"({' → '.join(st.description for st in stages)}; the targeted cohort sends "
        f"{STAGED_TARGETED_PCT:g} % of requests), {len(looks)} looks in all, one α = "
        f"{staged.analysis.alpha:g} ({staged.analysis.budget} budget): per stage "
        + ", ".join(f"{st.kind} {st.alpha:.2g}" for st in stages)
        + f"; Σ over looks of the per-look level × {metrics} metrics = "
        f"{sum(looks) * metrics:.6g} (largest look {max(looks):.3g} per metric)"
    )
    header = (
        f"{'staged release':52} {'rollouts':>8} {'rolled back [95 % Wilson]':>27} "
        f"{'stopped before any user [95 % Wilson]':>39} {'replay/shadow':>13} "
        f"{'shadow alone':>12}  {'goal':9} failed on (rollouts)"
    )
    print(header)
    print("-" * (len(header) + 12))
    for name, o in results.items():
        n = len(o)
        back = sum(x.ours_failed_at is not None for x in o)
        at_replay = sum(x.stopped_at_replay for x in o)
        at_shadow = sum(x.stopped_at_shadow for x in o)
        stops = at_replay + at_shadow
        lo, hi = wilson(back, n)
        rlo, rhi = wilson(stops, n)
        goal = "≤ 1 %" if name == STAGED else "≥ 95 % before users"
        print(
            f"{name:52} {n:>8} {f'{back / n:.1%} [{lo:.1%}, {hi:.1%}]':>27} "
            f"{f'{stops / n:.1%} [{rlo:.1%}, {rhi:.1%}]':>39} "
            f"{f'{at_replay}/{at_shadow}':>13} "
            f"{f'{sum(x.shadow_alone for x in o) / n:.1%}':>12}  {goal:9} {_failed_on(o)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=" ".join((__doc__ or "").split("\n\n")[0].split()),
    )
    parser.add_argument(
        "--rollouts", type=int, default=200, help="replayed rollouts per scenario (200)"
    )
    parser.add_argument(
        "--aa-rollouts",
        type=int,
        default=1000,
        help="replayed rollouts of each A/A row (1000: 200 cannot tell 1 %% from 2 %%)",
    )
    parser.add_argument(
        "--record-requests",
        type=int,
        default=DEFAULT_RECORD_REQUESTS,
        help=f"requests to serve and record, over all scenarios ({DEFAULT_RECORD_REQUESTS})",
    )
    parser.add_argument(
        "--rollback-trials", type=int, default=10, help="trials of each rollback timing (10)"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_POLICY.canary.interval_s,
        help="analysis interval in seconds (default: the default policy's)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke check in a minute: 20 rollouts, 20 000 recorded requests, 3 rollback "
        "trials (pools too small for the rates to mean much)",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="seed of the data, the users and the rows (7)"
    )
    parser.add_argument(
        "--save-recording", type=Path, help="write the recorded pools to this .npz file"
    )
    parser.add_argument(
        "--replay", type=Path, help="judge a recording saved by --save-recording (no serving)"
    )
    args = parser.parse_args()
    if args.quick:
        args.rollouts, args.aa_rollouts = 20, 20
        args.record_requests, args.rollback_trials = 20_000, 3
    for flag in ("rollouts", "aa_rollouts", "record_requests", "rollback_trials"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.interval <= 0:
        parser.error("--interval must be positive")
    policy = policy_with_interval(args.interval)
    t_start = time.perf_counter()

    if args.replay is not None:
        try:
            recording = load_recording(args.replay)
        except (OSError, KeyError, ValueError) as exc:
            parser.error(f"cannot replay {args.replay}: {exc}")
    else:
        recording = record(args.record_requests, args.seed)
    if args.save_recording is not None:
        save_recording(recording, args.save_recording)
    _describe(recording)
    t0 = time.perf_counter()
    results: dict[str, list[Outcome]] = {}
    pools = {**recording.pools, AA_POOLED: pooled_aa(recording)}
    staged_rows = list(STAGED_OF) if recording.replays else []
    if not staged_rows:
        print("(a recording without replay pools: the staged rows are left out)")
    elif not recording.shadows:
        print("(a recording without shadow logs: the staged rows skip the shadow stage)")
    with ProcessPoolExecutor(
        max_workers=2,
        initializer=_set_pools,
        initargs=(pools, recording.replays, recording.shadows),
    ) as pool:
        for name in [
            SCENARIOS[0].name,
            AA_POOLED,
            *(sc.name for sc in SCENARIOS[1:] if sc.name in recording.pools),
            *staged_rows,
        ]:
            aa = name in (SCENARIOS[0].name, AA_POOLED, STAGED)
            n = args.aa_rollouts if aa else args.rollouts
            results[name] = run_scenario(name, n, args.interval, pool)
    _judging_table({k: v for k, v in results.items() if k not in STAGED_OF}, policy)
    if staged_rows:
        _staged_table({k: results[k] for k in staged_rows}, args.interval)
    print(f"({time.perf_counter() - t0:.0f} s to replay and judge)")
    deltas = rollback_speed(args.rollback_trials)
    print(
        f"\nRollback speed ({args.rollback_trials} trials, 2 replicas × 25 req/s, "
        "split refresh 0.5 s):"
    )
    print(
        f"  failing verdict → last request served by the canary: median {np.median(deltas):.2f} s, "
        f"max {max(deltas):.2f} s (goal ≤ 2 s)"
    )
    served = canary_rollback_on_a_real_server(args.rollback_trials)
    print(
        f"\nCanary rollback on a real model server ({len(served)} trials, Uvicorn on 127.0.0.1, "
        "refresh 0.5 s, canary at 10 % of users):"
    )
    print(
        f"  failing verdict → last answer from the canary: median {np.median(served):.2f} s, "
        f"max {max(served):.2f} s (goal ≤ 2 s)"
    )
    moved = production_rollback_on_a_real_server(args.rollback_trials)
    print(
        f"\nOne-command production rollback on a real model server ({len(moved)} trials, "
        "Uvicorn on 127.0.0.1, refresh 0.5 s):"
    )
    print(
        f"  committed rollback → last answer from the old version: median "
        f"{np.median(moved):.2f} s, max {max(moved):.2f} s (goal ≤ 2 s)"
    )
    print(f"\n{time.perf_counter() - t_start:.0f} s in all")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
