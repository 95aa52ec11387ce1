"""`locaria-batch downloads`: housekeeping of finished downloads."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress

from locaria_batch.cli.output import fail

downloads_app = typer.Typer(help="Finished downloads: delete expired files.", no_args_is_help=True)
console = Console()


@downloads_app.command("prune")
def prune(
    older_than: Annotated[str, typer.Option("--older-than", help="Age of downloads to delete: 7d, 12h, 30m, 2w.")]
    = "7d",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the pruned file ids and keys as JSON.")] = False,
) -> None:
    """Delete the stored files of downloads older than --older-than and mark their rows expired
    (attributes.expired=true, url=null, a log entry); their status is kept."""
    from locaria_batch.db import connect
    from locaria_batch.db.connect import DatabaseNotConfigured
    from locaria_batch.jobs.file_download.prune import old_downloads, parse_age, prune_downloads
    from locaria_batch.storage import download_key, open_storage

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        fail(str(exc))
    try:
        conn = connect(autocommit=True)
    except DatabaseNotConfigured as exc:
        fail(str(exc))
    with conn:
        candidates = old_downloads(conn, age)
        if dry_run:
            keys = [{"id": r["id"], "key": download_key(r["file_name"])} for r in candidates]
            if as_json:
                print(json.dumps(keys))
            else:
                for item in keys:
                    console.print(f"would delete file {item['id']}: {item['key']}")
                console.print(f"{len(keys)} download(s) older than {older_than}")
            return
        with Progress(console=console, disable=as_json or not candidates) as bar:
            task = bar.add_task("pruning downloads", total=len(candidates))
            pruned = prune_downloads(conn, open_storage(), age, on_pruned=lambda _: bar.advance(task))
    if as_json:
        print(json.dumps([{"id": p.file_id, "key": p.key, "existed": p.existed} for p in pruned]))
    else:
        console.print(f"pruned {len(pruned)} download(s) older than {older_than}")
