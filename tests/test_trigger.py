"""Which status change queues which job, and what the trigger tells listeners."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from locaria_batch.db import connect


def add(conn: Any, status: str, **attrs: Any) -> int:
    payload = {"file_attributes": attrs, "status": status}
    return conn.execute("SELECT locaria_core.add_file(%s) AS r", [Jsonb(payload)]).fetchone()["r"]["id"]


def set_status(conn: Any, file_id: int, status: str) -> None:
    conn.execute("SELECT locaria_core.update_file(%s)", [Jsonb({"id": file_id, "status": status})])


def jobs(conn: Any) -> list[tuple[int, str, str]]:
    return [(r["file_id"], r["docker"], r["state"])
            for r in conn.execute("SELECT file_id, docker, state FROM locaria_core.jobs ORDER BY id")]


def test_insert_starts_only_the_docker_whose_trigger_status_matches(conn) -> None:
    add(conn, "REGISTERED")
    add(conn, "DOWNLOAD_REQUESTED")
    set_status(conn, add(conn, "UPLOADING"), "FARGATE_PROCESSED")
    assert jobs(conn) == [(1, "file_loader", "queued"), (2, "file_download", "queued")]


def test_a_file_is_only_created_where_something_will_process_it(conn) -> None:
    for status in ["FARGATE_PROCESSING", "FARGATE_PROCESSED", "DOWNLOAD_COMPLETED", "DELETED", "NONSENSE"]:
        refused = conn.execute("SELECT locaria_core.add_file(%s) AS r",
                               [Jsonb({"file_attributes": {}, "status": status})]).fetchone()["r"]
        assert refused["error"].startswith(f"a file cannot be created in status {status}: use one of UPLOADING, "
                                           "REGISTERED, DOWNLOAD_REQUESTED"), refused
    assert conn.execute("SELECT count(*) AS n FROM locaria_core.files").fetchone()["n"] == 0


def test_status_changes(conn) -> None:
    file_id = add(conn, "UPLOADING")
    assert jobs(conn) == []
    set_status(conn, file_id, "REGISTERED")
    assert jobs(conn) == [(file_id, "file_loader", "queued")]
    set_status(conn, file_id, "REGISTERED")  # REGISTERED -> REGISTERED launches nothing
    set_status(conn, file_id, "ERROR")
    set_status(conn, file_id, "REGISTERED")  # a duplicate active job is a no-op
    assert jobs(conn) == [(file_id, "file_loader", "queued")]
    conn.execute("UPDATE locaria_core.jobs SET state = 'failed'")
    set_status(conn, file_id, "ERROR")
    set_status(conn, file_id, "REGISTERED")
    assert jobs(conn) == [(file_id, "file_loader", "failed"), (file_id, "file_loader", "queued")]
    set_status(conn, file_id, "DOWNLOAD_REQUESTED")
    assert jobs(conn)[-1] == (file_id, "file_download", "queued")


def test_triggers_come_from_the_dockers_table(conn, add_docker) -> None:
    add_docker("reporter", trigger_statuses=["REPORT_REQUESTED"], handler="tests.jobs_for_tests:noop")
    add(conn, "REPORT_REQUESTED")
    assert jobs(conn) == [(1, "reporter", "queued")]
    conn.execute("UPDATE locaria_core.dockers SET enabled = false WHERE name = 'reporter'")
    set_status(conn, add(conn, "UPLOADING"), "REPORT_REQUESTED")  # a disabled docker runs nothing
    assert len(jobs(conn)) == 1


def test_notifications_after_commit(db_url: str) -> None:
    with connect(db_url, autocommit=True) as listener, connect(db_url) as writer:
        listener.execute("LISTEN locaria_file_status")
        listener.execute("LISTEN locaria_jobs")
        file_id = add(writer, "REGISTERED")
        assert list(listener.notifies(timeout=0.3)) == []  # nothing before the commit
        writer.commit()
        set_status(writer, file_id, "FARGATE_PROCESSED")
        set_status(writer, file_id, "FARGATE_PROCESSED")
        writer.commit()
        received = [(n.channel, json.loads(n.payload)) for n in listener.notifies(timeout=1, stop_after=3)]
    assert ("locaria_file_status", {"id": file_id, "status": "REGISTERED"}) in received
    assert ("locaria_file_status", {"id": file_id, "status": "FARGATE_PROCESSED"}) in received
    job_hints = [payload for channel, payload in received if channel == "locaria_jobs"]
    assert job_hints and job_hints[0]["file_id"] == file_id and job_hints[0]["docker"] == "file_loader"
    assert job_hints[0]["state"] == "queued"
    assert len([c for c, _ in received if c == "locaria_file_status"]) == 2  # same status twice: one notify


def test_a_rolled_back_write_queues_nothing(db_url: str) -> None:
    with connect(db_url) as writer:
        add(writer, "REGISTERED")
        writer.rollback()
        assert writer.execute("SELECT count(*) AS n FROM locaria_core.jobs").fetchone()["n"] == 0


def test_a_dispatch_problem_never_fails_the_users_write(conn) -> None:
    conn.execute("""CREATE FUNCTION public.refuse_jobs() RETURNS trigger LANGUAGE plpgsql AS
                    $$ BEGIN RAISE EXCEPTION 'job table unavailable'; END $$""")
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON locaria_core.jobs FOR EACH ROW "
                 "EXECUTE FUNCTION public.refuse_jobs()")
    try:
        file_id = add(conn, "REGISTERED")
        assert conn.execute("SELECT status FROM locaria_core.files WHERE id = %s", [file_id]).fetchone()["status"] \
            == "REGISTERED"
        logged = conn.execute("SELECT log_message FROM locaria_core.logs WHERE log_type = 'file_trigger'").fetchone()
        assert "job table unavailable" in logged["log_message"]["sql_error"]
    finally:
        conn.execute("DROP TRIGGER refuse ON locaria_core.jobs")
        conn.execute("DROP FUNCTION public.refuse_jobs()")


def test_job_events_are_append_only(conn) -> None:
    add(conn, "REGISTERED")
    try:
        conn.execute("DELETE FROM locaria_core.job_events")
    except psycopg.errors.RaiseException as exc:
        assert "append-only" in str(exc)
    else:
        raise AssertionError("job_events accepted a DELETE")
