"""Waiting for a file to settle, dispatching inline while no worker is attached."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from locaria_batch.db import connect
from locaria_batch.db.retry import Backoff, connection_lost
from locaria_batch.dispatch.dispatcher import Dispatcher, make_runner
from locaria_batch.dispatch.store import FileProgress, JobStore
from locaria_batch.errors import first_line
from locaria_batch.files.api import FileNotFound

log = logging.getLogger("locaria_batch.dispatch")


def wait_for_file(file_id: int, on_update: Callable[[FileProgress], None] | None = None, *,
                  timeout: float | None = None, runner: str = "local", poll: float = 0.2) -> dict[str, Any]:
    """Block until the file has no job in flight and is past its trigger status; return its row
    (id, status, attributes).  While no
    `locaria-batch worker` is attached to the database, jobs are dispatched from here (checked on
    every poll: a worker that stops mid-wait leaves its work to us).  A database that goes away is
    waited for (reconnecting with backoff) until `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    inline: Dispatcher | None = None
    conn: psycopg.Connection[dict[str, Any]] | None = None
    backoff = Backoff(first=0.2, cap=5.0)
    try:
        while True:
            try:
                if conn is None or conn.closed:
                    conn = connect(autocommit=True, connect_timeout=10)
                    if backoff.tries:
                        log.warning("database reachable again: still waiting for file %s", file_id)
                        backoff.reset()
                store = JobStore(conn)
                if store.worker_attached():
                    if inline is not None:
                        inline.close()
                        inline = None
                else:
                    inline = inline or Dispatcher(make_runner(runner, 2), concurrency=2)
                    inline.run_once()
                progress = store.file_progress(file_id)
            except psycopg.Error as exc:
                if not connection_lost(exc):
                    raise
                if not backoff.tries:
                    log.warning("database unreachable while waiting for file %s; reconnecting: %s", file_id,
                                first_line(exc))
                if conn is not None:
                    conn.close()
                if inline is not None:
                    inline.disconnect()
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"file {file_id}: the database was still unreachable after {timeout} s"
                                       ) from exc
                backoff.sleep()
                continue
            if progress is None:
                raise FileNotFound(f"file {file_id} does not exist")
            if on_update is not None:
                on_update(progress)
            if progress.settled:
                return progress.row()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"file {file_id} is still {progress.status} after {timeout} s")
            time.sleep(poll)
    finally:
        if inline is not None:
            inline.close()
        if conn is not None:
            conn.close()
