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
# JSON has no NaN or Infinity: such numbers become null, and the feature's text starts with this byte
# (never the start of JSON) so that the rows changed can be counted on the way, without a second query
NON_FINITE_MARK = 0x03  # not 0x01, which RAW_ROWS quotes with
NON_FINITE = sql.SQL("ARRAY['NaN', 'Infinity', '-Infinity']::float8[]")


def _copy_to(out: BinaryIO, conn: psycopg.Connection[Any], query: sql.Composable, params: dict[str, Any],
             options: sql.Composable, progress: Progress, separator: bytes | None = None, header: int = 0,
             marked: list[int] | None = None) -> int:
    """Copy rows into `out`; with a separator, rows are joined by it instead of ending in newlines.
    `header` lines come first and are not counted as rows in the progress.  With `marked`, rows starting
    with NON_FINITE_MARK lose it and are counted in marked[0]."""
    count = -header
    pending: list[bytes | memoryview] = []
    for message in copy_out(conn, query, params, options):
        if marked is not None and message[0] == NON_FINITE_MARK:
            marked[0] += 1
            message = message[1:]
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


def _features(selection: Selection) -> tuple[sql.Composable, dict[str, Any], bool]:
    """One GeoJSON Feature per row, built by PostGIS from the row's columns.  NaN and Infinity become null
    and the features where they did start with NON_FINITE_MARK; the bool says whether any column may."""
    fields = [sql.SQL("{} AS {}").format(c.expression, sql.Identifier(c.name)) for c in selection.columns]
    geometry = selection.geometry if selection.geometry is not None else sql.SQL("NULL::geometry")
    fields.append(sql.SQL("{} AS {}").format(geometry, sql.Identifier(GEOJSON_GEOMETRY)))
    inner, params = selection.query(sql.SQL(", ").join(fields))
    numbers = [sql.SQL("r.{}").format(sql.Identifier(c.name)) for c in selection.columns if c.kind == "number"]
    source: sql.Composable = sql.SQL("({}) s").format(inner)
    mark: sql.Composable = sql.Literal("")
    if numbers:  # the properties again, with the numbers made finite
        properties = [sql.SQL("{} AS {}").format(
            finite(sql.SQL("r.{}").format(sql.Identifier(c.name))) if c.kind == "number" else
            sql.SQL("r.{}").format(sql.Identifier(c.name)), sql.Identifier(c.name)) for c in selection.columns]
        properties.append(sql.SQL("r.{}").format(sql.Identifier(GEOJSON_GEOMETRY)))
        source = sql.SQL("({}) r CROSS JOIN LATERAL (SELECT {}) s").format(inner, sql.SQL(", ").join(properties))
        mark = sql.SQL("CASE WHEN {} THEN {} ELSE '' END").format(
            sql.SQL(" OR ").join(sql.SQL("COALESCE({} = ANY ({}), false)").format(n, NON_FINITE) for n in numbers),
            sql.Literal(chr(NON_FINITE_MARK)))
    # PostGIS 3.3 writes a missing geometry as {"type": null}; GeoJSON wants null
    query = sql.SQL(
        "SELECT {mark} || CASE WHEN s.{g} IS NULL THEN replace(ST_AsGeoJSON(s.*, {name}, {digits}), "
        "'\"geometry\": {{\"type\": null}}', '\"geometry\": null') "
        "ELSE ST_AsGeoJSON(s.*, {name}, {digits}) END FROM {source}").format(
        mark=mark, g=sql.Identifier(GEOJSON_GEOMETRY), name=sql.Literal(GEOJSON_GEOMETRY),
        digits=sql.Literal(GEOJSON_DIGITS), source=source)
    return query, params, bool(numbers)


def finite(value: sql.Composable) -> sql.Composable:
    """A number, or NULL for NaN, Infinity and -Infinity (of float8 or numeric)."""
    return sql.SQL("CASE WHEN {v} = ANY ({n}) THEN NULL ELSE {v} END").format(v=value, n=NON_FINITE)


def _write_features(conn: psycopg.Connection[Any], selection: Selection, format_name: str, out: BinaryIO,
                    progress: Progress, separator: bytes | None = None) -> int:
    """The features into `out`, after what the format lacks has been dealt with (and noted)."""
    selection.keep_dimensions(format_name, z=True, m=False)
    selection.keep_shape_types(conn, format_name, curves=False, surfaces=False)
    query, params, numbers = _features(selection)
    marked = [0] if numbers else None
    count = _copy_to(out, conn, query, params, RAW_ROWS, progress, separator=separator, marked=marked)
    if marked and marked[0]:
        selection.notes.append(f"{marked[0]:,} feature(s) had NaN or Infinity in a number property, written as "
                               "null: JSON has no such numbers")
    return count


def write_geojson(conn: psycopg.Connection[Any], selection: Selection, request: DownloadRequest, path: Path,
                  progress: Progress) -> int:
    header: dict[str, Any] = {"type": "FeatureCollection", "name": request.name}
    if selection.srid != 4326:  # RFC 7946 has no crs member; GDAL and QGIS still honour the 2008 one
        header["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{selection.srid}"}}
    opening = json.dumps(header)[:-1] + ', "features": [\n'
    with path.open("wb", buffering=1 << 20) as out:
        out.write(opening.encode())
        count = _write_features(conn, selection, "GeoJSON", out, progress, separator=b",\n")
        out.write(b"\n]}\n")
    return count


def write_geojsonseq(conn: psycopg.Connection[Any], selection: Selection, request: DownloadRequest, path: Path,
                     progress: Progress) -> int:
    if selection.srid != 4326:
        raise JobError("GeoJSONSeq is always WGS 84 longitude/latitude: leave srid at 4326 or choose GeoJSON")
    with path.open("wb", buffering=1 << 20) as out:
        return _write_features(conn, selection, "GeoJSONSeq", out, progress)
