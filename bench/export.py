"""Export benchmark: Locaria Batch's file_download exporter against ogr2ogr, side by side.

    python bench/export.py                 # 1,000,000 points, 100,000 polygons, 100,000 rows to XLSX
    python bench/export.py --size small    # a smoke size for CI (also LOCARIA_BENCH_SIZE=small)
    python bench/export.py --formats gpkg,csv
    python bench/export.py --formats gpkg --repeat 3   # the fastest of three runs of each command

Both tools read the same PostGIS table and write the same format, each run in its own process; peak
RSS is that process's own.  Our exporter's clock starts once it has imported its modules (Arrow, GDAL,
psycopg: about half a second a job pays once, whatever the file), which is shown apart as start-up;
ogr2ogr's clock includes its own start-up.  The database is LOCARIA_DB_URL, else a throw-away
embedded cluster in a temporary folder.  The targets are for the full size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402
from bench.common import Timing  # noqa: E402

if TYPE_CHECKING:
    from rich.console import Console

SIZES = {"small": (20_000, 2_000, 5_000), "medium": (200_000, 20_000, 50_000), "full": (1_000_000, 100_000, 100_000)}
# format: (ogr2ogr driver, its extra options, target ratio ours/ogr2ogr)
FORMATS: dict[str, tuple[str, list[str], float | None]] = {
    "geojson": ("GeoJSON", [], 0.5),
    "geojsonseq": ("GeoJSONSeq", [], 0.5),
    "gpkg": ("GPKG", [], 0.6),
    "csv": ("CSV", ["-lco", "GEOMETRY=AS_WKT"], 0.8),
    "flatgeobuf": ("FlatGeobuf", [], 1.2),
    "shapefile": ("ESRI Shapefile", [], 1.2),
    "kml": ("KML", [], None),
    "geoparquet": ("Parquet", [], None),
    "xlsx": ("XLSX", [], None),
}
OGR_EXTENSIONS = {"shapefile": "shp.zip"}  # ogr2ogr zips as it writes, like ours
XLSX_SECONDS = 20.0
RSS_LIMIT_MB = 300.0
FILL = {  # statements creating and filling each table
    "bench_points": ("""
        CREATE TABLE locaria_uploads.bench_points (
            ogc_fid serial PRIMARY KEY, name text, kind text, value double precision, count integer,
            flag boolean, created timestamptz, wkb_geometry geometry(Point, 4326))
    """, """
        INSERT INTO locaria_uploads.bench_points (name, kind, value, count, flag, created, wkb_geometry)
        SELECT 'point ' || g, (ARRAY['oak', 'ash', 'elm'])[1 + g %% 3], random() * 1000, g, g %% 2 = 0,
               timestamptz '2024-01-01' + g * interval '1 minute',
               ST_SetSRID(ST_MakePoint(-5 + random() * 7, 50 + random() * 5), 4326)
          FROM generate_series(1, %(n)s) g
    """),
    "bench_polygons": ("""
        CREATE TABLE locaria_uploads.bench_polygons (
            ogc_fid serial PRIMARY KEY, name text, kind text, value double precision,
            wkb_geometry geometry(Polygon, 4326))
    """, """
        INSERT INTO locaria_uploads.bench_polygons (name, kind, value, wkb_geometry)
        SELECT 'area ' || g, (ARRAY['park', 'wood', 'lake'])[1 + g %% 3], random() * 1000,
               ST_Buffer(ST_SetSRID(ST_MakePoint(-5 + random() * 7, 50 + random() * 5), 4326), 0.01, 4)
          FROM generate_series(1, %(n)s) g
    """),
}


def ogr_source(url: str) -> str:
    parts = conninfo_to_dict(url)
    names = {"host": "host", "port": "port", "dbname": "dbname", "user": "user", "password": "password"}
    return "PG:" + " ".join(f"{names[k]}={v}" for k, v in parts.items() if k in names)


def run_ogr2ogr(url: str, fmt: str, table: str, folder: Path, limit: int | None) -> Timing:
    driver, options, _ = FORMATS[fmt]
    source = ["-sql", f"SELECT * FROM locaria_uploads.{table} ORDER BY ogc_fid LIMIT {limit}"] if limit else \
        [f"locaria_uploads.{table}"]
    out = folder / f"export.{OGR_EXTENSIONS.get(fmt, fmt)}"
    return common.timed(["ogr2ogr", "-f", driver, *options, str(out), ogr_source(url), *source])


def run_ours(url: str, fmt: str, table: str, folder: Path, limit: int | None) -> Timing:
    attributes: dict[str, Any] = {"format": fmt, "table": table, "name": table}
    if limit:
        attributes["filters"] = {"limit": limit}
    env = {**os.environ, "LOCARIA_DB_URL": url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    return common.timed([sys.executable, __file__, "--export-one", json.dumps(attributes), str(folder)], env=env,
                 ready_handshake=True)


def export_one(attributes: dict[str, Any], folder: Path) -> None:
    """The child process: one export, as the job does it, without the job's bookkeeping."""
    from locaria_batch.db import connect
    from locaria_batch.jobs.file_download import export
    from locaria_batch.jobs.file_download.formats import find_format
    from locaria_batch.jobs.file_download.request import parse_request

    find_format(attributes["format"]).writer  # noqa: B018 - imports the writer's modules before the clock starts
    common.wait_for_go()
    with connect() as conn:
        export(conn, parse_request(attributes, 0), folder, "export", lambda done, total: None)
    common.work_done()


def fill(url: str, points: int, polygons: int, console: Console) -> None:
    from locaria_batch.db import connect
    from locaria_batch.db.migrate import migrate

    with connect(url, autocommit=True) as conn:
        migrate(conn)
        for table, n in (("bench_points", points), ("bench_polygons", polygons)):
            name = sql.Identifier("locaria_uploads", table)
            have = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS exists", [f"locaria_uploads.{table}"]).fetchone()
            count = sql.SQL("SELECT count(*) AS n FROM {}").format(name)
            if have["exists"] and conn.execute(count).fetchone()["n"] == n:
                continue
            console.print(f"filling {table} with {n:,} rows")
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
            for statement in FILL[table]:
                conn.execute(statement, {"n": n})
            conn.execute(sql.SQL("CREATE INDEX ON {} USING gist (wkb_geometry)").format(name))
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default=os.environ.get("LOCARIA_BENCH_SIZE", "full"))
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated formats to time")
    common.add_repeat_option(parser)
    parser.add_argument("--export-one", nargs=2, metavar=("ATTRIBUTES", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_one:
        export_one(json.loads(args.export_one[0]), Path(args.export_one[1]))
        return
    from rich.console import Console  # here, not above: the --export-one child is timed and needs neither
    from rich.table import Table

    console = Console(width=160)
    points, polygons, xlsx_rows = SIZES[args.size]
    work = Path(tempfile.mkdtemp(prefix="locaria-bench-out-"))
    try:
        with common.benchmark_database() as url:
            fill(url, points, polygons, console)
            table = Table("format", "data", "rows", "ours s", "ogr2ogr s", "ratio", "target", "ours MB", "ogr2ogr MB",
                          "start-up s", "verdict", title=f"export benchmark ({args.size})")
            misses = 0
            notes: dict[str, str] = {}
            for fmt in args.formats.split(","):
                cases = [("bench_points", points, None), ("bench_polygons", polygons, None)]
                if fmt == "xlsx":
                    cases = [("bench_points", xlsx_rows, xlsx_rows)]
                for source, rows, limit in cases:
                    ours = common.best_of(args.repeat, run_in, work / f"ours-{fmt}-{source}", run_ours, url, fmt,
                                          source, limit)
                    try:
                        ogr: Timing | None = common.best_of(args.repeat, run_in, work / f"ogr2ogr-{fmt}-{source}",
                                                            run_ogr2ogr, url, fmt, source, limit)
                    except common.CommandFailed as failure:
                        ogr, notes[fmt] = None, str(failure)
                    verdict, ratio = check(fmt, ours, ogr)
                    theirs = f"{ogr.seconds:.2f} s / {ogr.peak_mb:.0f} MB" if ogr else "n/a"
                    console.print(f"{fmt} {source}: ours {ours.seconds:.2f} s / {ours.peak_mb:.0f} MB, "
                                  f"ogr2ogr {theirs}", highlight=False)
                    misses += verdict != "ok"
                    table.add_row(fmt, source.removeprefix("bench_"), f"{rows:,}", f"{ours.seconds:.2f}",
                                  f"{ogr.seconds:.2f}" if ogr else "n/a",
                                  f"{ratio:.2f}" if ratio is not None else "-", target_text(fmt),
                                  f"{ours.peak_mb:.0f}", f"{ogr.peak_mb:.0f}" if ogr else "-",
                                  f"{ours.startup or 0:.2f}", verdict)
            console.print(table)
            console.print("start-up: our exporter's interpreter start-up and imports, paid once per job; "
                          "not in 'ours s'")
            for fmt, note in notes.items():
                console.print(f"ogr2ogr cannot write {fmt}: {note}")
            if misses:
                console.print(f"[red]{misses} run(s) missed their target[/red]")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def target_text(fmt: str) -> str:
    ratio = FORMATS[fmt][2]
    if fmt == "xlsx":
        return f"≤{XLSX_SECONDS:.0f} s"
    return f"≤{ratio}x" if ratio is not None else "-"


def run_in(folder: Path, runner: Callable[[str, str, str, Path, int | None], Timing], url: str, fmt: str, table: str,
           limit: int | None) -> Timing:
    """One timed run writing into a folder of its own, removed afterwards."""
    folder.mkdir()
    try:
        return runner(url, fmt, table, folder, limit)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check(fmt: str, ours: Timing, ogr: Timing | None) -> tuple[str, float | None]:
    ratio = ours.seconds / ogr.seconds if ogr else None
    problems = []
    if ours.peak_mb > RSS_LIMIT_MB:
        problems.append(f"RSS>{RSS_LIMIT_MB:.0f}MB")
    if fmt == "xlsx" and ours.seconds > XLSX_SECONDS:
        problems.append(f">{XLSX_SECONDS:.0f}s")
    target = FORMATS[fmt][2]
    if target is not None and ratio is not None and ratio > target:
        problems.append(f"ratio>{target}")
    return ("[red]" + ", ".join(problems) + "[/red]") if problems else "ok", ratio


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
