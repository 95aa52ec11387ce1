"""The console's two connection pools: reads on connections that are read-only for good
(`default_transaction_read_only` set on each as it is made), writes on a small pool of their own
that only ever calls the file API and the job store.

The server may restart while the console idles: every connection the pools hold then died with
it.  A connection is tried before it is lent; a dead one is dropped on the spot and the next one
taken at once (psycopg_pool's own check would sleep a growing back-off between dead connections,
long enough for a first request after a restart to time out), and the pools give up reconnecting
in the background quickly, so that a request made after the server is back connects afresh
instead of waiting for a retry scheduled during the outage."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

Conn = psycopg.Connection[dict[str, Any]]
WAIT_SECONDS = 5  # for a connection: a page waits no longer than this before saying the database is away
RECONNECT_SECONDS = 1.0  # how long a pool retries in the background before waiting for the next request


def _read_only(conn: Conn) -> None:
    conn.execute("SET default_transaction_read_only = on")
    conn.execute("SET statement_timeout = '15s'")
    conn.execute("SET DateStyle = 'ISO, YMD'")


def _writer(conn: Conn) -> None:
    conn.execute("SET DateStyle = 'ISO, YMD'")


def _alive(conn: Conn) -> bool:
    try:
        conn.execute("")
    except psycopg.OperationalError:
        return False
    return True


class Pools:
    def __init__(self, db_url: str, *, read_url: str | None = None, readers: int = 4, writers: int = 2) -> None:
        self.reads = self._pool(read_url or db_url, "console-read", "locaria-batch console", 1, readers, _read_only)
        self.writes = self._pool(db_url, "console-write", "locaria-batch console actions", 0, writers, _writer)

    @staticmethod
    def _pool(url: str, name: str, application: str, min_size: int, max_size: int,
              configure: Callable[[Conn], None]) -> ConnectionPool[Conn]:
        return ConnectionPool(url, min_size=min_size, max_size=max_size, name=name, open=False,
                              kwargs={"autocommit": True, "row_factory": dict_row, "application_name": application},
                              configure=configure, reconnect_timeout=RECONNECT_SECONDS)

    def open(self) -> None:
        self.reads.open(wait=True, timeout=15)
        self.writes.open()

    def close(self) -> None:
        self.reads.close()
        self.writes.close()

    @contextmanager
    def read(self) -> Iterator[Conn]:
        with _lend(self.reads) as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Conn]:
        with _lend(self.writes) as conn:
            yield conn


@contextmanager
def _lend(pool: ConnectionPool[Conn]) -> Iterator[Conn]:
    """A live connection of `pool`: dead ones are closed (the pool then connects a new one at once)
    until a live or a new one comes, within WAIT_SECONDS."""
    deadline = monotonic() + WAIT_SECONDS
    for _ in range(pool.max_size + 1):  # every idle connection dead, then a new one
        conn = pool.getconn(timeout=max(deadline - monotonic(), 0.001))
        if _alive(conn):
            break
        conn.close()
        pool.putconn(conn)
    else:
        raise PoolTimeout(f"no live connection in pool {pool.name!r}")
    try:
        with conn:  # as pool.connection() does: a transaction left open ends with the block
            yield conn
    finally:
        pool.putconn(conn)
