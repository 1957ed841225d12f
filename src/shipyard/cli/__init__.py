"""The ``shipyard`` command.

Each wing's commands live in a module of this package that exposes ``register(app)``. This file
does not import those modules: :data:`COMMANDS` names, for every top-level command, the module
that registers it and its one-line help, so ``shipyard --help`` lists everything while loading
nothing but Typer, and ``shipyard drift`` loads ``cli/stats.py`` and what it imports, not the
model server or the rollout engine. ``tests/test_cli_lazy.py`` checks the table against the
modules. Every :class:`~shipyard.errors.ShipyardError` a command raises becomes one clear line
and its class's exit code in one place, :meth:`Group.invoke`; commands do not catch them.
"""

from __future__ import annotations

import atexit
import gc
import inspect
import re
import sys
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import DefaultPlaceholder

from shipyard import __version__
from shipyard.errors import ShipyardError

try:
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
except ImportError:  # Typer before 0.29 coerces through Click's types: no adapter to defer
    RuntimeParam = object  # type: ignore[misc,assignment]

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module in shipyard.cli that registers it, its help's first line), in --help order
    "init": (
        "workspace",
        "Create the workspace (SHIPYARD_HOME, default ./.shipyard) and its metadata database.",
    ),
    "run": (
        "runs",
        "Run a pipeline, showing each step's state live; exit 1 if it fails, 130 if cancelled.",
    ),
    "drift": ("stats", "Compare CURRENT with REFERENCE column by column and say what drifted."),
    "profile": (
        "stats",
        "Profile DATA in one pass and store the profile (it can stand in for a drift reference).",
    ),
    "serve": (
        "serve",
        "Serve every model whose default alias points at a version (OIP V2 and MLflow scoring).",
    ),
    "serving": ("serve", "The model servers on record."),
    "deploy": (
        "deploy",
        "Start a rollout of MODEL's VERSION under the model's policy (approvals → staging, "
        "replay and shadow → canary steps → production).",
    ),
    "approve": ("deploy", "Approve a rollout, to start it or to speed it up."),
    "rollback": (
        "deploy",
        "Put the last version of MODEL that was healthy in production (or the named one) back in "
        "production, at once. A version that was rolled back or aborted is never chosen by itself.",
    ),
    "runbook": (
        "deploy",
        "MODEL's runbook as Markdown, rendered from its policy, with the exact commands.",
    ),
    "daemon": (
        "daemon",
        "Run the control loop: schedules, monitors, alert rules, notifications, rollouts, lease "
        "reclaim.",
    ),
    "runs": ("runs", "Inspect pipeline runs."),
    "pipelines": ("runs", "Inspect pipelines."),
    "schema": ("stats", "Infer a schema from data, or validate data against one."),
    "monitors": ("monitors", "The monitors of data, training, validation and serving pipelines."),
    "quota": ("quota", "Quota pools, leases, plans and estimates."),
    "hardware": ("quota", "Hardware advice from measurements and a cited model."),
    "models": ("models", "Models, versions and aliases."),
    "rollout": ("deploy", "Follow and steer one rollout."),
    "deployments": ("deploy", "Deployment history and policies."),
    "alerts": ("alerts", "Alerts, their rules, silences and receivers."),
    "readiness": (
        "readiness",
        "How ready each pipeline and model is for production: every item of the guidance and "
        "every ML Test Score test Shipyard can judge, pass/fail/unknown with its evidence, the "
        "command that fixes each fail, and the score (per section; the final score is the "
        "lowest).",
    ),
    "audit": (
        "audit",
        "The tamper-evident audit: who did what, and whether the record still reads as written.",
    ),
    "trace": (
        "trace",
        "Follow a request's trace: the model server's answer to it, the window it was flushed "
        "with, the canary verdicts that named it, the rollback's audit event, and the "
        "control-plane decisions made by requests sent in it.",
    ),
    "server": (
        "server",
        "Serve the control plane: the HTTP API (/api/v1, described at /api/v1/openapi.json) over "
        "this workspace's database, for the CLI (SHIPYARD_URL), CI jobs, bots and the dashboard.",
    ),
    "login": (
        "identity",
        "Log in to a Shipyard server with an API token: check it, then keep it (mode 0600) so "
        "every command talks to that server as you.",
    ),
    "logout": ("identity", "Forget the server and token `shipyard login` kept."),
    "whoami": (
        "identity",
        "Who Shipyard takes you for, how it knows (a token, single sign-on, or the embedded "
        "mode's SHIPYARD_USER), and your roles.",
    ),
    "token": ("identity", "API tokens: create (shown once), list, revoke."),
    "roles": (
        "identity",
        "Role bindings: viewer, operator, deployer, approver, quota-admin, admin; over *, "
        "model:NAME, pool:NAME or pipeline:NAME.",
    ),
}


def _help_flag(option: Any) -> Any:
    """Typer's own ``--help`` option as ours show it: a flag, so no ``<bool>`` after it. Its
    default is ``False``, not ``None``: Typer coerces every value that is not already a bool
    through a Pydantic adapter, so a ``None`` here loaded Pydantic for every subcommand."""
    if option is not None:
        option.metavar = ""
        option.default = False
    return option


_BUILD = object()
"""What :func:`_as_given` answers for a value only Typer's own adapter may judge."""
_DIGITS = re.compile(r"-?[0-9]+")


def _as_given(value: Any, descriptor: TypeDescriptor) -> Any:
    """``value`` when Typer's Pydantic adapter for ``descriptor`` would give it back unchanged
    (a string for a ``str``; an ``int`` in range, or plain decimal digits, for an ``int``),
    else :data:`_BUILD`. Anything else (a parser, a path, a choice, a float, a value out of
    range) is left to the adapter, so its answers and its error messages stay Typer's."""
    info = descriptor.parameter_info
    if info.parser is not None or descriptor.is_path or descriptor.is_choice:
        return _BUILD
    if descriptor.annotation is str:
        return value if isinstance(value, str) else _BUILD
    if descriptor.annotation is int:
        if isinstance(value, str) and _DIGITS.fullmatch(value):
            value = int(value)
        if (
            type(value) is int
            and (info.min is None or info.min <= value)
            and (info.max is None or value <= info.max)
        ):
            return value
    return _BUILD


@dataclass(frozen=True)
class _AdapterWhenNeeded(RuntimeParam):
    """Typer (0.29) coerces every parameter through a Pydantic ``TypeAdapter`` it builds when
    the parameter is processed, even for a default of ``None``: six adapters for ``runs list``
    with no options, 0.04 s of its start. This stands in for the adapter until a value needs
    it (see :func:`_as_given`); ``None`` never reaches it (:meth:`RuntimeParam.coerce`)."""

    descriptor: TypeDescriptor

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        if not (param.multiple or param.nargs != 1):
            given = _as_given(value, self.descriptor)
            if given is not _BUILD:
                return given
        built = build_runtime_param(self.descriptor)
        param._runtime_param = built  # the next value goes straight to Typer's own
        return built._coerce_value(value, param=param, ctx=ctx)


def _defer_adapters(command: Any) -> None:
    if RuntimeParam is object:
        return
    for param in command.params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is not None and getattr(param, "_runtime_param", False) is None:
            param._runtime_param = _AdapterWhenNeeded(
                parameter_info=descriptor.parameter_info,
                annotation=descriptor.annotation,
                descriptor=descriptor,
            )


class Command(TyperCommand):
    """Every ``shipyard`` command (``_use_our_classes`` makes each module's commands one)."""

    def get_help_option(self, ctx: Any) -> Any:
        return _help_flag(super().get_help_option(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        _defer_adapters(self)
        return super().parse_args(ctx, args)


class Group(TyperGroup):
    """Every ``shipyard`` command group, the root included."""

    def get_help_option(self, ctx: Any) -> Any:
        return _help_flag(super().get_help_option(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        _defer_adapters(self)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        """Run the command; a :class:`~shipyard.errors.ShipyardError` from it is one
        ``error: …`` line on stderr and its class's ``exit_code``, whatever the command."""
        try:
            return super().invoke(ctx)
        except ShipyardError as exc:
            from shipyard.cli.output import fail

            fail(str(exc), exc.exit_code)


class _Unloaded(Command):
    """Stands in for a command in the listing until the command is resolved."""

    def __init__(self, name: str, module: str, short_help: str) -> None:
        super().__init__(name=name, help=short_help, short_help=short_help)
        self.module = module


class LazyGroup(Group):
    """A Typer group that imports a command's module only when the command is resolved.

    The listing (``--help``, suggestions for a misspelt command) reads :data:`COMMANDS`;
    resolving a name replaces the placeholders with everything its module registers.
    Commands registered on :data:`app` the eager way (``register(app)``) keep working.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        eager = dict(self.commands)
        commands = dict.fromkeys(COMMANDS, None) | eager
        for name, (module, short_help) in COMMANDS.items():
            if commands[name] is None:
                commands[name] = _Unloaded(name, module, short_help)
        self.commands = {name: c for name, c in commands.items() if c is not None}

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[Any, Any, list[str]]:
        placeholder = self.commands.get(args[0]) if args else None
        if isinstance(placeholder, _Unloaded):
            self._load(placeholder.module, args[0])
        return super().resolve_command(ctx, args)

    def _load(self, module: str, name: str) -> None:
        """Build the command ``name`` that ``module`` registers. Typer builds every command
        and group it is given (each parameter of each: ``shipyard run``'s eight for ``shipyard
        runs list``), so it is given that one; the module's others stay placeholders."""
        sub = typer.Typer(rich_markup_mode="rich")
        import_module(f"shipyard.cli.{module}").register(sub)
        commands = [c for c in sub.registered_commands if _command_name(c) == name]
        groups = [g for g in sub.registered_groups if g.name in (name, None)]
        if commands or any(g.name == name for g in groups):
            sub.registered_commands, sub.registered_groups = commands, groups
        _reflow_all(sub)
        _use_our_classes(sub)
        for name, command in typer.main.get_group(sub).commands.items():
            if isinstance(self.commands.get(name), _Unloaded | None):
                self.commands[name] = command


app = typer.Typer(
    name="shipyard",
    cls=LazyGroup,
    help="Take ML pipelines to production and keep them healthy there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shipyard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_version,
        is_eager=True,
        metavar="",  # a flag: no <bool>
    ),
) -> None:
    """Take ML pipelines to production and keep them healthy there.

    Start with [bold]shipyard init[/], then [bold]shipyard run examples/pipelines/data.py[/].
    """


def _command_name(info: Any) -> str | None:
    """The name Typer gives a registered command (its own, else its function's)."""
    if info.name:
        return str(info.name)
    return typer.main.get_command_name(info.callback.__name__) if info.callback else None


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


def _use_our_classes(typer_app: typer.Typer) -> None:
    """Build every command and group of ``typer_app`` with :class:`Command` and :class:`Group`
    (Typer's defaults show ``<bool>`` after ``--help``); a class a module chose stays."""
    for command in typer_app.registered_commands:
        if command.cls is TyperCommand:  # Typer's default, set when the command is registered
            command.cls = Command
    for group in typer_app.registered_groups:
        sub = group.typer_instance
        if isinstance(group.cls, DefaultPlaceholder) and (
            sub is None or isinstance(sub.info.cls, DefaultPlaceholder)
        ):
            group.cls = Group
        if sub is not None:
            _use_our_classes(sub)


def main() -> None:
    atexit.unregister(end_process)  # once, however often main() runs in one process
    atexit.register(end_process)
    try:
        _reflow_all(app)  # commands registered on app itself (register(app))
        _use_our_classes(app)
        app()
    except KeyboardInterrupt:
        from shipyard.cli.output import err_console

        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


def end_process() -> None:
    """As the interpreter exits (``atexit``, which runs before its last garbage collection):
    spare that collection, which walks every object the libraries made (SQLAlchemy's alone:
    0.1-0.2 s of a short command). Frozen objects are left to the operating system, so what
    their finalizers did is done here: the database connections are closed (standard streams
    are flushed at exit, and files are closed by ``with``)."""
    if "shipyard.store.db" in sys.modules:
        from shipyard.store.db import dispose_all

        dispose_all()
    gc.freeze()
