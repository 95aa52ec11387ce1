"""The Lambda handlers, called as Python functions (moto runs no Lambda without Docker), with the
database URL read from moto's Secrets Manager, ECS and S3 in moto's server mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import psycopg
import pytest

from locaria_batch.db.migrate import available_migrations
from locaria_batch.dispatch.ecs import EcsRunner
from locaria_batch.dispatch.lambdas import launcher_handler, task_state_handler, upload_handler
from locaria_batch.dispatch.runner import LaunchRequest
from locaria_batch.files import add_file, get_file
from locaria_batch.files.uploads import request_upload
from locaria_batch.settings import reset as reset_settings
from locaria_batch.storage import open_storage
from tests.aws_fixtures import BUCKET, LAUNCHER_ARN, REGION, FargateStack, wait_until

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture
def lambda_env(fargate: FargateStack, monkeypatch: pytest.MonkeyPatch) -> FargateStack:
    """As deployed: no database URL in the environment, only the name of its secret."""
    monkeypatch.delenv("LOCARIA_DB_URL")
    monkeypatch.setenv("LOCARIA_DB_SECRET", "locaria/test/db")
    monkeypatch.setenv("LOCARIA_LAUNCHER_SETTLE_SECONDS", "15")
    reset_settings()
    return fargate


def _job(conn: Any, file_id: int) -> dict[str, Any]:
    return conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s ORDER BY id DESC LIMIT 1",
                        [file_id]).fetchone()


def _task_event(stack: FargateStack, task_arn: str) -> dict[str, Any]:
    """What EventBridge delivers for a task: the task's description as `detail`."""
    return {"version": "0", "source": "aws.ecs", "detail-type": "ECS Task State Change", "region": REGION,
            "resources": [task_arn], "detail": json.loads(json.dumps(stack.task(task_arn), default=str))}


def test_launcher_invoked_before_the_commit_waits_for_the_job(conn, lambda_env: FargateStack) -> None:
    with psycopg.connect(lambda_env.db_url) as writer:
        # the user's transaction: the files trigger queues the job, the database wakes the launcher
        file_id = writer.execute("SELECT (locaria_core.add_file(%s)->>'id')::bigint",
                                 [json.dumps({"file_attributes": {"name": "parks.geojson", "ext": "geojson"}})]
                                 ).fetchone()[0]
        job_id = writer.execute("SELECT id FROM locaria_core.jobs WHERE file_id = %s", [file_id]).fetchone()[0]
        result: dict[str, Any] = {}
        launcher = threading.Thread(target=lambda: result.update(
            launcher_handler({"source": "locaria_core.jobs", "job_id": job_id, "file_id": file_id}, poll=0.1)))
        launcher.start()
        time.sleep(1.5)
        assert lambda_env.task_arns() == []  # nothing to see yet
        writer.commit()
    launcher.join(30)
    assert result["job_seen"] is True and result["launched"] == [job_id] and result["passes"] > 1
    job = _job(conn, file_id)
    assert job["state"] == "launching" and job["lease_owner"] == "aws-launcher"
    assert lambda_env.task_arns() == [job["handle"]["task_arn"]]


def test_launcher_told_of_a_rolled_back_job_gives_up_in_time(conn, lambda_env: FargateStack,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCARIA_LAUNCHER_SETTLE_SECONDS", "1")
    started = time.monotonic()
    result = launcher_handler({"job_id": 424242}, poll=0.1)
    assert 1 <= time.monotonic() - started < 10
    assert result["job_seen"] is False and result["launched"] == []


def test_scheduled_launcher_runs_the_whole_cycle(conn, lambda_env: FargateStack) -> None:
    storage = open_storage()
    ticket = request_upload(conn, storage, "parks.geojson")
    storage.put(ticket.key, SAMPLES / "parks.geojson")
    # S3 tells us the object arrived: the upload completes and the loader is queued
    record = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": BUCKET},
                                                       "object": {"key": quote_plus(f"data/{ticket.key}")}}}
    assert upload_handler({"Records": [record]}) == {
        "uploads": [{"id": ticket.file_id, "status": "REGISTERED", "completed": True}]}

    first = launcher_handler({"source": "aws.events", "detail-type": "Scheduled Event"})
    job = _job(conn, ticket.file_id)
    assert first["launched"] == [job["id"]] and first["passes"] == 1
    assert launcher_handler({})["in_flight"] == 1  # the next invocation reconciles, launches nothing
    assert lambda_env.run_container(job["handle"]["task_arn"]).returncode == 0
    assert launcher_handler({})["in_flight"] == 0
    assert get_file(conn, ticket.file_id)["status"] == "FARGATE_PROCESSED"
    assert len(lambda_env.task_arns()) == 1


def test_launcher_invocation_that_died_after_run_task_is_followed_by_adoption(conn, lambda_env: FargateStack) -> None:
    file_id = int(add_file(conn, {"name": "parks.geojson", "ext": "geojson", "upload": True})["id"])

    class DiesAfterRunTask(EcsRunner):
        def launch(self, request: LaunchRequest) -> Any:
            super().launch(request)
            raise TimeoutError("Task timed out after 60.00 seconds")

    with pytest.raises(TimeoutError):
        launcher_handler({}, runner=DiesAfterRunTask.from_database())
    [task_arn] = lambda_env.task_arns()
    job = _job(conn, file_id)
    assert job["state"] == "launching" and job["handle"] is None

    # a later invocation within the grace period leaves it alone: its launcher may still be at work
    assert launcher_handler({})["adopted"] == []
    conn.execute("UPDATE locaria_core.jobs SET launched_at = launched_at - interval '3 minutes'")
    result = launcher_handler({})
    job = _job(conn, file_id)
    assert result["adopted"] == [job["id"]] and result["launched"] == []
    assert job["handle"]["task_arn"] == task_arn and job["lease_owner"] == "aws-launcher"
    assert lambda_env.task_arns() == [task_arn]


def test_task_state_handler_finalises_a_container_that_died(conn, lambda_env: FargateStack) -> None:
    conn.execute("UPDATE locaria_core.dockers SET max_attempts = 2, retry_base_seconds = 0")
    file_id = int(add_file(conn, {"name": "parks.geojson", "ext": "geojson", "upload": True})["id"])
    launcher_handler({})
    first = _job(conn, file_id)
    arn = first["handle"]["task_arn"]

    running = _task_event(lambda_env, arn)
    assert task_state_handler(running) == {"ignored": "task is RUNNING"}

    lambda_env.container_exited(arn, 137, container_reason="OutOfMemoryError: Container killed due to memory usage")
    stopped = _task_event(lambda_env, arn)
    outcome = task_state_handler(stopped)
    assert outcome["job_id"] == first["id"] and outcome["state"] == "queued"
    assert "was killed (SIGKILL" in outcome["reason"] and "OutOfMemoryError" in outcome["reason"]
    assert task_state_handler(stopped)["ignored"] == "a stale attempt"  # EventBridge delivers at least once

    launcher_handler({})
    second = _job(conn, file_id)
    assert second["attempt"] == 2
    lambda_env.container_exited(second["handle"]["task_arn"], None, stop_code="TaskFailedToStart",
                                stopped_reason="CannotPullContainerError: pull image manifest has been retried")
    assert task_state_handler(_task_event(lambda_env, second["handle"]["task_arn"]))["state"] == "failed"
    row = get_file(conn, file_id)
    assert row["status"] == "ERROR"
    assert "TaskFailedToStart: CannotPullContainerError" in row["attributes"]["error"]
    assert launcher_handler({})["finished"] == []  # nothing left for the reconciler


def test_task_state_handler_leaves_a_finished_job_alone(conn, lambda_env: FargateStack) -> None:
    file_id = int(add_file(conn, {"name": "parks.geojson", "ext": "geojson", "upload": True})["id"])
    open_storage().put(f"incoming/{file_id}.geojson", SAMPLES / "parks.geojson")
    launcher_handler({})
    arn = _job(conn, file_id)["handle"]["task_arn"]
    assert lambda_env.run_container(arn).returncode == 0
    result = task_state_handler(_task_event(lambda_env, arn))
    assert result["ignored"] == "the job had already ended (succeeded)"
    assert get_file(conn, file_id)["status"] == "FARGATE_PROCESSED"


def test_task_state_handler_ignores_other_tasks(lambda_env: FargateStack) -> None:
    event = {"detail-type": "ECS Task State Change",
             "detail": {"lastStatus": "STOPPED", "startedBy": "ecs-svc/123", "containers": []}}
    assert task_state_handler(event) == {"ignored": "not a locaria job task"}
    assert task_state_handler({"detail-type": "Scheduled Event"})["ignored"].startswith("not an ECS")


def test_upload_handler_ignores_objects_that_are_not_uploads(conn, lambda_env: FargateStack) -> None:
    event = {"detail-type": "Object Created", "detail": {"bucket": {"name": BUCKET},
                                                          "object": {"key": "data/loaderDownloads/x.csv"}}}
    assert upload_handler(event)["uploads"][0]["ignored"] == "not an upload of this storage"
    ghost = {"Records": [{"eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": BUCKET}, "object": {"key": "data/incoming/77.csv"}}}]}
    assert upload_handler(ghost)["uploads"] == [{"id": 77, "key": "data/incoming/77.csv",
                                                 "ignored": "file 77 does not exist"}]


def test_worker_with_the_ecs_runner(conn, fargate: FargateStack) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "locaria_batch.cli.main", "worker", "--runner", "ecs",
                               "--poll", "0.3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        file_id = int(add_file(conn, {"name": "parks.geojson", "ext": "geojson", "upload": True},
                               status="UPLOADING")["id"])
        open_storage().put(f"incoming/{file_id}.geojson", SAMPLES / "parks.geojson")
        conn.execute("SELECT locaria_core.complete_upload(%s)", [file_id])
        handle = wait_until(lambda: (_job(conn, file_id) or {}).get("handle"))
        assert fargate.run_container(handle["task_arn"]).returncode == 0
        wait_until(lambda: _job(conn, file_id)["state"] == "succeeded")
        assert get_file(conn, file_id)["status"] == "FARGATE_PROCESSED"
    finally:
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=30)[0]
    assert "ecs runner" in output, output
    assert fargate.task_arns() == [handle["task_arn"]]


STUB_AWS_LAMBDA = """
CREATE SCHEMA aws_commons;
CREATE SCHEMA aws_lambda;
CREATE TABLE aws_lambda.calls (arn TEXT, region TEXT, payload JSONB, invocation_type TEXT);
CREATE TYPE aws_commons._lambda_function_arn_1 AS (function_name TEXT, region TEXT);
CREATE FUNCTION aws_commons.create_lambda_function_arn(arn TEXT, region TEXT)
RETURNS aws_commons._lambda_function_arn_1 LANGUAGE sql
AS $$ SELECT ROW(arn, region)::aws_commons._lambda_function_arn_1 $$;
CREATE FUNCTION aws_lambda.invoke(fn aws_commons._lambda_function_arn_1, JSONB, invocation_type TEXT,
                                  log_type TEXT, OUT status_code INT, OUT payload JSONB, OUT executed_version TEXT,
                                  OUT log_result TEXT)
LANGUAGE plpgsql AS $$
BEGIN
    IF fn.function_name LIKE '%unreachable%' THEN
        RAISE EXCEPTION 'Lambda API unreachable';
    END IF;
    INSERT INTO aws_lambda.calls VALUES (fn.function_name, fn.region, $2, invocation_type);
    status_code := 202;
END;
$$;
"""


@pytest.fixture
def stub_aws_lambda(conn) -> Any:
    """Aurora's aws_lambda extension cannot run here: a stand-in with its signature records calls."""
    conn.execute(STUB_AWS_LAMBDA)
    try:
        assert conn.execute("SELECT locaria_core.install_launcher_hook() AS ok").fetchone()["ok"] is True
        yield conn
    finally:
        conn.execute("DROP SCHEMA aws_lambda CASCADE; DROP SCHEMA aws_commons CASCADE")
        assert conn.execute("SELECT locaria_core.install_launcher_hook() AS ok").fetchone()["ok"] is False


def test_launcher_hook_exists_only_with_aws_lambda(conn) -> None:
    assert "aws_lambda_launcher" in {m.name for m in available_migrations()}
    hook = conn.execute("SELECT count(*) AS n FROM pg_trigger WHERE tgname = 'jobs_wake_launcher'").fetchone()["n"]
    assert hook == 0
    failed = conn.execute("SELECT locaria_core.aws_lambda_interface(%s) AS r",
                          [json.dumps({"function": "file_loader", "fargate": "true"})]).fetchone()["r"]
    assert failed["error"] == "aws_lambda_interface error" and "has no arn" in failed["sql_error"]


def test_launcher_hook_invokes_the_launcher_and_never_fails_the_write(stub_aws_lambda: Any) -> None:
    conn = stub_aws_lambda
    conn.execute("SELECT locaria_core.set_parameters(%s)", [json.dumps({
        "parameter_name": "fargate_config", "acl": {"_groups": ["Admins"]}, "parameters": {
            "file_loader": {"arn": LAUNCHER_ARN, "region": REGION},
            "file_download": {"arn": "arn:aws:lambda:eu-west-2:1:function:unreachable", "region": REGION}}})])
    upload = int(add_file(conn, {"name": "a.csv", "ext": "csv", "upload": True})["id"])
    [call] = conn.execute("SELECT * FROM aws_lambda.calls").fetchall()
    job_id = _job(conn, upload)["id"]
    assert (call["arn"], call["region"], call["invocation_type"]) == (LAUNCHER_ARN, REGION, "Event")
    assert call["payload"] == {"source": "locaria_core.jobs", "job_id": job_id, "file_id": upload,
                               "docker": "file_loader"}

    download = int(add_file(conn, {"download": True, "format": "csv"}, status="DOWNLOAD_REQUESTED")["id"])
    assert _job(conn, download)["state"] == "queued"  # the write and its job stand
    logged = conn.execute("SELECT log_message FROM locaria_core.logs WHERE log_type = 'launcher_hook'").fetchone()
    assert "Lambda API unreachable" in logged["log_message"]["sql_error"]
    assert conn.execute("SELECT count(*) AS n FROM aws_lambda.calls").fetchone()["n"] == 1

