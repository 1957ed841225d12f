"""The ``shipyard`` command.

Each wing's commands live in a module of this package that exposes ``register(app)``; this file
only assembles them and turns every :class:`~shipyard.errors.ShipyardError` into one clear line.
"""

from __future__ import annotations

import inspect
import re
import sys
from importlib import import_module

import typer
from rich.markup import escape

from shipyard import __version__
from shipyard.cli.output import err_console
from shipyard.errors import ShipyardError

app = typer.Typer(
    name="shipyard",
    help="Take ML pipelines to production and keep them healthy there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Modules whose register(app) adds commands, in the order --help lists them.
COMMAND_MODULES = [
    "workspace",
    "runs",
    "stats",
    "monitors",
    "quota",
    "models",
    "serve",
    "deploy",
    "alerts",
    "daemon",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shipyard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Take ML pipelines to production and keep them healthy there.

    Start with [bold]shipyard init[/], then [bold]shipyard run examples/pipelines/data.py[/].
    """


def reflow(doc: str) -> str:
    """A docstring's paragraphs as single lines (Typer keeps the line breaks of every paragraph
    but the first, so a help text wrapped at 100 columns in the source came out ragged); an
    indented line (an example, a list) keeps its break."""
    out = []
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        lines = paragraph.splitlines()
        if any(re.match(r"\s|[-*•] |\$ ", line) for line in lines[1:]):
            out.append(paragraph)
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def _reflow_all(typer_app: typer.Typer) -> None:
    for command in typer_app.registered_commands:
        if command.callback is not None and command.callback.__doc__ and command.help is None:
            command.help = reflow(command.callback.__doc__)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_all(group.typer_instance)


for _name in COMMAND_MODULES:
    import_module(f"shipyard.cli.{_name}").register(app)
_reflow_all(app)


def main() -> None:
    try:
        app()
    except ShipyardError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
