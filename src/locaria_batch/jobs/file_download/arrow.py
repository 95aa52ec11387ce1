"""Rows out of PostgreSQL as Arrow record batches.  ADBC's PostgreSQL driver reads binary COPY
and decodes it in C++ straight into Arrow arrays (geometry as raw WKB), so no Python code touches
a row and memory stays flat.  It reads on a second connection that imports the export's snapshot,
so its rows are exactly the ones the counts saw."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql
import psycopg
import pyarrow as pa
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
# what the reading connection takes from psycopg's: where and who, and how securely (ADBC bundles
# a libpq of its own, which may not know every option psycopg's reports)
READER_PARAMETERS = {"host", "hostaddr", "port", "dbname", "user", "passfile", "service", "connect_timeout",
                     "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword", "gssencmode", "options"}


def arrow_columns(columns: list[Column]) -> list[sql.Composable]:
    return [sql.SQL("{}{}").format(c.expression, sql.SQL(ARROW_CASTS.get(c.kind, ""))) for c in columns]


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

    def batches(self, selection: Selection, layer: Layer | None, schema: pa.Schema, progress: Progress,
                done: int = 0, condition: sql.Composable | None = None,
                extra_params: dict[str, Any] | None = None) -> Generator[pa.RecordBatch, None, None]:
        """The selection's rows (or one layer's) as record batches of `schema`, whose last field is
        the WKB geometry when the selection has one."""
        with_geometry = bool(schema.names) and schema.names[-1] == GEOMETRY
        select = arrow_columns(selection.columns)
        if with_geometry:
            select.append(sql.SQL("ST_AsBinary({})").format(selection.geometry))
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
                arrays = [a if a.type == f.type else a.cast(f.type) for a, f in zip(batch.columns, schema, strict=True)]
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
def arrow_rows(conn: psycopg.Connection[Any]) -> Iterator[ArrowRows]:
    """Open a reading connection that sees what `conn`'s transaction (REPEATABLE READ) sees."""
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
        try:
            yield ArrowRows(conn, reader)
        finally:
            reader.rollback()
