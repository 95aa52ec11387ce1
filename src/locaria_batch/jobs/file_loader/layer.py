"""One layer into one staging table: plan the table from the first batch (plan), convert every
batch and stream it over COPY (convert, copyin), then finish the table (finish)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from locaria_batch.job import JobError, RetryableJobError
from locaria_batch.jobs.file_loader.convert import BatchConverter
from locaria_batch.jobs.file_loader.copyin import ahead, copy_prepared, produce
from locaria_batch.jobs.file_loader.finish import LayerResult, TableFinisher
from locaria_batch.jobs.file_loader.plan import create_table, plan_table
from locaria_batch.jobs.file_loader.readers import LineTooLong, RawLayer, ReadOptions, open_layer
from locaria_batch.jobs.file_loader.sources import DataFile
from locaria_batch.settings import LoaderLimits

SCHEMA = "locaria_uploads"


def load_layer(conn: psycopg.Connection[Any], data: DataFile, layer: str, read: ReadOptions, staging: str, *,
               label: str, source_crs: int | None, target_srid: int, repair: bool, limits: LoaderLimits,
               on_rows: Callable[[int, int | None], None], append_to: dict[str, str] | None = None) -> LayerResult:
    """Load the layer into locaria_uploads.{staging}; a problem the database or Arrow reports becomes
    one sentence about this layer.  Text with a line longer than the reading block is read again with
    a block as large as the longest line allowed.  `append_to`: the columns and types of the table the
    rows will be appended to."""
    conn.execute("SAVEPOINT locaria_layer")  # inside the load's transaction, never a commit of its own
    try:
        result = _open_and_load(conn, data, layer, read, staging, label, source_crs, target_srid, repair, limits,
                                on_rows, append_to)
        conn.execute("RELEASE SAVEPOINT locaria_layer")
        return result
    except LineTooLong:
        conn.execute("ROLLBACK TO SAVEPOINT locaria_layer")
    bigger = replace(read, block_bytes=max(read.block, read.max_line_bytes))
    return _open_and_load(conn, data, layer, bigger, staging, label, source_crs, target_srid, repair, limits,
                          on_rows, append_to)


def _open_and_load(conn: psycopg.Connection[Any], data: DataFile, layer: str, read: ReadOptions, staging: str,
                   label: str, source_crs: int | None, target_srid: int, repair: bool, limits: LoaderLimits,
                   on_rows: Callable[[int, int | None], None], append_to: dict[str, str] | None) -> LayerResult:
    try:
        with open_layer(data, layer, read, label) as raw:
            result = _load(conn, raw, staging, source_crs, target_srid, repair, limits,
                           lambda rows: on_rows(rows, raw.total), append_to)
            result.encoding, result.encoding_guessed = raw.encoding, raw.encoding_guessed
            if raw.encoding_guessed:
                result.notes.append(f"{label}: the text encoding was guessed as {raw.encoding}; if its text looks "
                                    "wrong, load it again with --encoding (the encoding attribute)")
            return result
    except psycopg.OperationalError as exc:
        raise RetryableJobError(f"{label}: the database connection failed ({exc}); "
                                "the load will be retried") from exc
    except psycopg.Error as exc:
        problem = (exc.diag.message_primary or str(exc)).strip()
        raise JobError(f"{label}: the database refused the data ({problem}); check the file and "
                       "upload it again") from exc
    except (pa.ArrowException, ValueError, OverflowError) as exc:
        raise JobError(f"{label}: the data cannot be converted ({str(exc).splitlines()[0][:200]}); "
                       "check the file and upload it again") from exc
    except RecursionError as exc:
        raise JobError(f"{label} nests values too deeply to be read; flatten its properties and upload it "
                       "again") from exc


def _load(conn: psycopg.Connection[Any], raw: RawLayer, staging: str, source_crs: int | None, target_srid: int,
          repair: bool, limits: LoaderLimits, on_rows: Callable[[int], None],
          append_to: dict[str, str] | None) -> LayerResult:
    if len(raw.fields) > limits.max_columns:
        raise JobError(f"{raw.label} has {len(raw.fields):,} columns, over the limit of "
                       f"{limits.max_columns:,}; remove columns you do not need")
    first, batches = _first(raw.batches)
    plan = plan_table(conn, raw, first, source_crs, append_to)
    table = sql.Identifier(SCHEMA, staging)
    create_table(conn, table, plan)
    converter = BatchConverter(raw, plan, table, limits)
    prepared = converter.prepare(ahead(batches, name="locaria-loader-reader"))
    copied = copy_prepared(conn, table, plan.columns, produce(prepared, converter.encode), converter.encode,
                           raw.label, limits.max_bad_rows, on_rows)
    finisher = TableFinisher(conn, table, staging, raw.label, target_srid=target_srid, repair=repair)
    return finisher.finish(raw.name, plan, copied.rows, plan.warnings() + converter.warnings(copied))


def _first(batches: Iterator[pa.RecordBatch]) -> tuple[pa.RecordBatch | None, Iterator[pa.RecordBatch]]:
    """The first batch with rows, and every batch from it on."""
    for batch in batches:
        if batch.num_rows:
            def rest(head: pa.RecordBatch = batch) -> Iterator[pa.RecordBatch]:
                yield head
                yield from batches
            return batch, rest()
    return None, iter(())
