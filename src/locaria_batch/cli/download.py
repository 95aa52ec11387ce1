"""`locaria-batch download`: request downloads (exports) and prune old ones."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from locaria_batch.cli.common import (
    AttrOption,
    JsonOption,
    RunnerOption,
    UsageError,
    WaitOption,
    age_option,
    checked,
    command,
    consoles,
    database,
    group,
    parse_attrs,
    parse_pairs,
    print_json,
    refuse,
    runner_name,
    say,
)
from locaria_batch.cli.report import after_queueing, wait
from locaria_batch.jobs.file_download.formats import FORMATS, find_format
from locaria_batch.jobs.file_download.request import LIMIT_MAX, parse_filters, parse_request

download_app = group("Downloads (exports) of search data or loaded tables: request them, prune old ones.")

def parse_format(value: str) -> str:
    """An export format by its name or by one of the aliases the download job itself accepts (fgb, shp,
    parquet, excel, json, ...), as its name; anything else is refused at once, with the choices."""
    found = find_format(value)
    if found is None:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(f.name for f in FORMATS)} (or an alias "
                                 "such as fgb, shp, parquet or excel)")
    return found.name


# the formats module itself is light (GDAL and Arrow load with the writers, on use): --help stays quick
FORMAT_NAMES = "|".join(f.name for f in FORMATS)
FormatOption = Annotated[str, typer.Option("--format", "-f", parser=parse_format, metavar=f"[{FORMAT_NAMES}]",
                                           help="Output format (aliases such as fgb, shp, parquet and excel "
                                                "are accepted).")]


# each option checked by the download job's own parser, on its own so that the error names the option
def check_filter(key: str) -> Any:
    return checked(lambda value: parse_filters({key: value}))


def check_srid(value: int) -> None:
    parse_request({"srid": value}, 0)


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
    fmt: FormatOption,
    table: Annotated[str | None, typer.Option(metavar="TABLE", help="A loaded table (upload_file_1).")] = None,
    category: Annotated[list[str], typer.Option("--category", metavar="NAME",
                                                help="A category of search data (repeatable).")] = [],  # noqa: B006
    name: Annotated[str | None, typer.Option(metavar="TEXT", help="Name shown to users.")] = None,
    attr: AttrOption = [],  # noqa: B006
    srid: Annotated[int | None, typer.Option(metavar="EPSG", callback=checked(check_srid), help=(
        "Output coordinate system (EPSG code); default 4326."))] = None,
    bbox: Annotated[str | None, typer.Option(metavar="MINX,MINY,MAXX,MAXY", callback=check_filter("bbox"), help=(
        "Only rows within this box (longitude/latitude)."))] = None,
    where: Annotated[list[str], typer.Option("--where", metavar="COLUMN=VALUE", help=(
        "Only rows whose column equals a value; repeat a column for any of several values."))] = [],  # noqa: B006
    created_after: Annotated[str | None, typer.Option(metavar="TIME", callback=check_filter("created_after"), help=(
        "Only rows created at or after (ISO date/time)."))] = None,
    created_before: Annotated[str | None, typer.Option(metavar="TIME", callback=check_filter("created_before"),
                                                       help="Only rows created before (ISO date/time).")] = None,
    limit: Annotated[int | None, typer.Option(metavar="ROWS", min=1, max=LIMIT_MAX,
                                              help="At most this many rows.")] = None,
    keep_formulas: Annotated[bool, typer.Option("--keep-formulas", help=(
        "CSV: write text starting with = + - @ as it is (by default it gets an apostrophe in front, so that "
        "spreadsheets do not run it as a formula)."))] = False,
    out: Annotated[str | None, typer.Option("--out", metavar="PATH", help=(
        "Wait for the download, then copy the file here: a file name, or a folder (an existing one, or any "
        "path ending in /) where it keeps its stored name."))] = None,
    wait_for_it: WaitOption = False,
    as_json: JsonOption = False,
    runner: RunnerOption = None,
) -> None:
    """Ask for a download; the file_download job writes it under loaderDownloads/."""
    from locaria_batch.files import download_attributes, request_download

    if table and category:
        raise UsageError("give either --table or --category, not both")
    target = out_target(out) if out is not None else None
    extra = parse_attrs(attr)
    if keep_formulas:
        extra["csv_keep_formulas"] = True
    filters = download_filters(bbox, where, created_after, created_before, limit)
    if filters:
        extra["filters"] = filters
    if srid is not None:
        extra["srid"] = srid
    attributes = download_attributes(fmt, table=table, categories=list(category), name=name, extra=extra)
    with database() as conn:
        if srid is not None:
            check_known_srid(conn, srid)
        file_id = request_download(conn, attributes)
    if not as_json:
        say(f"download requested: file [bold]{file_id}[/bold]")
    if target is not None:
        row = wait(file_id, runner_name(runner), quiet=as_json)
        if row["status"] == "DOWNLOAD_COMPLETED":
            try:
                copied = copy_download(row, *target)
            except OSError as exc:
                raise UsageError(f"--out {out}: cannot write {exc.filename or target[0]}: "
                                 f"{exc.strerror or exc}; download file {file_id} is kept in storage, "
                                 "give --out a place you can write to") from None
            if not as_json:
                consoles.out.print(f"saved to {copied}", markup=False, highlight=False)
    after_queueing(file_id, wait_for_it=wait_for_it or out is not None, as_json=as_json, runner=runner_name(runner),
                   waited=out is not None)


def check_known_srid(conn: Any, srid: int) -> None:
    """The download job's check that PostGIS knows the output coordinate system (it needs the database)."""
    from locaria_batch.errors import LocariaError
    from locaria_batch.jobs.file_download.selection import check_srid as check_in_database

    try:
        check_in_database(conn, srid)
    except LocariaError as exc:
        refuse("--srid", str(exc))


def out_target(out: str) -> tuple[Path, bool]:
    """Where --out copies the file, and whether that is a folder; checked (existence and writability)
    before anything is requested."""
    path = Path(out).expanduser()
    folder = out.endswith(("/", os.sep)) or path.is_dir()
    for place in (path, *path.parents) if folder else path.parents:
        if place.exists() and not place.is_dir():
            raise UsageError(f"--out {out}: {place} is a file, not a folder; give a path in a folder")
    if folder and not path.is_dir():
        raise UsageError(f"--out {out}: the folder {path} does not exist; create it first, or give a file name")
    if not folder and not path.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {path.parent} does not exist")
    _check_writable(out, path if folder else path.parent, None if folder else path)
    return path, folder


def _check_writable(out: str, folder: Path, file: Path | None) -> None:
    """Try what the copy will do: create a file in the folder (or open the named file for writing, leaving
    it as it was); os.access alone misses read-only file systems and /proc or /sys, even for root."""
    import tempfile

    try:
        if file is not None and file.exists():
            with file.open("ab"):
                pass
        else:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".locaria-out-"):
                pass
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write {file or f'into {folder}'}: {exc.strerror or exc}; "
                         "give a file or folder you can write to") from None


def copy_download(row: dict[str, Any], out: Path, folder: bool) -> Path:
    """The finished download's file, from storage (a folder or S3) to `out`."""
    import shutil

    from locaria_batch.storage import download_key, open_storage

    name = str(row["attributes"]["fileName"])
    target = out / name if folder else out
    with open_storage().open(download_key(name)) as source, target.open("wb") as sink:
        shutil.copyfileobj(source, sink, 1 << 20)
    return target


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
    from locaria_batch.storage import download_key, open_storage

    age = age_option("--older-than", older_than)
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
