"""`locaria-batch demo`: what `make demo` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from locaria_batch.cli.common import consoles, database, say
from locaria_batch.cli.db import migrate_and_sync, start_embedded
from locaria_batch.cli.download import FORMAT_NAMES, parse_format
from locaria_batch.cli.report import show, wait
from locaria_batch.files import statuses
from locaria_batch.settings import settings


def demo(sample: Annotated[Path | None, typer.Option(metavar="PATH", exists=True, dir_okay=False, help=(
             "File to load (default: the shipped sample)."))] = None,
         fmt: Annotated[str, typer.Option("--format", parser=parse_format, metavar=f"[{FORMAT_NAMES}]",
                                          help="Export format.")] = "csv") -> None:
    """Start the embedded database, load a sample file, export it again and print the result."""
    from psycopg import sql

    from locaria_batch.files import register_upload, request_download
    from locaria_batch.storage import open_storage

    source = sample or settings().project_dir / "samples" / "parks.geojson"
    if settings().db_url:
        migrate_and_sync()
    else:
        url, applied = start_embedded()
        say(f"[green]database up[/green] {url}" + (f" (applied {', '.join(applied)})" if applied else ""))
    with database() as conn:
        file_id = register_upload(conn, open_storage(), source)
    consoles.out.print(f"1. uploaded {source.name} as file {file_id}", markup=False, highlight=False)
    loaded = wait(file_id, settings().runner)
    attrs = loaded["attributes"]
    if loaded["status"] not in statuses.DONE:
        show(file_id, False)
    table = attrs["imported_table_name"]
    say(f"[bold]2.[/bold] file {file_id} {loaded['status']}: {attrs.get('record_count')} rows in "
        f"{table} ({attrs.get('processing_time')} s)")
    with database() as conn:
        download_id = request_download(conn, {"format": fmt, "table": table, "name": f"{source.stem}-export"})
    done = wait(download_id, settings().runner)
    exported = done["attributes"]
    if done["status"] != statuses.DOWNLOAD_COMPLETED:
        show(download_id, False)
    consoles.out.print(f"3. download {download_id} {done['status']}: {exported.get('record_count')} rows, "
                       f"{exported.get('size_bytes')} bytes -> {exported.get('url')}", markup=False, highlight=False)
    with database() as conn:
        summary = conn.execute(sql.SQL("SELECT count(*) AS n, ST_AsText(ST_Extent(wkb_geometry)) AS extent FROM {}")
                               .format(sql.Identifier(*table.split(".")))).fetchone()
    say(f"    in PostGIS: {summary['n'] if summary else 0} rows, extent {summary['extent'] if summary else '-'}")
    written = Path(str(exported.get("url")))
    if written.is_file():
        say("    first lines of the export:")
        with written.open() as lines:
            for _, line in zip(range(4), lines, strict=False):
                consoles.out.print(f"      {line.rstrip()[:150]}", markup=False, highlight=False)
