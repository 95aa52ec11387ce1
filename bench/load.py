"""Loader benchmark: Locaria Batch's file_loader against ogr2ogr and against psql \\copy (the floor).

    python bench/load.py                      # full size: 1,000,000 points, 100,000 polygons and XLSX rows
    python bench/load.py --size small         # 10,000 points (CI); LOCARIA_BENCH_SIZE=small does the same
    python bench/load.py --points 200000 --only csv,gpkg
    python bench/load.py --only geojson,xlsx --repeat 3   # the fastest of three runs of each command

It generates its data (points with int, text, float and date attributes in GeoJSON, GeoJSONSeq, CSV,
GPKG, FlatGeobuf and zipped shapefile; 33-vertex polygons in GPKG and GeoJSON; an XLSX), then times
each loader in its own process, reporting wall time, peak RSS and the ratios side by side.  Our
loader's clock starts once it has imported its modules (shown apart as start-up); ogr2ogr's includes
its own start-up.  The database is LOCARIA_DB_URL, or a throw-away embedded cluster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    Timing,
    add_repeat_option,
    benchmark_database,
    best_of,
    loader_fence,
    timed,
    wait_for_go,
    work_done,
)
from locaria_batch.db import connect  # noqa: E402

SIZES = {"small": 10_000, "full": 1_000_000}
WKB = {b"ARROW:extension:name": b"geoarrow.wkb"}


@dataclass
class Dataset:
    name: str
    path: Path  # what our loader and ogr2ogr read
    floor: Path  # the same rows as a CSV with hex WKB, for psql \copy
    floor_columns: str  # its column definitions
    ogr_source: str
    ogr_options: list[str]
    rows: int


# -- data ---------------------------------------------------------------------------------------

def point_table(n: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    lon = rng.uniform(-5.5, 1.7, n)
    lat = rng.uniform(50.0, 55.8, n)
    wkb = np.empty(n, dtype=[("o", "u1"), ("t", "<u4"), ("x", "<f8"), ("y", "<f8")])
    wkb["o"], wkb["t"], wkb["x"], wkb["y"] = 1, 1, lon, lat
    geometry = pa.FixedSizeBinaryArray.from_buffers(pa.binary(21), n, [None, pa.py_buffer(wkb.tobytes())])
    dates = (np.datetime64("2020-01-01") + rng.integers(0, 1500, n)).astype("datetime64[D]")
    return pa.table({
        "id": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "name": pa.array([f"site {i}" for i in range(n)]),
        "value": pa.array(rng.normal(100, 15, n)),
        "surveyed": pa.array(dates),
        "lon": pa.array(lon), "lat": pa.array(lat),
        "geometry": pa.array(geometry.cast(pa.binary())),
    })


def polygon_table(n: int, seed: int = 2) -> pa.Table:
    """n polygons of 33 vertices (32 around a circle, the first repeated)."""
    rng = np.random.default_rng(seed)
    cx, cy = rng.uniform(-5.5, 1.7, n), rng.uniform(50.0, 55.8, n)
    angles = np.linspace(0, 2 * np.pi, 33)
    angles[-1] = 0.0
    xs = cx[:, None] + 0.01 * np.cos(angles)[None, :]
    ys = cy[:, None] + 0.01 * np.sin(angles)[None, :]
    header = np.frombuffer(np.array([1], "u1").tobytes() + np.array([3, 1, 33], "<u4").tobytes(), "u1")
    coords = np.stack([xs, ys], axis=2).astype("<f8").reshape(n, -1).view("u1")
    blob = np.concatenate([np.broadcast_to(header, (n, header.size)), coords], axis=1)
    size = blob.shape[1]
    geometry = pa.FixedSizeBinaryArray.from_buffers(pa.binary(size), n, [None, pa.py_buffer(blob.tobytes())])
    return pa.table({
        "id": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "name": pa.array([f"area {i}" for i in range(n)]),
        "area": pa.array(rng.uniform(1, 1000, n)),
        "geometry": pa.array(geometry.cast(pa.binary())),
    })


def with_wkb_field(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index("geometry")
    return table.set_column(index, pa.field("geometry", pa.binary(), metadata=WKB), table.column("geometry"))


def write_gdal(table: pa.Table, path: Path, driver: str, geometry_type: str, **kwargs: object) -> Path:
    from pyogrio import write_arrow  # here: --load-one measures the loader alone, without GDAL it may not need

    write_arrow(with_wkb_field(table.drop_columns([c for c in ("lon", "lat") if c in table.column_names])),
                path, driver=driver, geometry_name="geometry", geometry_type=geometry_type, crs="EPSG:4326",
                **kwargs)
    return path


def write_floor(table: pa.Table, path: Path) -> tuple[Path, str]:
    """The rows as psql \\copy wants them: CSV with the geometry as hex WKB."""
    columns = [c for c in table.column_names if c not in ("lon", "lat")]
    out = table.select(columns)
    out = out.set_column(out.column_names.index("geometry"), "geometry", _hex(out.column("geometry")))
    pacsv.write_csv(out, path, pacsv.WriteOptions(include_header=False))
    types = {"id": "integer", "name": "text", "value": "double precision", "surveyed": "date",
             "area": "double precision", "geometry": "geometry(Geometry, 4326)"}
    return path, ", ".join(f"{c} {types[c]}" for c in columns)


def _hex(column: pa.Array) -> pa.Array:
    from locaria_batch.jobs.file_loader.columns import wkb_to_hex

    return wkb_to_hex(column)


def write_csv(table: pa.Table, path: Path) -> Path:
    pacsv.write_csv(table, path)
    return path


def one_bad_value(table: pa.Table) -> pa.Table:
    """The same rows with one number in the middle replaced by text: the load must report it and go on."""
    import pyarrow.compute as pc

    middle = np.zeros(table.num_rows, dtype=bool)
    middle[table.num_rows // 2] = True
    text = pc.cast(table.column("value"), pa.string())
    return table.set_column(table.column_names.index("value"), "value",
                            pc.if_else(pa.array(middle), pa.scalar("not a number"), text))


def write_xlsx(table: pa.Table, path: Path) -> Path:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("data")
    names = ["id", "name", "value", "surveyed", "lon", "lat"]
    sheet.append(names)
    columns = [table.column(n).to_pylist() for n in names]
    for row in zip(*columns, strict=True):
        sheet.append(list(row))
    book.save(path)
    return path


def generate(folder: Path, points: int, only: set[str] | None) -> list[Dataset]:
    folder.mkdir(parents=True, exist_ok=True)
    table = point_table(points)
    polygons = polygon_table(max(points // 10, 1))
    xlsx_rows = table.slice(0, max(points // 10, 1))
    floor_points, point_columns = write_floor(table, folder / "points_floor.csv")
    floor_polygons, polygon_columns = write_floor(polygons, folder / "polygons_floor.csv")
    floor_xlsx, xlsx_columns = write_floor(xlsx_rows.drop_columns(["geometry"]).append_column(
        "geometry", xlsx_rows.column("geometry")), folder / "xlsx_floor.csv")
    csv_options = ["-oo", "X_POSSIBLE_NAMES=lon", "-oo", "Y_POSSIBLE_NAMES=lat", "-oo", "AUTODETECT_TYPE=YES",
                   "-s_srs", "EPSG:4326"]
    plans = {
        "csv": lambda: write_csv(table.drop_columns(["geometry"]), folder / "points.csv"),
        "csv_one_bad_row": lambda: write_csv(one_bad_value(table.drop_columns(["geometry"])),
                                             folder / "points_bad_row.csv"),
        "geojson": lambda: write_gdal(table, folder / "points.geojson", "GeoJSON", "Point"),
        "geojsonseq": lambda: write_gdal(table, folder / "points.geojsonl", "GeoJSONSeq", "Point"),
        "gpkg": lambda: write_gdal(table, folder / "points.gpkg", "GPKG", "Point", layer="points"),
        "fgb": lambda: write_gdal(table, folder / "points.fgb", "FlatGeobuf", "Point"),
        "shapefile": lambda: _zipped_shapefile(table, folder),
        "polygons_gpkg": lambda: write_gdal(polygons, folder / "polygons.gpkg", "GPKG", "Polygon", layer="polygons"),
        "polygons_geojson": lambda: write_gdal(polygons, folder / "polygons.geojson", "GeoJSON", "Polygon"),
        "xlsx": lambda: write_xlsx(xlsx_rows, folder / "points.xlsx"),
    }
    datasets = []
    for name, make in plans.items():
        if only and name not in only:
            continue
        started = time.monotonic()
        path = make()
        print(f"  generated {name:<17} {path.stat().st_size / 1e6:8.1f} MB in {time.monotonic() - started:5.1f} s",
              flush=True)
        floor, columns, rows = (floor_polygons, polygon_columns, polygons.num_rows) if name.startswith("polygons") \
            else (floor_xlsx, xlsx_columns, xlsx_rows.num_rows) if name == "xlsx" \
            else (floor_points, point_columns, table.num_rows)
        source = f"/vsizip/{path}" if name == "shapefile" else str(path)
        options = csv_options if name.startswith("csv") else ["-oo", "HEADERS=FORCE", "-oo", "FIELD_TYPES=AUTO"] \
            if name == "xlsx" else []
        datasets.append(Dataset(name, path, floor, columns, source, options, rows))
    return datasets


def _zipped_shapefile(table: pa.Table, folder: Path) -> Path:
    shp_dir = folder / "shp"
    shp_dir.mkdir(exist_ok=True)
    write_gdal(table, shp_dir / "points.shp", "ESRI Shapefile", "Point")
    path = folder / "points_shp.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in sorted(shp_dir.iterdir()):
            archive.write(member, member.name)
    return path


# -- runners ------------------------------------------------------------------------------------

def sql(url: str, statement: str) -> None:
    with connect(url, autocommit=True) as conn:
        conn.execute(statement)


def pg_connection_string(url: str) -> str:
    parts = urlparse(url)
    password = f" password={unquote(parts.password)}" if parts.password else ""
    return (f"PG:host={parts.hostname} port={parts.port} dbname={parts.path.lstrip('/')} "
            f"user={parts.username}{password}")


def run_ours(url: str, data: Dataset) -> Timing:
    return timed([sys.executable, __file__, "--load-one", str(data.path), data.name, "--db-url", url],
                 ready_handshake=True)


# ogr2ogr gives an XLSX's rows no geometry; this is what it takes to build the table our loader builds
XLSX_SAME_TABLE = ["-dialect", "SQLite", "-sql", "SELECT *, MakePoint(lon, lat, 4326) AS geom FROM data",
                   "-nlt", "POINT"]


def run_ogr2ogr(url: str, data: Dataset, tuned: bool, extra: list[str] | None = None) -> Timing:
    table = f"bench_ogr_{data.name}"
    sql(url, f"DROP TABLE IF EXISTS locaria_uploads.{table}")
    argv = ["ogr2ogr", "-f", "PostgreSQL", pg_connection_string(url), data.ogr_source, *data.ogr_options,
            "--config", "PG_USE_COPY", "YES", "-nln", f"locaria_uploads.{table}", "-lco", "OVERWRITE=YES",
            "-lco", "GEOMETRY_NAME=wkb_geometry", "-lco", "FID=ogc_fid", "-t_srs", "EPSG:4326", *(extra or [])]
    if tuned:
        argv += ["-lco", "SPATIAL_INDEX=NONE"]
    timing = timed(argv)
    if tuned and data.name != "xlsx":
        started = time.monotonic()
        sql(url, f"CREATE INDEX ON locaria_uploads.{table} USING gist (wkb_geometry); "
                 f"ANALYZE locaria_uploads.{table}")
        timing.seconds += time.monotonic() - started
    sql(url, f"DROP TABLE IF EXISTS locaria_uploads.{table}")
    return timing


def run_copy(url: str, data: Dataset) -> Timing:
    table = f"bench_copy_{data.name}"
    sql(url, f"DROP TABLE IF EXISTS locaria_uploads.{table}; "
             f"CREATE TABLE locaria_uploads.{table} ({data.floor_columns})")
    timing = timed(["psql", url, "-q", "-c", f"\\copy locaria_uploads.{table} FROM '{data.floor}' (FORMAT csv)"])
    sql(url, f"DROP TABLE IF EXISTS locaria_uploads.{table}")
    return timing


def load_one(path: Path, name: str, url: str) -> None:
    """The loader as a job runs it (one transaction, committed), in this process so its RSS is its own."""
    from locaria_batch.jobs.file_loader.loader import LoadOptions, load_file

    with connect(url, autocommit=True) as conn:
        fence = loader_fence(conn, path.name)
    wait_for_go()
    with connect(url) as conn:
        load_file(conn, path, path.name, LoadOptions(base_table=f"bench_ours_{name}"), fence)
        conn.commit()
    work_done()
    with connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS locaria_uploads.bench_ours_{name}")


# -- main ---------------------------------------------------------------------------------------

TARGET_OGR, TARGET_FLOOR, TARGET_RSS_MB = 0.5, 3.0, 300


def missed_targets(name: str, ours: Timing, default: Timing, floor: Timing) -> list[str]:
    """What of one dataset's figures misses its target, as text."""
    missed = []
    if ours.seconds > TARGET_OGR * default.seconds:
        missed.append(f"{name} {ours.seconds / default.seconds:.2f}x ogr2ogr")
    if ours.seconds > TARGET_FLOOR * floor.seconds:
        missed.append(f"{name} {ours.seconds / floor.seconds:.2f}x the floor")
    if ours.peak_mb > TARGET_RSS_MB:
        missed.append(f"{name} {ours.peak_mb:.0f} MB")
    return missed


def ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}x" if b else "   - "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default=os.environ.get("LOCARIA_BENCH_SIZE", "full"),
                        help="small: 10,000 points (CI); full: 1,000,000 points")
    parser.add_argument("--points", type=int, help="number of points (overrides --size); polygons and XLSX rows "
                        "are a tenth of it")
    parser.add_argument("--only", help="comma-separated datasets: csv,csv_one_bad_row,geojson,geojsonseq,gpkg,fgb,"
                        "shapefile,polygons_gpkg,polygons_geojson,xlsx")
    parser.add_argument("--data-dir", type=Path, help="keep the generated files here (default: a temp folder)")
    parser.add_argument("--db-url", default=os.environ.get("LOCARIA_DB_URL"), help="database (default: a "
                        "throw-away embedded cluster)")
    add_repeat_option(parser)
    parser.add_argument("--load-one", nargs=2, metavar=("PATH", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_one:
        load_one(Path(args.load_one[0]), args.load_one[1], args.db_url)
        return
    points = args.points or SIZES[args.size]
    only = set(args.only.split(",")) if args.only else None
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="locaria-bench-data-"))
    print(f"Generating data ({points:,} points) in {data_dir}", flush=True)
    try:
        datasets = generate(data_dir, points, only)
        if args.db_url:
            os.environ["LOCARIA_DB_URL"] = args.db_url
        with benchmark_database() as url:
            print(f"\n{'dataset':<17} {'rows':>9} | {'ours s':>7} {'ogr2ogr':>8} {'tuned':>7} {'psql':>7} | "
                  f"{'/ogr':>6} {'/tuned':>6} {'/copy':>6} | {'RSS MB':>7} {'ogr MB':>7} | {'start-up':>8}",
                  flush=True)
            missed: list[str] = []
            ours_seconds: dict[str, float] = {}
            for data in datasets:
                ours = best_of(args.repeat, run_ours, url, data)
                ours_seconds[data.name] = ours.seconds
                default = best_of(args.repeat, run_ogr2ogr, url, data, tuned=False)
                tuned = best_of(args.repeat, run_ogr2ogr, url, data, tuned=True)
                floor = best_of(args.repeat, run_copy, url, data)
                missed += missed_targets(data.name, ours, default, floor)
                print(f"{data.name:<17} {data.rows:>9,} | {ours.seconds:7.2f} {default.seconds:8.2f} "
                      f"{tuned.seconds:7.2f} {floor.seconds:7.2f} | {ratio(ours.seconds, default.seconds)} "
                      f"{ratio(ours.seconds, tuned.seconds)} {ratio(ours.seconds, floor.seconds)} | "
                      f"{ours.peak_mb:7.0f} {default.peak_mb:7.0f} | {ours.startup or 0:8.2f}", flush=True)
            if "xlsx" in ours_seconds:
                xlsx = next(d for d in datasets if d.name == "xlsx")
                same = best_of(args.repeat, run_ogr2ogr, url, xlsx, tuned=False, extra=XLSX_SAME_TABLE)
                print(f"\nxlsx: ogr2ogr building the same table (points from lon/lat via the SQLite dialect, GIST "
                      f"index) {same.seconds:.2f} s; ours {ours_seconds['xlsx']:.2f} s = "
                      f"{ratio(ours_seconds['xlsx'], same.seconds).strip()}")
            if {"csv", "csv_one_bad_row"} <= ours_seconds.keys():
                print(f"\none bad row in {points:,}: {ours_seconds['csv_one_bad_row']:.2f} s against "
                      f"{ours_seconds['csv']:.2f} s clean, "
                      f"{100 * ours_seconds['csv'] / ours_seconds['csv_one_bad_row']:.0f} % of clean speed "
                      "(target >= 80 %)")
            print("\nstart-up: our loader's interpreter start-up and imports, which a job pays once per attempt; "
                  "not in 'ours s'")
            print(f"\ntargets: at most {TARGET_OGR}x ogr2ogr's time and {TARGET_FLOOR}x the psql \\copy floor's, peak "
                  f"RSS at most {TARGET_RSS_MB} MB; " + ("missed: " + "; ".join(missed) if missed else "all met"))
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
