"""A whole upload into PostGIS: every layer of every data file it holds, each into a staging table
of its own, published under the final names at the end of the one transaction the caller commits."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import psycopg
from psycopg import sql

from locaria_batch.job import JobError
from locaria_batch.jobs.file_loader.columns import MAX_IDENTIFIER_BYTES, safe_identifier
from locaria_batch.jobs.file_loader.finish import LayerResult
from locaria_batch.jobs.file_loader.layer import SCHEMA, load_layer
from locaria_batch.jobs.file_loader.publish import Fence, LoadMode, Target, check_targets, publish
from locaria_batch.jobs.file_loader.readers import ReadOptions, display_name, layer_names
from locaria_batch.jobs.file_loader.sources import DataFile, find_data_files
from locaria_batch.jobs.names import unique_name
from locaria_batch.settings import LoaderLimits, settings

BATCH_ROWS = 32_768


@dataclass
class LoadOptions:
    base_table: str  # upload_file_{id}, or the file's validated table_name
    mode: LoadMode | None = None  # None: replace this file's own tables, refuse any other existing table
    source_srid: int | None = None  # the user's source_crs; None: from the file, or assumed from the extent
    target_srid: int = 4326
    repair: bool = True  # ST_MakeValid invalid geometries (else count and report them)
    layers: list[str] | None = None  # load only these source layers
    encoding: str | None = None  # the user's encoding for text formats; None: detected
    limits: LoaderLimits = field(default_factory=lambda: settings().loader_limits)
    batch_rows: int = BATCH_ROWS


@dataclass
class LoadedLayer:
    name: str  # the source layer
    table: str  # its table in locaria_uploads
    result: LayerResult
    label: str = ""  # the user's file and layer
    appended: bool = False  # its rows were added to an existing table


@dataclass
class LoadedFile:
    layers: list[LoadedLayer]
    warnings: list[str] = field(default_factory=list)  # about the file as a whole: layers left out


def table_names(base: str, layers: list[str]) -> list[str]:
    """`base` for one layer; `base_{layer}` for several, unique and within 63 bytes."""
    if len(layers) == 1:
        return [base]
    taken: set[str] = set()
    return [unique_name(f"{base}_{safe_identifier(layer, fallback='layer')}", taken,
                        max_length=MAX_IDENTIFIER_BYTES, utf8_bytes=True) for layer in layers]


def table_label(data: DataFile, layer: str, several_files: bool) -> str:
    """What names a layer's table: the layer, prefixed with its file's name when an archive holds several
    files whose layers could share names (two GeoPackages with a layer `roads` each)."""
    stem = PurePosixPath(data.label).stem
    return f"{stem}_{layer}" if several_files and layer != stem else layer


def layer_label(data: DataFile, layer: str) -> str:
    """The user's file, and the layer when the file has layers of its own: parks.gpkg, layer wards."""
    shown = display_name(data, layer)
    return data.label if shown == PurePosixPath(data.label).stem else f"{data.label}, layer {shown}"


def target_srid(conn: psycopg.Connection[Any], table: str, default: int) -> int:
    """The SRID rows appended to `table` must have: its geometry column's (or `default`)."""
    row = conn.execute("SELECT srid FROM geometry_columns WHERE f_table_schema = %s AND f_table_name = %s "
                       "AND srid > 0 LIMIT 1", [SCHEMA, table]).fetchone()
    return int(row["srid"] if isinstance(row, dict) else row[0]) if row else default


SHORT_TYPE_NAMES = {"timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
                    "time without time zone": "time"}  # as the loader names them


def table_columns(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    """The columns of an upload table and their types (none when it does not exist yet)."""
    rows = conn.execute("SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type "
                        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
                        [SCHEMA, table]).fetchall()
    return {str(r["name"]): SHORT_TYPE_NAMES.get(str(r["type"]), str(r["type"])) for r in rows}


def load_file(conn: psycopg.Connection[Any], path: Path, name: str, options: LoadOptions, fence: Fence,
              progress: Callable[[int, int | None], None] | None = None) -> LoadedFile:
    """Load every layer; the caller commits (or rolls back: then nothing at all is left behind)."""
    limits = options.limits
    with tempfile.TemporaryDirectory(prefix="locaria-load-") as workdir:
        files = find_data_files(path, name, Path(workdir), limits)
        sources: list[tuple[DataFile, str]] = [(data, layer) for data in files for layer in layer_names(data)]
        if options.layers:
            wanted = set(options.layers)
            available = {display_name(d, layer) for d, layer in sources}
            missing = wanted - available
            if missing:
                raise JobError(f"{name} has no layer named {', '.join(sorted(missing))}; its layers are "
                               f"{', '.join(sorted(available))}")
            sources = [(d, layer) for d, layer in sources if display_name(d, layer) in wanted]
        if not sources:
            raise JobError(f"{name} holds no layers to load; export the data again and check it opens in a GIS")
        if len(sources) > limits.max_layers:
            raise JobError(f"{name} holds {len(sources)} layers, over the limit of {limits.max_layers}; "
                           "choose some with the layers attribute")
        labels = [table_label(d, display_name(d, layer), several_files=len(files) > 1) for d, layer in sources]
        finals = table_names(options.base_table, labels)
        targets = [Target(final, layer_label(d, layer)) for (d, layer), final in zip(sources, finals, strict=True)]
        check_targets(conn, fence, targets, options.mode)  # before hours of loading, not after
        read = ReadOptions(batch_rows=options.batch_rows, encoding=options.encoding,
                           max_line_bytes=limits.max_line_bytes)
        loaded: list[LoadedLayer] = []
        skipped: list[tuple[str, str]] = []  # (label, layer) of the empty layers left out
        done = 0
        for index, ((data, layer), target) in enumerate(zip(sources, targets, strict=True)):
            staging = fence.staging_name(index)
            srid, append_to = options.target_srid, None
            if options.mode == LoadMode.append:
                srid, append_to = target_srid(conn, target.table, srid), table_columns(conn, target.table)
            before = done

            def report(rows: int, total: int | None, before: int = before) -> None:
                if progress is not None:  # never past the total: a count GDAL gave may be an estimate
                    progress(before + rows, None if total is None else before + max(total, rows))

            result = load_layer(conn, data, layer, read, staging, label=target.label, source_crs=options.source_srid,
                                target_srid=srid, repair=options.repair, limits=limits, on_rows=report,
                                append_to=append_to)
            done += result.record_count
            if result.record_count == 0 and len(sources) > 1:
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(SCHEMA, staging)))
                skipped.append((target.label, display_name(data, layer)))
                continue
            if result.record_count == 0 and result.warnings:  # there were rows, but none could be loaded
                raise JobError(f"{target.label} has no rows that could be loaded: {'; '.join(result.warnings)}. "
                               "Check the file (its delimiter, its quotes) and upload it again")
            if result.record_count == 0:
                raise JobError(f"{target.label} has no rows or features; nothing to load. Check the export and "
                               "upload the file again")
            loaded.append(LoadedLayer(result.layer, target.table, result, target.label))
        if not loaded:
            raise JobError(f"{name}: every layer is empty ({', '.join(layer for _, layer in skipped)}); nothing to "
                           "load")
        published = publish(conn, fence, [Target(item.table, item.label, item.result.table)
                                          for item in loaded], options.mode)
        for item in loaded:
            item.appended = item.table in published.get("appended", [])
            item.result.table = item.table
        return LoadedFile(loaded, [f"{label} has no features and was not loaded" for label, _ in skipped])
