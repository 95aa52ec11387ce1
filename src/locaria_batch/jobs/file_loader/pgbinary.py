"""Arrow columns as PostgreSQL's binary COPY format, built with Arrow compute and numpy.

The server then reads numbers as 8 bytes and geometry as the WKB it came as: no number or hex
parsing on the server, which is where a COPY spends its time.  Each field is `int32 length +
payload` (length -1 for NULL), each row `int16 field count + fields`; Arrow joins those per row
and the data buffer of the result is the COPY stream.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
NULL_FIELD = pa.scalar(b"\xff\xff\xff\xff", pa.binary())
PG_EPOCH_DAYS = 10_957  # 2000-01-01 minus 1970-01-01
PG_EPOCH_MICROS = PG_EPOCH_DAYS * 86_400 * 1_000_000

ARROW_TYPE = {
    "integer": pa.int32(), "bigint": pa.int64(), "double precision": pa.float64(), "boolean": pa.bool_(),
    "date": pa.date32(), "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", tz="UTC"),
    "time": pa.time64("us"), "text": pa.string(), "jsonb": pa.string(), "geometry": pa.binary(),
}
FIXED = {"integer": ">i4", "bigint": ">i8", "double precision": ">f8", "boolean": "u1", "date": ">i4",
         "timestamp": ">i8", "timestamptz": ">i8", "time": ">i8"}


def _binary_from_fixed(data: bytes, width: int, n: int) -> pa.Array:
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * width).tobytes())
    return pa.Array.from_buffers(pa.binary(), n, [None, offsets, pa.py_buffer(data)])


def _fixed_field(column: pa.Array, pg_type: str) -> pa.Array:
    n = len(column)
    kind = ARROW_TYPE[pg_type]
    if column.type != kind:
        column = pc.cast(column, kind)
    if pg_type in ("date", "timestamp", "timestamptz", "time"):
        storage = pa.int32() if pg_type == "date" else pa.int64()
        column = column.view(storage) if column.offset == 0 else pc.cast(column, storage)
        shift = {"date": PG_EPOCH_DAYS, "time": 0}.get(pg_type, PG_EPOCH_MICROS)
        values = np.asarray(column.fill_null(0)) - shift
    else:
        values = np.asarray(column.fill_null(False if pg_type == "boolean" else 0))
    dtype = np.dtype([("length", ">i4"), ("value", FIXED[pg_type])])
    records = np.empty(n, dtype=dtype)
    records["length"] = dtype["value"].itemsize
    records["value"] = values
    fields = _binary_from_fixed(records.tobytes(), dtype.itemsize, n)
    return fields if column.null_count == 0 else pc.if_else(column.is_valid(), fields, NULL_FIELD)


def _variable_field(column: pa.Array, pg_type: str) -> pa.Array:
    if not (pat.is_binary(column.type)):
        column = pc.cast(column, pa.string()).view(pa.binary()) if not pat.is_string(column.type) \
            else column.view(pa.binary())
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset: column.offset + len(column) + 1]
    lengths = np.diff(offsets).astype(">i4")
    if pg_type == "jsonb":
        lengths += 1  # jsonb's binary form: a version byte, then the text
    prefix = _binary_from_fixed(lengths.tobytes(), 4, len(column))
    parts = [prefix, pa.scalar(b"\x01", pa.binary()), column] if pg_type == "jsonb" else [prefix, column]
    fields = pc.binary_join_element_wise(*parts, b"")
    return fields if column.null_count == 0 else pc.if_else(column.is_valid(), fields, NULL_FIELD)


def encode(columns: list[pa.Array], pg_types: list[str]) -> bytes:
    """One COPY stream (header, rows, trailer) for columns already of the Arrow type of their PostgreSQL type."""
    if not columns or len(columns[0]) == 0:
        return HEADER + TRAILER
    fields = [_fixed_field(c, t) if t in FIXED else _variable_field(c, t) for c, t in
              zip(columns, pg_types, strict=True)]
    count = pa.scalar(len(columns).to_bytes(2, "big"), pa.binary())
    rows = pc.binary_join_element_wise(count, *fields, b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)[rows.offset: rows.offset + len(rows) + 1]
    data = rows.buffers()[2]
    return b"".join((HEADER, memoryview(data)[int(offsets[0]): int(offsets[-1])], TRAILER))  # one copy
