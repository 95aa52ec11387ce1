"""Waiting for a file to settle, dispatching inline when no worker is running."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from locaria_batch.db import connect
from locaria_batch.dispatch.dispatcher import Dispatcher, make_runner

SETTLED_QUERY = """
SELECT f.id, f.status, f.attributes,
       EXISTS (SELECT 1 FROM locaria_core.jobs j
                WHERE j.file_id = f.id AND j.state IN ('queued', 'launching', 'running')) AS active,
       f.status = 'UPLOADING'
       OR f.status = ANY (SELECT unnest(trigger_statuses) FROM locaria_core.dockers WHERE enabled) AS waiting
  FROM locaria_core.files f WHERE f.id = %s
"""


def worker_running(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'locaria-batch worker %%' AND pid <> pg_backend_pid()) AS alive"
    ).fetchone()
    return bool(row and row["alive"])


def wait_for_file(file_id: int, on_update: Callable[[dict[str, Any]], None] | None = None, *,
                  timeout: float | None = None, runner: str = "local", poll: float = 0.2) -> dict[str, Any]:
    """Block until the file has no job in flight and is past its trigger status; return its row.
    With no `locaria-batch worker` attached to the database, jobs are dispatched from here."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with connect(autocommit=True) as conn:
        inline = None if worker_running(conn) else Dispatcher(make_runner(runner), concurrency=2)
        try:
            while True:
                if inline is not None:
                    inline.run_once()
                row = conn.execute(SETTLED_QUERY, [file_id]).fetchone()
                if row is None:
                    raise LookupError(f"file {file_id} does not exist")
                if on_update is not None:
                    on_update(row)
                if not row["active"] and not row["waiting"]:
                    return row
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"file {file_id} is still {row['status']} after {timeout} s")
                time.sleep(poll)
        finally:
            if inline is not None:
                inline.close()
