"""What every command shares: how it is declared, its options, its consoles, and the one place
where an error becomes a message and an exit code."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand

from locaria_batch.errors import LocariaError
from locaria_batch.settings import RunnerName, parse_age, settings

DEPLOY_EXTRA = ("docker", "yaml")  # modules of the optional `deploy` dependencies
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def make_console(stderr: bool = False) -> Console:
    """A terminal gets Rich's layout; a pipe or file gets every table and message whole and
    unwrapped (no truncation, no 80-column wrapping), so `| grep` finds what it looks for."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=100_000, soft_wrap=True)


class Consoles:
    """Made on first use, so that each command (and each test's captured output) gets its own streams."""

    @property
    def out(self) -> Console:
        return make_console()

    @property
    def err(self) -> Console:
        return make_console(stderr=True)


consoles = Consoles()


def say(message: str) -> None:
    """A message for people, on stdout; `message` may hold Rich markup, user values must be escaped."""
    consoles.out.print(message, highlight=False)


def print_json(value: Any) -> None:
    print(json.dumps(value, default=str))


def fail(message: str, code: int = 1) -> NoReturn:
    consoles.err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _as_message(exc: Exception) -> tuple[str, int] | None:
    """The user's sentence for an error, or None for a bug (which keeps its traceback)."""
    from locaria_batch.db.connect import explain_database_error

    if isinstance(exc, LocariaError):
        return str(exc), exc.exit_code
    if isinstance(exc, ModuleNotFoundError) and exc.name in DEPLOY_EXTRA:
        return (f"this needs {exc.name}, which comes with the deploy extra: "
                "pip install 'locaria-batch[deploy]' (`make test` installs it)"), 1
    if isinstance(exc, psycopg.Error):
        explained = explain_database_error(exc)
        return (str(explained), explained.exit_code) if explained else None
    if isinstance(exc, OSError):
        # the last resort for a file, folder or port no command checked itself: one line, not a traceback
        where = f"use {exc.filename}" if exc.filename else "go on"
        return f"cannot {where}: {exc.strerror or exc}", 1
    return None


# -- declaring commands -----------------------------------------------------------------------
class Command(TyperCommand):
    """Usage lines and argument lists in words (`PATH`, `[ID]`), not Typer's `{path}` and `<str>`."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                arguments.append(((param.metavar or param.name or "").upper(), param.help or ""))
            else:
                record = param.get_help_record(ctx)
                if record is not None:
                    options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def group(help: str) -> typer.Typer:
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


def set_verbose(value: bool) -> None:
    if value:
        logging.getLogger().setLevel(logging.INFO)


VERBOSE = inspect.Parameter(
    "verbose", inspect.Parameter.KEYWORD_ONLY, default=False,
    annotation=Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens (also before the command).",
                                            callback=set_verbose, expose_value=False, is_eager=True)])


def command(app: typer.Typer, name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register `function` as command NAME of APP, with `-v/--verbose`, word metavars, and its
    errors turned into one sentence on stderr and an exit code."""

    def register(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            kwargs.pop("verbose", None)
            try:
                return function(*args, **kwargs)
            except (LocariaError, psycopg.Error, ModuleNotFoundError, OSError) as exc:
                explained = _as_message(exc)
                if explained is None:
                    raise
                if logging.getLogger().isEnabledFor(logging.INFO):
                    logging.getLogger("locaria_batch").info("%s failed:", name, exc_info=exc)
                fail(*explained)

        signature = inspect.signature(function, eval_str=True)
        run.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), VERBOSE])
        app.command(name, cls=Command)(run)
        return function

    return register


# -- shared options ---------------------------------------------------------------------------
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")]
WaitOption = Annotated[bool, typer.Option("--wait", help="Show progress until the job is done.")]
RunnerOption = Annotated[RunnerName | None, typer.Option(
    "--runner", help="Runner for jobs dispatched while waiting (default: $LOCARIA_RUNNER, else local).")]
AttrOption = Annotated[list[str], typer.Option("--attr", metavar="KEY=VALUE",
                                               help="Extra attribute (a JSON value, or text); repeatable.")]
FileIdArgument = Annotated[int, typer.Argument(metavar="ID", help="File id.", min=1)]


def runner_name(choice: RunnerName | None) -> str:
    return str(choice or settings().runner)


def parse_pairs(pairs: list[str], option: str, what: str = "key") -> list[tuple[str, str]]:
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} takes {what}=value, got {pair!r}")
        parsed.append((key, value))
    return parsed


def parse_attrs(pairs: list[str]) -> dict[str, Any]:
    """--attr key=value: the value as JSON where it parses, else as text."""
    result: dict[str, Any] = {}
    for key, value in parse_pairs(pairs, "--attr"):
        try:
            result[key] = json.loads(value)
        except json.JSONDecodeError:
            result[key] = value
    return result


class UsageError(LocariaError):
    """Options that do not go together."""

    exit_code = 2


# -- values refused at once -------------------------------------------------------------------
def refuse(option: str, message: str) -> NoReturn:
    """Refuse an option's value, naming the option, with a usage error's exit code (2).  For checks made
    inside a command (those that need the database); callbacks raise BadParameter."""
    raise UsageError(f"invalid value for '{option}': {message}")


def checked(check: Callable[[T], object]) -> Callable[[T | None], T | None]:
    """A Typer callback running one of the jobs' own validators on the value the user gave, so a value the
    job would refuse later is refused now (the value itself is kept as given)."""

    def callback(value: T | None) -> T | None:
        if value is not None:
            try:
                check(value)
            except LocariaError as exc:
                raise typer.BadParameter(str(exc)) from None
        return value

    return callback


def age_option(option: str, text: str) -> timedelta:
    """The one parser of the ages options take (--since 1h, --older-than 30d): bounded by parse_age."""
    try:
        return parse_age(text)
    except ValueError as exc:
        refuse(option, str(exc))


def readable_file(path: Path | None) -> Path | None:
    """A PATH argument that must be a regular file this process can read: a device, FIFO or socket would
    hang or fail half-way through the copy, after the row exists."""
    if path is None:
        return None
    try:
        mode = path.stat().st_mode
        if stat.S_ISREG(mode):
            with path.open("rb") as handle:
                handle.read(1)  # a file in /proc opens but fails on reading (EIO)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise typer.BadParameter(f"{path} is a folder; give a data file (a zip holds several files)")
    if not stat.S_ISREG(mode):
        raise typer.BadParameter(f"{path} is not a regular file (a device, FIFO or socket); give a data file")
    return path


# -- the database -----------------------------------------------------------------------------
@contextmanager
def database(owner: bool = False) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """The dispatcher's connection, or (owner=True) the schema owner's, which only migrations and
    docker sync use."""
    from locaria_batch.db import connect
    from locaria_batch.db.connect import owner_database_url

    with connect(owner_database_url() if owner else None, autocommit=True) as conn:
        yield conn
