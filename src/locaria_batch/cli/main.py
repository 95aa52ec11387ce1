"""locaria-batch: thin Typer commands over the layers."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from locaria_batch import __version__
from locaria_batch.cli import aws as aws_cli
from locaria_batch.cli.downloads import downloads_app
from locaria_batch.cli.output import fail, print_file, print_file_list
from locaria_batch.settings import settings

app = typer.Typer(help="Turn rows of a PostGIS files table into batch jobs that load and export data.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="The database: the embedded development cluster and migrations.", no_args_is_help=True)
files_app = typer.Typer(help="File rows: upload, list, inspect, retry, cancel, delete.", no_args_is_help=True)
download_app = typer.Typer(help="Request downloads (exports) of search data or loaded tables.", no_args_is_help=True)
docker_app = typer.Typer(help="The job containers listed in docker/dockers.json.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(files_app, name="files")
app.add_typer(download_app, name="download")
app.add_typer(docker_app, name="docker")
app.add_typer(downloads_app, name="downloads")

console = Console()
JsonOption = Annotated[bool, typer.Option("--json", help="Print the file row (id, status, attributes) as JSON.")]
WaitOption = Annotated[bool, typer.Option("--wait", help="Show progress until the job is done.")]


def version_callback(value: bool) -> None:
    if value:
        console.print(f"locaria-batch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what the dispatcher does.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _connect() -> Any:
    from locaria_batch.db import connect
    from locaria_batch.db.connect import DatabaseNotConfigured

    try:
        return connect(autocommit=True)
    except DatabaseNotConfigured as exc:
        fail(str(exc))


# -- db ------------------------------------------------------------------------------------
def _cluster() -> Any:
    from locaria_batch.db.cluster import EmbeddedCluster

    return EmbeddedCluster(settings().home)


def _migrate_and_sync(url: str | None = None) -> list[str]:
    from locaria_batch.db import connect
    from locaria_batch.db.migrate import migrate
    from locaria_batch.deploy import dockers

    with connect(url, autocommit=True) as conn:
        applied = [f"{m.version:04d}_{m.name}" for m in migrate(conn)]
        dockers.sync(conn, dockers.load(settings().dockers_file))
    return applied


@db_app.command("up")
def db_up() -> None:
    """Start the embedded PostgreSQL + PostGIS cluster (initialising it the first time) and migrate it."""
    from locaria_batch.db.cluster import ClusterError

    if settings().db_url:
        fail("LOCARIA_DB_URL is set: the embedded cluster is not used. Run `locaria-batch db migrate` instead.")
    try:
        url = _cluster().up()
    except ClusterError as exc:
        fail(str(exc))
    applied = _migrate_and_sync(url)
    console.print(f"[green]database up[/green] {url}" + (f" (applied {', '.join(applied)})" if applied else ""))


@db_app.command("down")
def db_down() -> None:
    """Stop the embedded cluster (its data stays under .locaria/pg)."""
    console.print("stopped" if _cluster().down() else "not running")


@db_app.command("status")
def db_status() -> None:
    """Show whether the embedded cluster runs, and where."""
    if settings().db_url:
        console.print(f"using LOCARIA_DB_URL (embedded cluster not used): {settings().db_url}")
        return
    status = _cluster().status()
    state = "[green]running[/green]" if status.running else "[red]stopped[/red]"
    console.print(f"{state}  data: {status.data_dir}  port: {status.port or '-'}  url: {status.url or '-'}")
    if not status.running:
        raise typer.Exit(1)


@db_app.command("url")
def db_url() -> None:
    """Print the database URL (for psql "$(locaria-batch db url)")."""
    from locaria_batch.db.connect import DatabaseNotConfigured, database_url

    try:
        print(database_url())
    except DatabaseNotConfigured as exc:
        fail(str(exc))


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending SQL migrations (idempotent, safe to run concurrently) and sync the dockers."""
    _connect().close()
    applied = _migrate_and_sync()
    console.print(f"applied {', '.join(applied)}" if applied else "schema up to date")


# -- files -----------------------------------------------------------------------------------
def _parse_attrs(pairs: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--attr takes key=value, got {pair!r}")
        try:
            result[key] = json.loads(value)
        except json.JSONDecodeError:
            result[key] = value
    return result


def _wait(file_id: int, as_json: bool, runner: str) -> dict[str, Any]:
    from locaria_batch.dispatch.wait import wait_for_file

    if as_json or not sys.stderr.isatty():
        row = wait_for_file(file_id, runner=runner)
    else:
        with Progress(SpinnerColumn(), TextColumn("file {task.fields[file_id]} [bold]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True),
                      transient=True) as progress:
            task = progress.add_task("waiting", total=None, file_id=file_id)

            def update(row: dict[str, Any]) -> None:
                done = (row["attributes"] or {}).get("progress") or {}
                progress.update(task, description=row["status"], completed=done.get("done") or 0,
                                total=done.get("total"))

            row = wait_for_file(file_id, update, runner=runner)
    return dict(row)


def _show_result(file_id: int, as_json: bool) -> None:
    from locaria_batch.files import get_file

    with _connect() as conn:
        row = get_file(conn, file_id)
        jobs = conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s ORDER BY id", [file_id]).fetchall()
    if as_json:
        print(json.dumps({"id": row["id"], "status": row["status"], "attributes": row["attributes"]}, default=str))
    else:
        print_file(console, row, jobs)
    if row["status"] in {"ERROR", "DOWNLOAD_ERROR", "FARGATE_ERROR"}:
        raise typer.Exit(1)


def _report(file_id: int, *, wait: bool, as_json: bool, runner: str) -> None:
    """After a command that queued a job: wait for it if asked, then show the row (always for --json)."""
    if wait:
        _wait(file_id, as_json, runner)
    if wait or as_json:
        _show_result(file_id, as_json)


RunnerOption = Annotated[str, typer.Option("--runner", help="Runner for jobs dispatched while waiting.")]


@files_app.command("add")
def files_add(
    path: Annotated[Path, typer.Argument(help="The data file to upload.", exists=True, dir_okay=False)],
    table: Annotated[str | None, typer.Option(help="Target table (upload_file_1 or locaria_uploads.upload_file_1).")]
    = None,
    attr: Annotated[list[str], typer.Option("--attr", help="Extra attribute key=value (JSON values allowed).")]
    = [],  # noqa: B006 - Typer needs a literal default
    wait: WaitOption = False,
    as_json: JsonOption = False,
    runner: RunnerOption = "local",
) -> None:
    """Copy a file into storage and register it; the file_loader job loads it into PostGIS."""
    from locaria_batch.files import register_upload
    from locaria_batch.storage import open_storage

    extra = _parse_attrs(attr)
    if table:
        extra["table_name"] = table.removeprefix("locaria_uploads.")
    with _connect() as conn:
        file_id = register_upload(conn, open_storage(), path, attributes=extra)
    if not as_json:
        console.print(f"registered file [bold]{file_id}[/bold] ({path.name})")
    _report(file_id, wait=wait, as_json=as_json, runner=runner)


@files_app.command("list")
def files_list(
    status: Annotated[str | None, typer.Option(help="Only this status (DELETED shows deleted rows).")] = None,
    upload: Annotated[bool, typer.Option("--uploads", help="Only uploads.")] = False,
    download: Annotated[bool, typer.Option("--downloads", help="Only downloads.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """List file rows (DELETED rows are hidden unless asked for)."""
    from locaria_batch.files import get_files

    filter_: dict[str, Any] = {}
    if upload:
        filter_["upload"] = True
    if download:
        filter_["download"] = True
    with _connect() as conn:
        rows = get_files(conn, status=status, filter=filter_ or None)
    if as_json:
        print(json.dumps(rows, default=str))
    else:
        print_file_list(console, rows)


@files_app.command("show")
def files_show(file_id: Annotated[int, typer.Argument(help="File id.")], as_json: JsonOption = False) -> None:
    """Status, attributes, log and job attempts of one file."""
    from locaria_batch.files import FileNotFound

    try:
        _show_result(file_id, as_json)
    except FileNotFound as exc:
        fail(str(exc))


@files_app.command("retry")
def files_retry(file_id: Annotated[int, typer.Argument(help="File id.")], wait: WaitOption = False,
                as_json: JsonOption = False, runner: RunnerOption = "local") -> None:
    """Run the file's job again (it goes back to REGISTERED or DOWNLOAD_REQUESTED)."""
    from locaria_batch.files import retry_file

    with _connect() as conn:
        try:
            row = retry_file(conn, file_id)
        except ValueError as exc:
            fail(str(exc))
    if not as_json:
        console.print(f"file {file_id} is {row['status']} again")
    _report(file_id, wait=wait, as_json=as_json, runner=runner)


@files_app.command("cancel")
def files_cancel(file_id: Annotated[int, typer.Argument(help="File id.")]) -> None:
    """Cancel the file's queued or running job (a running process/container/task is stopped)."""
    from locaria_batch.files import FileNotFound, cancel_file

    with _connect() as conn:
        try:
            result = cancel_file(conn, file_id)
        except FileNotFound as exc:
            fail(str(exc))
    jobs = result["cancelled_jobs"]
    console.print(f"cancelled job(s) {', '.join(map(str, jobs))}" if jobs else f"file {file_id} has no active job")


@files_app.command("delete")
def files_delete(file_id: Annotated[int, typer.Argument(help="File id.")]) -> None:
    """Mark a file DELETED (a soft delete, as Locaria does)."""
    from locaria_batch.files import delete_file

    with _connect() as conn:
        result = delete_file(conn, file_id)
    if "error" in result:
        fail(f"file {file_id} not deleted: it does not exist or is already deleted")
    console.print(f"file {file_id} marked as deleted")


# -- download --------------------------------------------------------------------------------
@download_app.command("request")
def download_request(
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format, e.g. geojson, csv.")],
    table: Annotated[str | None, typer.Option(help="A loaded table (upload_file_1).")] = None,
    category: Annotated[list[str], typer.Option("--category", help="A category of search data (repeatable).")]
    = [],  # noqa: B006
    name: Annotated[str | None, typer.Option(help="Name shown to users.")] = None,
    attr: Annotated[list[str], typer.Option("--attr", help="Extra attribute key=value (JSON values allowed).")]
    = [],  # noqa: B006
    srid: Annotated[int | None, typer.Option(help="Output coordinate system (EPSG code); default 4326.")] = None,
    bbox: Annotated[str | None, typer.Option(help="Only rows within minx,miny,maxx,maxy (longitude/latitude).")]
    = None,
    where: Annotated[list[str], typer.Option("--where", help="Only rows whose column equals a value: key=value; "
                                             "repeat a key for any of several values.")] = [],  # noqa: B006
    created_after: Annotated[str | None, typer.Option(help="Only rows created at or after (ISO date/time).")] = None,
    created_before: Annotated[str | None, typer.Option(help="Only rows created before (ISO date/time).")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many rows.", min=1)] = None,
    wait: WaitOption = False,
    as_json: JsonOption = False,
    runner: RunnerOption = "local",
) -> None:
    """Ask for a download; the file_download job writes it under loaderDownloads/.

    Formats: csv, xlsx, geojson, geojsonseq, gpkg, shapefile, flatgeobuf, kml, geoparquet."""
    from locaria_batch.files import request_download

    if table and category:
        fail("give either --table or --category, not both")
    attributes: dict[str, Any] = {"format": fmt, **_parse_attrs(attr)}
    filters = _download_filters(bbox, where, created_after, created_before, limit)
    if filters:
        attributes["filters"] = filters
    if srid is not None:
        attributes["srid"] = srid
    if table:
        attributes["table"] = table
    else:
        attributes["categories"] = list(category)
    attributes["name"] = name or (table or "-".join(category) or "all-data")
    with _connect() as conn:
        file_id = request_download(conn, attributes)
    if not as_json:
        console.print(f"download requested: file [bold]{file_id}[/bold]")
    _report(file_id, wait=wait, as_json=as_json, runner=runner)


def _download_filters(bbox: str | None, where: list[str], created_after: str | None, created_before: str | None,
                      limit: int | None) -> dict[str, Any]:
    equals: dict[str, list[str]] = {}
    for pair in where:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--where takes column=value, got {pair!r}")
        equals.setdefault(key, []).append(value)
    filters = {"bbox": bbox, "created_after": created_after, "created_before": created_before, "limit": limit,
               "attributes": {k: v[0] if len(v) == 1 else v for k, v in equals.items()}}
    return {k: v for k, v in filters.items() if v}


# -- worker ----------------------------------------------------------------------------------
@app.command("worker")
def worker(
    once: Annotated[bool, typer.Option("--once", help="Drain the queue and exit.")] = False,
    concurrency: Annotated[int, typer.Option(help="Jobs this worker runs at once.", min=1)] = 4,
    runner: Annotated[str, typer.Option(help="local, docker or ecs.")] = "local",
    poll: Annotated[float, typer.Option(help="Seconds between passes when nothing is notified.")] = 2.0,
) -> None:
    """Dispatch jobs: LISTEN for new ones, launch, reconcile, retry and time them out."""
    from locaria_batch.dispatch.dispatcher import Dispatcher, make_runner

    _connect().close()
    try:
        dispatcher = Dispatcher(make_runner(runner), concurrency=concurrency)
    except Exception as exc:
        fail(f"cannot start the {runner} runner: {exc}")
    if once:
        dispatcher.drain()
        dispatcher.close()
        console.print("queue drained")
        return
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        console.print("stopping: no new jobs are claimed; running ones carry on and are adopted later")
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    console.print(f"worker {dispatcher.owner} ({runner} runner, concurrency {concurrency}) waiting for jobs")
    dispatcher.serve(stop, poll=poll)


# -- docker ----------------------------------------------------------------------------------
@docker_app.command("sync")
def docker_sync() -> None:
    """Load docker/dockers.json into the database (which statuses launch which job)."""
    from locaria_batch.deploy import dockers

    try:
        specs = dockers.load(settings().dockers_file)
    except dockers.DockerRegistryError as exc:
        fail(str(exc))
    with _connect() as conn:
        names = dockers.sync(conn, specs)
    console.print(f"synced {len(names)} docker(s): {', '.join(names)}")


# docker build/push/deploy/new, deploy render/apply and configure live in cli/deploy.py
from locaria_batch.cli import deploy as deploy_commands  # noqa: E402

deploy_commands.register(app, docker_app)


# -- demo ------------------------------------------------------------------------------------
@app.command("demo")
def demo(sample: Annotated[Path | None, typer.Option(help="File to load (default: the shipped sample).")] = None,
         fmt: Annotated[str, typer.Option("--format", help="Export format.")] = "csv") -> None:
    """Start the embedded database, load a sample file, export it again and print the result."""
    from psycopg import sql

    from locaria_batch.files import register_upload, request_download
    from locaria_batch.storage import open_storage

    source = sample or settings().project_dir / "samples" / "parks.geojson"
    if not settings().db_url:
        db_up()
    else:
        _migrate_and_sync()
    with _connect() as conn:
        file_id = register_upload(conn, open_storage(), source)
    console.print(f"[bold]1.[/bold] uploaded {source.name} as file {file_id}")
    loaded = _wait(file_id, False, "local")
    attrs = loaded["attributes"]
    if loaded["status"] not in {"FARGATE_PROCESSED", "IMPORTED"}:
        _show_result(file_id, False)
    console.print(f"[bold]2.[/bold] file {file_id} {loaded['status']}: {attrs.get('record_count')} rows in "
                  f"{attrs.get('imported_table_name')} ({attrs.get('processing_time')} s)")
    with _connect() as conn:
        download_id = request_download(conn, {"format": fmt, "table": attrs["imported_table_name"],
                                              "name": f"{source.stem}-export"})
    done = _wait(download_id, False, "local")
    d = done["attributes"]
    if done["status"] != "DOWNLOAD_COMPLETED":
        _show_result(download_id, False)
    console.print(f"[bold]3.[/bold] download {download_id} {done['status']}: {d.get('record_count')} rows, "
                  f"{d.get('size_bytes')} bytes -> {d.get('url')}")
    with _connect() as conn:
        rows = conn.execute(sql.SQL("SELECT count(*) AS n, ST_AsText(ST_Extent(wkb_geometry)) AS extent FROM {}")
                            .format(sql.Identifier(*attrs["imported_table_name"].split(".")))).fetchone()
    console.print(f"    in PostGIS: {rows['n']} rows, extent {rows['extent']}")
    url = Path(str(d.get("url")))
    if url.is_file():
        console.print("    first lines of the export:")
        with url.open() as exported:
            for _, line in zip(range(4), exported, strict=False):
                console.print(f"      {line.rstrip()[:150]}", markup=False, highlight=False)


aws_cli.register(files_app)  # files upload-url / complete, after the commands above in --help

if __name__ == "__main__":
    app()
