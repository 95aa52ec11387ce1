"""`locaria-batch locaria`: take a live Locaria database over from Locaria's own batch system, in
place, and hand it back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import psycopg
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from locaria_batch.cli.common import JsonOption, command, consoles, group, print_json, say
from locaria_batch.cli.deploy import ConfigFile, Environment, Theme, chosen_target
from locaria_batch.settings import settings

locaria_app = group("Switch a Locaria database from Locaria's batch system to this one, in place, and back.")

StageOption = Annotated[str | None, typer.Option("--stage", "-s", metavar="STAGE", help=(
    "Stage in the configuration file: its database (the owner's URL) and its deployed stack. "
    "Without it: $LOCARIA_DB_URL (the owner's), and no stack (jobs then run on the local or docker runner)."))]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Do it all in a transaction, report, then roll it back.")]


@contextmanager
def owner_database(stage: str | None, theme: str | None, environment: str | None, config: Any) -> \
        Iterator[tuple[psycopg.Connection[dict[str, Any]], str, Any]]:
    """The connection, where it leads, and the stage (None without --stage)."""
    from locaria_batch.db.connect import connect, describe, owner_database_url

    if stage is None:
        url = owner_database_url()
        where, chosen = describe(url), None
        conf = settings()
        source = ("$LOCARIA_DB_URL" if conf.db_url else f"the secret {conf.db_secret}" if conf.db_secret
                  else "the embedded cluster's owner")
    else:
        from locaria_batch.deploy.database import stage_database

        chosen = chosen_target(stage, theme, environment, config)
        found = stage_database(chosen)
        url, where, source = found.url, found.where, found.source
    consoles.err.print(f"database: {where} (from {source})", markup=False, highlight=False)
    with connect(url, autocommit=True, application_name="locaria-batch locaria") as conn:
        yield conn, where, chosen


def show(report: Any, as_json: bool) -> None:
    if as_json:
        print_json(report.as_json())
        return
    table = Table("", "", show_header=False, box=None, padding=(0, 2, 0, 0))
    for what, detail in report.steps:
        table.add_row(Text(what, style="bold"), Text(detail))
    consoles.out.print(table)
    if report.dry_run:
        say(f"[yellow]dry run[/yellow]: nothing was changed (the {report.action} ran in a transaction that was "
            "rolled back)")


@command(locaria_app, "adopt")
def locaria_adopt(stage: StageOption = None, theme: Theme = None, environment: Environment = None,
                  config: ConfigFile = None, dry_run: DryRun = False,
                  requeue: Annotated[bool, typer.Option("--requeue/--fail-stuck", help=(
                      "Rows stuck in FARGATE_PROCESSING / DOWNLOAD_PROCESSING: queue them again (default), or "
                      "fail them with a message saying how to retry."))] = True,
                  as_json: JsonOption = False) -> None:
    """Install this schema beside Locaria's, replace its aws_lambda_interface files trigger, map its
    fargate_config to the stage's stack, and take over the rows it left; one transaction."""
    from locaria_batch.deploy.adopt import Stack, adopt
    from locaria_batch.deploy.stack import load_outputs

    with owner_database(stage, theme, environment, config) as (conn, where, chosen):
        deployed = Stack(chosen, load_outputs(chosen)) if chosen is not None else None
        report = adopt(conn, where, settings().dockers_file, stack=deployed, fail_stuck=not requeue,
                       dry_run=dry_run)
    show(report, as_json)
    if not dry_run and not as_json:
        say(f"[green]taken over[/green]: {escape(where)}; `locaria-batch locaria rollback` hands it back")


@command(locaria_app, "rollback")
def locaria_rollback(stage: StageOption = None, theme: Theme = None, environment: Environment = None,
                     config: ConfigFile = None, dry_run: DryRun = False, as_json: JsonOption = False) -> None:
    """Hand an adopted database back to Locaria's batch system: its functions, trigger and
    fargate_config return; queued jobs end, their files wait for Locaria's next task."""
    from locaria_batch.deploy.adopt import rollback

    with owner_database(stage, theme, environment, config) as (conn, where, _):
        report = rollback(conn, where, dry_run=dry_run)
    show(report, as_json)
    if not dry_run and not as_json:
        say(f"[green]handed back[/green]: {escape(where)} runs Locaria's batch system again")


@command(locaria_app, "status")
def locaria_status(stage: StageOption = None, theme: Theme = None, environment: Environment = None,
                   config: ConfigFile = None, as_json: JsonOption = False) -> None:
    """Whether the database runs Locaria's batch system, this one, or was handed back, and since when."""
    from locaria_batch.db.adoption import AdoptionState, adoption_state, last_entry

    with owner_database(stage, theme, environment, config) as (conn, where, _):
        state = adoption_state(conn)
        since = None
        if state in (AdoptionState.ADOPTED, AdoptionState.ROLLED_BACK):
            since = last_entry(conn, "adopt" if state is AdoptionState.ADOPTED else "rollback")["at"]
    meaning = {AdoptionState.NONE: "no Locaria tables", AdoptionState.LOCARIA: "Locaria's own batch system",
               AdoptionState.OURS: "Locaria Batch from the start", AdoptionState.ADOPTED: "taken over by Locaria Batch",
               AdoptionState.ROLLED_BACK: "handed back to Locaria's batch system"}[state]
    if as_json:
        print_json({"database": where, "state": str(state), "since": since})
    else:
        consoles.out.print(Text(f"{where}: {meaning}" + (f" since {since:%Y-%m-%d %H:%M}" if since else "")))
