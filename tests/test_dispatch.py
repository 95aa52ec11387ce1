"""The dispatcher and the job SDK against real processes and a real database."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from locaria_batch.dispatch.dispatcher import Dispatcher, job_environment
from locaria_batch.dispatch.local import LocalRunner
from locaria_batch.dispatch.runner import LaunchRequest
from locaria_batch.dispatch.store import JobStore
from locaria_batch.files import cancel_file


def runner(home: Path) -> LocalRunner:
    return LocalRunner(home / "logs", stop_grace=2)


def add(conn: Any, status: str, **attrs: Any) -> int:
    payload = {"file_attributes": {"name": f"f-{uuid.uuid4().hex[:6]}", **attrs}, "status": status}
    return conn.execute("SELECT locaria_core.add_file(%s) AS r", [Jsonb(payload)]).fetchone()["r"]["id"]


def file_row(conn: Any, file_id: int) -> dict[str, Any]:
    return conn.execute("SELECT * FROM locaria_core.files WHERE id = %s", [file_id]).fetchone()


def job_row(conn: Any, file_id: int) -> dict[str, Any]:
    return conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s ORDER BY id DESC LIMIT 1",
                        [file_id]).fetchone()


def _maps_arrow(pid: int) -> bool:
    return "libarrow" in Path(f"/proc/{pid}/maps").read_text()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def pump(dispatcher: Dispatcher, until: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached in time"
        dispatcher.run_once()
        time.sleep(0.05)


def test_two_workers_never_run_one_job_twice(conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    add_docker("recorder", trigger_statuses=["RECORD"], success_status="RECORDED",
               handler="tests.jobs_for_tests:record", concurrency=40)
    ids = [add(conn, "RECORD") for _ in range(24)]
    workers = [dispatchers(runner(locaria_env), concurrency=6, db_url=db_url) for _ in range(2)]
    threads = [threading.Thread(target=w.drain, kwargs={"timeout": 90, "poll": 0.05}) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    executed = [r["file_id"] for r in runs()]
    assert sorted(executed) == ids  # every job ran, and only once
    owners = {r["lease_owner"] for r in conn.execute("SELECT lease_owner FROM locaria_core.jobs")}
    assert len(owners) == 2, "both workers should have taken a share"
    assert {file_row(conn, i)["status"] for i in ids} == {"RECORDED"}
    assert {r["state"] for r in conn.execute("SELECT state FROM locaria_core.jobs")} == {"succeeded"}


def test_a_killed_job_is_retried_then_failed_with_its_exit_code(
        conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    add_docker("sleeper", trigger_statuses=["SLEEP"], running_status="SLEEPING", handler="tests.jobs_for_tests:sleeper",
               max_attempts=2, retry_base_seconds=0.05)
    file_id = add(conn, "SLEEP", sleep=60)
    dispatcher = dispatchers(runner(locaria_env), db_url=db_url)
    for attempt in (1, 2):
        pump(dispatcher, lambda a=attempt: len(runs()) >= a)
        os.kill(runs()[-1]["pid"], signal.SIGKILL)
        assert file_row(conn, file_id)["status"] == "SLEEPING"
    pump(dispatcher, lambda: job_row(conn, file_id)["state"] == "failed")
    job = job_row(conn, file_id)
    assert job["attempt"] == 2 and job["exit_code"] == 137
    row = file_row(conn, file_id)
    assert row["status"] == "ERROR"
    messages = [e.get("message", "") for e in row["attributes"]["log_messages"]]
    assert any("attempt 1 of 2 failed" in m and "exit code 137" in m for m in messages)
    assert "failed after 2 attempt(s)" in messages[-1] and "exit code 137" in messages[-1]
    assert row["attributes"]["exit_code"] == 137
    events = [r["event"] for r in conn.execute(
        "SELECT event FROM locaria_core.job_events WHERE job_id = %s ORDER BY id", [job["id"]])]
    # a forked job may start before its dispatcher has recorded the launch: "launched" and "running" race
    assert [event for event in events if event != "launched"] == [
        "queued", "launching", "running", "queued", "launching", "running", "failed"]
    assert events.count("launched") == 2


def test_a_job_past_its_timeout_is_stopped(conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    add_docker("sleeper", trigger_statuses=["SLEEP"], handler="tests.jobs_for_tests:sleeper", timeout_seconds=1,
               max_attempts=1)
    file_id = add(conn, "SLEEP", sleep=60)
    dispatcher = dispatchers(runner(locaria_env), db_url=db_url)
    pump(dispatcher, lambda: job_row(conn, file_id)["state"] == "failed")
    assert "timed out after 1 s" in file_row(conn, file_id)["attributes"]["error"]
    with pytest.raises(ProcessLookupError):
        os.kill(runs()[0]["pid"], 0)


def test_cancel_stops_the_running_process(conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    add_docker("sleeper", trigger_statuses=["SLEEP"], handler="tests.jobs_for_tests:sleeper")
    file_id = add(conn, "SLEEP", sleep=60)
    dispatcher = dispatchers(runner(locaria_env), db_url=db_url)
    pump(dispatcher, lambda: len(runs()) == 1)
    pid = runs()[0]["pid"]
    assert cancel_file(conn, file_id)["cancelled_jobs"] == [job_row(conn, file_id)["id"]]
    pump(dispatcher, lambda: not job_row(conn, file_id)["stop_requested"])
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert file_row(conn, file_id)["status"] == "CANCELLED"
    assert job_row(conn, file_id)["state"] == "cancelled"


def test_a_killed_jobs_statement_stops_with_it(conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    """A job killed mid-statement (a long index build, say) must not leave its server process working on."""
    add_docker("long", trigger_statuses=["LONG"], handler="tests.jobs_for_tests:long_statement", max_attempts=1)
    add(conn, "LONG")
    dispatcher = dispatchers(runner(locaria_env), db_url=db_url)
    pump(dispatcher, lambda: len(runs()) == 1)

    def statements() -> int:
        return int(conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'active' "
                                "AND query LIKE %s", ["%'locaria long statement'%"]).fetchone()["n"])

    deadline = time.monotonic() + 10
    while statements() == 0:
        assert time.monotonic() < deadline, "the job's statement never started"
        time.sleep(0.05)
    os.kill(runs()[0]["pid"], signal.SIGKILL)
    killed = time.monotonic()
    while statements():
        assert time.monotonic() - killed < 10, "the killed job's statement ran on"
        time.sleep(0.1)


def test_a_database_session_passes_to_the_next_job_only_clean(conn, db_url, add_docker, runs, locaria_env,
                                                             dispatchers) -> None:
    """Jobs one after another share their keeper's database session: each finds none of what the one
    before left there, and a job that exits abruptly (a transaction open), or leaves a process behind,
    hands its session to nobody."""
    add_docker("probe", trigger_statuses=["PROBE"], handler="tests.jobs_for_tests:session_probe", max_attempts=1)
    dispatcher = dispatchers(runner(locaria_env), db_url=db_url)
    files = []
    for attributes in ({}, {}, {}, {"exit_code": 7}, {}, {"leave_child": True}, {}):
        files.append(add(conn, "PROBE", **attributes))
        dispatcher.drain(timeout=30)
        time.sleep(0.3)  # the keeper has reset its session and waits again
    backends = {row["file_id"]: row["pid"] for row in runs()}
    assert len(backends) == len(files)
    sessions = [backends[file_id] for file_id in files]
    for index, file_id in enumerate(files):
        if index != 3:  # (the job that exited abruptly wrote no result)
            found = file_row(conn, file_id)["attributes"]["found"]
            assert found["setting"] in ("", "None") and (found["temp_table"], found["locks"], found["prepared"],
                                                         found["listening"]) == ("False", "0", "0", "0"), found
    assert sessions[0] == sessions[1] == sessions[2] == sessions[3], f"the session was not passed on: {sessions}"
    assert sessions[3] not in sessions[4:], "the session of a job that exited abruptly was lent again"
    assert file_row(conn, files[3])["status"] == "ERROR"
    assert sessions[4] == sessions[5] != sessions[6]

    def kept() -> int:
        return int(conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = "
                                "'locaria-batch job'").fetchone()["n"])

    assert kept() >= 1  # open between jobs
    dispatcher.close()
    deadline = time.monotonic() + 5
    while kept():  # and gone with the worker
        assert time.monotonic() < deadline, "the job sessions outlived their worker"
        time.sleep(0.05)


def test_the_end_of_a_job_whose_keeper_died_is_still_heard(conn, db_url, add_docker, runs, locaria_env,
                                                            dispatchers) -> None:
    """The process that forked a job and lent it a connection is killed while the job runs, then the job
    is killed too: its end and exit code still reach the dispatcher, which retries it."""
    add_docker("sleeper", trigger_statuses=["SLEEP"], success_status="SLEPT", handler="tests.jobs_for_tests:sleeper")
    file_id = add(conn, "SLEEP", sleep=1.5)
    dispatcher = dispatchers(runner(locaria_env), db_url=db_url)
    pump(dispatcher, lambda: len(runs()) == 1)
    job_pid = runs()[0]["pid"]
    keeper = _parent(job_pid)
    assert keeper != dispatcher.runner.server.process.pid  # the job's parent is its keeper
    os.kill(keeper, signal.SIGKILL)
    time.sleep(0.2)
    os.kill(job_pid, signal.SIGKILL)
    dispatcher.drain(timeout=30)  # times out while the dispatcher waits for an end nobody reports
    assert file_row(conn, file_id)["status"] == "SLEPT"
    job = job_row(conn, file_id)
    assert (job["state"], job["attempt"]) == ("succeeded", 2)
    events = conn.execute("SELECT event, attempt, detail FROM locaria_core.job_events WHERE job_id = %s",
                          [job["id"]]).fetchall()
    assert any(event["attempt"] == 1 and "killed" in str(event["detail"]) for event in events), events


def test_only_the_keepers_that_run_a_heavy_handler_carry_its_memory(
        conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    """Forking and ending a process cost in proportion to the memory it maps: the fork server does not
    import the loader, a light job is forked without it, and a heavy handler's next launch goes to the
    keeper that has imported it already."""
    add_docker("light", trigger_statuses=["LIGHT"], handler="tests.jobs_for_tests:record")
    add_docker("heavy", trigger_statuses=["HEAVY"], handler="tests.heavy_handler:run")
    dispatcher = dispatchers(runner(locaria_env), db_url=db_url)

    def run_one(status: str) -> tuple[int, int, bool]:
        """The job's pid, its keeper's, and whether the job maps Arrow (read while it sleeps)."""
        add(conn, status, sleep=1)
        seen = len(runs())
        pump(dispatcher, lambda: len(runs()) == seen + 1)
        pid = runs()[-1]["pid"]
        found = (pid, _parent(pid), _maps_arrow(pid))
        dispatcher.drain(timeout=30)
        return found

    _, light_keeper, light_maps = run_one("LIGHT")
    assert not light_maps and not _maps_arrow(light_keeper)
    assert not _maps_arrow(dispatcher.runner.server.process.pid)
    _, heavy_keeper, heavy_maps = run_one("HEAVY")
    assert heavy_maps
    assert _maps_arrow(heavy_keeper)
    assert not _maps_arrow(dispatcher.runner.server.process.pid)
    _, again, _ = run_one("HEAVY")
    assert again == heavy_keeper, "a heavy job goes to the keeper that has its handler imported"


def test_handler_errors_become_a_plain_message(conn, db_url, add_docker, locaria_env, dispatchers) -> None:
    add_docker("refuser", trigger_statuses=["CHECK"], handler="tests.jobs_for_tests:refuse")
    add_docker("exploder", trigger_statuses=["EXPLODE"], handler="tests.jobs_for_tests:explode")
    refused = add(conn, "CHECK", name="data.txt")
    exploded = add(conn, "EXPLODE")
    dispatchers(runner(locaria_env), db_url=db_url).drain(timeout=30)
    row = file_row(conn, refused)
    assert row["status"] == "ERROR"
    assert row["attributes"]["error"] == "file data.txt is not acceptable: send a CSV instead"
    assert job_row(conn, refused)["attempt"] == 1  # a bad file is not retried
    row = file_row(conn, exploded)
    assert row["attributes"]["error"].startswith("exploder failed unexpectedly: ZeroDivisionError: division by zero")
    assert "Traceback" not in str(row["attributes"])
    log_file = Path(job_row(conn, exploded)["handle"]["log"])
    assert "Traceback" in log_file.read_text()


def test_a_second_dispatcher_adopts_a_running_job(conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    add_docker("sleeper", trigger_statuses=["SLEEP"], success_status="SLEPT", handler="tests.jobs_for_tests:sleeper")
    file_id = add(conn, "SLEEP", sleep=1.5)
    first = dispatchers(runner(locaria_env), db_url=db_url)
    pump(first, lambda: len(runs()) == 1)
    # the first dispatcher dies: its lease runs out
    conn.execute("UPDATE locaria_core.jobs SET lease_expires = now() - interval '1 second'")
    second = dispatchers(runner(locaria_env), db_url=db_url)
    pump(second, lambda: job_row(conn, file_id)["state"] == "succeeded")
    job = job_row(conn, file_id)
    assert job["lease_owner"] == second.owner and job["attempt"] == 1
    assert len(runs()) == 1
    assert file_row(conn, file_id)["status"] == "SLEPT"


def test_adoption_finds_a_process_whose_handle_was_never_recorded(
        conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    add_docker("sleeper", trigger_statuses=["SLEEP"], success_status="SLEPT", handler="tests.jobs_for_tests:sleeper")
    file_id = add(conn, "SLEEP", sleep=1)
    # a dispatcher claims and starts the process, then dies before recording the handle
    [job] = JobStore(conn).claim("dead", 1, 30, "local")
    docker = JobStore(conn).dockers({"sleeper"})["sleeper"]
    runner(locaria_env).launch(LaunchRequest(job.id, job.attempt, job.token, file_id, docker,
                                             job_environment(job, db_url)))
    conn.execute("UPDATE locaria_core.jobs SET lease_expires = now() - interval '1 second'")
    adopter = dispatchers(runner(locaria_env), db_url=db_url)
    pump(adopter, lambda: job_row(conn, file_id)["state"] == "succeeded")
    assert len(runs()) == 1, "the job must not be launched a second time"
    assert job_row(conn, file_id)["handle"]["adopted"] is True


def test_a_lost_launch_is_relaunched_without_spending_an_attempt(
        conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    add_docker("sleeper", trigger_statuses=["SLEEP"], success_status="SLEPT", handler="tests.jobs_for_tests:sleeper",
               max_attempts=1)
    file_id = add(conn, "SLEEP", sleep=0)
    conn.execute("SELECT * FROM locaria_core.claim_jobs('dead', 1, 30, 'local')")  # claimed, never launched
    conn.execute("UPDATE locaria_core.jobs SET lease_expires = now() - interval '1 second'")
    dispatchers(runner(locaria_env), db_url=db_url).drain(timeout=30)
    job = job_row(conn, file_id)
    assert job["state"] == "succeeded" and job["attempt"] == 1
    assert len(runs()) == 1


def test_a_claim_whose_answer_was_lost_is_launched_after_all(
        conn, db_url, add_docker, runs, locaria_env, dispatchers, monkeypatch) -> None:
    """The claim commits, then the connection drops before its answer arrives: the worker holds a job it
    never heard of and renews its lease.  Once the grace has passed it is queued again and runs once."""
    add_docker("sleeper", trigger_statuses=["SLEEP"], success_status="SLEPT", handler="tests.jobs_for_tests:sleeper",
               max_attempts=1)
    file_id = add(conn, "SLEEP", sleep=0)
    dispatcher = dispatchers(runner(locaria_env), db_url=db_url)
    claim = JobStore.claim_free_slots

    def claim_then_lose_the_answer(store: JobStore, *args: Any) -> Any:
        claim(store, *args)
        monkeypatch.setattr(JobStore, "claim_free_slots", claim)
        conn.execute("SELECT pg_terminate_backend(%s)", [store.conn.info.backend_pid])
        store.conn.execute("SELECT 1")  # raises: the connection is gone

    monkeypatch.setattr(JobStore, "claim_free_slots", claim_then_lose_the_answer)
    with pytest.raises(psycopg.OperationalError):
        dispatcher.run_once()
    dispatcher.disconnect()
    job = job_row(conn, file_id)
    assert (job["state"], job["lease_owner"], job["handle"]) == ("launching", dispatcher.owner, None)
    dispatcher.run_once()
    assert job_row(conn, file_id)["state"] == "launching", "released before its grace"
    conn.execute("UPDATE locaria_core.jobs SET launched_at = launched_at - interval '1 minute'")  # the grace passes
    dispatcher.drain(timeout=30)
    job = job_row(conn, file_id)
    assert (job["state"], job["attempt"]) == ("succeeded", 1)
    assert file_row(conn, file_id)["status"] == "SLEPT"
    assert len(runs()) == 1


def test_what_an_attempt_left_is_removed_later_when_its_runner_refuses_at_first(
        conn, db_url, add_docker, runs, locaria_env, dispatchers, monkeypatch) -> None:
    """A container engine that refuses to remove a finished attempt's container (Podman, while it settles)
    must neither stop the dispatcher nor lose the removal: the job stays unreleased until it is done."""
    add_docker("sleeper", trigger_statuses=["SLEEP"], success_status="SLEPT", handler="tests.jobs_for_tests:sleeper")
    file_id = add(conn, "SLEEP", sleep=0)
    dispatcher = dispatchers(runner(locaria_env), db_url=db_url)
    refusals: list[int] = []
    cleanup, release_finished = LocalRunner.cleanup, dispatcher.release_finished
    releasing = [False]

    def refuse_twice(self: LocalRunner, handle: Any) -> None:
        if releasing[0] and len(refusals) < 2:
            refusals.append(handle.job_id)
            raise RuntimeError("container state improper: stopped")
        cleanup(self, handle)

    def release() -> None:
        releasing[0] = True
        try:
            release_finished()
        finally:
            releasing[0] = False

    monkeypatch.setattr(LocalRunner, "cleanup", refuse_twice)
    monkeypatch.setattr(dispatcher, "release_finished", release)
    # as a container runner: ends are found by asking, and what attempts left is removed on the timer
    monkeypatch.setattr(Dispatcher, "watches_exits", property(lambda self: None))
    pump(dispatcher, lambda: job_row(conn, file_id)["state"] == "succeeded")
    for _ in range(3):
        dispatcher.run_once()
    job = job_row(conn, file_id)
    assert refusals == [job["id"], job["id"]]
    assert job["released"], "the third try removed it"


def test_each_dockers_concurrency_holds(conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    add_docker("sleeper", trigger_statuses=["SLEEP"], handler="tests.jobs_for_tests:sleeper", concurrency=2)
    for _ in range(5):
        add(conn, "SLEEP", sleep=0.4)
    peak = 0

    def sample() -> bool:
        nonlocal peak
        active = conn.execute("SELECT count(*) AS n FROM locaria_core.jobs WHERE state IN ('launching', 'running')")
        peak = max(peak, active.fetchone()["n"])
        return False

    dispatcher = dispatchers(runner(locaria_env), concurrency=10, db_url=db_url)
    deadline = time.monotonic() + 60
    while dispatcher.has_pending_work():
        assert time.monotonic() < deadline
        dispatcher.run_once()
        sample()
        time.sleep(0.05)
    assert peak == 2
    assert len(runs()) == 5


def test_stale_tokens_change_nothing(conn, add_docker) -> None:
    add(conn, "REGISTERED")
    [job] = conn.execute("SELECT * FROM locaria_core.claim_jobs('me', 1, 30, 'local')").fetchall()
    stale = str(uuid.uuid4())
    call = conn.execute
    assert call("SELECT locaria_core.job_start(%s, %s) AS r", [job["id"], stale]).fetchone()["r"] is None
    assert call("SELECT locaria_core.job_heartbeat(%s, %s) AS r", [job["id"], stale]).fetchone()["r"] is False
    assert call("SELECT locaria_core.job_finish(%s, %s, %s) AS r",
                [job["id"], stale, Jsonb({"state": "succeeded"})]).fetchone()["r"] is False
    failed = call("SELECT locaria_core.job_attempt_failed(%s, %s, 1, 'x') AS r", [job["id"], stale])
    assert failed.fetchone()["r"] is None
    assert job_row(conn, 1)["state"] == "launching"


def test_a_job_whose_file_was_deleted_outright_is_cancelled(conn, db_url, locaria_env, dispatchers) -> None:
    file_id = add(conn, "REGISTERED")
    conn.execute("DELETE FROM locaria_core.files WHERE id = %s", [file_id])
    dispatchers(runner(locaria_env), db_url=db_url).drain(timeout=30)
    job = job_row(conn, file_id)
    assert job["state"] == "cancelled" and "was deleted" in job["error"]


def test_deleting_a_file_stops_its_job_and_it_stays_deleted(
        conn, db_url, add_docker, runs, locaria_env, dispatchers) -> None:
    add_docker("sleeper", trigger_statuses=["SLEEP"], handler="tests.jobs_for_tests:sleeper")
    file_id = add(conn, "SLEEP", sleep=60)
    dispatcher = dispatchers(runner(locaria_env), db_url=db_url)
    pump(dispatcher, lambda: len(runs()) == 1)
    result = conn.execute("SELECT locaria_core.delete_file(%s) AS r", [Jsonb({"id": file_id})]).fetchone()["r"]
    assert result["message"] == "file marked as deleted"
    pump(dispatcher, lambda: not job_row(conn, file_id)["stop_requested"])
    assert job_row(conn, file_id)["state"] == "cancelled"
    assert file_row(conn, file_id)["status"] == "DELETED"
    # a late verdict from the cancelled attempt changes nothing
    job = job_row(conn, file_id)
    late = conn.execute("SELECT locaria_core.job_finish(%s, %s, %s) AS r",
                        [job["id"], job["attempt_token"], Jsonb({"state": "succeeded"})]).fetchone()["r"]
    assert late is False and file_row(conn, file_id)["status"] == "DELETED"


def test_forked_jobs_see_the_dispatchers_current_environment(conn, db_url, add_docker, locaria_env,
                                                             monkeypatch, dispatchers) -> None:
    add_docker("env_reporter", trigger_statuses=["ENV"], success_status="ENV_DONE",
               handler="tests.jobs_for_tests:report_environment")
    dispatcher = dispatchers(runner(locaria_env), db_url=db_url)
    for value in ("first", "second"):  # the fork server outlives the first launch
        monkeypatch.setenv("LOCARIA_TEST_MARKER", value)
        file_id = add(conn, "ENV")
        dispatcher.drain(timeout=30)
        assert file_row(conn, file_id)["attributes"]["marker"] == value


def test_a_handle_without_a_start_time_reads_back() -> None:
    """A process whose start time could not be read is stored with a null one (as are rows that left it out)."""
    from locaria_batch.dispatch.handles import ProcessHandle

    handle = ProcessHandle(4242, None, "/logs/job-1-attempt-1.log", 1, 1)
    assert ProcessHandle.from_json(handle.to_json()) == handle
    assert ProcessHandle.from_json({"pid": 4242, "log": "/logs/job-1-attempt-1.log", "job_id": 1, "attempt": 1,
                                    "where": "pid 4242"}) == handle


def test_a_job_that_ends_at_once_still_has_its_start_time() -> None:
    """A child not yet reaped has a start time to record even when it has already ended."""
    from locaria_batch.dispatch.forkserver import process_start_time

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    deadline = time.monotonic() + 5
    while process_start_time(pid) is not None:  # a zombie: ended, not reaped
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert process_start_time(pid, ended_too=True) is not None
    finally:
        os.waitpid(pid, 0)
