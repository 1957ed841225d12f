"""What every command shares: the consoles, tables, JSON output, opening the workspace, failing
cleanly.

Output has two readers. On a terminal, text and tables fit the terminal's width (``COLUMNS``
overrides it) and wrap between words. Piped (a CI log, ``grep``, a file), nothing is wrapped at
all: a log line stays one line, and a table is as wide as its content unless ``COLUMNS`` asks for
a width. Either way a table never breaks a word across lines: see :class:`FittedTable`.
``--json`` output bypasses both (:func:`print_json`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.table import Table

from shipyard.errors import NotFound

if TYPE_CHECKING:
    from shipyard.workspace import Workspace

# Width of a piped console when COLUMNS does not set one: wide enough that no table of ours
# has to fold (Rich cannot leave a table's width open).
PIPED_WIDTH = 4096
# A column of free text is not cut narrower than this (then it is drawn wider).
ELLIPSIS_MIN = 8


def make_console(stderr: bool = False) -> Console:
    """A console that wraps between words on a terminal and not at all when piped."""
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out.soft_wrap = True
        if not os.environ.get("COLUMNS", "").isdigit():
            out.width = PIPED_WIDTH
    return out


console = make_console()
err_console = make_console(stderr=True)


class FittedTable(Table):
    """A table whose columns are never narrower than their longest word.

    Rich shrinks the columns of a table that is too wide for the console until the cells fit,
    folding words in the middle (``statist / ic``). This table gives each column at least its
    longest word (header included) and shares the rest of the width in proportion to what each
    column would still like. Columns of free text (``free``) may go below that, ending an
    over-long word with an ellipsis. A table that cannot fit even so is drawn wider than the
    console when piped (a log line may be long, not broken) and left to Rich on a terminal.
    """

    def __init__(self, *headers: str, free: Collection[str] = (), **kwargs: Any) -> None:
        kwargs.setdefault("title_justify", "left")
        # a rule under the header and none around the cells: the most width for the cells,
        # and lines that grep and CI logs read as plain columns
        kwargs.setdefault("box", box.SIMPLE_HEAD)
        kwargs.setdefault("show_edge", False)
        kwargs.setdefault("pad_edge", False)
        kwargs.setdefault("padding", (0, 1, 0, 0))  # with the blank separator: two spaces
        super().__init__(**kwargs)
        for header in headers:
            self.add_column(header, overflow="ellipsis" if header in free else "fold")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        saved = [column.width for column in self.columns], self.padding
        try:
            options = self._fit(console, options)
            yield from super().__rich_console__(console, options)
        finally:
            for column, width in zip(self.columns, saved[0], strict=True):
                column.width = width
            self.padding = saved[1]

    def _fit(self, console: Console, options: ConsoleOptions) -> ConsoleOptions:
        """Set each column's width for ``options``; the options to render with."""
        if not self.columns:
            return options
        available = options.max_width - self._extra_width
        unbounded = options.update_width(PIPED_WIDTH)  # Rich clamps a measure to the width
        ranges = [self._measure_column(console, unbounded, c) for c in self.columns]
        longest = [r.maximum for r in ranges]
        if sum(longest) <= available:
            return options
        # _measure_column's minimum is the longest word of any cell, plus padding
        words = [r.minimum for r in ranges]
        if sum(words) > available:
            floor = [
                min(w, ELLIPSIS_MIN + self._get_padding_width(i))
                if column.overflow == "ellipsis"
                else w
                for i, (w, column) in enumerate(zip(words, self.columns, strict=True))
            ]
            if sum(floor) > available and any(self.padding):
                self.padding = 0  # one blank between columns rather than a broken word
                return self._fit(console, options)
            if sum(floor) > available:
                if not console.soft_wrap:
                    return options
                available = sum(words)
                options = options.update_width(available + self._extra_width)
            else:
                words = _shrink(words, floor, sum(words) - available)
        widths = _share(words, longest, available - sum(words))
        for index, (column, width) in enumerate(zip(self.columns, widths, strict=True)):
            column.width = max(1, width - self._get_padding_width(index))
        return options


def _shrink(widths: list[int], floor: list[int], excess: int) -> list[int]:
    """Take ``excess`` off the widest shrinkable columns first, never below ``floor``."""
    out = list(widths)
    while excess > 0:
        index = max(range(len(out)), key=lambda i: out[i] - floor[i])
        if out[index] <= floor[index]:
            break
        out[index] -= 1
        excess -= 1
    return out


def _share(minimum: list[int], wanted: list[int], spare: int) -> list[int]:
    """``minimum`` plus ``spare`` columns given out in proportion to what each still wants."""
    out = list(minimum)
    want = [max(0, w - m) for w, m in zip(wanted, minimum, strict=True)]
    total = sum(want)
    if total == 0 or spare <= 0:
        return out
    given = 0
    for i, w in enumerate(want):
        extra = min(w, spare * w // total)
        out[i] += extra
        given += extra
    for i in sorted(range(len(out)), key=lambda i: want[i] - (out[i] - minimum[i]), reverse=True):
        if given >= spare:
            break
        if out[i] - minimum[i] < want[i]:
            out[i] += 1
            given += 1
    return out


def table(*headers: str, title: str | None = None, free: Collection[str] = ()) -> FittedTable:
    """The table every command prints: columns ``headers``; ``free`` names the columns of free
    text (summaries, reasons) that may be cut with an ellipsis when the console is narrow."""
    return FittedTable(*headers, title=title, free=free)


def flag(*names: str, help: str) -> Any:
    """A boolean option that is off unless given. Its help shows no ``<bool>``: a flag takes
    no value."""
    return typer.Option(False, *names, help=help, metavar="")


def open_workspace(create: bool = True) -> Workspace:
    """The workspace of SHIPYARD_HOME. Read-only commands pass ``create=False``: run in the
    wrong folder, they say so instead of leaving an empty ``.shipyard`` there."""
    from shipyard.workspace import Workspace  # the store's libraries, for commands that use it

    return Workspace.open(create=create)


def names_of(ws: Workspace, kind: str) -> list[str]:
    """Every name of ``kind`` (model, pipeline, pool, rollout) in the workspace."""
    from sqlalchemy import select

    from shipyard.store.deploy import RolloutRecord
    from shipyard.store.quota import QuotaPool
    from shipyard.store.registry import RegisteredModel
    from shipyard.store.tables import PipelineRecord

    column = {
        "model": RegisteredModel.name,
        "pipeline": PipelineRecord.name,
        "pool": QuotaPool.name,
        "rollout": RolloutRecord.id,
    }[kind]
    with ws.store.session() as s:
        return list(s.scalars(select(column)))


def require(ws: Workspace, kind: str, name: str | None) -> None:
    """Raise the one :class:`~shipyard.errors.NotFound` line, with suggestions, when ``name``
    (if given) is not a ``kind`` of this workspace."""
    if name is None:
        return
    known = names_of(ws, kind)
    if name not in known:
        raise NotFound(kind, name, candidates=known)


def print_json(data: Any) -> None:
    """Machine output: JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr and a non-zero exit code."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"
