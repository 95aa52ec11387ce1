"""`files upload-url` and `files complete`: uploads through a presigned S3 PUT."""

from __future__ import annotations

import json
import shlex
from typing import Annotated, Any

import typer
from rich.console import Console

from locaria_batch.cli.output import fail

console = Console()


def upload_url(
    name: Annotated[str, typer.Argument(help="The file's name with its extension, e.g. parks.geojson.")],
    table: Annotated[str | None, typer.Option(help="Target table (upload_file_1 or locaria_uploads.upload_file_1).")]
    = None,
    attr: Annotated[list[str], typer.Option("--attr", help="Extra attribute key=value (JSON values allowed).")]
    = [],  # noqa: B006 - Typer needs a literal default
    expires: Annotated[int | None, typer.Option(help="Seconds the URL stays valid (default 3600).", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {id, key, url} as JSON.")] = False,
) -> None:
    """Create the file row as UPLOADING and print a presigned PUT URL for its data (S3 storage only)."""
    from locaria_batch.cli.main import _connect, _parse_attrs
    from locaria_batch.files.uploads import request_upload
    from locaria_batch.storage import StorageError, open_storage

    extra: dict[str, Any] = _parse_attrs(attr)
    if table:
        extra["table_name"] = table.removeprefix("locaria_uploads.")
    try:
        with _connect() as conn:
            ticket = request_upload(conn, open_storage(), name, attributes=extra, expires_in=expires)
    except (ValueError, StorageError) as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps({"id": ticket.file_id, "key": ticket.key, "url": ticket.url}))
        return
    console.print(f"file [bold]{ticket.file_id}[/bold] is UPLOADING; send its data with:")
    print(f"  curl --fail -T {shlex.quote(name)} {shlex.quote(ticket.url)}")
    console.print(f"then: locaria-batch files complete {ticket.file_id}", highlight=False)


def complete(
    file_id: Annotated[int, typer.Argument(help="File id given by `files upload-url`.")],
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the job is done.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the file row (id, status, attributes) as JSON.")]
    = False,
    runner: Annotated[str, typer.Option("--runner", help="Runner for jobs dispatched while waiting.")] = "local",
) -> None:
    """Register an uploaded file once its data is in storage (this queues the loader)."""
    from locaria_batch.cli.main import _connect, _report
    from locaria_batch.files import FileNotFound
    from locaria_batch.files.uploads import UploadNotReady, complete_upload
    from locaria_batch.storage import StorageError, open_storage

    try:
        with _connect() as conn:
            result = complete_upload(conn, open_storage(), file_id)
    except (FileNotFound, UploadNotReady, ValueError, StorageError) as exc:
        fail(str(exc))
    if not as_json:
        console.print(f"file {file_id} registered: the loader is queued" if result["completed"]
                      else f"file {file_id} is {result['status']}: not waiting for an upload, nothing to do")
    _report(file_id, wait=wait, as_json=as_json, runner=runner)


def register(files_app: typer.Typer) -> None:
    files_app.command("upload-url")(upload_url)
    files_app.command("complete")(complete)
