"""The console's two connection pools: reads on connections that are read-only for good
(`default_transaction_read_only` set on each as it is made), writes on a small pool of their own
that only ever calls the file API and the job store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

Conn = psycopg.Connection[dict[str, Any]]
WAIT_SECONDS = 5  # for a connection: a page waits no longer than this before saying the database is away


def _read_only(conn: Conn) -> None:
    conn.execute("SET default_transaction_read_only = on")
    conn.execute("SET statement_timeout = '15s'")
    conn.execute("SET DateStyle = 'ISO, YMD'")


def _writer(conn: Conn) -> None:
    conn.execute("SET DateStyle = 'ISO, YMD'")


class Pools:
    def __init__(self, db_url: str, *, read_url: str | None = None, readers: int = 4, writers: int = 2) -> None:
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        self.reads: ConnectionPool[Conn] = ConnectionPool(
            read_url or db_url, min_size=1, max_size=readers,
            kwargs={**kwargs, "application_name": "locaria-batch console"},
            configure=_read_only, check=ConnectionPool.check_connection, open=False, name="console-read")
        self.writes: ConnectionPool[Conn] = ConnectionPool(
            db_url, min_size=0, max_size=writers,
            kwargs={**kwargs, "application_name": "locaria-batch console actions"},
            configure=_writer, check=ConnectionPool.check_connection, open=False, name="console-write")

    def open(self) -> None:
        self.reads.open(wait=True, timeout=15)
        self.writes.open()

    def close(self) -> None:
        self.reads.close()
        self.writes.close()

    @contextmanager
    def read(self) -> Iterator[Conn]:
        with self.reads.connection(timeout=WAIT_SECONDS) as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Conn]:
        with self.writes.connection(timeout=WAIT_SECONDS) as conn:
            yield conn
