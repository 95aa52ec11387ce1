"""file_loader: a data file from storage into locaria_uploads.upload_file_{id}.

First cut: CSV with lon/lat columns and GeoJSON, read by GDAL (pyogrio) in Arrow batches and
streamed into PostGIS over COPY.  The result attributes keep the original's keys.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyogrio
from psycopg import sql

from locaria_batch.job import JobContext, JobError, JobResult
from locaria_batch.jobs.file_loader.pgcopy import (
    GEOMETRY_COLUMN,
    copy_batches,
    create_table,
    pg_type,
    wkb_to_hex,
)
from locaria_batch.storage import ObjectNotFound, incoming_key

SCHEMA = "locaria_uploads"
TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
CSV_OPTIONS = {
    "X_POSSIBLE_NAMES": "lon*,Lon*,LON*,lng,long*,Long*,x,X,east*,East*",
    "Y_POSSIBLE_NAMES": "lat*,Lat*,LAT*,y,Y,north*,North*",
    "KEEP_GEOM_COLUMNS": "YES",
    "AUTODETECT_TYPE": "YES",
    "HEADERS": "YES",
}
BATCH_SIZE = 65536


def source_key(file_id: int, attributes: dict[str, Any]) -> str:
    if attributes.get("id_as_filename") in (True, "true") or "path" not in attributes:
        return incoming_key(file_id, str(attributes.get("ext", "")))
    return str(attributes["path"])


def target_table(file_id: int, attributes: dict[str, Any]) -> str:
    name = str(attributes.get("table_name") or f"upload_file_{file_id}")
    name = name.removeprefix(f"{SCHEMA}.")
    if not TABLE_NAME.match(name):
        raise JobError(f"table_name {name!r} is not allowed: use lower-case letters, digits and underscores "
                       "(at most 63), starting with a letter or underscore")
    return name


def geometry_type(meta: dict[str, Any]) -> str:
    kind = str(meta.get("geometry_type") or "Unknown").replace(" ", "")
    kind = kind.removesuffix("Z").removesuffix("M").removesuffix("Z")
    return kind if kind in {"Point", "LineString", "Polygon", "MultiPoint", "MultiLineString",
                            "MultiPolygon"} else "Geometry"


def srid_of(meta: dict[str, Any], path: Path) -> int:
    crs = meta.get("crs")
    if crs is None:
        return 4326  # lon/lat CSV and GeoJSON without a crs member are WGS 84 by convention
    match = re.match(r"EPSG:(\d+)$", str(crs))
    if not match:
        raise JobError(f"{path.name}: coordinate system {crs!r} is not an EPSG code; reproject the file to "
                       "EPSG:4326 and upload it again")
    return int(match.group(1))


def run(ctx: JobContext) -> JobResult:
    started = time.monotonic()
    attributes = ctx.attributes
    key = source_key(ctx.file_id, attributes)
    table = target_table(ctx.file_id, attributes)
    name = str(attributes.get("name") or key)
    try:
        with ctx.storage.local_copy(key) as path:
            count, layer = load(ctx, path, table, name)
    except ObjectNotFound as exc:
        raise JobError(f"{name}: the uploaded file is missing from storage ({key}); upload it again") from exc
    qualified = f"{SCHEMA}.{table}"
    return JobResult(
        attributes={
            "imported_table_name": qualified,
            "record_count": count,
            "tables": [qualified],
            "processing_time": round(time.monotonic() - started, 2),
            "result": {"schema": SCHEMA, "layers": [layer.lower()], "filename": name, "message": "OGR SUCCESS"},
        },
        status="IMPORTED" if "auto_mapped" in attributes else None,
        log={"result": "Loading complete", "message": f"Loaded {count} rows into {qualified}"},
    )


def load(ctx: JobContext, path: Path, table: str, name: str) -> tuple[int, str]:
    """Load the file into a staging table and swap it in; all in the job's one transaction,
    so a reader sees the old table or the new one, never half of one."""
    options = dict(CSV_OPTIONS) if path.suffix.lower() in {".csv", ".txt", ".tsv"} else {}
    try:
        info = pyogrio.read_info(path, **options)
    except Exception as exc:  # GDAL's own message names the problem
        raise JobError(f"{name}: cannot be read as a data file ({exc})") from exc
    total = info.get("features")
    layer = str(info.get("layer_name") or Path(name).stem)
    staging = f"{table}__loading"
    conn = ctx.conn
    with pyogrio.raw.open_arrow(path, batch_size=BATCH_SIZE, use_pyarrow=True, **options) as (meta, reader):
        schema: pa.Schema = reader.schema
        geometry_name = meta.get("geometry_name") or "wkb_geometry"
        has_geometry = geometry_name in schema.names
        attribute_fields = [f for f in schema if f.name != geometry_name]
        columns = list(zip(unique_names([f.name for f in attribute_fields]),
                           [pg_type(f.type) for f in attribute_fields], strict=True))
        names = [c for c, _ in columns] + ([GEOMETRY_COLUMN] if has_geometry else [])
        srid = srid_of(meta, path) if has_geometry else 4326
        kind = geometry_type(meta) if has_geometry else None
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(staging)))
        create_table(conn, SCHEMA, staging, columns, kind, srid)

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in reader:
                arrays = [batch.column(f.name) for f in attribute_fields]
                if has_geometry:
                    arrays.append(wkb_to_hex(batch.column(geometry_name)))
                yield pa.RecordBatch.from_arrays(arrays, names=names)

        count = copy_batches(conn, SCHEMA, staging, names, batches(), on_batch=lambda n: ctx.progress(n, total))
    finish_table(conn, staging, table, kind, srid if has_geometry else None)
    conn.commit()
    ctx.progress(count, count)
    return count, layer


def unique_names(originals: list[str]) -> list[str]:
    seen: set[str] = {"ogc_fid", GEOMETRY_COLUMN}
    result = []
    for original in originals:
        base = candidate = safe_name(original)
        n = 1
        while candidate in seen:
            n += 1
            candidate = f"{base[: 60 - len(str(n))]}_{n}"
        seen.add(candidate)
        result.append(candidate)
    return result


def finish_table(conn: Any, staging: str, table: str, kind: str | None, srid: int | None) -> None:
    """Reproject, index, analyse and swap the finished table in."""
    staged = sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(staging))
    geometry = sql.Identifier(GEOMETRY_COLUMN)
    if kind is not None and srid is not None and srid != 4326:
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE geometry({}, 4326) USING ST_Transform({}, 4326)")
                     .format(staged, geometry, sql.SQL(kind), geometry))
    if kind is not None:
        conn.execute(sql.SQL("CREATE INDEX ON {} USING gist ({})").format(staged, geometry))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table)))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(staged, sql.Identifier(table)))
    conn.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table)))


def safe_name(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_]+", "_", name.strip().lower()).strip("_") or "column"
    if cleaned[0].isdigit():
        cleaned = f"_{cleaned}"
    return cleaned[:63]
