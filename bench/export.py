"""Export benchmark: Locaria Batch's file_download exporter against ogr2ogr, side by side.

    python bench/export.py                 # 1,000,000 points, 100,000 polygons, 100,000 rows to XLSX
    python bench/export.py --size small    # a smoke size for CI (also LOCARIA_BENCH_SIZE=small)
    python bench/export.py --formats gpkg,csv

Both tools read the same PostGIS table and write the same format; each run is its own process,
so wall time includes start-up and peak RSS is that process's own (wait4).  The database is
LOCARIA_DB_URL, else a throw-away embedded cluster in a temporary folder.  At the small size the
ratios mostly measure start-up (importing Arrow and GDAL takes about a second), not exporting;
the targets are for the full size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import benchmark_database  # noqa: E402

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


@dataclass
class Run:
    seconds: float
    rss_mb: float
    ok: bool
    note: str = ""


def timed(command: list[str], env: dict[str, str] | None = None) -> Run:
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stdout, stderr = process.stdout.read(), process.stderr.read()  # type: ignore[union-attr]
    process.stdout.close()  # type: ignore[union-attr]
    process.stderr.close()  # type: ignore[union-attr]
    ok = os.waitstatus_to_exitcode(status) == 0
    note = "" if ok else (stderr or stdout).decode(errors="replace").strip().splitlines()[-1][:100]
    return Run(seconds, usage.ru_maxrss / 1024, ok, note)


def ogr_source(url: str) -> str:
    parts = conninfo_to_dict(url)
    names = {"host": "host", "port": "port", "dbname": "dbname", "user": "user", "password": "password"}
    return "PG:" + " ".join(f"{names[k]}={v}" for k, v in parts.items() if k in names)


def run_ogr2ogr(url: str, fmt: str, table: str, out: Path, limit: int | None) -> Run:
    driver, options, _ = FORMATS[fmt]
    source = ["-sql", f"SELECT * FROM locaria_uploads.{table} ORDER BY ogc_fid LIMIT {limit}"] if limit else \
        [f"locaria_uploads.{table}"]
    return timed(["ogr2ogr", "-f", driver, *options, str(out), ogr_source(url), *source])


def run_ours(url: str, fmt: str, table: str, out: Path, limit: int | None) -> Run:
    attributes: dict[str, Any] = {"format": fmt, "table": table, "name": table}
    if limit:
        attributes["filters"] = {"limit": limit}
    env = {**os.environ, "LOCARIA_DB_URL": url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    return timed([sys.executable, __file__, "--export-one", json.dumps(attributes), str(out)], env=env)


def export_one(attributes: dict[str, Any], folder: Path) -> None:
    """The child process: one export, as the job does it, without the job's bookkeeping."""
    from locaria_batch.db import connect
    from locaria_batch.jobs.file_download import export
    from locaria_batch.jobs.file_download.request import parse_request

    with connect() as conn:
        result = export(conn, parse_request(attributes, 0), folder, "export", lambda done, total: None)
    print(result.record_count)


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
    parser.add_argument("--export-one", nargs=2, metavar=("ATTRIBUTES", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_one:
        export_one(json.loads(args.export_one[0]), Path(args.export_one[1]))
        return
    console = Console(width=160)
    points, polygons, xlsx_rows = SIZES[args.size]
    work = Path(tempfile.mkdtemp(prefix="locaria-bench-out-"))
    try:
        with benchmark_database() as url:
            fill(url, points, polygons, console)
            table = Table("format", "data", "rows", "ours s", "ogr2ogr s", "ratio", "target", "ours MB", "ogr2ogr MB",
                          "verdict", title=f"export benchmark ({args.size})")
            failures = 0
            notes: dict[str, str] = {}
            for fmt in args.formats.split(","):
                cases = [("bench_points", points, None), ("bench_polygons", polygons, None)]
                if fmt == "xlsx":
                    cases = [("bench_points", xlsx_rows, xlsx_rows)]
                for source, rows, limit in cases:
                    runs = []
                    for name, runner in (("ours", run_ours), ("ogr2ogr", run_ogr2ogr)):
                        out = work / f"{name}-{fmt}-{source}"
                        out.mkdir()
                        target = out if name == "ours" else out / f"export.{OGR_EXTENSIONS.get(fmt, fmt)}"
                        runs.append(runner(url, fmt, source, target, limit))
                        shutil.rmtree(out, ignore_errors=True)
                    ours, ogr = runs
                    if not ogr.ok:
                        notes[fmt] = ogr.note
                    verdict, ratio = check(fmt, ours, ogr)
                    theirs = f"{ogr.seconds:.2f} s / {ogr.rss_mb:.0f} MB" if ogr.ok else "n/a"
                    console.print(f"{fmt} {source}: ours {ours.seconds:.2f} s / {ours.rss_mb:.0f} MB, ogr2ogr {theirs}",
                                  highlight=False)
                    failures += verdict != "ok"
                    table.add_row(fmt, source.removeprefix("bench_"), f"{rows:,}", f"{ours.seconds:.2f}",
                                  f"{ogr.seconds:.2f}" if ogr.ok else "n/a",
                                  f"{ratio:.2f}" if ratio is not None else "-", target_text(fmt),
                                  f"{ours.rss_mb:.0f}", f"{ogr.rss_mb:.0f}" if ogr.ok else "-", verdict)
            console.print(table)
            for fmt, note in notes.items():
                console.print(f"ogr2ogr cannot write {fmt}: {note}")
            if failures:
                console.print(f"[red]{failures} run(s) missed their target[/red]")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def target_text(fmt: str) -> str:
    ratio = FORMATS[fmt][2]
    if fmt == "xlsx":
        return f"≤{XLSX_SECONDS:.0f} s"
    return f"≤{ratio}x" if ratio is not None else "-"


def check(fmt: str, ours: Run, ogr: Run) -> tuple[str, float | None]:
    if not ours.ok:
        return f"[red]failed: {ours.note}[/red]", None
    ratio = ours.seconds / ogr.seconds if ogr.ok else None
    problems = []
    if ours.rss_mb > RSS_LIMIT_MB:
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
