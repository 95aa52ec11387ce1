"""`locaria-batch jobs`: list jobs, queue statistics, retry or cancel many at once, prune history."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from locaria_batch.cli.common import (
    JsonOption,
    UsageError,
    age_option,
    command,
    consoles,
    database,
    group,
    print_json,
    say,
)
from locaria_batch.cli.output import print_jobs
from locaria_batch.dispatch.handles import where_of
from locaria_batch.dispatch.store import DockerStats, Job, JobFilter, JobState, JobStore
from locaria_batch.errors import NotFound
from locaria_batch.settings import settings

jobs_app = group("Jobs: list them, queue statistics, retry or cancel many at once, prune old ones.")

StateOption = Annotated[list[JobState], typer.Option("--state", metavar="STATE", help=(
    "Only jobs in this state (" + ", ".join(JobState) + "); repeatable."))]
DockerOption = Annotated[list[str], typer.Option("--docker", metavar="NAME", help="Only this docker's jobs; "
                                                 "repeatable.")]
FileOption = Annotated[int | None, typer.Option("--file", metavar="ID", min=1, help="Only this file's jobs.")]
SinceOption = Annotated[str | None, typer.Option("--since", metavar="AGE", help=(
    "Only jobs whose state changed within this long: 30m, 1h, 7d."))]
IdsArgument = Annotated[list[int] | None, typer.Argument(metavar="ID", help="Job ids (or use the filters).")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking.")]


def job_filter(ids: list[int] | None, states: list[JobState], dockers: list[str], file_id: int | None,
               since: str | None) -> JobFilter:
    age = age_option("--since", since) if since else None
    return JobFilter(ids=tuple(ids or ()), states=tuple(states), dockers=tuple(dockers), file_id=file_id, since=age)


def job_json(job: Job) -> dict[str, Any]:
    row = {key: value for key, value in asdict(job).items() if key != "attempt_token"}
    row["where"] = where_of(job.handle, job.runner)
    return row


@command(jobs_app, "list")
def jobs_list(
    state: StateOption = [],  # noqa: B006 - Typer needs a literal default
    docker: DockerOption = [],  # noqa: B006
    file_id: FileOption = None,
    since: SinceOption = None,
    limit: Annotated[int, typer.Option(metavar="JOBS", min=1, help="At most this many, newest first.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Jobs, newest first: state, attempt, exit code, error and where each runs."""
    with database() as conn:
        jobs = JobStore(conn).list_jobs(job_filter(None, state, docker, file_id, since), limit=limit)
    if as_json:
        print_json([job_json(job) for job in jobs])
    elif jobs:
        print_jobs(consoles.out, jobs)
    else:
        say("no jobs match")


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 3600 else f"{value / 3600:.1f} h"


def stats_json(stats: list[DockerStats], alive: list[dict[str, Any]]) -> dict[str, Any]:
    return {"dockers": [asdict(item) for item in stats], "dispatchers": alive}


@command(jobs_app, "stats")
def jobs_stats(as_json: JsonOption = False) -> None:
    """Per docker: queued, running, finished in the last hour, oldest waiting job, run time
    percentiles; then the dispatchers alive."""
    with database() as conn:
        store = JobStore(conn)
        stats, alive = store.queue_stats(), store.dispatchers_alive()
    if as_json:
        print_json(stats_json(stats, alive))
        return
    table = Table("docker", "queued", "due", "running", "succeeded 1h", "failed 1h", "cancelled 1h",
                  "oldest due", "run p50", "run p95", title="queue")
    for item in stats:
        table.add_row(Text(item.docker), str(item.queued), str(item.due), f"{item.running}/{item.concurrency}",
                      str(item.succeeded), Text(str(item.failed), style="red" if item.failed else ""),
                      str(item.cancelled), seconds(item.oldest_due_seconds), seconds(item.run_p50),
                      seconds(item.run_p95))
    consoles.out.print(table)
    if not alive:
        say("no dispatcher is alive: start one with `locaria-batch worker`")
        return
    workers = Table("dispatcher", "runner", "concurrency", "started", "last heartbeat", title="dispatchers")
    for row in alive:
        workers.add_row(Text(row["owner"]), row["runner"], str(row["concurrency"]), str(row["started_at"]),
                        f"{seconds(row['heartbeat_age_seconds'])} ago")
    consoles.out.print(workers)


def confirm(what: str, count: int, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{what} {count} job(s)? Add --yes to confirm (no terminal to ask on)")
    if not typer.confirm(f"{what} {count} job(s)?", default=False):
        raise typer.Exit(1)


def selected(conn: Any, where: JobFilter) -> list[int]:
    if where.empty:
        raise UsageError("name the jobs: give job ids, or filters (--state, --docker, --file, --since)")
    return JobStore(conn).job_ids(where)


def on_selected(what: str, where: JobFilter, yes: bool,
                act: Callable[[JobStore, list[int]], dict[str, Any]]) -> dict[str, Any] | None:
    """Select the jobs, ask (unless --yes), then act on them; None when no job matches."""
    with database() as conn:
        job_ids = selected(conn, where)
        unmatched = sorted(set(where.ids) - set(job_ids))
        if unmatched:  # a mistyped id is an error, not "nothing to do"; nothing is done to the others either
            filtered = bool(where.states or where.dockers or where.file_id is not None or where.since is not None)
            raise NotFound(f"no job {', '.join(map(str, unmatched))}" + (" matches the filters" if filtered else "")
                           + "; nothing was done (`locaria-batch jobs list` shows the jobs)")
        if not job_ids:
            return None
        confirm(what, len(job_ids), yes)
        return act(JobStore(conn), job_ids)


@command(jobs_app, "retry")
def jobs_retry(
    ids: IdsArgument = None,
    state: StateOption = [],  # noqa: B006
    docker: DockerOption = [],  # noqa: B006
    file_id: FileOption = None,
    since: SinceOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Run the files of these jobs again (a file with a job in progress is skipped)."""
    result = on_selected("retry", job_filter(ids, state, docker, file_id, since), yes, JobStore.retry_jobs)
    if result is None:
        print_json({"retried": [], "skipped": []}) if as_json else say("no jobs match")
        return
    if as_json:
        print_json(result)
        return
    say(f"retried {len(result['retried'])} file(s)" + (f": {', '.join(str(r['file_id']) for r in result['retried'])}"
                                                        if result["retried"] else ""))
    for skipped in result["skipped"]:
        consoles.out.print(f"skipped file {skipped['file_id']}: {skipped['reason']}", markup=False, highlight=False)


@command(jobs_app, "cancel")
def jobs_cancel(
    ids: IdsArgument = None,
    state: StateOption = [],  # noqa: B006
    docker: DockerOption = [],  # noqa: B006
    file_id: FileOption = None,
    since: SinceOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Cancel these jobs: queued ones end at once, running ones are stopped by their dispatcher."""
    result = on_selected("cancel", job_filter(ids, state, docker, file_id, since), yes, JobStore.cancel_jobs)
    if result is None:
        print_json({"cancelled": [], "skipped": []}) if as_json else say("no jobs match")
        return
    if as_json:
        print_json(result)
        return
    say(f"cancelled {len(result['cancelled'])} job(s)"
        + (f"; {len(result['skipped'])} were not queued or running" if result["skipped"] else ""))


@command(jobs_app, "prune")
def jobs_prune(
    older_than: Annotated[str, typer.Option("--older-than", metavar="AGE", help=(
        "Delete finished jobs older than this: 30d, 12h, 2w (the newest job of each file is kept)."))] = "30d",
    as_json: JsonOption = False,
) -> None:
    """Delete finished jobs, their events and their log files, in small batches."""
    from locaria_batch.dispatch.retention import prune_jobs

    age: timedelta = age_option("--older-than", older_than)
    with database() as conn, Progress(console=consoles.err, disable=as_json or not sys.stderr.isatty()) as bar:
        task = bar.add_task("pruning jobs", total=None)
        summary = prune_jobs(conn, age, settings().logs_dir, on_batch=lambda n: bar.advance(task, n))
    if as_json:
        print_json({"jobs": summary.jobs, "log_files": summary.log_files})
    else:
        say(f"pruned {summary.jobs} finished job(s) older than {older_than} and {summary.log_files} log file(s)")
