"""GeoPackage, FlatGeobuf, KML and zipped Shapefile through GDAL (pyogrio.write_arrow): one
writer per output layer, fed a stream of Arrow batches, so GDAL keeps its file open throughout."""

from __future__ import annotations

import csv
import re
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyogrio
from psycopg import sql
from pyogrio.raw import write_arrow

from locaria_batch.job import JobError
from locaria_batch.jobs.file_download.arrow import GEOMETRY, ArrowRows, Tally, arrow_names, arrow_rows, arrow_schema
from locaria_batch.jobs.file_download.copyout import Progress
from locaria_batch.jobs.file_download.request import DownloadRequest
from locaria_batch.jobs.file_download.selection import Column, Layer, Selection, shape_type
from locaria_batch.jobs.names import unique_name

OGR_NAMES = {"POINT": "Point", "LINESTRING": "LineString", "POLYGON": "Polygon", "MULTIPOINT": "MultiPoint",
             "MULTILINESTRING": "MultiLineString", "MULTIPOLYGON": "MultiPolygon",
             "GEOMETRYCOLLECTION": "GeometryCollection"}
# A shapefile holds one shape type; lines and polygons take their multi forms too
SHAPE_GROUPS = {"points": ("POINT",), "multipoints": ("MULTIPOINT",), "lines": ("LINESTRING", "MULTILINESTRING"),
                "polygons": ("POLYGON", "MULTIPOLYGON")}
FLATGEOBUF_INDEX_MAX_ROWS = 500_000
DBF_FIELD_NAME_LIMIT = 10  # characters
DBF_TEXT_BYTES = 254  # the longest text a dBASE field holds
# GDAL writes a dBASE number as N(24,15), giving up decimals for larger values: what is beyond (or NaN,
# infinite) comes out wrong, and what is below 1e-15 comes out as 0
DBF_NUMBER_MAX, DBF_NUMBER_MIN = 1e22, 1e-15
GPKG_FID = "fid"  # the integer key GDAL gives every GeoPackage table
FORCE_DIMENSIONS = {(True, True): "ST_Force4D", (True, False): "ST_Force3DZ", (False, True): "ST_Force3DM"}
# Written to a temporary file that is read once: durability buys nothing here
# OGR_GPKG_THREADED_RTREE=NO: GDAL's threaded R-tree build holds every feature's box in memory
# (312 MB at 1M points); inserting into the R-tree as rows arrive stays near 230 MB, no slower
pyogrio.set_gdal_config_options({"OGR_SQLITE_SYNCHRONOUS": "OFF", "OGR_SQLITE_JOURNAL": "OFF",
                                 "OGR_GPKG_THREADED_RTREE": "NO"})


def geometry_type(types: tuple[str, ...], z: bool = False, m: bool = False) -> str:
    """The layer type GDAL (pyogrio) is asked for: Point, Point Z, PointM, Measured 3D Point ..."""
    names = {OGR_NAMES.get(t, "Unknown") for t in types}
    if len(names) == 1:
        name = names.pop()
    elif names == {"Polygon", "MultiPolygon"}:
        name = "MultiPolygon"
    elif names == {"LineString", "MultiLineString"}:
        name = "MultiLineString"
    else:
        name = "Unknown"
    if name == "Unknown":
        return name  # a generic layer takes each feature's own dimensions
    if z and m:
        return f"Measured 3D {name}"
    if m:
        return "PointM" if name == "Point" else f"Measured {name}"
    return f"{name} Z" if z else name


def _write_layer(rows: ArrowRows, selection: Selection, layer: Layer | None, path: Path, driver: str,
                 layer_name: str, geometry_types: tuple[str, ...], progress: Progress, done: int,
                 names: list[str] | None = None, layer_options: dict[str, str] | None = None,
                 condition: Any = None, extra_params: dict[str, Any] | None = None,
                 with_geometry: bool = True, tallies: tuple[Tally, ...] = ()) -> int:
    """Stream one layer into GDAL; returns the rows written so far (done + this layer's)."""
    has_geometry = with_geometry and selection.geometry is not None
    schema = arrow_schema(selection.columns, names, with_geometry=has_geometry)
    counter = {"done": done}

    def track(n: int) -> None:
        counter["done"] = n
        progress(n)

    batches = rows.batches(selection, layer, schema, track, done, condition, extra_params, tallies)
    failures: list[BaseException] = []

    def guarded() -> Iterator[pa.RecordBatch]:
        """GDAL reports a failing stream as "Error while accessing batch": keep the real error."""
        try:
            yield from batches
        except Exception as exc:
            failures.append(exc)
            raise

    reader = pa.RecordBatchReader.from_batches(schema, guarded())
    try:
        write_arrow(reader, str(path), layer=layer_name, driver=driver,
                    geometry_name=GEOMETRY if has_geometry else None,
                    geometry_type=geometry_type(geometry_types, selection.has_z, selection.has_m) if has_geometry
                    else ("Unknown" if driver == "FlatGeobuf" else None),
                    crs=f"EPSG:{selection.srid}" if has_geometry else None, encoding="UTF-8" if driver ==
                    "ESRI Shapefile" else None, layer_options=layer_options)
    except RuntimeError:
        if failures:
            raise failures[0] from None
        raise
    finally:
        batches.close()  # ends the rows' query, so that a writer's error is the one reported
    return counter["done"]


def write_gpkg(conn: psycopg.Connection[Any], selection: Selection, request: DownloadRequest, path: Path,
               progress: Progress) -> int:
    """One layer per category (or the table)."""
    selection.keep_dimensions("GeoPackage", z=True, m=True)
    # GeoPackage tables and their columns are SQLite's, whose names ignore case
    names = arrow_names(selection, "GeoPackage", reserved=(GPKG_FID,), fold_case=True)
    layers = selection.output_layers(request.name)
    titles = selection.output_names("GeoPackage", [layer.name for layer in layers], fold_case=True, what="layer")
    done = 0
    with arrow_rows(conn, selection) as rows:
        for layer, title in zip(layers, titles, strict=True):
            done = _write_layer(rows, selection, layer, path, "GPKG", title, layer.geometry_types, progress, done,
                                names)
    return done


def write_flatgeobuf(conn: psycopg.Connection[Any], selection: Selection, request: DownloadRequest, path: Path,
                     progress: Progress) -> int:
    """GDAL builds a FlatGeobuf's packed R-tree in memory (~150 bytes a feature), so large
    exports go without one: the file stays valid and streamable, and memory stays bounded.  The
    index cannot hold a missing or empty geometry either: such files are written without it."""
    if geometry_type(selection.geometry_types) == "Unknown":  # GDAL writes a generic FlatGeobuf layer in 2D
        selection.keep_dimensions("FlatGeobuf with mixed geometry types", z=False, m=False)
    else:
        selection.keep_dimensions("FlatGeobuf", z=True, m=True)
    if selection.mixed_dims and (selection.has_z or selection.has_m):  # one set of dimensions per file
        selection.force = FORCE_DIMENSIONS[selection.has_z, selection.has_m]
        selection.notes.append("geometries without the Z or M values others have were given 0 for them: a "
                               "FlatGeobuf file holds one set of dimensions")
    selection.empty_as_null = True  # FlatGeobuf has no empty geometry: its extent and readers go wrong
    index = selection.geometry is not None and selection.total <= FLATGEOBUF_INDEX_MAX_ROWS
    if index and selection.null_geometries:
        index = False
        selection.notes.append("some rows have no geometry, which a FlatGeobuf spatial index cannot hold: the "
                               "file was written without a spatial index")
    try:
        return _flatgeobuf(conn, selection, request, path, progress, index)
    except Exception as exc:
        if not index or "NULL geometry not supported with spatial index" not in str(exc):
            raise
    path.unlink(missing_ok=True)  # empty geometries (GDAL finds them only while writing): again without index
    selection.notes.append("some geometries are empty, which a FlatGeobuf spatial index cannot hold: the file "
                           "was written without a spatial index")
    return _flatgeobuf(conn, selection, request, path, progress, index=False)


def _flatgeobuf(conn: psycopg.Connection[Any], selection: Selection, request: DownloadRequest, path: Path,
                progress: Progress, index: bool) -> int:
    tallies: tuple[Tally, ...] = ()
    if selection.stored_geometry is not None:
        empty = sql.SQL("ST_IsEmpty({})").format(selection.stored_geometry)
        tallies = (Tally("{count} empty geometries (such as POINT EMPTY) were written as no geometry (NULL): "
                         "FlatGeobuf has no empty geometry", empty),)
    with arrow_rows(conn, selection) as rows:
        return _write_layer(rows, selection, None, path, "FlatGeobuf", request.name, selection.geometry_types,
                            progress, 0, arrow_names(selection, "FlatGeobuf", fold_case=True),
                            layer_options={"SPATIAL_INDEX": "YES" if index else "NO"}, tallies=tallies)


def write_kml(conn: psycopg.Connection[Any], selection: Selection, request: DownloadRequest, path: Path,
              progress: Progress) -> int:
    if selection.srid != 4326:
        raise JobError("KML is always WGS 84 longitude/latitude: leave srid at 4326 or choose another format")
    selection.keep_dimensions("KML", z=True, m=False)
    selection.keep_shape_types(conn, "KML", curves=False, surfaces=False)
    # KML data are text; GDAL would write dates as 2024/05/01, so they go as ISO text instead
    columns = [replace(c, expression=sql.SQL("{}::text").format(c.expression), kind="text")
               if c.kind in ("date", "datetime", "timestamp") else c for c in selection.columns]
    with arrow_rows(conn, selection) as rows:
        return _write_layer(rows, replace(selection, columns=columns), None, path, "KML", request.name,
                            selection.geometry_types, progress, 0, arrow_names(selection, "KML"))


def shapefile_field_names(names: list[str]) -> list[str]:
    """dBASE field names: at most 10 ASCII characters, unique regardless of case."""
    result: list[str] = []
    taken: set[str] = {GEOMETRY}  # the Arrow geometry field's name, which GDAL needs to itself
    for name in names:
        ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        base = re.sub(r"[^A-Za-z0-9_]+", "_", ascii_name).strip("_") or "field"
        result.append(unique_name(base, taken, max_length=DBF_FIELD_NAME_LIMIT, fold_case=True))
    return result


def dbf_losses(column: Column) -> list[Tally]:
    """What a dBASE field cannot keep of a column's values, to be counted and reported."""
    if column.kind == "number":
        return [Tally(f"column {column.name!r}: {{count}} number(s) beyond what a dBASE field holds (magnitude "
                      f"{DBF_NUMBER_MAX:g} or more, NaN or infinite, or non-zero below {DBF_NUMBER_MIN:g}) were "
                      "written wrong or as 0 in the shapefile; GeoPackage or CSV keep them",
                      sql.SQL("(abs({v}::float8) >= {high} OR ({v} <> 0 AND abs({v}::float8) < {low}))").format(
                          v=column.expression, high=sql.Literal(DBF_NUMBER_MAX), low=sql.Literal(DBF_NUMBER_MIN)))]
    if column.kind in ("text", "json"):
        return [Tally(f"column {column.name!r}: {{count}} text(s) longer than {DBF_TEXT_BYTES} bytes were cut to "
                      f"{DBF_TEXT_BYTES} bytes, the most a dBASE field holds; GeoPackage or CSV keep them whole",
                      sql.SQL("octet_length({}::text) > {}").format(column.expression, sql.Literal(DBF_TEXT_BYTES)))]
    return []


def write_shapefile_zip(conn: psycopg.Connection[Any], selection: Selection, request: DownloadRequest, path: Path,
                        progress: Progress) -> int:
    """One shapefile per shape type, zipped with a CSV mapping dBASE field names to the originals."""
    selection.keep_dimensions("Shapefile", z=True, m=True)
    present = set(selection.geometry_types)
    unsupported = present - {t for group in SHAPE_GROUPS.values() for t in group}
    if unsupported:
        raise JobError(f"a shapefile cannot hold {sorted(unsupported)[0]} geometries; choose GeoPackage instead")
    names = shapefile_field_names([c.name for c in selection.columns])
    folder = path.parent / "shapefile"
    folder.mkdir()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", request.name).strip("_") or "download"
    done = 0
    groups: list[tuple[str, tuple[str, ...]]] = [(k, v) for k, v in SHAPE_GROUPS.items() if present & set(v)]
    if selection.geometry is None or selection.null_geometries or not groups:
        groups.append(("table", ()))  # rows without geometry: a .dbf of their own
    tallies = tuple(tally for column in selection.columns for tally in dbf_losses(column))
    with arrow_rows(conn, selection) as rows:
        for group, types in groups:
            if selection.geometry is None:
                condition, extra = None, None
            elif types:
                assert selection.stored_geometry is not None
                condition = sql.SQL("{} = ANY (%(shape_types)s)").format(shape_type(selection.stored_geometry))
                extra = {"shape_types": list(types)}
            else:
                condition, extra = sql.SQL("{} IS NULL").format(selection.geometry), None
            target = folder / f"{stem}_{group}.shp"
            done = _write_layer(rows, selection, None, target, "ESRI Shapefile", target.stem,
                                tuple(t for t in present if t in types), progress, done, names,
                                condition=condition, extra_params=extra, with_geometry=bool(types), tallies=tallies)
    with (folder / f"{stem}_fields.csv").open("w", newline="", encoding="utf-8") as mapping:
        writer = csv.writer(mapping)
        writer.writerow(["shapefile_field", "column"])
        writer.writerows(zip(names, [c.name for c in selection.columns], strict=True))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for member in sorted(folder.iterdir()):
            # coordinates are doubles that deflate cannot shrink: store them, compress the rest
            stored = member.suffix in (".shp", ".shx")
            archive.write(member, member.name, compress_type=zipfile.ZIP_STORED if stored else None)
    return done
