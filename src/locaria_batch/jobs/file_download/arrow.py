"""Rows out of PostgreSQL as Arrow record batches: PostgreSQL writes CSV over COPY (geometry as
hex WKB) and Arrow's C++ CSV reader parses it a block at a time, so no Python code touches a
single row and memory stays flat."""

from __future__ import annotations

import binascii
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from locaria_batch.jobs.file_download.copyout import Progress, copy_out
from locaria_batch.jobs.file_download.selection import Column, Layer, Selection

GEOMETRY = "geometry"  # the geometry's name in Arrow batches
BLOCK_SIZE = 4 << 20
ARROW_TYPES = {
    "integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_(), "text": pa.string(), "json": pa.string(),
    "date": pa.date32(), "datetime": pa.timestamp("us"), "timestamp": pa.timestamp("us", tz="UTC"),
}
ARROW_CASTS = {"integer": "::bigint", "number": "::float8", "json": "::text"}


class CopyReader(io.RawIOBase):
    """A readable stream over COPY messages, for Arrow's CSV reader."""

    def __init__(self, messages: Iterator[memoryview]) -> None:
        self.messages = messages
        self.pending = memoryview(b"")
        self.rows = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(target):
            if not self.pending:
                message = next(self.messages, None)
                if message is None:
                    break
                self.pending = memoryview(message)
                self.rows += 1
            n = min(len(self.pending), len(target) - filled)
            target[filled:filled + n] = self.pending[:n]
            self.pending = self.pending[n:]
            filled += n
        return filled


def arrow_columns(columns: list[Column]) -> list[sql.Composable]:
    return [sql.SQL("{}{}").format(c.expression, sql.SQL(ARROW_CASTS.get(c.kind, ""))) for c in columns]


def arrow_schema(columns: list[Column], names: list[str] | None = None, with_geometry: bool = True) -> pa.Schema:
    names = names or [c.name for c in columns]
    fields = [pa.field(n, ARROW_TYPES[c.kind]) for n, c in zip(names, columns, strict=True)]
    if with_geometry:
        fields.append(pa.field(GEOMETRY, pa.binary()))
    return pa.schema(fields)


def arrow_batches(conn: psycopg.Connection[Any], selection: Selection, layer: Layer | None, schema: pa.Schema,
                  progress: Progress, done: int = 0, condition: sql.Composable | None = None,
                  extra_params: dict[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
    """The selection's rows (or one layer's) as record batches of `schema`, whose last field is
    the WKB geometry when the selection has one."""
    with_geometry = bool(schema.names) and schema.names[-1] == GEOMETRY
    select = arrow_columns(selection.columns)
    if with_geometry:
        select.append(sql.SQL("encode(ST_AsBinary({}), 'hex')").format(selection.geometry))
    query, params = selection.query(sql.SQL(", ").join(select or [sql.SQL("NULL")]), layer, condition=condition)
    params.update(extra_params or {})
    text_schema = schema
    if with_geometry:
        text_schema = schema.set(len(schema) - 1, pa.field(GEOMETRY, pa.string()))
    if not select:  # no columns at all: one placeholder column keeps the CSV well formed
        text_schema = pa.schema([pa.field("_", pa.null())])
    rows = CopyReader(copy_out(conn, query, params, sql.SQL("(FORMAT csv)")))
    try:
        reader = pacsv.open_csv(
            rows,
            read_options=pacsv.ReadOptions(column_names=text_schema.names, block_size=BLOCK_SIZE),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: f.type for f in text_schema}, strings_can_be_null=True,
                quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"]),
        )
    except pa.ArrowInvalid:
        if rows.rows == 0:  # Arrow refuses an empty CSV; no rows is no batches
            return
        raise
    for batch in reader:
        arrays = list(batch.columns)
        if with_geometry:
            arrays[-1] = hex_to_binary(arrays[-1])
        if not select:
            arrays = []
        done += batch.num_rows
        progress(done)
        yield pa.RecordBatch.from_arrays(arrays, schema=schema) if arrays else \
            pa.RecordBatch.from_pylist([{}] * batch.num_rows, schema=schema)


def hex_to_binary(column: pa.Array) -> pa.Array:
    """Decode a hex string column into binary: one C call over the whole data buffer."""
    if column.offset:
        column = pa.concat_arrays([column])
    validity, offsets, data = column.buffers()
    offset_values = np.frombuffer(offsets, dtype=np.int32)[: len(column) + 1]
    start, end = int(offset_values[0]), int(offset_values[-1])
    decoded = binascii.unhexlify(memoryview(data)[start:end]) if data is not None else b""
    new_offsets = ((offset_values - start) // 2).astype(np.int32)
    return pa.Array.from_buffers(pa.binary(), len(column),
                                 [validity, pa.py_buffer(new_offsets.tobytes()), pa.py_buffer(decoded)],
                                 column.null_count)
