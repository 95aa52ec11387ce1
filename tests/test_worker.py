"""`locaria-batch worker` as a long-running process: LISTEN, dispatch, graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from locaria_batch.dispatch.store import JobStore
from locaria_batch.dispatch.wait import wait_for_file
from locaria_batch.files import register_upload
from locaria_batch.storage import open_storage

REPO = Path(__file__).resolve().parent.parent


def test_worker_picks_up_new_files_and_stops_gracefully(conn, db_url: str) -> None:
    worker = subprocess.Popen([sys.executable, "-m", "locaria_batch.cli.main", "worker", "--poll", "30"],
                              env=os.environ.copy(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.monotonic() + 30
        while not JobStore(conn).worker_attached():
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        started = time.monotonic()
        file_id = register_upload(conn, open_storage(), REPO / "samples" / "parks.geojson")
        # with a worker attached, waiting dispatches nothing itself; the 30 s poll proves LISTEN woke it
        row = wait_for_file(file_id, timeout=25)
        assert row["status"] == "FARGATE_PROCESSED"
        assert time.monotonic() - started < 25
        owner = conn.execute("SELECT lease_owner FROM locaria_core.jobs WHERE file_id = %s", [file_id]).fetchone()
        assert f":{worker.pid}:" in owner["lease_owner"]  # the worker process ran it, not this test
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    assert "stopping" in output
    assert not JobStore(conn).worker_attached()  # a stopped worker no longer counts
