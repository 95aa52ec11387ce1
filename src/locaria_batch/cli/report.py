"""After a command that queued a job: wait for it with a progress bar, then show the file."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from locaria_batch.cli.common import consoles, database, print_json
from locaria_batch.cli.output import print_file
from locaria_batch.dispatch.store import FileProgress, JobStore
from locaria_batch.files import get_file, statuses


def wait(file_id: int, runner: str, *, quiet: bool = False) -> dict[str, Any]:
    """Until the file's job is done (dispatching it here while no worker is attached); a progress
    bar on a terminal, nothing otherwise."""
    from locaria_batch.dispatch.wait import wait_for_file

    if quiet or not sys.stderr.isatty():
        return wait_for_file(file_id, runner=runner)
    with Progress(SpinnerColumn(), TextColumn("file {task.fields[file_id]} [bold]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("waiting", total=None, file_id=file_id)

        def update(progress: FileProgress) -> None:
            done = progress.attributes.get("progress") or {}
            total = done.get("total")
            bar.update(task, description=progress.status, completed=min(done.get("done") or 0, total or 2**63),
                       total=total)

        return wait_for_file(file_id, update, runner=runner)


def show(file_id: int, as_json: bool) -> dict[str, Any]:
    """Print the file (and its jobs); exit 1 when it ended in an error status."""
    with database() as conn:
        row = get_file(conn, file_id)
        jobs = JobStore(conn).jobs_of_file(file_id)
    if as_json:
        print_json({"id": row["id"], "status": row["status"], "attributes": row["attributes"]})
    else:
        print_file(consoles.out, row, jobs)
    if row["status"] in statuses.FAILED:
        raise typer.Exit(1)
    return row


def after_queueing(file_id: int, *, wait_for_it: bool, as_json: bool, runner: str, waited: bool = False) -> None:
    """Wait if asked (unless the caller has), then show the row (always with --json)."""
    if wait_for_it and not waited:
        wait(file_id, runner, quiet=as_json)
    if wait_for_it or as_json:
        show(file_id, as_json)
