"""Arrow batches into a PostgreSQL table over COPY, with reading, converting and the COPY on three
threads (GDAL, Arrow and psycopg release the GIL), and recovery from a bad row without losing the batch.

Each batch is encoded in PostgreSQL's binary COPY format (pgbinary) and sent in its own COPY inside
a savepoint: a value PostgreSQL rejects costs a resend of that one batch with the value emptied,
and is reported by its row number.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from locaria_batch.job import JobError
from locaria_batch.jobs.file_loader.columns import FID_COLUMN, GEOMETRY_COLUMN, close_rings

# the COPY's own context line (a type's parser may add one of its own first: "JSON data, line 1: ...")
COPY_CONTEXT = re.compile(r"^COPY .*?, line (\d+)(?:, column (\w+))?", re.MULTILINE)
RETRY_ROWS = 4_096  # once a batch held a bad value, the rest goes in pieces this big: a next bad value costs less
QUEUE_DEPTH = 2  # batches encoded ahead of the COPY: enough to overlap, little memory


@dataclass
class Prepared:
    """A batch ready to send: its Arrow columns (in table order), their PostgreSQL types, the row number
    of its first row, and any statement to run before it (a column widened)."""

    batch: pa.RecordBatch
    column_types: list[str]  # as they were for this batch: a later batch may widen a column
    first_row: int
    before: list[sql.Composed] = field(default_factory=list)
    data: bytes | None = None  # the encoded COPY stream


@dataclass
class BadRow:
    row: int
    column: str | None
    problem: str


Encoder = Callable[[pa.RecordBatch, list[str]], bytes]


T = TypeVar("T")


def ahead(items: Iterator[T], depth: int = QUEUE_DEPTH, name: str = "locaria-loader") -> Iterator[T]:
    """Run an iterator on a worker thread, a few items ahead of its consumer (GDAL, Arrow and the
    COPY release the GIL, so reading, converting and sending run on different cores)."""
    handoff: queue.Queue[tuple[T] | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        handoff.put((item,), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put(None)
        except BaseException as exc:
            handoff.put(exc)
        finally:  # a generator reading ahead itself stops its own worker before its source closes
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        while True:
            got = handoff.get()
            if got is None:
                return
            if isinstance(got, BaseException):
                raise got
            yield got[0]
    finally:
        stop.set()
        while worker.is_alive():
            try:
                handoff.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.1)


def produce(items: Iterator[Prepared], encode: Encoder, depth: int = QUEUE_DEPTH) -> Iterator[Prepared]:
    """Run the preparation (converting, encoding for COPY) on a worker thread, a few batches ahead."""

    def encoded() -> Iterator[Prepared]:
        for item in items:
            item.data = encode(item.batch, item.column_types)
            yield item

    return ahead(encoded(), depth, "locaria-loader-encoder")


@dataclass
class Copied:
    rows: int = 0
    rejected: list[BadRow] = field(default_factory=list)  # values set aside (loaded as empty) or rows left out
    rings_closed: list[int] = field(default_factory=list)  # rows whose polygon rings were closed


def copy_prepared(conn: psycopg.Connection[Any], table: sql.Composable, names: list[str],
                  items: Iterator[Prepared], encode: Encoder, label: str, max_bad_rows: int,
                  on_batch: Callable[[int], None] | None = None) -> Copied:
    """COPY every prepared batch: the rows loaded, and what had to be set aside or repaired on the way."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, names)))
    copied = Copied()
    closing_rings = False  # once one polygon needed it, the file's others are closed before they are sent
    with conn.cursor() as cur:
        for item in items:
            for before in item.before:
                cur.execute(before)
            # what is left of the batch, in pieces: after a rejected value is set aside, the rows before it
            # (accepted once) go again on their own and the rest in pieces of RETRY_ROWS, so that each bad
            # value costs the database one more pass over the rows since the last one, not over the batch
            pending: list[tuple[pa.RecordBatch, bytes | None, int]] = [(item.batch, item.data, item.first_row)]
            while pending:
                batch, data, first_row = pending.pop()
                if closing_rings and (closed := _closed_rings(batch, first_row)) is not None:
                    batch, rows = closed
                    copied.rings_closed.extend(rows)
                    data = None
                cur.execute("SAVEPOINT locaria_batch")
                try:
                    with cur.copy(statement) as copy:
                        copy.write(data if data is not None else encode(batch, item.column_types))
                    cur.execute("RELEASE SAVEPOINT locaria_batch")
                except (psycopg.errors.DataError, psycopg.errors.InternalError) as exc:  # a value refused
                    cur.execute("ROLLBACK TO SAVEPOINT locaria_batch")
                    index, fixed, problem = _blank_bad_value(batch, exc, first_row, label)
                    if problem is None:  # a polygon ring closed: nothing lost
                        copied.rings_closed.append(_row_number(batch, index, first_row))
                        closing_rings = True
                    else:
                        copied.rejected.append(problem)
                    if len(copied.rejected) > max_bad_rows:
                        first = copied.rejected[0]
                        raise JobError(f"{label}: more than {max_bad_rows} rows hold values that cannot be loaded "
                                       f"(first: row {first.row}, {first.problem}); fix the file and upload it "
                                       "again") from exc
                    left_out = batch.num_rows - fixed.num_rows  # 1 when the row went, 0 when its value did
                    rest, start = fixed.slice(index), first_row + index + left_out
                    for offset in reversed(range(0, rest.num_rows, RETRY_ROWS)):
                        pending.append((rest.slice(offset, RETRY_ROWS), None, start + offset))
                    if index:
                        pending.append((batch.slice(0, index), None, first_row))
                    continue
                copied.rows += batch.num_rows
                if on_batch is not None:
                    on_batch(copied.rows)
    return copied


def _row_number(batch: pa.RecordBatch, index: int, first_row: int) -> int:
    fids = batch.column(FID_COLUMN) if FID_COLUMN in batch.schema.names else None
    return int(fids[index].as_py()) if fids is not None else first_row + index


def _closed_rings(batch: pa.RecordBatch, first_row: int) -> tuple[pa.RecordBatch, list[int]] | None:
    """The batch with its polygons' open rings closed, and the rows that had one; None when none had."""
    if GEOMETRY_COLUMN not in batch.schema.names:
        return None
    position = batch.schema.get_field_index(GEOMETRY_COLUMN)
    values = batch.column(position).to_pylist()
    fixed = [close_rings(v) if v is not None else None for v in values]
    changed = [i for i, v in enumerate(fixed) if v is not None]
    if not changed:
        return None
    merged = pa.array([f if f is not None else v for f, v in zip(fixed, values, strict=True)],
                      batch.schema.field(position).type)
    return batch.set_column(position, batch.schema.field(position), merged), \
        [_row_number(batch, i, first_row) for i in changed]


def _blank_bad_value(batch: pa.RecordBatch, exc: psycopg.Error, first_row: int,
                     label: str) -> tuple[int, pa.RecordBatch, BadRow | None]:
    """Where the COPY stopped in the batch, and the batch with that value repaired (a polygon's open ring
    closed: no BadRow), blanked, or, when the value is not one column's, that row left out."""
    context = exc.diag.context or ""
    match = COPY_CONTEXT.search(context)
    problem = (exc.diag.message_primary or str(exc)).strip()
    column = match.group(2) if match else None
    if not match or (isinstance(exc, psycopg.errors.InternalError) and column is None):
        raise JobError(f"{label}: the database refused the data ({problem}); check the file and upload it "
                       "again") from exc
    index = int(match.group(1)) - 1
    if index >= batch.num_rows:
        raise JobError(f"{label}: the database refused row {first_row + index} ({problem})") from exc
    row_number = _row_number(batch, index, first_row)
    if column is None or column not in batch.schema.names or column == FID_COLUMN:
        keep = pa.array([i != index for i in range(batch.num_rows)])
        return index, batch.filter(keep), BadRow(row_number, None, f"{problem}; row left out")
    position = batch.schema.get_field_index(column)
    old = batch.column(position)
    mask = pa.array([i == index for i in range(batch.num_rows)])
    if column == GEOMETRY_COLUMN and (closed := close_rings(old[index].as_py())) is not None:
        repaired = pc.if_else(mask, pa.scalar(closed, old.type), old)
        return index, batch.set_column(position, batch.schema.field(position), repaired), None
    blanked = pc.if_else(mask, pa.scalar(None, old.type), old)
    return index, batch.set_column(position, batch.schema.field(position), blanked), BadRow(
        row_number, column, f"{problem}; loaded as empty")
