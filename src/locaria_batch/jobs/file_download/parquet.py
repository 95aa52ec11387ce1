"""GeoParquet 1.1 written by Arrow's own Parquet writer (one writer, one row group per batch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
from pyproj import CRS

from locaria_batch.jobs.file_download.arrow import GEOMETRY, arrow_names, arrow_rows, arrow_schema
from locaria_batch.jobs.file_download.copyout import Progress
from locaria_batch.jobs.file_download.request import DownloadRequest
from locaria_batch.jobs.file_download.selection import Selection

GEOPARQUET_TYPES = {"POINT": "Point", "LINESTRING": "LineString", "POLYGON": "Polygon", "MULTIPOINT": "MultiPoint",
                    "MULTILINESTRING": "MultiLineString", "MULTIPOLYGON": "MultiPolygon",
                    "GEOMETRYCOLLECTION": "GeometryCollection"}


def geo_metadata(selection: Selection) -> dict[str, Any]:
    """GeoParquet 1.1 names 3D types "Point Z"; a layer with some 2D and some 3D values lists both."""
    suffixes = [""] * any(not layer.has_z for layer in selection.layers) + [" Z"] * selection.has_z
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": sorted({GEOPARQUET_TYPES[t] + suffix for t in selection.geometry_types
                                  if t in GEOPARQUET_TYPES for suffix in suffixes}),
    }
    if selection.srid != 4326:  # absent means OGC:CRS84, PostGIS's 4326 axis order
        column["crs"] = CRS.from_epsg(selection.srid).to_json_dict()
    return {"version": "1.1.0", "primary_column": GEOMETRY, "columns": {GEOMETRY: column}}


def write_geoparquet(conn: psycopg.Connection[Any], selection: Selection, request: DownloadRequest, path: Path,
                     progress: Progress) -> int:
    selection.keep_dimensions("GeoParquet", z=True, m=False)  # GeoParquet 1.1 has no M
    # its geometry_types are the seven of Simple Features: curves become lines, TINs polygons
    selection.keep_shape_types(conn, "GeoParquet", curves=False, surfaces=False)
    has_geometry = selection.geometry is not None
    schema = arrow_schema(selection.columns, arrow_names(selection, "GeoParquet"), with_geometry=has_geometry)
    if has_geometry:
        schema = schema.with_metadata({b"geo": json.dumps(geo_metadata(selection)).encode()})
    done = 0
    with arrow_rows(conn, selection) as rows, pq.ParquetWriter(path, schema, compression="snappy") as writer:
        for batch in rows.batches(selection, None, schema, progress):
            writer.write_batch(batch)
            done += batch.num_rows
    return done
