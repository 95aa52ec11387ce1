"""`locaria-batch download`: request downloads (exports) and prune old ones."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.progress import Progress

from locaria_batch.cli.common import (
    AttrOption,
    JsonOption,
    RunnerOption,
    UsageError,
    WaitOption,
    command,
    consoles,
    database,
    group,
    parse_attrs,
    parse_pairs,
    print_json,
    runner_name,
    say,
)
from locaria_batch.cli.report import after_queueing

download_app = group("Downloads (exports) of search data or loaded tables: request them, prune old ones.")

# The exporter's format names (jobs/file_download/formats.py; a test keeps the two equal).  Listed
# here so that `--help` and every command stay quick: the exporter's package loads GDAL and Arrow.
class DownloadFormat(StrEnum):
    csv = "csv"
    xlsx = "xlsx"
    geojson = "geojson"
    geojsonseq = "geojsonseq"
    gpkg = "gpkg"
    shapefile = "shapefile"
    flatgeobuf = "flatgeobuf"
    kml = "kml"
    geoparquet = "geoparquet"


def download_filters(bbox: str | None, where: list[str], created_after: str | None, created_before: str | None,
                     limit: int | None) -> dict[str, Any]:
    """The request's `filters` attribute (validated by the job, which names what is wrong)."""
    equals: dict[str, list[str]] = {}
    for key, value in parse_pairs(where, "--where", "column"):
        equals.setdefault(key, []).append(value)
    filters = {"bbox": bbox, "created_after": created_after, "created_before": created_before, "limit": limit,
               "attributes": {k: v[0] if len(v) == 1 else v for k, v in equals.items()}}
    return {k: v for k, v in filters.items() if v}


@command(download_app, "request")
def download_request(
    fmt: Annotated[DownloadFormat, typer.Option("--format", "-f", help="Output format.")],
    table: Annotated[str | None, typer.Option(metavar="TABLE", help="A loaded table (upload_file_1).")] = None,
    category: Annotated[list[str], typer.Option("--category", metavar="NAME",
                                                help="A category of search data (repeatable).")] = [],  # noqa: B006
    name: Annotated[str | None, typer.Option(metavar="TEXT", help="Name shown to users.")] = None,
    attr: AttrOption = [],  # noqa: B006
    srid: Annotated[int | None, typer.Option(metavar="EPSG", help="Output coordinate system (EPSG code); "
                                             "default 4326.")] = None,
    bbox: Annotated[str | None, typer.Option(metavar="MINX,MINY,MAXX,MAXY", help="Only rows within this box "
                                             "(longitude/latitude).")] = None,
    where: Annotated[list[str], typer.Option("--where", metavar="COLUMN=VALUE", help=(
        "Only rows whose column equals a value; repeat a column for any of several values."))] = [],  # noqa: B006
    created_after: Annotated[str | None, typer.Option(metavar="TIME", help="Only rows created at or after "
                                                      "(ISO date/time).")] = None,
    created_before: Annotated[str | None, typer.Option(metavar="TIME", help="Only rows created before "
                                                       "(ISO date/time).")] = None,
    limit: Annotated[int | None, typer.Option(metavar="ROWS", min=1, help="At most this many rows.")] = None,
    wait: WaitOption = False,
    as_json: JsonOption = False,
    runner: RunnerOption = None,
) -> None:
    """Ask for a download; the file_download job writes it under loaderDownloads/."""
    from locaria_batch.files import download_attributes, request_download

    if table and category:
        raise UsageError("give either --table or --category, not both")
    extra = parse_attrs(attr)
    filters = download_filters(bbox, where, created_after, created_before, limit)
    if filters:
        extra["filters"] = filters
    if srid is not None:
        extra["srid"] = srid
    attributes = download_attributes(fmt.value, table=table, categories=list(category), name=name, extra=extra)
    with database() as conn:
        file_id = request_download(conn, attributes)
    if not as_json:
        say(f"download requested: file [bold]{file_id}[/bold]")
    after_queueing(file_id, wait_for_it=wait, as_json=as_json, runner=runner_name(runner))


@command(download_app, "prune")
def download_prune(
    older_than: Annotated[str, typer.Option("--older-than", metavar="AGE", help=(
        "Age of downloads to delete: 7d, 12h, 30m, 2w."))] = "7d",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete the stored files of downloads older than --older-than and mark their rows expired
    (attributes.expired=true, url=null, a log entry); their status is kept."""
    from locaria_batch.jobs.file_download.prune import old_downloads, prune_downloads
    from locaria_batch.settings import parse_age
    from locaria_batch.storage import download_key, open_storage

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    with database() as conn:
        candidates = old_downloads(conn, age)
        if dry_run:
            keys = [{"id": r["id"], "key": download_key(r["file_name"])} for r in candidates]
            if as_json:
                print_json(keys)
                return
            for item in keys:
                say(f"would delete file {item['id']}: {item['key']}")
            say(f"{len(keys)} download(s) older than {older_than}")
            return
        with Progress(console=consoles.err, disable=as_json or not candidates) as bar:
            task = bar.add_task("pruning downloads", total=len(candidates))
            pruned = prune_downloads(conn, open_storage(), age, on_pruned=lambda _: bar.advance(task))
    if as_json:
        print_json([{"id": p.file_id, "key": p.key, "existed": p.existed} for p in pruned])
    else:
        say(f"pruned {len(pruned)} download(s) older than {older_than}")
