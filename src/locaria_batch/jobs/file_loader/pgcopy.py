"""Arrow record batches into a PostGIS table over COPY.

Each batch is turned into CSV by Arrow's C++ writer (geometry as hex WKB, which PostGIS parses
natively) and streamed into COPY: no Python loop touches individual rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.types as pat
from psycopg import sql

FID_COLUMN = "ogc_fid"
GEOMETRY_COLUMN = "wkb_geometry"


def pg_type(arrow_type: pa.DataType) -> str:
    if pat.is_boolean(arrow_type):
        return "boolean"
    if pat.is_int8(arrow_type) or pat.is_int16(arrow_type) or pat.is_int32(arrow_type) or pat.is_uint8(arrow_type) \
            or pat.is_uint16(arrow_type):
        return "integer"
    if pat.is_integer(arrow_type):
        return "bigint"
    if pat.is_floating(arrow_type) or pat.is_decimal(arrow_type):
        return "double precision"
    if pat.is_date(arrow_type):
        return "date"
    if pat.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if pat.is_time(arrow_type):
        return "time"
    if pat.is_list(arrow_type) or pat.is_large_list(arrow_type) or pat.is_struct(arrow_type) or pat.is_map(arrow_type):
        return "jsonb"
    return "text"


def wkb_to_hex(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Hex-encode a binary column in one pass over its data buffer (no per-row Python)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pat.is_large_binary(column.type):
        column = column.cast(pa.binary())
    column = column.cast(pa.binary())
    validity, offsets, data = column.buffers()
    offset_values = np.frombuffer(offsets, dtype=np.int32)[column.offset : column.offset + len(column) + 1]
    base = int(offset_values[0])
    raw = memoryview(data)[base : int(offset_values[-1])] if data is not None else b""
    hex_data = pa.py_buffer(bytes(raw).hex().encode("ascii"))
    hex_offsets = pa.py_buffer(((offset_values - base) * 2).astype(np.int32).tobytes())
    if validity is not None and column.offset:
        validity = pa.array(column.is_valid()).buffers()[1]
    return pa.StringArray.from_buffers(len(column), hex_offsets, hex_data, validity, column.null_count)


def create_table(conn: psycopg.Connection[Any], schema: str, table: str, columns: list[tuple[str, str]],
                 geometry_type: str | None, srid: int) -> None:
    parts = [sql.SQL("{} serial PRIMARY KEY").format(sql.Identifier(FID_COLUMN))]
    parts += [sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in columns]
    if geometry_type is not None:
        parts.append(sql.SQL("{} geometry({}, {})").format(
            sql.Identifier(GEOMETRY_COLUMN), sql.SQL(geometry_type), sql.Literal(srid)))
    conn.execute(sql.SQL("CREATE TABLE {}.{} ({})").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(parts)))


def copy_batches(conn: psycopg.Connection[Any], schema: str, table: str, names: list[str],
                 batches: Iterable[pa.RecordBatch], on_batch: Callable[[int], None] | None = None) -> int:
    """COPY every batch (its columns in `names` order, geometry already hex) into the table."""
    statement = sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT csv, HEADER true)").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names)))
    total = 0
    header = True  # COPY skips one header line for the whole stream
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for batch in batches:
            sink = pa.BufferOutputStream()
            pacsv.write_csv(batch, sink, pacsv.WriteOptions(include_header=header))
            header = False
            copy.write(sink.getvalue())
            total += batch.num_rows
            if on_batch is not None:
                on_batch(total)
    return total
