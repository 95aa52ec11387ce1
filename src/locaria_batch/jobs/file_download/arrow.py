"""Rows out of PostgreSQL as Arrow record batches.  ADBC's PostgreSQL driver reads binary COPY
and decodes it in C++ straight into Arrow arrays (geometry as raw WKB), so no Python code touches
a row and memory stays flat.  It reads on a second connection that imports the export's snapshot,
so its rows are exactly the ones the counts saw."""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.conninfo import make_conninfo

from locaria_batch.db import scalar
from locaria_batch.jobs.file_download.copyout import SESSION_SETTINGS, Progress
from locaria_batch.jobs.file_download.selection import Column, Layer, Selection

GEOMETRY = "geometry"  # the geometry's name in Arrow batches
BATCH_BYTES = 8 << 20  # per record batch: large enough to amortise calls into GDAL, small enough for memory
ARROW_TYPES = {
    "integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_(), "text": pa.string(), "json": pa.string(),
    "date": pa.date32(), "datetime": pa.timestamp("us"), "timestamp": pa.timestamp("us", tz="UTC"),
}
ARROW_CASTS = {"integer": "::bigint", "number": "::float8", "json": "::text"}
# The dates every reader of these formats takes (Python's, hence pyarrow's to_pylist and GDAL's fields):
# years 1 to 9999.  PostgreSQL's reach further (infinity, BC, year 294276), which would arrive as garbage.
DATE_RANGES = {"date": "date", "datetime": "timestamp", "timestamp": "timestamptz"}  # kind: PostgreSQL type
FIRST_DATE, END_DATE = "0001-01-01", "10000-01-01"
# what the reading connection takes from psycopg's: where and who, and how securely (ADBC bundles
# a libpq of its own, which may not know every option psycopg's reports)
READER_PARAMETERS = {"host", "hostaddr", "port", "dbname", "user", "passfile", "service", "connect_timeout",
                     "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword", "gssencmode", "options"}


def in_date_range(column: Column) -> sql.Composable:
    """True when the column's date or timestamp lies in years 1 to 9999 (NULL when it is NULL)."""
    kind = sql.SQL(DATE_RANGES[column.kind])
    return sql.SQL("({v} >= {first}::{k} AND {v} < {end}::{k})").format(
        v=column.expression, first=sql.Literal(FIRST_DATE), end=sql.Literal(END_DATE), k=kind)


def arrow_columns(columns: list[Column]) -> list[sql.Composable]:
    """The columns as ADBC decodes them; dates beyond years 1 to 9999 become NULL (counted by out_of_range)."""
    return [sql.SQL("CASE WHEN {} THEN {} END").format(in_date_range(c), c.expression) if c.kind in DATE_RANGES
            else sql.SQL("{}{}").format(c.expression, sql.SQL(ARROW_CASTS.get(c.kind, ""))) for c in columns]


@dataclass(frozen=True)
class Tally:
    """A condition counted over the rows as they are read; `note`, its "{count}" replaced by how many rows
    met it, goes into the job's log when some did."""
    note: str
    condition: sql.Composable


def out_of_range(columns: list[Column]) -> list[Tally]:
    """For each date or timestamp column, the values arrow_columns writes as NULL."""
    return [Tally(f"column {c.name!r}: {{count}} date(s) outside years 1 to 9999 (infinity, BC or later) "
                  "written as empty (NULL), which this format cannot hold; CSV and GeoJSON keep them as text",
                  sql.SQL("NOT {}").format(in_date_range(c))) for c in columns if c.kind in DATE_RANGES]


def arrow_names(selection: Selection, format_name: str, names: list[str] | None = None, *,
                reserved: Iterable[str] = (), fold_case: bool = False) -> list[str]:
    """The columns' names in a format's file: distinct, and none the Arrow geometry field's (nor `reserved`)."""
    geometry = (GEOMETRY,) if selection.geometry is not None else ()
    return selection.output_names(format_name, names, reserved=(*geometry, *reserved), fold_case=fold_case)


def arrow_schema(columns: list[Column], names: list[str] | None = None, with_geometry: bool = True) -> pa.Schema:
    names = names or [c.name for c in columns]
    fields = [pa.field(n, ARROW_TYPES[c.kind]) for n, c in zip(names, columns, strict=True)]
    if with_geometry:
        fields.append(pa.field(GEOMETRY, pa.binary()))
    return pa.schema(fields)


class ArrowRows:
    """An ADBC connection inside the export's snapshot, for one writer's queries."""

    def __init__(self, conn: psycopg.Connection[Any], reader: adbc_driver_manager.AdbcConnection) -> None:
        self.conn = conn  # binds parameters client-side, as psycopg does for COPY
        self.reader = reader
        self.counts: Counter[str] = Counter()  # Tally.note -> rows that met its condition

    def notes(self) -> list[str]:
        return [note.replace("{count}", f"{count:,}") for note, count in self.counts.items() if count]

    def batches(self, selection: Selection, layer: Layer | None, schema: pa.Schema, progress: Progress,
                done: int = 0, condition: sql.Composable | None = None, extra_params: dict[str, Any] | None = None,
                tallies: Iterable[Tally] = ()) -> Generator[pa.RecordBatch, None, None]:
        """The selection's rows (or one layer's) as record batches of `schema`, whose last field is
        the WKB geometry when the selection has one; `tallies` (and dates out of range) are counted."""
        with_geometry = bool(schema.names) and schema.names[-1] == GEOMETRY
        select = arrow_columns(selection.columns)
        if with_geometry:
            select.append(sql.SQL("ST_AsBinary({})").format(selection.geometry))
        width = len(select)
        flags = [*out_of_range(selection.columns), *tallies]
        select.extend(sql.SQL("COALESCE({}, false)").format(flag.condition) for flag in flags)
        query, params = selection.query(sql.SQL(", ").join(select or [sql.SQL("NULL")]), layer, condition=condition)
        params.update(extra_params or {})
        options = {"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES)}
        with _statement(self.reader, psycopg.ClientCursor(self.conn).mogrify(query, params), options) as statement:
            stream, _ = statement.execute_query()
            for batch in pa.RecordBatchReader.from_stream(stream):
                done += batch.num_rows
                progress(done)
                if not select:  # no columns at all: rows of nothing
                    yield pa.RecordBatch.from_pylist([{}] * batch.num_rows, schema=schema)
                    continue
                for tally, flag in zip(flags, batch.columns[width:], strict=True):
                    self.counts[tally.note] += pc.sum(flag).as_py() or 0
                arrays = [a if a.type == f.type else a.cast(f.type)
                          for a, f in zip(batch.columns[:width], schema, strict=True)]
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)


@contextmanager
def _statement(connection: adbc_driver_manager.AdbcConnection, query: str,
               options: dict[str, str] | None = None) -> Iterator[adbc_driver_manager.AdbcStatement]:
    statement = adbc_driver_manager.AdbcStatement(connection)
    try:
        statement.set_options(**(options or {}))
        statement.set_sql_query(query)
        yield statement
    finally:
        statement.close()


@contextmanager
def arrow_rows(conn: psycopg.Connection[Any], selection: Selection) -> Iterator[ArrowRows]:
    """Open a reading connection that sees what `conn`'s transaction (REPEATABLE READ) sees; what the rows
    lost on the way (dates beyond years 1-9999) goes into the selection's notes once they are written."""
    snapshot = scalar(conn, "SELECT pg_export_snapshot()")
    parameters = {k: v for k, v in conn.info.get_parameters().items() if k in READER_PARAMETERS}
    if conn.info.password:
        parameters["password"] = conn.info.password
    parameters["application_name"] = f"{conn.info.parameter_status('application_name') or 'locaria-batch'} rows"
    import_snapshot = sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot))
    with adbc_driver_postgresql.connect(make_conninfo("", **parameters)) as database, \
            adbc_driver_manager.AdbcConnection(database) as reader:
        reader.set_autocommit(False)
        # the snapshot first (nothing may run before it in the transaction), then the export's session settings
        for query in ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", import_snapshot.as_string(conn),
                      *SESSION_SETTINGS):
            with _statement(reader, query) as statement:
                statement.execute_update()
        rows = ArrowRows(conn, reader)
        try:
            yield rows
        finally:
            reader.rollback()
        selection.notes.extend(note for note in rows.notes() if note not in selection.notes)
