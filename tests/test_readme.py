"""The README's commands, run in order on a fresh workspace: the README is this test's input, so
the tour cannot drift from the code again (issue 19).

Every line of every ```bash block is run as written, in a fresh folder where ``examples/`` is
the repository's, with ``shipyard`` and ``python`` meaning this checkout's. ``RUN`` and
``ROLLOUT`` (the README says so) stand for the newest run's and rollout's ids. A line ending in
``&`` (``serve``, ``daemon``) is started in the background, waited for, and stopped at the end;
``serve``'s port becomes a free one. A line whose comment says ``exits N`` must exit with N.

Two kinds of lines are parsed rather than run (their exact arguments are checked against the
command's parameters): ``make`` targets (``make -n``: they build a virtualenv or run the whole
suite) and the safe-deployment lines (``PARSED_ONLY``), which need a second trained version and a
daemon walking a rollout through its canary steps: minutes; ``tests/deploy`` runs them.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli_testkit import command_tree
from server_testkit import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PARSED_ONLY = (
    "shipyard models validate",
    "shipyard deploy",
    "shipyard approve",
    "shipyard rollout",
    "shipyard rollback",
)


@dataclass
class Command:
    text: str
    background: bool
    exit_code: int
    line: str


def readme_commands(text: str) -> Iterator[Command]:
    """Each command of each ```bash block, split at ``;`` and ``&&``, in order."""
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            code, _, comment = line.partition(" #")
            expected = re.search(r"\bexits (\d+)", comment)
            for part in re.split(r";|&&", code):
                part = part.strip()
                if not part:
                    continue
                background = part.endswith("&")
                yield Command(
                    part.rstrip("&").strip(),
                    background,
                    int(expected.group(1)) if expected else 0,
                    line.strip(),
                )


class Tour:
    """Runs the README's commands in ``here`` with this checkout's ``shipyard``."""

    def __init__(self, here: Path) -> None:
        self.here = here
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        self.env |= {"SHIPYARD_HOME": str(here / ".shipyard"), "SHIPYARD_USER": "tester"}
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.port = free_port()
        self.background: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.took: list[tuple[float, str]] = []  # seconds per command, shown with -s

    def shell(self, text: str) -> str:
        text = re.sub(r"\b8000\b", str(self.port), text)
        text = re.sub(r"^shipyard\b", f"{shlex.quote(sys.executable)} -m shipyard", text)
        text = re.sub(r"^python\b", shlex.quote(sys.executable), text)
        if re.search(r"\b(RUN|ROLLOUT)\b", text):
            for name, value in self.placeholders().items():
                text = re.sub(rf"\b{name}\b", value, text)
        return text

    def placeholders(self) -> dict[str, str]:
        from sqlalchemy import select

        from shipyard.store.deploy import RolloutRecord
        from shipyard.store.tables import Run
        from shipyard.workspace import Workspace

        if not (self.here / ".shipyard").is_dir():
            return {}
        ws = Workspace.open(home=self.here / ".shipyard", create=False)
        try:
            with ws.store.session() as s:
                run = s.scalars(select(Run.id).order_by(Run.created_at.desc()).limit(1)).first()
                rollout = s.scalars(
                    select(RolloutRecord.id).order_by(RolloutRecord.created_at.desc()).limit(1)
                ).first()
        finally:
            ws.store.dispose()
        return {"RUN": run or "0" * 12, "ROLLOUT": rollout or "0" * 12}

    def run(self, command: Command) -> None:
        text = self.shell(command.text)
        if command.background:
            self.start(command, text)
            return
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", text],
            cwd=self.here,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        self.took.append((time.monotonic() - started, command.text))
        output = f"$ {command.line}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, output
        assert done.returncode == command.exit_code, output

    def start(self, command: Command, text: str) -> None:
        log = self.here / f"background-{len(self.background)}.log"  # a file: a pipe could fill
        with log.open("w") as sink:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {text}"],
                cwd=self.here,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append((command.line, proc))
        if "serve" not in text:
            return
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"$ {command.line}\nexited {proc.returncode}:\n{log.read_text()}")
            try:
                url = f"http://127.0.0.1:{self.port}/v2/health/ready"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"$ {command.line}\nnot ready on port {self.port} within 90 s")

    def stop_all(self) -> None:
        for line, proc in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    pytest.fail(f"$ {line}\ndid not stop on SIGTERM within 30 s")


def parses(command: Command) -> None:
    """The command's arguments are valid for it (``--help`` of it works, and its parser takes
    them), without running it."""
    words = shlex.split(command.text)
    if words[0] == "make":
        done = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True)
        assert done.returncode == 0, f"$ {command.line}\n{done.stderr!r}"
        return
    tree = command_tree()
    args = [w.replace("ROLLOUT", "0" * 12).replace("RUN", "0" * 12) for w in words[1:]]
    path: tuple[str, ...] = ()
    while args and (*path, args[0]) in tree:
        path = (*path, args.pop(0))
    assert path, f"$ {command.line}: not a shipyard command"
    tree[path].make_context(" ".join(("shipyard", *path)), args)


def test_readme_commands_are_found() -> None:
    commands = list(readme_commands(README.read_text()))
    texts = [c.text for c in commands]
    assert "shipyard init" in texts and any(c.background for c in commands)
    assert any(t.startswith(PARSED_ONLY) for t in texts)


@pytest.mark.slow
def test_the_readme_runs_in_order_on_a_fresh_workspace(tmp_path: Path) -> None:
    here = tmp_path / "tour"
    here.mkdir()
    (here / "examples").symlink_to(ROOT / "examples")
    tour = Tour(here)
    try:
        for command in readme_commands(README.read_text()):
            if command.text.startswith(("make ", *PARSED_ONLY)):
                parses(command)
            else:
                tour.run(command)
        for line, proc in tour.background:
            assert proc.poll() is None, f"$ {line}\nstopped before the tour ended"
    finally:
        tour.stop_all()
        for seconds, text in sorted(tour.took, reverse=True)[:8]:
            print(f"{seconds:6.1f} s  {text}")
