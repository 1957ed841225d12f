"""The Shipyard tour (``make demo``): the product's main job, from data to a safe rollback.

Every stage runs the real ``shipyard`` commands (printed before they run, with their key
output) against a fresh home folder, ``.shipyard/demo``, so the tour is repeatable:

1. setup — the workspace, a shared quota pool, the control loop (``shipyard daemon``);
2. pipelines — data → training → validation in the shared pool; runs, quota status, an estimate;
3. drift — an i.i.d. batch passes, a covariate-shifted batch is caught;
4. serving — the model registered, validated by the policy's gate, deployed, served on its own
   quota lease; good, bad and drifted traffic; the serving monitors;
5. alerting — drift, quota and latency alerts in the log receiver;
6. safe deployment — runbook; a better model through the training pipeline's automated path
   (register → validate → deploy), four-eyes approval, replay, canary, promotion; a skewed model
   that passes its gate caught at replay — on the stable version's logged requests, before it
   answers a single user — and rolled back with a diagnosis; a one-command rollback;
7. alerts resolve — the next batch is i.i.d. again, latency is back under its objective;
8. readiness — the ML Test Score of the pipelines and the model, one drill (a synthetic drifted
   batch must reach the log receiver), and the fixes for what is missing;
9. summary — where to look next.

It exits non-zero, naming the stage, when a stage fails. Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
HOME = ROOT / ".shipyard" / "demo"
MODEL = "digits"
AUTHOR, APPROVER = "bob", "alice"
sys.path.insert(0, str(EXAMPLES))

from traffic import Load, TrafficStats, send_bad_requests, send_rows  # noqa: E402

BOLD, DIM, GREEN, RED, YELLOW, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[33m", "\033[0m")
    if sys.stdout.isatty()
    else ("",) * 6
)


class StageFailed(Exception):
    """A stage of the tour did not do what it must; the message says what."""


def say(text: str = "") -> None:
    print(text, flush=True)


def note(text: str) -> None:
    say(f"  {DIM}{text}{RESET}")


def stop_group(proc: subprocess.Popen[Any], how: signal.Signals) -> bool:
    """Ask a process we started (the leader of its own session) to stop with ``how``; after
    10 s, SIGKILL its whole process group. True when it stopped by itself."""
    if proc.poll() is not None:
        return True
    proc.send_signal(how)
    try:
        proc.wait(timeout=10)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@functools.cache
def workspace() -> Any:
    """The tour's workspace, opened once in this process (for the Python API calls)."""
    from shipyard.workspace import Workspace

    return Workspace.open()


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


class Tour:
    """The tour's environment, its background processes, and the commands it runs."""

    def __init__(self) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        self.env.update(
            SHIPYARD_HOME=str(HOME),
            SHIPYARD_USER=AUTHOR,
            # short windows, so the tour sees its traffic in the store within seconds
            SHIPYARD_SERVING__FLUSH_INTERVAL_S="1",
            SHIPYARD_SERVING__REQUEST_LOG_SAMPLE_RATE="0.25",
            SHIPYARD_DAEMON__TICK_S="0.5",
            # routes every alert to a local log file (read by the daemon and `shipyard alerts`)
            SHIPYARD_ALERTING_CONFIG=str(EXAMPLES / "alerting.yaml"),
            PYTHONWARNINGS="ignore",
            COLUMNS="150",
        )
        # this process reads the same workspace through the Python API
        for key in [k for k in os.environ if k.startswith("SHIPYARD_")]:
            del os.environ[key]
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("SHIPYARD_")})
        os.environ["COLUMNS"] = self.env["COLUMNS"]
        self.background: list[tuple[str, subprocess.Popen[bytes], Any]] = []
        self.started = time.monotonic()
        self.stage_times: list[tuple[str, float, str]] = []
        self.serve_url = ""
        self.control_url = ""
        self.tokens: dict[str, str] = {}
        self.data = HOME / "demo-data"

    # -- commands ------------------------------------------------------------------------------
    def shipyard(
        self,
        *args: str,
        expect: int | tuple[int, ...] = 0,
        show: int | None = 40,
        keep: Callable[[str], bool] | None = None,
        who: str | None = None,
    ) -> str:
        """Run ``shipyard ARGS`` as a user would, print it and its output (the first ``show``
        lines, or those ``keep`` selects); fail the stage on an unexpected exit code. With
        ``who``, the command talks to the control plane with that identity's token."""
        through = f"   {DIM}(as {who}, through the control plane){RESET}" if who else ""
        say(f"\n{BOLD}$ shipyard {shlex.join(args)}{RESET}{through}")
        stdout, stderr, returncode = self.foreground(args, who)
        out = (stdout + stderr).rstrip()
        lines = out.splitlines()
        if keep is not None:
            lines = [line for line in lines if keep(line)]
        shown = lines if show is None else lines[:show]
        for line in shown:
            say(f"  {line}")
        if show is not None and len(lines) > show:
            note(f"… {len(lines) - show} more lines")
        wanted = (expect,) if isinstance(expect, int) else expect
        if returncode not in wanted:
            if keep is not None or (show is not None and len(lines) > show):
                for line in out.splitlines()[-15:]:
                    say(f"  {RED}{line}{RESET}")
            raise StageFailed(
                f"`shipyard {shlex.join(args)}` exited {returncode}, expected {expect}"
            )
        return stdout

    def foreground(self, args: tuple[str, ...], who: str | None = None) -> tuple[str, str, int]:
        """Run one command to its end; when the tour is interrupted, interrupt it the way
        Ctrl-C would (a pipeline run then cancels its steps cleanly), then kill what is left."""
        env = dict(self.env)
        if who is not None:
            env.update(SHIPYARD_URL=self.control_url, SHIPYARD_TOKEN=self.tokens[who])
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipyard", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except BaseException:
            stop_group(proc, signal.SIGINT)
            raise
        return stdout, stderr, proc.returncode

    def start(self, name: str, *args: str, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        """Start ``shipyard ARGS`` in the background; its output goes to a log in the home."""
        log_path = HOME / "logs" / f"demo-{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        say(f"\n{BOLD}$ shipyard {shlex.join(args)} &{RESET}   {DIM}(log: {rel(log_path)}){RESET}")
        fh = log_path.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipyard", *args],
            cwd=cwd,
            env=self.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.background.append((name, proc, fh))
        return proc

    def stop_all(self) -> None:
        """SIGTERM every background process (their clean shutdown), SIGKILL what lingers."""
        for name, proc, fh in reversed(self.background):
            if not stop_group(proc, signal.SIGTERM):
                say(f"  {YELLOW}{name} did not stop within 10 s; killed it{RESET}")
            fh.close()
        self.background.clear()

    def alive(self, name: str) -> None:
        for n, proc, _ in self.background:
            if n == name and proc.poll() is not None:
                raise StageFailed(
                    f"`shipyard {name}` exited {proc.returncode}; see "
                    f"{rel(HOME / 'logs' / f'demo-{name}.log')}"
                )

    # -- stages --------------------------------------------------------------------------------
    @contextmanager
    def stage(self, number: int, title: str) -> Iterator[None]:
        say(f"\n{BOLD}{'━' * 100}\n {number}. {title}\n{'━' * 100}{RESET}")
        began = time.monotonic()
        try:
            yield
        except StageFailed as exc:
            self.stage_times.append((title, time.monotonic() - began, "failed"))
            raise StageFailed(f"stage {number} ({title}) failed: {exc}") from None
        except Exception as exc:  # a product error met through the Python API, say
            self.stage_times.append((title, time.monotonic() - began, "failed"))
            raise StageFailed(
                f"stage {number} ({title}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        self.stage_times.append((title, time.monotonic() - began, "ok"))

    def wait_for(self, what: str, check: Callable[[], bool], timeout_s: float) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            if check():
                return time.monotonic() - began
            time.sleep(0.25)
        raise StageFailed(f"{what}: not within {timeout_s:.0f} s")


# -- the stages --------------------------------------------------------------------------------
def setup(t: Tour) -> None:
    shutil.rmtree(HOME, ignore_errors=True)
    note(f"SHIPYARD_HOME={rel(HOME)} (fresh), SHIPYARD_USER={AUTHOR} (the ML engineer)")
    t.shipyard("init")
    t.shipyard("quota", "apply", "examples/pools.yaml")
    t.shipyard("quota", "pools")
    note("the control loop runs for the whole tour: alert rules, notifications, rollouts, leases")
    note("SHIPYARD_ALERTING_CONFIG=examples/alerting.yaml: alerts go to a local log receiver")
    t.start("daemon", "daemon")
    control_plane(t)
    t.alive("daemon")


def control_plane(t: Tour) -> None:
    """The control plane, with two real identities: the ML engineer who authors the versions
    and the approver. Whoever holds the database (here, the tour) makes the first bindings."""
    import json

    note("the control plane: approvals go through it, each bound to who is logged in")
    t.shipyard("roles", "bind", AUTHOR, "deployer", "--scope", f"model:{MODEL}")
    note(f"{AUTHOR} approves other people's models too; four-eyes still stops him on his own")
    t.shipyard("roles", "bind", AUTHOR, "approver", "--scope", f"model:{MODEL}")
    t.shipyard("roles", "bind", APPROVER, "approver", "--scope", f"model:{MODEL}")
    for name in (AUTHOR, APPROVER):
        made = json.loads(
            t.shipyard("token", "create", "--user", name, "--expires", "1d", "--json", show=0)
        )
        t.tokens[name] = made["token"]
        note(f"{name}'s token {made['id']} (shown once; kept by the tour)")
    port = free_port()
    t.start("server", "server", "--port", str(port))
    t.control_url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        t.alive("server")
        try:
            return httpx.get(f"{t.control_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    took = t.wait_for("the control plane to answer", up, 60)
    note(f"control plane at {t.control_url}/api/v1 (up after {took:.1f} s)")
    t.shipyard("whoami", who=APPROVER)


def pipelines(t: Tour) -> None:
    step_lines = _run_lines
    t.shipyard("run", "examples/pipelines/data.py", "--pool", "demo", keep=step_lines)
    training_holding_the_pool(t)
    t.shipyard(
        "run",
        "examples/pipelines/validation.py",
        "--pool",
        "demo",
        "--param",
        "min_accuracy=0.9",
        keep=step_lines,
    )
    t.shipyard("runs", "list")
    t.shipyard("quota", "estimate", "digits-training")


def training_holding_the_pool(t: Tour) -> None:
    """The training run reserves its DAG's peak (fit asks for 2 CPUs: the whole shared pool)
    up front; ``shipyard quota status`` while it runs shows who holds what."""
    args = ("run", "examples/pipelines/training.py", "--pool", "demo", "--reserve")
    import shipyard.cli  # noqa: F401 - loaded before the run starts: the lease lasts seconds

    say(f"\n{BOLD}$ shipyard {shlex.join(args)} &{RESET}")
    run = subprocess.Popen(
        [sys.executable, "-m", "shipyard", *args],
        cwd=ROOT,
        env=t.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    status = ""
    try:
        began = time.monotonic()
        while run.poll() is None and time.monotonic() - began < 120:
            now = quota_status_in_process()
            if "digits-training holds" in now:
                status = now
                break
            time.sleep(0.3)
        out, _ = run.communicate(timeout=300)
    finally:
        stop_group(run, signal.SIGINT)
    for line in filter(_run_lines, out.splitlines()):
        say(f"  {line}")
    if run.returncode != 0:
        raise StageFailed(f"`shipyard {shlex.join(args)}` exited {run.returncode}")
    if status:
        say(
            f"\n{BOLD}$ shipyard quota status{RESET}   "
            f"{DIM}(while the training run held its lease){RESET}"
        )
        for line in status.rstrip().splitlines():
            say(f"  {line}")
    else:
        say(f"  {YELLOW}(skipped: the run ended before `quota status` saw its lease){RESET}")


def quota_status_in_process() -> str:
    """``shipyard quota status``, the same command, run in this process: a new interpreter
    takes longer to start than the training run holds its lease."""
    import contextlib
    import io

    from shipyard.cli import app
    from shipyard.errors import ShipyardError

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit, ShipyardError):
        app(["quota", "status"], standalone_mode=False)  # a failed look is simply retried
    return out.getvalue()


def _run_brief(line: str) -> bool:
    """Only the steps and the verdict of a run."""
    return line.startswith(("│", "run "))


def _run_lines(line: str) -> bool:
    """The run's summary lines, not every live-progress frame."""
    return not line.startswith(("⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏")) and bool(
        line.strip()
    )


def export_data(t: Tour) -> dict[str, Any]:
    """The data pipeline's latest splits and the trained model, read through the public API
    (``shipyard.pipelines.latest_output``) into files a user could hand to the CLI."""
    from shipyard.pipelines import latest_output

    t.data.mkdir(parents=True, exist_ok=True)
    train = latest_output("digits-data", "split", "train")
    test = latest_output("digits-data", "split", "test")
    train.to_parquet(t.data / "train.parquet")
    test.to_parquet(t.data / "test.parquet")
    return {"train": train, "test": test}


def drift(t: Tour, data: dict[str, Any]) -> None:
    note("the data pipeline published the training split as the `digits` reference;")
    note("a scoring pipeline draws a batch of new digits and publishes it to monitoring")
    iid = t.shipyard("run", "examples/pipelines/batch.py", "--pool", "demo", keep=_run_brief)
    show_verdicts(t, iid)
    note("now a batch selected on a real feature: images with heavy ink in the centre")
    shift = t.shipyard(
        "run",
        "examples/pipelines/batch.py",
        "--pool",
        "demo",
        "--param",
        "shift=true",
        keep=_run_brief,
    )
    if has_command("monitors"):
        t.shipyard("monitors", "show", "digits-batch", show=30)
    else:
        show_verdicts(t, shift)
    from shipyard.pipelines import latest_output

    batch = latest_output("digits-batch", "draw")
    batch.to_parquet(t.data / "shifted.parquet")
    data["shifted"] = batch
    note("the same shifted batch as a file, for people who just have two files:")
    t.shipyard(
        "drift",
        rel(t.data / "train.parquet"),
        rel(t.data / "shifted.parquet"),
        "--drift-share",
        "0.2",
        "--fail-on-drift",
        "--html",
        rel(t.data / "drift.html"),
        expect=3,
        keep=_drift_lines(6),
        show=None,
    )
    note(
        "exit code 3 = the data set drifted (≥ 20 % of columns; default 50 %), for CI gates; "
        f"report: {rel(t.data / 'drift.html')}"
    )


def show_verdicts(t: Tour, run_output: str) -> None:
    """The monitors' verdicts on a published batch, from the run's step log."""
    ids = [line.split()[1] for line in run_output.splitlines() if line.startswith("run ")]
    if not ids:
        raise StageFailed(f"no run id in: {run_output[-200:]}")
    run = ids[-1]

    def verdict(line: str) -> bool:
        return "monitor=" in line or not line.startswith(("20", " "))

    t.shipyard("runs", "logs", run, "--step", "monitor", keep=verdict, show=8)


def _drift_lines(rows: int) -> Callable[[str], bool]:
    """The table's header, its first ``rows`` drifted columns and the verdict."""
    shown: list[str] = []

    def keep(line: str) -> bool:
        if "columns drifted" in line or line.startswith(("column ", "─")):
            return True
        if "DRIFT" in line and len(shown) < rows:
            shown.append(line)
            return True
        return False

    return keep


def has_command(name: str) -> bool:
    """Whether ``shipyard NAME`` exists in this checkout (some wings are still being wired)."""
    from shipyard.cli import COMMANDS

    return name in COMMANDS


def register_version(t: Tour, data: dict[str, Any], label: str) -> int:
    """The training pipeline's latest model as a new registry version (with its training data,
    for the signature and the reference profile drift is judged against)."""
    import skops.io

    from shipyard.pipelines import latest_output

    model = latest_output("digits-training", "fit")
    test = data["test"]
    accuracy = float(model.score(test.drop(columns="target"), test["target"]))
    path = t.data / f"model-{label}.skops"  # a pickle would be refused: loading one runs code
    skops.io.dump(model, path)
    features = t.data / "train-features.parquet"
    data["train"].drop(columns="target").to_parquet(features)
    out = t.shipyard(
        "models",
        "register",
        MODEL,
        rel(path),
        "--training-data",
        rel(features),
        "--metric",
        f"accuracy={accuracy:.4f}",
        "--tag",
        f"trained={label}",
    )
    version = int(out.rsplit(" v", 1)[1].split()[0])
    return version


def rollout_id(out: str) -> str:
    for line in out.splitlines():
        if line.startswith("rollout "):
            return line.split()[1].rstrip(":")
    raise StageFailed(f"no rollout id in: {out[:200]}")


def rollout_state(rid: str) -> dict[str, Any]:
    """The rollout as ``shipyard rollout status --json`` shows it, read in-process (a CLI
    start costs seconds of CPU that the model server and the daemon need)."""
    from shipyard.deploy.rollout import get_rollout

    view: dict[str, Any] = get_rollout(workspace().store, rid).to_json()
    return view


def follow_rollout(t: Tour, rid: str, until: set[str], timeout_s: float) -> dict[str, Any]:
    """Print each state change of the rollout until it reaches one of ``until``."""
    began, seen = time.monotonic(), ""
    while time.monotonic() - began < timeout_s:
        t.alive("daemon")
        view = rollout_state(rid)
        where = f"{view['state']}" + (
            f" (step {view['step_index'] + 1}, canary {view['weight_pct']:g} %)"
            if view["state"] == "canary"
            else ""
        )
        if where != seen:
            say(f"  {time.monotonic() - began:5.1f} s  {where}  — {view.get('reason') or ''}")
            seen = where
        if view["state"] in until:
            return view
        time.sleep(0.25)
    raise StageFailed(f"rollout {rid} did not reach {sorted(until)} within {timeout_s:.0f} s")


def serving(t: Tour, data: dict[str, Any]) -> None:
    v1 = register_version(t, data, "first")
    t.shipyard("deployments", "set-policy", MODEL, "examples/policy.yaml")
    note("the policy demands a validation gate: accuracy ≥ 0.9 on held-out data, no regression")
    out = t.shipyard(
        "models",
        "validate",
        MODEL,
        rel(t.data / "test.parquet"),
        "--version",
        str(v1),
        "--label",
        "target",
        "--deploy",
    )
    rid = rollout_id(out)
    t.shipyard("approve", rid, who=APPROVER)
    note("first deployment: staging smoke checks, then production (no stable version to compare)")
    follow_rollout(t, rid, {"production", "failed", "rolled_back"}, 60)
    port = free_port()
    note("the model server runs on quota too: a lease in the `serving` pool while it serves")
    t.start(
        "serve", "serve", "--port", str(port), "--model", MODEL,
        "--pool", "serving", "--cpu", "0.5", "--memory", "512Mi",
    )  # fmt: skip
    t.serve_url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        t.alive("serve")
        try:
            return httpx.get(f"{t.serve_url}/v2/models/{MODEL}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    took = t.wait_for("the model server to serve digits", ready, 60)
    note(f"serving {MODEL} at {t.serve_url} (ready after {took:.1f} s)")
    test = data["test"].drop(columns="target")
    good = send_rows(t.serve_url, MODEL, test, user_prefix="good")
    say(f"  good rows:       {good.line()}")
    bad = send_bad_requests(t.serve_url, MODEL, test.iloc[:1])
    say(f"  bad requests:    {bad.line()}")
    show_bad_answer(t, test.iloc[:1])
    drifted = data["shifted"].drop(columns="target")
    seg = send_rows(t.serve_url, MODEL, drifted, user_prefix="scanner-b")
    say(f"  drifted segment: {seg.line()}")
    note("a batch client from the same scanner: the shifted images, 1,600 rows a request")
    big = pd_concat(drifted, 1600 // len(drifted) + 1).iloc[:1600]
    heavy = TrafficStats()
    for _ in range(24):
        send_rows(t.serve_url, MODEL, big, batch_rows=len(big), user_prefix="batch", stats=heavy)
    slowest = max(heavy.latencies_s, default=0.0)
    say(f"  batch client:    {heavy.line()}; slowest {1000 * slowest:.0f} ms")
    note("waiting 2 s for the server to flush its windows to the store…")
    time.sleep(2.0)
    run_monitors(t)
    t.shipyard("quota", "status", show=12)


def pd_concat(frame: Any, times: int) -> Any:
    import pandas as pd

    return pd.concat([frame] * times, ignore_index=True)


def show_bad_answer(t: Tour, row: Any) -> None:
    body = {"dataframe_split": {"columns": list(row.columns)[1:], "data": [list(row.iloc[0])[1:]]}}
    r = httpx.post(f"{t.serve_url}/models/{MODEL}/invocations", json=body, timeout=5)
    say(f"  e.g. a missing column → HTTP {r.status_code}: {r.text[:150]}")


def run_monitors(t: Tour) -> None:
    """The serving monitors: skew, prediction drift, data-type problems, latency, outage."""
    t.shipyard("monitors", "serving", MODEL, "--url", t.serve_url, show=40)


def alerting(t: Tour) -> None:
    log = HOME / "logs" / "demo-alerts.log"
    wanted = ("DatasetDrift", "ServingLatencyHigh", "QuotaPoolFull", "ServingBadInput")

    def delivered() -> bool:
        t.alive("daemon")
        text = log.read_text(encoding="utf-8") if log.exists() else ""
        return all(name in text for name in wanted[:2])

    try:
        took = t.wait_for("drift and latency alerts in the log receiver", delivered, 10)
        note(f"alerts delivered {took:.1f} s after the monitors ran")
    except StageFailed as exc:
        say(f"  {YELLOW}(not all alerts arrived: {exc}){RESET}")
    t.shipyard("alerts", "list", show=24)
    say(f"\n{BOLD}$ tail {rel(log)}{RESET}   {DIM}(the local log receiver, one line each){RESET}")
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    for line in lines[-12:]:
        say(f"  {_notification(line)}")
    text = "\n".join(lines)
    missing = [name for name in wanted if name not in text]
    for name in missing:
        say(f"  {YELLOW}(skipped: no {name} notification reached the log receiver){RESET}")
    if "DatasetDrift" not in text:
        raise StageFailed("the drift alert did not reach the log receiver")


def _notification(line: str) -> str:
    """One Alertmanager-format (webhook v4) notification as a short line."""
    import json

    try:
        doc = json.loads(line)
        alerts = [
            f"{a['status']} {a['labels'].get('alertname')} "
            + ",".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k != "alertname")
            for a in doc["alerts"]
        ]
    except (ValueError, KeyError, TypeError):
        return line[:200]
    return f"[{doc.get('status')}] " + "; ".join(alerts)[:200]


def deployment(t: Tour, data: dict[str, Any]) -> None:
    test = data["test"].drop(columns="target")
    t.shipyard("runbook", MODEL, show=22)

    note("a better model, the automated way: the training pipeline ends with")
    note("register → validate → deploy; the blessed version's rollout waits for approval")
    v2, rid2 = train_and_deploy(t, "C=0.5")
    with Load(t.serve_url, MODEL, test, rate_per_s=40) as load:
        good = canary(t, v2, rid2, load, expect="production")
        say(f"  traffic during the rollout: {load.stats.line()}")
    if good["state"] != "production":
        raise StageFailed(f"the good model ended {good['state']}: {good.get('reason')}")

    note("a worse model: a refactor of the training code flips pixels to 16 − value (dark ink")
    note("on light paper) in training and validation only; clients still send raw pixels")
    v3, rid3 = train_and_deploy(t, "C=0.5", "invert=true")
    note(f"v{v3} passed its gate on equally flipped test data; before any user is routed to it,")
    note("the replay runs it on the rows the stable version answered (its request log)")
    with Load(t.serve_url, MODEL, test, rate_per_s=40) as load:
        bad = canary(t, v3, rid3, load, expect="rolled_back")
        say(f"  traffic during the rollout: {load.stats.line()}")
    t.shipyard("rollout", "status", bad["id"], show=None)
    new_alerts(t)
    if bad["state"] not in ("rolled_back", "failed"):
        raise StageFailed(f"the worse model was not caught: {bad['state']} ({bad.get('reason')})")
    served = answers_served(v3)
    note(f"stopped at replay: v{v3} answered {served} user request(s); every user kept the stable")
    note("version, and the diagnosis lists the rows where v3 answers differently")
    if served or not str(bad.get("reason", "")).startswith("replay failed"):
        raise StageFailed(f"the skewed model was not stopped at replay: {bad.get('reason')}")

    note("and a one-command rollback of production, e.g. after a bad night:")
    t.shipyard("rollback", MODEL, "--reason", "demo: back to the first model", who=AUTHOR)
    time.sleep(1.5)
    answered = send_rows(t.serve_url, MODEL, test.iloc[:50], user_prefix="after-rollback")
    say(f"  traffic after the rollback: {answered.line()}")
    t.shipyard("deployments", "history", MODEL, show=30)
    note("who approved what, as the server authenticated them (mode `server`), hash-chained:")
    t.shipyard("audit", "list", "--action", "rollout.approve*", "--limit", "4", who=APPROVER)
    t.shipyard("audit", "verify", who=APPROVER, show=2)


def answers_served(version: int) -> int:
    """Requests the model servers answered with ``version`` (every flushed window of it)."""
    from shipyard.serving import records

    with workspace().store.session(readonly=True) as s:
        return sum(w.requests for w in records.windows(s, MODEL, version, 0.0))


def train_and_deploy(t: Tour, *params: str) -> tuple[int, str]:
    """Run the training pipeline with its automated path; the new version and its rollout."""
    from shipyard.deploy.rollout import rollouts_of

    args = [arg for p in (*params, "deploy=true") for arg in ("--param", p)]
    t.shipyard(
        "run", "examples/pipelines/training.py", "--pool", "demo", *args, keep=_run_brief, show=None
    )
    latest = rollouts_of(workspace().store, MODEL)[-1]
    t.shipyard("models", "show", MODEL, "--version", str(latest.version), keep=_model_brief)
    return latest.version, latest.id


def _model_brief(line: str) -> bool:
    """The lines of `models show` that the automated path filled in."""
    return line.startswith((f"{MODEL} v", "  metrics", "  tags", "  lineage", "  gate"))


def canary(t: Tour, version: int, rid: str, load: Load, expect: str) -> dict[str, Any]:
    t.shipyard("rollout", "status", rid, show=4)
    if expect == "production":
        note(f"four-eyes: {AUTHOR} trained v{version}, so {AUTHOR} may not approve it, and the")
        note("server knows who is asking from the token alone: neither --as nor a name helps")
        t.shipyard("approve", rid, who=AUTHOR, expect=1)
        t.shipyard("approve", rid, "--as", APPROVER, who=AUTHOR, expect=1)
    t.shipyard("approve", rid, who=APPROVER)
    view = follow_rollout(t, rid, {"production", "rolled_back", "failed"}, 120)
    if expect == "production" and view["state"] == "production":
        t.shipyard("rollout", "status", rid, show=None)
    return view


def new_alerts(t: Tour) -> None:
    """Notifications the log receiver got since the alerting stage (the failed canary's)."""
    log = HOME / "logs" / "demo-alerts.log"
    try:
        t.wait_for("the CanaryFailed alert", lambda: "CanaryFailed" in _read(log), 10)
    except StageFailed as exc:
        say(f"  {YELLOW}(skipped: {exc}){RESET}")
    say(f"\n{BOLD}$ tail -n 2 {rel(log)}{RESET}")
    for line in _read(log).splitlines()[-2:]:
        say(f"  {_notification(line)}")


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def resolving(t: Tour) -> None:
    """The next scoring batch is i.i.d. again and the server's p99 is back under its objective:
    the drift and latency alerts resolve, and the receiver is told."""
    log = HOME / "logs" / "demo-alerts.log"
    t.shipyard("run", "examples/pipelines/batch.py", "--pool", "demo", keep=_run_brief)
    note("the daemon re-evaluates the rules every tick and the serving monitors every 30 s")
    wanted = ("resolved DatasetDrift", "resolved ServingLatencyHigh")

    def resolved() -> bool:
        t.alive("daemon")
        text = "\n".join(_notification(line) for line in _read(log).splitlines())
        return all(w in text for w in wanted)

    try:
        took = t.wait_for("the drift and latency alerts to resolve", resolved, 45)
        note(f"resolved and delivered within {took:.1f} s")
    except StageFailed as exc:
        say(f"  {YELLOW}({exc}){RESET}")
    t.shipyard("alerts", "list", "--state", "resolved", show=12)


def readiness(t: Tour) -> None:
    """The readiness of the demo's pipelines and model, proven by one drill, with its fixes."""
    note("one drill: a synthetic drifted batch, judged by digits-data's own drift monitor, must")
    note("raise DatasetDrift and reach the log receiver; then it is cleaned up (points, alert)")
    t.shipyard("readiness", "--drill", "--only", "drift", "--timeout", "30", show=None)
    note("each fail names its fix; `shipyard readiness --markdown` writes the same for a review,")
    note("`shipyard readiness --min-score 1` fails a CI job below the score")


def summary(t: Tour) -> None:
    live = "" if sys.stdin.isatty() else " (it stops with the tour when not run at a terminal)"
    total = time.monotonic() - t.started
    for title, seconds, outcome in t.stage_times:
        mark = f"{GREEN}✓{RESET}" if outcome == "ok" else f"{RED}✗{RESET}"
        say(f"  {mark} {title:<68} {seconds:6.1f} s")
    say(f"  the whole tour: {total:.0f} s")
    say(
        f"""
  Where to look:
    home folder       {rel(HOME)}   (SQLite metadata, artifacts, logs)
    step logs         {rel(HOME / "logs")}/RUN/STEP.log     (`shipyard runs logs RUN`)
    alerts            {rel(HOME / "logs" / "demo-alerts.log")}
    drift report      {rel(t.data / "drift.html")}
  Explore (export SHIPYARD_HOME={rel(HOME)} first):
    shipyard runs list · shipyard runs show RUN · shipyard quota status · shipyard quota plan
    shipyard models show {MODEL} · shipyard deployments history {MODEL} · shipyard runbook {MODEL}
    shipyard alerts list · shipyard alerts rules · shipyard serve   (then POST /invocations)
    shipyard readiness · shipyard readiness digits --markdown · shipyard readiness --drill
  The dashboard, on the tour's control plane{live}:
    {t.control_url}/ui/   sign in as {APPROVER} with the token the tour made for her:
    {t.tokens.get(APPROVER, "(none)")}
  Later, on the same workspace: SHIPYARD_HOME={rel(HOME)} shipyard server, then open
    http://127.0.0.1:8600/ui/ with a token from `shipyard token create --user {APPROVER}`"""
    )


def keep_dashboard_open(t: Tour) -> None:
    """At a terminal, the tour ends looking at the dashboard: its control plane (and the other
    background processes) stay up until Enter or Ctrl-C. Elsewhere (CI) the tour just ends."""
    say(
        f"\n  {BOLD}The dashboard is up at {t.control_url}/ui/{RESET} — press Enter (or Ctrl-C) "
        "to stop the tour's servers."
    )
    with suppress(EOFError, KeyboardInterrupt):
        input()


def main() -> int:
    t = Tour()

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    try:
        with t.stage(1, "setup: workspace, shared quota pool, control loop"):
            setup(t)
        with t.stage(2, "pipelines: data → training → validation in the shared pool"):
            pipelines(t)
            data = export_data(t)
        with t.stage(3, "drift: an i.i.d. batch passes, a shifted batch is caught"):
            drift(t, data)
        with t.stage(4, "registry and serving: deploy, traffic, serving monitors"):
            serving(t, data)
        with t.stage(5, "alerting: drift, quota and latency alerts"):
            alerting(t)
        with t.stage(6, "safe deployment: replay, canary, promotion, rollbacks"):
            deployment(t, data)
        with t.stage(7, "alerts resolve: the next batch is i.i.d., latency is back"):
            resolving(t)
        with t.stage(8, "readiness: the score, one drill, the fixes"):
            readiness(t)
        with t.stage(9, "summary"):
            summary(t)
        if sys.stdin.isatty() and t.control_url:
            keep_dashboard_open(t)
    except StageFailed as exc:
        say(f"\n{RED}{BOLD}demo failed — {exc}{RESET}")
        say(f"  logs: {rel(HOME / 'logs')}")
        return 1
    except KeyboardInterrupt:
        say(f"\n{YELLOW}demo interrupted; stopping the background processes…{RESET}")
        return 130
    finally:
        t.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
