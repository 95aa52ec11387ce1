"""Waiting for a file to settle, dispatching inline while no worker is attached."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from locaria_batch.db import connect
from locaria_batch.dispatch.dispatcher import Dispatcher, make_runner
from locaria_batch.dispatch.store import FileProgress, JobStore
from locaria_batch.files.api import FileNotFound


def wait_for_file(file_id: int, on_update: Callable[[FileProgress], None] | None = None, *,
                  timeout: float | None = None, runner: str = "local", poll: float = 0.2) -> dict[str, Any]:
    """Block until the file has no job in flight and is past its trigger status; return its row
    (id, status, attributes).  While no
    `locaria-batch worker` is attached to the database, jobs are dispatched from here (checked on
    every poll: a worker that stops mid-wait leaves its work to us)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    inline: Dispatcher | None = None
    with connect(autocommit=True) as conn:
        store = JobStore(conn)
        try:
            while True:
                if store.worker_attached():
                    if inline is not None:
                        inline.close()
                        inline = None
                else:
                    inline = inline or Dispatcher(make_runner(runner), concurrency=2)
                    inline.run_once()
                progress = store.file_progress(file_id)
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
