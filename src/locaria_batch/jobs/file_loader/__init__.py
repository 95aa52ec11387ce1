"""file_loader: an uploaded data file into PostGIS tables in locaria_uploads.

Every common vector format (detected by content), streamed in Arrow batches over binary COPY; one
table per layer, swapped in atomically; the result in the original's attribute keys plus a
description of what was loaded.  Only validated attributes steer the load, never GDAL options or SQL:

    table_name         the table (one layer) or the tables' prefix; default upload_file_{id}
    mode               when a target table exists: fail, overwrite or append (default: replace this
                       file's own tables, refuse tables other files loaded)
    source_crs, s_srs  EPSG code of the coordinates when the file does not say (or says wrongly)
    target_crs         EPSG code of the tables; default EPSG:4326
    encoding           the text encoding of CSV/TSV/TXT files and shapefiles; default: detected
    repair_geometries  false: count and report invalid geometries instead of ST_MakeValid-ing them
    layers, layer      load only these source layers
    auto_mapped        with category (and title_field ...): load, then import into the search data

The object read is always incoming/{id}.{ext}, whatever other attributes say.  Limits come from
LOCARIA_LOADER_* variables (settings.LoaderLimits).
"""

from __future__ import annotations

import re
import time
from typing import Any

from locaria_batch.job import JobContext, JobError, JobResult
from locaria_batch.jobs.file_loader.crs import srid_from_attribute
from locaria_batch.jobs.file_loader.layer import SCHEMA
from locaria_batch.jobs.file_loader.loader import LoadedFile, LoadOptions, load_file
from locaria_batch.jobs.file_loader.publish import Fence, LoadMode
from locaria_batch.jobs.file_loader.readers import check_encoding
from locaria_batch.settings import settings
from locaria_batch.storage import ObjectNotFound, incoming_key

TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
IGNORED_ATTRIBUTES = ("ogr_parameters", "skipfailures", "custom_loader")
FALSE_WORDS = {"false", "no", "0", "off", "keep"}


def source_key(file_id: int, attributes: dict[str, Any]) -> str:
    """The stored upload: derived from the file id alone (path or id_as_filename attributes are not
    followed, so a file can never be pointed at another's upload)."""
    return incoming_key(file_id, str(attributes.get("ext") or ""))


def target_table(file_id: int, attributes: dict[str, Any]) -> str:
    name = str(attributes.get("table_name") or f"upload_file_{file_id}")
    name = name.removeprefix(f"{SCHEMA}.")
    if not TABLE_NAME.match(name) or name.startswith("_lb_"):
        raise JobError(f"--table (the table_name attribute) {name[:80]!r} is not allowed: use lower-case letters, "
                       "digits and underscores (at most 63), starting with a letter or underscore (not _lb_)")
    return name


def load_mode(attributes: dict[str, Any]) -> LoadMode | None:
    value = attributes.get("mode")
    if value in (None, ""):
        return None
    try:
        return LoadMode(str(value).strip().lower())
    except ValueError:
        raise JobError(f"--mode (the mode attribute) {str(value)[:40]!r} is not known: use "
                       f"{', '.join(LoadMode)}") from None


def flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    return str(value).strip().lower() not in FALSE_WORDS


def options_from_attributes(ctx: JobContext, table: str) -> LoadOptions:
    attributes = ctx.attributes
    source = attributes.get("source_crs", attributes.get("s_srs"))
    key = "source_crs" if "source_crs" in attributes else "s_srs"
    layers: Any = attributes.get("layers", attributes.get("layer"))
    if isinstance(layers, str):
        layers = [layers]
    if layers is not None and not (isinstance(layers, list) and all(isinstance(v, str) for v in layers)):
        raise JobError("--layer (the layers attribute) must name layers: a list of layer names")
    encoding = attributes.get("encoding")
    return LoadOptions(
        base_table=table,
        mode=load_mode(attributes),
        source_srid=srid_from_attribute(ctx.conn, source, key) if source not in (None, "") else None,
        target_srid=srid_from_attribute(ctx.conn, attributes["target_crs"], "target_crs")
        if attributes.get("target_crs") else 4326,
        repair=flag(attributes.get("repair_geometries"), True),
        layers=layers,
        encoding=check_encoding(str(encoding)) if encoding not in (None, "") else None,
        limits=settings().loader_limits,
    )


def run(ctx: JobContext) -> JobResult:
    started = time.monotonic()
    attributes = ctx.attributes
    key = source_key(ctx.file_id, attributes)
    name = str(attributes.get("name") or f"file {ctx.file_id}")
    table = target_table(ctx.file_id, attributes)
    auto_import = "auto_mapped" in attributes and flag(attributes.get("auto_mapped"), True)
    if auto_import and not attributes.get("category"):
        raise JobError(f"{name}: auto_mapped needs a category attribute naming the category to import into; "
                       "add it and load the file again")
    options = options_from_attributes(ctx, table)
    ctx.conn.commit()  # the attribute checks read spatial_ref_sys; the load starts a clean transaction
    try:
        size = ctx.storage.size(key)
        if size > options.limits.max_file_bytes:
            raise JobError(f"{name} is {size:,} bytes, over the {options.limits.max_file_bytes:,}-byte limit; "
                           "split it into smaller files")
        with ctx.storage.local_copy(key) as path:
            loaded = load_file(ctx.conn, path, name, options, Fence(ctx.job_id, ctx.attempt, ctx.token),
                               progress=ctx.progress)
            ctx.conn.commit()
    except ObjectNotFound as exc:
        raise JobError(f"{name}: the uploaded file is missing from storage; upload it again") from exc
    for item in loaded.layers:
        for note in item.result.notes:
            ctx.log(note)
    result = describe(loaded, name, time.monotonic() - started)
    if options.mode is not None:
        result["mode"] = options.mode.value
    ignored = [k for k in IGNORED_ATTRIBUTES if k in attributes]
    if ignored:
        result["warnings"].append(f"the attributes {', '.join(ignored)} are not used by this loader and were ignored")
    count = result["record_count"]
    verb = "Appended" if all(item.appended for item in loaded.layers) else "Loaded"
    return JobResult(
        attributes=result,
        status="IMPORT_REQUESTED" if auto_import else None,
        log={"result": "Loading complete",
             "message": f"{verb} {count:,} rows into {', '.join(result['tables'])}"},
    )


def describe(file: LoadedFile, name: str, seconds: float) -> dict[str, Any]:
    """The result attributes: the original's keys, then what the tables hold."""
    loaded = file.layers
    first = loaded[0].result
    tables = [f"{SCHEMA}.{item.table}" for item in loaded]
    boxes = [item.result.bbox for item in loaded if item.result.bbox]
    bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
            max(b[3] for b in boxes)] if boxes else None
    # a layer's own warnings say which layer they are about when there are several
    warnings = [w if len(loaded) == 1 else f"{item.name}: {w}" for item in loaded for w in item.result.warnings]
    warnings += file.warnings
    details = [{"layer": item.name, "table": f"{SCHEMA}.{item.table}", "record_count": item.result.record_count,
                "geometry_type": item.result.geometry_type, "source_crs": item.result.source_crs,
                "source_crs_assumed": item.result.source_crs_assumed, "bbox": item.result.bbox,
                "columns": item.result.columns, "invalid_geometries": item.result.invalid_geometries,
                **({"linearised": item.result.linearised} if item.result.linearised else {}),
                **({"appended": True} if item.appended else {})} for item in loaded]
    linearised: dict[str, int] = {}
    for item in loaded:
        for kind, n in item.result.linearised.items():
            linearised[kind] = linearised.get(kind, 0) + n
    encodings = [item.result for item in loaded if item.result.encoding]
    return {
        "imported_table_name": tables[0],
        "record_count": sum(item.result.record_count for item in loaded),
        "tables": tables,
        "processing_time": round(seconds, 2),
        "result": {"schema": SCHEMA, "layers": [item.name.lower() for item in loaded], "filename": name,
                   "message": "OGR SUCCESS"},
        "bbox": bbox,
        "geometry_type": first.geometry_type,
        "source_crs": first.source_crs,
        "source_crs_assumed": any(item.result.source_crs_assumed for item in loaded),
        "srid": first.srid,
        **({"linearised": linearised} if linearised else {}),
        **({"encoding": encodings[0].encoding, "encoding_guessed": encodings[0].encoding_guessed}
           if encodings else {}),
        "columns": first.columns,
        "warnings": warnings,
        "invalid_geometries": {
            "count": sum(item.result.invalid_geometries["count"] for item in loaded),
            "repaired": any(item.result.invalid_geometries["repaired"] for item in loaded),
            "rows": first.invalid_geometries["rows"],
        },
        "preview": first.preview,
        "layer_details": details,
    }
