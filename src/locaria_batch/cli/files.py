"""`locaria-batch files`: upload, list, show, retry, cancel and delete file rows."""

from __future__ import annotations

import shlex
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from locaria_batch.cli.common import (
    AttrOption,
    FileIdArgument,
    JsonOption,
    RunnerOption,
    UsageError,
    WaitOption,
    checked,
    command,
    consoles,
    database,
    fail,
    group,
    parse_attrs,
    print_json,
    readable_file,
    refuse,
    runner_name,
    say,
)
from locaria_batch.cli.output import print_file_list
from locaria_batch.cli.report import after_queueing, show
from locaria_batch.errors import LocariaError, StorageError
from locaria_batch.files import statuses
from locaria_batch.settings import settings

files_app = group("File rows: upload, list, show, retry, cancel, delete.")

def check_table(name: str) -> None:
    """The loader's own check of a table name (imported here: the loader's modules load GDAL and Arrow)."""
    from locaria_batch.jobs.file_loader import target_table

    target_table(0, {"table_name": name})


def check_text_encoding(name: str) -> None:
    from locaria_batch.jobs.file_loader.readers import check_encoding

    check_encoding(name)


TableOption = Annotated[str | None, typer.Option(
    metavar="NAME", callback=checked(check_table),
    help="Target table (upload_file_1 or locaria_uploads.upload_file_1).")]


class LoadMode(StrEnum):
    """The loader's modes (jobs/file_loader/publish.py; a test keeps the two equal)."""

    fail = "fail"
    overwrite = "overwrite"
    append = "append"


CrsOption = Annotated[str | None, typer.Option(
    "--crs", metavar="EPSG", help="The file's coordinate system when it does not say (or says wrongly), "
    "e.g. EPSG:27700 (the source_crs attribute).")]
EncodingOption = Annotated[str | None, typer.Option(
    metavar="NAME", callback=checked(check_text_encoding), help="Text encoding of a CSV/TSV/TXT file, a shapefile "
    "without .cpg or a MapInfo table whose charset is Neutral, e.g. cp1251 (the encoding attribute; default: "
    "detected).")]


def known_statuses() -> list[str]:
    """Locaria's statuses and those the project's dockers use."""
    from locaria_batch.db.dockers import load

    found = list(statuses.ALL)
    try:
        specs = load(settings().dockers_file).values()
    except Exception:  # a missing or broken dockers.json: the built-in statuses still work
        specs = []  # type: ignore[assignment]
    for spec in specs:
        for status in (*spec.trigger_statuses, spec.running_status, spec.success_status, spec.error_status,
                       spec.cancelled_status):
            if status and status not in found:
                found.append(status)
    return found


def check_status(value: str | None) -> str | None:
    if value is None:
        return None
    known = known_statuses()
    if value.upper() not in known:
        raise typer.BadParameter(f"{value!r} is not a status. Choose from: {', '.join(known)}")
    return value.upper()


def upload_attributes(attr: list[str], table: str | None, **options: Any) -> dict[str, Any]:
    """--attr pairs, then the first-class options as the attributes of the same names."""
    extra = parse_attrs(attr)
    if table:
        extra["table_name"] = table.removeprefix("locaria_uploads.")
    for key, value in options.items():
        if value not in (None, [], ""):
            extra[key] = value.value if isinstance(value, StrEnum) else value
    return extra


@command(files_app, "add")
def files_add(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="The data file to upload.", callback=readable_file)],
    table: TableOption = None,
    mode: Annotated[LoadMode | None, typer.Option(help=(
        "When the table exists: fail, overwrite (replace it) or append (add the rows; the columns must match). "
        "Default: replace this file's own table, refuse one another file loaded."))] = None,
    layer: Annotated[list[str], typer.Option("--layer", metavar="NAME", help=(
        "Load only this layer (repeatable; the layers attribute)."))] = [],  # noqa: B006
    crs: CrsOption = None,
    target_crs: Annotated[str | None, typer.Option("--target-crs", metavar="EPSG", help=(
        "Coordinate system of the tables (the target_crs attribute; default EPSG:4326)."))] = None,
    encoding: EncodingOption = None,
    attr: AttrOption = [],  # noqa: B006 - Typer needs a literal default
    wait: WaitOption = False,
    as_json: JsonOption = False,
    runner: RunnerOption = None,
) -> None:
    """Copy a file into storage and register it; the file_loader job loads it into PostGIS."""
    from locaria_batch.files import register_upload
    from locaria_batch.storage import open_storage

    attributes = upload_attributes(attr, table, mode=mode, layers=list(layer), source_crs=crs,
                                   target_crs=target_crs, encoding=encoding)
    with database() as conn:
        check_crs(conn, "--crs", crs, "source_crs")
        check_crs(conn, "--target-crs", target_crs, "target_crs")
        storage = open_storage()
        try:
            # one transaction: when the copy fails, no row is left behind (register_upload would keep an
            # ERROR row for an upload that never was); the loader is still queued only once the object exists
            with conn.transaction():
                file_id = register_upload(conn, storage, path, attributes=attributes)
        except OSError as exc:
            raise StorageError(f"cannot copy {path} into storage ({settings().storage_url}): {exc.strerror or exc}"
                               + (f": {exc.filename}" if exc.filename else "")
                               + "; set LOCARIA_STORAGE to a folder you can write to") from None
    if not as_json:
        consoles.out.print(f"registered file {file_id} ({path.name})", markup=False, highlight=False)
    after_queueing(file_id, wait_for_it=wait, as_json=as_json, runner=runner_name(runner))


def check_crs(conn: Any, option: str, value: str | None, attribute: str) -> None:
    """The loader's own check of a coordinate system (an EPSG code PostGIS knows), made before the upload."""
    from locaria_batch.jobs.file_loader.crs import srid_from_attribute

    if value:
        try:
            srid_from_attribute(conn, value, attribute)
        except LocariaError as exc:
            refuse(option, str(exc))


@command(files_app, "inspect")
def files_inspect(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="The data file to look into.",
                                         callback=readable_file)],
    crs: CrsOption = None,
    encoding: EncodingOption = None,
    as_json: JsonOption = False,
) -> None:
    """What a file holds, without loading it: layers, feature counts, geometry types, coordinate
    systems, columns and their types, the encoding, and any problem a load would hit."""
    from locaria_batch.cli.output import print_inspection
    from locaria_batch.jobs.file_loader.crs import srid_from_attribute
    from locaria_batch.jobs.file_loader.inspect import inspect_file
    from locaria_batch.jobs.file_loader.readers import check_encoding

    with database() as conn:
        srid = srid_from_attribute(conn, crs, "source_crs") if crs else None
        report = inspect_file(conn, path, path.name, encoding=check_encoding(encoding) if encoding else None,
                              source_srid=srid)
    if as_json:
        print_json(report)
    else:
        print_inspection(consoles.out, report)
    if report["problems"] or any(layer["problems"] for layer in report["layers"]):
        raise typer.Exit(1)


@command(files_app, "list")
def files_list(
    status: Annotated[str | None, typer.Option(metavar="STATUS", callback=check_status, help=(
        "Only this status (DELETED shows deleted rows): " + ", ".join(statuses.ALL)
        + ", or one a docker in dockers.json uses."))] = None,
    upload: Annotated[bool, typer.Option("--uploads", help="Only uploads.")] = False,
    download: Annotated[bool, typer.Option("--downloads", help="Only downloads.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List file rows (DELETED rows are hidden unless asked for)."""
    from locaria_batch.files import get_files

    if upload and download:
        raise UsageError("give --uploads or --downloads, not both (without either, every file is listed)")
    kinds = {"upload": upload, "download": download}
    with database() as conn:
        rows = get_files(conn, status=status, filter={k: True for k, v in kinds.items() if v} or None)
    if as_json:
        print_json(rows)
    else:
        print_file_list(consoles.out, rows)


@command(files_app, "show")
def files_show(file_id: FileIdArgument, as_json: JsonOption = False) -> None:
    """Status, attributes, log and job attempts of one file."""
    show(file_id, as_json)


@command(files_app, "retry")
def files_retry(file_id: FileIdArgument, wait: WaitOption = False, as_json: JsonOption = False,
                runner: RunnerOption = None) -> None:
    """Run the file's job again (it goes back to REGISTERED or DOWNLOAD_REQUESTED)."""
    from locaria_batch.files import retry_file

    with database() as conn:
        row = retry_file(conn, file_id)
    if not as_json:
        say(f"file {file_id} is {row['status']} again")
    after_queueing(file_id, wait_for_it=wait, as_json=as_json, runner=runner_name(runner))


@command(files_app, "cancel")
def files_cancel(file_id: FileIdArgument, as_json: JsonOption = False) -> None:
    """Cancel the file's queued or running job (a running process/container/task is stopped)."""
    from locaria_batch.files import cancel_file

    with database() as conn:
        result = cancel_file(conn, file_id)
    jobs = result["cancelled_jobs"]
    if as_json:
        print_json(result)
    elif jobs:
        say(f"cancelled job(s) {', '.join(map(str, jobs))}")
    if not jobs:  # nothing was cancelled: a script must not take it for done
        if as_json:
            raise typer.Exit(1)
        fail(f"file {file_id} has no active job: nothing to cancel")


@command(files_app, "delete")
def files_delete(file_id: FileIdArgument, as_json: JsonOption = False) -> None:
    """Mark a file DELETED (a soft delete, as Locaria does)."""
    from locaria_batch.errors import NotFound
    from locaria_batch.files import delete_file

    with database() as conn:
        result = delete_file(conn, file_id)
    if "error" in result:
        raise NotFound(f"file {file_id} not deleted: it does not exist or is already deleted")
    if as_json:
        print_json({"id": file_id, "status": statuses.DELETED})
    else:
        say(f"file {file_id} marked as deleted")


@command(files_app, "upload-url")
def files_upload_url(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The file's name with its extension, e.g. "
                                        "parks.geojson.")],
    table: TableOption = None,
    attr: AttrOption = [],  # noqa: B006 - Typer needs a literal default
    expires: Annotated[int | None, typer.Option(metavar="SECONDS", min=1, help=(
        "Seconds the URL stays valid (default: $LOCARIA_UPLOAD_URL_EXPIRY, 3600)."))] = None,
    as_json: JsonOption = False,
) -> None:
    """Create the file row as UPLOADING and print a presigned PUT URL for its data (S3 storage only)."""
    from locaria_batch.files.uploads import request_upload
    from locaria_batch.storage import open_storage

    with database() as conn:
        ticket = request_upload(conn, open_storage(), name, attributes=upload_attributes(attr, table),
                                expires_in=expires)
    if as_json:
        print_json({"id": ticket.file_id, "key": ticket.key, "url": ticket.url})
        return
    say(f"file [bold]{ticket.file_id}[/bold] is UPLOADING; send its data with:")
    print(f"  curl --fail -T {shlex.quote(name)} {shlex.quote(ticket.url)}")
    say(f"then: locaria-batch files complete {ticket.file_id}")


@command(files_app, "complete")
def files_complete(
    file_id: Annotated[int, typer.Argument(metavar="ID", min=1, help="File id given by `files upload-url`.")],
    wait: WaitOption = False,
    as_json: JsonOption = False,
    runner: RunnerOption = None,
) -> None:
    """Register an uploaded file once its data is in storage (this queues the loader)."""
    from locaria_batch.files.uploads import complete_upload
    from locaria_batch.storage import open_storage

    with database() as conn:
        result = complete_upload(conn, open_storage(), file_id)
    if not as_json:
        say(f"file {file_id} registered: the loader is queued" if result["completed"]
            else f"file {file_id} is {result['status']}: not waiting for an upload, nothing to do")
    after_queueing(file_id, wait_for_it=wait, as_json=as_json, runner=runner_name(runner))


@command(files_app, "logs")
def files_logs(
    file_id: FileIdArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the attempt ends.")] = False,
    lines: Annotated[int, typer.Option(metavar="LINES", min=1, help="Lines to print (without --follow).")] = 200,
) -> None:
    """The log of the file's latest job attempt: a local file, the container's, or CloudWatch Logs."""
    import sys

    from locaria_batch.dispatch.logs import LogUnavailable, job_log
    from locaria_batch.dispatch.store import IN_FLIGHT, JobStore
    from locaria_batch.files import get_file

    with database() as conn:
        store = JobStore(conn)
        jobs = store.jobs_of_file(file_id)
        if not jobs:
            get_file(conn, file_id)  # says so when the file does not exist
            raise LogUnavailable(f"file {file_id} has had no job yet: it has no log")
        latest = jobs[-1]
        source = job_log(latest, settings().logs_dir)
        if not follow:
            sys.stdout.write(source.tail(lines))
            return

        def ended() -> bool:
            now = store.job(latest.id)
            return now is None or now.attempt != latest.attempt or now.state not in IN_FLIGHT

        for chunk in source.follow(ended, poll=0.5):
            sys.stdout.write(chunk)
            sys.stdout.flush()
