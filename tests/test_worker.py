"""`locaria-batch worker` as a long-running process: LISTEN, dispatch, graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from psycopg.types.json import Jsonb

from locaria_batch.dispatch.local import LocalRunner
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


def _start_worker_with_a_running_job(conn, add_docker, runs, sleep: float = 4
                                     ) -> tuple[subprocess.Popen[str], int, int]:
    add_docker("sleeper", trigger_statuses=["SLEEP"], success_status="SLEPT", handler="tests.jobs_for_tests:sleeper",
               max_attempts=2, retry_base_seconds=0.05)
    worker = subprocess.Popen([sys.executable, "-m", "locaria_batch.cli.main", "worker", "--poll", "30"],
                              env=os.environ.copy(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    file_id = conn.execute("SELECT (locaria_core.add_file(%s)->>'id')::bigint AS id", [Jsonb(
        {"status": "SLEEP", "file_attributes": {"sleep": sleep}})]).fetchone()["id"]
    deadline = time.monotonic() + 30
    while not runs():
        assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    return worker, file_id, runs()[0]["pid"]


def _alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")
    except FileNotFoundError:
        return False


def test_sigterm_returns_at_once_and_the_next_worker_adopts_the_running_job(
        conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    worker, file_id, pid = _start_worker_with_a_running_job(conn, add_docker, runs)
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=10)
    assert time.monotonic() - signalled < 3, "the worker waited for its job"
    assert worker.returncode == 0, output
    assert "adopted by the next worker" in output
    assert _alive(pid), "the running job must carry on"
    job = conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s", [file_id]).fetchone()
    assert job["state"] == "running" and job["lease_expires"] <= datetime.now(UTC)  # handed over, not waited out
    successor = dispatchers(LocalRunner(locaria_env / "logs"), db_url=db_url, job_db_url=db_url)
    deadline = time.monotonic() + 30
    while conn.execute("SELECT state FROM locaria_core.jobs WHERE file_id = %s", [file_id]).fetchone()["state"] \
            != "succeeded":
        assert time.monotonic() < deadline
        successor.run_once()
        time.sleep(0.05)
    job = conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s", [file_id]).fetchone()
    assert job["lease_owner"] == successor.owner and job["attempt"] == 1 and len(runs()) == 1


def test_a_second_signal_stops_the_running_jobs(conn, db_url, add_docker, runs) -> None:
    worker, file_id, pid = _start_worker_with_a_running_job(conn, add_docker, runs)
    worker.send_signal(signal.SIGSTOP)  # both signals are pending when it wakes, as from a quick double Ctrl-C
    worker.send_signal(signal.SIGINT)
    worker.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    worker.send_signal(signal.SIGCONT)
    output, _ = worker.communicate(timeout=15)
    assert time.monotonic() - signalled < 6
    assert worker.returncode == 0, output
    assert "stopping the running jobs too" in output
    assert not _alive(pid)
    job = conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s", [file_id]).fetchone()
    assert job["state"] == "queued" and "stopped with its worker" in job["error"]  # retried by the next worker


def test_a_second_signal_a_moment_later_still_stops_the_running_jobs(conn, db_url, add_docker, runs) -> None:
    """A person's second Ctrl-C comes after the first has been acted on: the worker waits a moment for it."""
    worker, file_id, pid = _start_worker_with_a_running_job(conn, add_docker, runs)
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.4)
    worker.send_signal(signal.SIGINT)
    output, _ = worker.communicate(timeout=15)
    assert worker.returncode == 0 and "stopping the running jobs too" in output, output
    assert not _alive(pid)
    job = conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s", [file_id]).fetchone()
    assert job["state"] == "queued" and "stopped with its worker" in job["error"]


def test_a_killed_workers_job_is_adopted_long_before_its_lease_ends(
        conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    """SIGKILL: no hand-over, but the worker's session (and its lock) died with it; another worker adopts
    the job once the dead one has missed its beats, not after the whole 30 s lease."""
    worker, file_id, pid = _start_worker_with_a_running_job(conn, add_docker, runs, sleep=28)
    worker.kill()
    worker.communicate(timeout=10)
    killed = time.monotonic()
    successor = dispatchers(LocalRunner(locaria_env / "logs"), db_url=db_url)
    while not conn.execute("SELECT 1 FROM locaria_core.job_events e JOIN locaria_core.jobs j ON j.id = e.job_id "
                           "WHERE j.file_id = %s AND e.event = 'adopted'", [file_id]).fetchone():
        assert time.monotonic() - killed < 22, "not adopted before the lease would have run out"
        successor.run_once()
        time.sleep(0.2)
    assert _alive(pid), "adoption takes over the running process; it does not start another"
    job = conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s", [file_id]).fetchone()
    assert job["lease_owner"] == successor.owner and job["attempt"] == 1 and len(runs()) == 1
