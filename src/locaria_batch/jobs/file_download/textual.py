"""CSV, GeoJSON and GeoJSONSeq: PostgreSQL writes the text, COPY streams it into the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from psycopg import sql

from locaria_batch.job import JobError
from locaria_batch.jobs.file_download.copyout import RAW_ROWS, Progress, copy_out
from locaria_batch.jobs.file_download.request import DownloadRequest
from locaria_batch.jobs.file_download.selection import Selection
from locaria_batch.jobs.names import unique_name

PROGRESS_EVERY = 50_000
GEOJSON_GEOMETRY = "__locaria_geometry"
GEOJSON_DIGITS = 15  # full double precision: coordinates come back as they went in
TEXT_CASTS = {"boolean": "::text", "json": "::text"}
# A cell a spreadsheet would take for a formula starts with one of these (OWASP's CSV injection list);
# such text is written after an apostrophe, which spreadsheets show as text and do not evaluate
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _copy_to(out: BinaryIO, conn: psycopg.Connection[Any], query: sql.Composable, params: dict[str, Any],
             options: sql.Composable, progress: Progress, separator: bytes | None = None, header: int = 0) -> int:
    """Copy rows into `out`; with a separator, rows are joined by it instead of ending in newlines.
    `header` lines come first and are not counted as rows in the progress."""
    count = -header
    pending: list[bytes | memoryview] = []
    for message in copy_out(conn, query, params, options):
        if separator is not None:
            if count:
                pending.append(separator)
            pending.append(message[:-1])  # without its newline
        else:
            pending.append(message)
        count += 1
        if count % PROGRESS_EVERY == 0:
            out.write(b"".join(pending))
            pending.clear()
            progress(max(count, 0))
    out.write(b"".join(pending))
    progress(max(count, 0))
    return count


def neutralised(value: sql.Composable) -> sql.Composable:
    """Text that a spreadsheet would evaluate as a formula, with an apostrophe in front."""
    codes = sql.SQL(", ").join(sql.Literal(ord(c)) for c in FORMULA_STARTS)  # ascii(): no copy of the text
    return sql.SQL("CASE WHEN ascii({v}) IN ({s}) THEN {q} || {v} ELSE {v} END").format(
        v=value, s=codes, q=sql.Literal("'"))


def safe_header(name: str) -> str:
    return f"'{name}" if name.startswith(FORMULA_STARTS) else name


def write_csv(conn: psycopg.Connection[Any], selection: Selection, request: DownloadRequest, path: Path,
              progress: Progress) -> int:
    taken = {c.name.lower() for c in selection.columns}

    def added(name: str) -> sql.Identifier:
        """A column added to the selection's, under a name none of them has."""
        return sql.Identifier(unique_name(name, taken, fold_case=True))

    keep = request.csv_keep_formulas
    fields: list[sql.Composable] = []
    for c in selection.columns:
        value: sql.Composable = sql.SQL("{}{}").format(c.expression, sql.SQL(TEXT_CASTS.get(c.kind, "")))
        if not keep and c.kind in ("text", "json"):
            value = neutralised(value)
        fields.append(sql.SQL("{} AS {}").format(value, sql.Identifier(c.name if keep else safe_header(c.name))))
    if request.csv_geometry == "lonlat":
        selection.keep_dimensions("CSV with lon/lat columns", z=False, m=False)
    geometry = selection.geometry
    if geometry is not None and request.csv_geometry == "lonlat":
        if set(selection.geometry_types) - {"POINT"}:
            raise JobError("lon/lat columns need point geometries only; ask for csv_geometry wkt instead")
        x_name, y_name = ("lon", "lat") if selection.srid == 4326 else ("x", "y")
        fields.append(sql.SQL("ST_X({}) AS {}").format(geometry, added(x_name)))
        fields.append(sql.SQL("ST_Y({}) AS {}").format(geometry, added(y_name)))
    elif geometry is not None:
        fields.append(sql.SQL("ST_AsText({}) AS {}").format(geometry, added("wkt")))
    query, params = selection.query(sql.SQL(", ").join(fields))
    with path.open("wb", buffering=1 << 20) as out:
        return _copy_to(out, conn, query, params, sql.SQL("(FORMAT csv, HEADER true)"), progress, header=1)


def _features(selection: Selection) -> tuple[sql.Composable, dict[str, Any]]:
    """One GeoJSON Feature per row, built by PostGIS from the row's columns."""
    fields = [sql.SQL("{} AS {}").format(c.expression, sql.Identifier(c.name)) for c in selection.columns]
    geometry = selection.geometry if selection.geometry is not None else sql.SQL("NULL::geometry")
    fields.append(sql.SQL("{} AS {}").format(geometry, sql.Identifier(GEOJSON_GEOMETRY)))
    inner, params = selection.query(sql.SQL(", ").join(fields))
    # PostGIS 3.3 writes a missing geometry as {"type": null}; GeoJSON wants null
    query = sql.SQL(
        "SELECT CASE WHEN s.{g} IS NULL THEN replace(ST_AsGeoJSON(s.*, {name}, {digits}), "
        "'\"geometry\": {{\"type\": null}}', '\"geometry\": null') "
        "ELSE ST_AsGeoJSON(s.*, {name}, {digits}) END FROM ({inner}) s").format(
        g=sql.Identifier(GEOJSON_GEOMETRY), name=sql.Literal(GEOJSON_GEOMETRY), digits=sql.Literal(GEOJSON_DIGITS),
        inner=inner)
    return query, params


def write_geojson(conn: psycopg.Connection[Any], selection: Selection, request: DownloadRequest, path: Path,
                  progress: Progress) -> int:
    selection.keep_dimensions("GeoJSON", z=True, m=False)
    query, params = _features(selection)
    header: dict[str, Any] = {"type": "FeatureCollection", "name": request.name}
    if selection.srid != 4326:  # RFC 7946 has no crs member; GDAL and QGIS still honour the 2008 one
        header["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{selection.srid}"}}
    opening = json.dumps(header)[:-1] + ', "features": [\n'
    with path.open("wb", buffering=1 << 20) as out:
        out.write(opening.encode())
        count = _copy_to(out, conn, query, params, RAW_ROWS, progress, separator=b",\n")
        out.write(b"\n]}\n")
    return count


def write_geojsonseq(conn: psycopg.Connection[Any], selection: Selection, request: DownloadRequest, path: Path,
                     progress: Progress) -> int:
    if selection.srid != 4326:
        raise JobError("GeoJSONSeq is always WGS 84 longitude/latitude: leave srid at 4326 or choose GeoJSON")
    selection.keep_dimensions("GeoJSONSeq", z=True, m=False)
    query, params = _features(selection)
    with path.open("wb", buffering=1 << 20) as out:
        return _copy_to(out, conn, query, params, RAW_ROWS, progress)
