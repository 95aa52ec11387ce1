"""A whole upload into PostGIS: every layer of every data file it holds, each into its own table,
swapped in atomically at the end of the one transaction the caller commits."""

from __future__ import annotations

import secrets
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
from locaria_batch.jobs.file_loader.readers import display_name, layer_names, open_layer
from locaria_batch.jobs.file_loader.sources import DataFile, find_data_files
from locaria_batch.jobs.names import unique_name
from locaria_batch.settings import LoaderLimits, settings

BATCH_ROWS = 65_536


@dataclass
class LoadOptions:
    base_table: str  # upload_file_{id}, or the file's validated table_name
    source_srid: int | None = None  # the user's source_crs; None: from the file or inferred
    target_srid: int = 4326
    repair: bool = True  # ST_MakeValid invalid geometries (else count and report them)
    layers: list[str] | None = None  # load only these source layers
    previous_tables: list[str] = field(default_factory=list)  # this file's tables from an earlier load
    limits: LoaderLimits = field(default_factory=lambda: settings().loader_limits)
    batch_rows: int = BATCH_ROWS


@dataclass
class LoadedLayer:
    name: str  # the source layer
    table: str  # its table in locaria_uploads
    result: LayerResult


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


def load_file(conn: psycopg.Connection[Any], path: Path, name: str, options: LoadOptions,
              progress: Callable[[int, int | None], None] | None = None) -> list[LoadedLayer]:
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
        token = secrets.token_hex(4)
        loaded: list[LoadedLayer] = []
        skipped: list[str] = []
        done = 0
        for index, ((data, layer), final) in enumerate(zip(sources, finals, strict=True)):
            staging = f"_lb_{token}_{index}"
            with open_layer(data, layer, options.batch_rows) as raw:
                before = done

                def report(rows: int, before: int = before, total: int | None = raw.total) -> None:
                    if progress is not None:
                        progress(before + rows, None if total is None else before + total)

                result = load_layer(conn, raw, staging, source_crs=options.source_srid,
                                    target_srid=options.target_srid, repair=options.repair, limits=limits,
                                    on_rows=report)
            done += result.record_count
            if result.record_count == 0 and len(sources) > 1:
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(SCHEMA, staging)))
                skipped.append(raw.label)
                continue
            if result.record_count == 0:
                raise JobError(f"{raw.label} has no rows or features; nothing to load. Check the export and upload "
                               "the file again")
            loaded.append(LoadedLayer(result.layer, final, result))
        if not loaded:
            raise JobError(f"{name}: every layer is empty ({', '.join(skipped)}); nothing to load")
        for label in skipped:
            loaded[0].result.warnings.append(f"{label} has no features and was not loaded")
        swap_in(conn, loaded, options.previous_tables, options.base_table)
        return loaded


def swap_in(conn: psycopg.Connection[Any], loaded: list[LoadedLayer], previous: list[str], base: str) -> None:
    """Replace the old tables by the new ones inside the caller's transaction."""
    finals = {item.table for item in loaded}
    stale = [t.removeprefix(f"{SCHEMA}.") for t in previous]
    stale = [t for t in stale if t not in finals and (t == base or t.startswith(f"{base}_"))]
    try:
        for table in [*finals, *stale]:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(SCHEMA, table)))
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise JobError(f"a view or another table depends on the old table ({exc.diag.message_detail or exc}); "
                       "drop or change it, then load the file again") from exc
    for item in loaded:
        staging = item.result.table
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(SCHEMA, staging),
                                                                    sql.Identifier(item.table)))
        conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
            sql.Identifier(SCHEMA, f"{staging}_pkey"), sql.Identifier(f"{item.table[:58]}_pkey")))
        if item.result.geometry_type is not None:
            conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(SCHEMA, f"{staging}_geom_idx"), sql.Identifier(f"{item.table[:54]}_geom_idx")))
        item.result.table = item.table
