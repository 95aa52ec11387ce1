"""The dispatcher against faults: hung jobs, killed jobs' leftovers, PostgreSQL restarts and cut
connections, for an idle and a busy worker and for a client waiting on a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from locaria_batch.db import connect
from locaria_batch.dispatch.dispatcher import Dispatcher
from locaria_batch.dispatch.local import LocalRunner
from locaria_batch.dispatch.store import JobStore
from locaria_batch.dispatch.wait import wait_for_file
from tests.conftest import restart_postgres, terminate_backends
from tests.test_dispatch import add, file_row, job_row, pump

REPO = Path(__file__).resolve().parent.parent


def gone(pid: int) -> bool:
    """The process has ended and been reaped (a zombie still answers kill 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


def fresh(url: str) -> Any:
    return connect(url, autocommit=True)


@pytest.mark.parametrize("fault", ["SIGSTOP", "GIL"])
def test_a_hung_job_is_killed_and_retried(fault, conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    handler = "tests.jobs_for_tests:sleeper" if fault == "SIGSTOP" else "tests.jobs_for_tests:hold_the_gil"
    add_docker("hanger", trigger_statuses=["HANG"], running_status="HANGING", handler=handler,
               heartbeat_timeout=2, max_attempts=2, retry_base_seconds=0.05)
    file_id = add(conn, "HANG", sleep=60)
    dispatcher = dispatchers(LocalRunner(locaria_env / "logs", stop_grace=30), db_url=db_url, job_db_url=db_url)
    pump(dispatcher, lambda: len(runs()) == 1)
    first = runs()[0]["pid"]
    if fault == "SIGSTOP":
        os.kill(first, signal.SIGSTOP)
    started = time.monotonic()
    pump(dispatcher, lambda: len(runs()) == 2, timeout=30)  # the second attempt runs
    assert time.monotonic() - started < 10  # 2 s without a heartbeat, not the stop grace of 30 s
    pump(dispatcher, lambda: gone(first), timeout=5)
    messages = [entry.get("message", "") for entry in file_row(conn, file_id)["attributes"]["log_messages"]]
    assert any("attempt 1 of 2 failed: no heartbeat for 2 s" in message for message in messages), messages
    assert job_row(conn, file_id)["attempt"] == 2


def test_silence_while_the_database_was_away_is_not_held_against_a_job(conn, db_url, add_docker, runs,
                                                                      locaria_env) -> None:
    """A job whose heartbeat comes back after its dispatcher does (here: held with SIGSTOP through the
    outage and a pass after it) is still the same attempt: only silence the database could have heard
    counts against its heartbeat timeout, so a restart never turns a healthy job into a retry."""
    add_docker("sleeper", trigger_statuses=["SLEEP"], success_status="SLEPT", handler="tests.jobs_for_tests:sleeper",
               heartbeat_timeout=5)
    passes: list[float] = []
    dispatcher = Dispatcher(LocalRunner(locaria_env / "logs"), db_url=db_url, job_db_url=db_url, lease_seconds=30,
                            on_pass=lambda report: passes.append(time.monotonic()))
    stop = threading.Event()
    serving = threading.Thread(target=dispatcher.serve, args=(stop,), kwargs={"poll": 30})
    serving.start()
    try:
        file_id = add(conn, "SLEEP", sleep=14)
        wait_for(lambda: len(runs()) == 1, 20, "the job did not start")
        time.sleep(1)  # it has beaten
        pid = runs()[0]["pid"]
        os.kill(pid, signal.SIGSTOP)
        restart_postgres(db_url, down_seconds=7)  # longer than its heartbeat timeout
        back = time.monotonic()
        wait_for(lambda: any(at > back for at in passes), 30, "the dispatcher did not come back")
        time.sleep(0.5)  # the dispatcher's full pass after the outage has judged it
        os.kill(pid, signal.SIGCONT)
        wait_for(lambda: file_status(db_url, file_id) == "SLEPT", 30, "the job did not finish")
        with fresh(db_url) as after:
            assert job_row(after, file_id)["attempt"] == 1
        assert len(runs()) == 1
    finally:
        stop.set()
        dispatcher.wake()
        serving.join(timeout=10)
    assert not serving.is_alive()


def test_a_killed_attempts_work_directory_goes_with_it(conn, db_url, add_docker, runs, locaria_env,
                                                       dispatchers) -> None:
    add_docker("unpacker", trigger_statuses=["UNPACK"], handler="tests.jobs_for_tests:unpack_then_sleep",
               max_attempts=1)
    file_id = add(conn, "UNPACK", sleep=60)
    dispatcher = dispatchers(LocalRunner(locaria_env / "logs"), db_url=db_url, job_db_url=db_url)
    pump(dispatcher, lambda: len(runs()) == 1)
    job = job_row(conn, file_id)
    work = Path(job["handle"]["work_dir"])
    assert work.parent == locaria_env / "work"
    assert (work / "pid").read_text().split()[0] == str(runs()[0]["pid"])
    [unpacked] = [path for path in work.iterdir() if path.name.startswith("locaria-test-unpack-")]
    assert (unpacked / "data.bin").stat().st_size == 1024  # tempfile pointed into the attempt's directory
    os.kill(runs()[0]["pid"], signal.SIGKILL)
    pump(dispatcher, lambda: job_row(conn, file_id)["state"] == "failed")
    pump(dispatcher, lambda: not work.exists(), timeout=5)
    assert list((locaria_env / "work").iterdir()) == []
    assert [path.name for path in (locaria_env / "logs").iterdir() if path.suffix != ".log"] == []


def test_finished_and_adopted_attempts_leave_no_work_directory(conn, db_url, add_docker, runs, locaria_env,
                                                                dispatchers) -> None:
    add_docker("sleeper", trigger_statuses=["SLEEP"], success_status="SLEPT", handler="tests.jobs_for_tests:sleeper")
    first_file = add(conn, "SLEEP", sleep=0)
    adopted_file = add(conn, "SLEEP", sleep=1.5)
    first = dispatchers(LocalRunner(locaria_env / "logs"), db_url=db_url, job_db_url=db_url)
    pump(first, lambda: len(runs()) == 2 and job_row(conn, first_file)["state"] == "succeeded")
    conn.execute("UPDATE locaria_core.jobs SET lease_expires = now() - interval '1 second' WHERE state = 'running'")
    second = dispatchers(LocalRunner(locaria_env / "logs"), db_url=db_url, job_db_url=db_url)
    pump(second, lambda: job_row(conn, adopted_file)["state"] == "succeeded")
    pump(second, lambda: not any((locaria_env / "work").iterdir()), timeout=5)
    assert file_row(conn, adopted_file)["status"] == "SLEPT"


def start_worker(*options: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "locaria_batch.cli.main", "worker", *options],
                            env=os.environ.copy(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_attached(conn: Any, worker: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not JobStore(conn).worker_attached():
        assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
        assert time.monotonic() < deadline
        time.sleep(0.1)


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception:  # the database may still be coming back
            pass
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def file_status(url: str, file_id: int) -> str:
    with fresh(url) as c:
        return str(file_row(c, file_id)["status"])


@pytest.mark.parametrize("fault", ["restart", "terminate"])
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_the_worker_outlives_its_database(fault, busy, conn, db_url, add_docker, runs) -> None:
    add_docker("sleeper", trigger_statuses=["SLEEP"], success_status="SLEPT", handler="tests.jobs_for_tests:sleeper")
    worker = start_worker("--poll", "30", "--lease-seconds", "6")
    try:
        wait_attached(conn, worker)
        running = add(conn, "SLEEP", sleep=4) if busy else None
        if busy:
            wait_for(lambda: len(runs()) == 1, 20, "the job did not start")
        if fault == "restart":
            restart_postgres(db_url)
        else:
            assert terminate_backends(db_url) >= (3 if busy else 2)  # claims, LISTEN (and the job's)
        time.sleep(1)
        assert worker.poll() is None, "the worker exited on a connection error"
        with fresh(db_url) as after:
            later = add(after, "SLEEP", sleep=0)  # notified after the reconnection: LISTEN is back
        wait_for(lambda: file_status(db_url, later) == "SLEPT", 20, "no job ran after the outage")
        if running is not None:
            wait_for(lambda: file_status(db_url, running) == "SLEPT", 30, "the running job did not finish")
            with fresh(db_url) as after:
                assert job_row(after, running)["attempt"] == 1  # it rode the outage out: no retry
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    assert "database unreachable" in output and "reachable again" in output, output


def test_waiting_for_a_file_outlives_a_postgres_restart(conn, db_url, add_docker, runs, locaria_env) -> None:
    add_docker("sleeper", trigger_statuses=["SLEEP"], success_status="SLEPT", handler="tests.jobs_for_tests:sleeper")
    file_id = add(conn, "SLEEP", sleep=3)
    result: dict[str, Any] = {}

    def wait() -> None:
        try:
            result["row"] = wait_for_file(file_id, timeout=90)
        except BaseException as exc:  # reported below
            result["error"] = exc

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_for(lambda: len(runs()) == 1, 20, "the job did not start")
    restart_postgres(db_url)
    waiter.join(timeout=90)
    assert "error" not in result, result
    assert result["row"]["status"] == "SLEPT"
    with fresh(db_url) as after:
        assert job_row(after, file_id)["attempt"] == 1


def test_a_dispatcher_loop_keeps_serving_after_its_connections_are_cut(conn, db_url, add_docker, runs,
                                                                      locaria_env) -> None:
    add_docker("sleeper", trigger_statuses=["SLEEP"], success_status="SLEPT", handler="tests.jobs_for_tests:sleeper")
    dispatcher = Dispatcher(LocalRunner(locaria_env / "logs"), db_url=db_url, job_db_url=db_url, lease_seconds=3)
    stop = threading.Event()
    serving = threading.Thread(target=dispatcher.serve, args=(stop,), kwargs={"poll": 30})
    serving.start()
    try:
        wait_for(lambda: JobStore(conn).worker_attached(), 10, "the dispatcher did not attach")
        for _ in range(3):
            terminate_backends(db_url, "locaria-batch dispatcher")
            time.sleep(0.3)
        file_id = add(conn, "SLEEP", sleep=0)
        wait_for(lambda: file_status(db_url, file_id) == "SLEPT", 20, "no job ran after the cuts")
    finally:
        stop.set()
        dispatcher.wake()
        serving.join(timeout=10)
    assert not serving.is_alive()


def test_an_upload_whose_completion_was_lost_is_completed_by_the_dispatcher(
        conn, db_url, locaria_env, dispatchers, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client stored the object, then died (or lost the database) before completing the upload:
    the dispatcher completes it and the file loads; an upload never sent stays UPLOADING."""
    from locaria_batch.files import api, uploads
    from locaria_batch.storage import incoming_key, open_storage

    monkeypatch.setattr(uploads, "STALE_UPLOAD_SECONDS", 0)
    storage = open_storage()
    stored = int(api.add_file(conn, api.upload_attributes("parks.geojson", {}), status="UPLOADING")["id"])
    storage.put(incoming_key(stored, "geojson"), REPO / "samples" / "parks.geojson")
    never_sent = int(api.add_file(conn, api.upload_attributes("roads.csv", {}), status="UPLOADING")["id"])
    dispatcher = dispatchers(LocalRunner(locaria_env / "logs"), db_url=db_url)
    pump(dispatcher, lambda: file_row(conn, stored)["status"] == "FARGATE_PROCESSED")
    assert file_row(conn, stored)["attributes"]["record_count"] == 20
    assert file_row(conn, never_sent)["status"] == "UPLOADING"


def test_what_a_worker_retries_and_what_it_reports(conn, db_url) -> None:
    """A lost connection and a moment's contention are retried (the pass again); a faulty statement is not."""
    from locaria_batch.db.retry import worth_retrying

    def error_of(statement: str) -> psycopg.Error:
        with connect(db_url, autocommit=True) as other:
            try:
                other.execute(statement)
            except psycopg.Error as exc:
                return exc
        raise AssertionError(f"{statement} did not fail")

    assert worth_retrying(error_of("SET statement_timeout = 10; SELECT pg_sleep(1)"))  # 57014
    assert worth_retrying(error_of("SELECT pg_terminate_backend(pg_backend_pid())"))  # 57P01
    assert not worth_retrying(error_of("SELECT * FROM locaria_core.no_such_table"))
    assert not worth_retrying(error_of("SELECT 1/0"))
