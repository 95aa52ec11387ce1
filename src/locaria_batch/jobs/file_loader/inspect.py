"""What a file holds, as `ogrinfo -so` shows it, without loading it: its layers, their feature counts,
geometry types, coordinate systems (or the one that would be assumed), the columns with the types
they would get, the text encoding, and every problem a load would hit.  It reads the file through
the loader's own readers and planner, so what it says is what a load would do; the database is only
read (spatial_ref_sys)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyogrio

from locaria_batch.job import JobError
from locaria_batch.jobs.file_loader import columns as col
from locaria_batch.jobs.file_loader.loader import layer_label
from locaria_batch.jobs.file_loader.plan import plan_table
from locaria_batch.jobs.file_loader.readers import ReadOptions, display_name, layer_names, open_layer
from locaria_batch.jobs.file_loader.sources import DataFile, find_data_files
from locaria_batch.settings import LoaderLimits, settings


@dataclass
class LayerReport:
    layer: str
    label: str
    features: int | None = None
    geometry_type: str | None = None
    crs: str | None = None
    crs_assumed: bool = False
    extent: list[float] | None = None
    columns: list[dict[str, str]] = field(default_factory=list)
    encoding: str | None = None
    encoding_guessed: bool = False
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def inspect_file(conn: psycopg.Connection[Any], path: Path, name: str, *, encoding: str | None = None,
                 source_srid: int | None = None, limits: LoaderLimits | None = None) -> dict[str, Any]:
    """{"file", "layers": [...], "problems": [...]}: a problem of the whole file (a zip bomb, an unknown
    format) leaves no layers; a layer's problem is listed with the layer."""
    limits = limits or settings().loader_limits
    report: dict[str, Any] = {"file": name, "size_bytes": path.stat().st_size, "layers": [], "problems": []}
    with tempfile.TemporaryDirectory(prefix="locaria-inspect-") as workdir:
        try:
            files = find_data_files(path, name, Path(workdir), limits)
            sources = [(data, layer) for data in files for layer in layer_names(data)]
        except JobError as exc:
            report["problems"].append(str(exc))
            return report
        if len(sources) > limits.max_layers:
            report["problems"].append(f"{name} holds {len(sources)} layers, over the limit of {limits.max_layers}; "
                                      "choose some with --layer")
        read = ReadOptions(encoding=encoding, max_line_bytes=limits.max_line_bytes,
                           block_bytes=limits.max_line_bytes)
        for data, layer in sources:
            report["layers"].append(vars(_inspect_layer(conn, data, layer, read, source_srid, limits,
                                                        among_others=len(sources) > 1)))
        if len(sources) > 1 and not any(item["features"] for item in report["layers"]):
            report["problems"].append(f"{name}: every layer is empty; nothing would be loaded")
    return report


def _inspect_layer(conn: psycopg.Connection[Any], data: DataFile, layer: str, read: ReadOptions,
                   source_srid: int | None, limits: LoaderLimits, among_others: bool) -> LayerReport:
    item = LayerReport(display_name(data, layer), layer_label(data, layer))
    try:
        with conn.transaction(), open_layer(data, layer, read, item.label) as raw:
            item.encoding, item.encoding_guessed = raw.encoding, raw.encoding_guessed
            if len(raw.fields) > limits.max_columns:
                item.problems.append(f"{item.label} has {len(raw.fields):,} columns, over the limit of "
                                     f"{limits.max_columns:,}")
            first = None
            count = 0
            box: list[float] | None = None
            plan = None
            for batch in raw.batches:
                if first is None and batch.num_rows:
                    first = batch
                    plan = plan_table(conn, raw, first, source_srid)
                if plan is not None and plan.geometry is not None and plan.geometry.source == "xy" and batch.num_rows:
                    names = [f.name for f in raw.fields]
                    xy = plan.geometry.xy
                    assert xy is not None
                    plan.geometry.extend(col.coordinate_array(batch.column(names.index(xy.x)), raw.decimal_comma),
                                         col.coordinate_array(batch.column(names.index(xy.y)), raw.decimal_comma))
                count += batch.num_rows
            if plan is None:
                plan = plan_table(conn, raw, None, source_srid)
            item.features = count
            item.columns = plan.described()
            geometry = plan.geometry
            if geometry is not None:
                item.geometry_type = geometry.kind + col.DIMENSION_SUFFIX[geometry.dimension]
                if geometry.curves:
                    item.notes.append(f"curved geometries ({', '.join(geometry.curves)}) would be converted to "
                                      "straight segments")
                item.crs, item.crs_assumed = geometry.crs_name, geometry.crs_assumed
                if geometry.definition is not None:
                    item.notes.append("its coordinate system has no EPSG code: the rows would be transformed from "
                                      "the file's own definition")
                box = geometry.points_bbox or _gdal_extent(data, layer)
                item.extent = [round(v, 9) for v in box] if box else None
                out_of_range = bool(geometry.srid == 4326 and box and not _lon_lat(box))
                refused = out_of_range and geometry.source != "xy"  # coordinate columns lose only those rows
                if geometry.crs_assumed and not refused:
                    item.notes.append(f"the file does not say which coordinate system it uses: EPSG:{geometry.srid} "
                                      "would be assumed from its coordinates (give --crs if that is wrong)")
                if refused and box:
                    extent = ", ".join(f"{v:.6g}" for v in box)
                    item.problems.append(f"{item.label}: the extent ({extent}) is not longitude/latitude; give "
                                         "its coordinate system with --crs (for example EPSG:27700)")
                    if geometry.crs_assumed:  # nothing would be assumed: the load asks instead
                        item.crs, item.crs_assumed = None, False
                elif out_of_range:
                    item.notes.append("some coordinates are out of range for longitude/latitude: those rows "
                                      "would be loaded with an empty geometry, and named in the warnings")
            skipped = raw.skipped_warning()
            if count == 0 and among_others:  # as the load does: an empty layer beside others is left out
                item.notes.append(f"{item.label} has no features; it would be left out"
                                  + (f" ({skipped})" if skipped else ""))
            elif count == 0 and skipped:
                item.problems.append(f"{item.label} has no rows that could be loaded: {skipped}")
            elif count == 0:
                item.problems.append(f"{item.label} has no rows or features; nothing would be loaded")
            elif skipped:
                item.notes.append(skipped)
            if item.encoding_guessed:
                item.notes.append(f"the text encoding was guessed as {item.encoding} (give --encoding if wrong)")
    except JobError as exc:
        item.problems.append(str(exc))
    return item


def _gdal_extent(data: DataFile, layer: str) -> list[float] | None:
    if data.kind != "gdal":
        return None
    try:
        info = pyogrio.read_info(data.path, layer=layer if layer != data.path.stem else None,
                                 force_total_bounds=True, **data.options)
    except Exception:  # an extent is a nicety: the layer's own problems are reported elsewhere
        return None
    bounds = info.get("total_bounds")
    if bounds is None or not np.all(np.isfinite(bounds)):
        return None
    return [float(v) for v in bounds]


def _lon_lat(box: list[float]) -> bool:
    return box[0] >= -180.5 and box[2] <= 180.5 and box[1] >= -90.5 and box[3] <= 90.5
