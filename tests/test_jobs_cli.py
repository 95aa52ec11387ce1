"""`jobs list|stats|retry|cancel|prune`, `files logs`, and the worker's own metrics."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import requests

from locaria_batch.dispatch.store import JobStore
from locaria_batch.dispatch.wait import wait_for_file
from locaria_batch.files import add_file, register_upload
from locaria_batch.storage import open_storage
from tests.console_fixtures import free_port, start, stop
from tests.test_cli import REPO, as_json, cli


def failed_file(conn: Any, tmp_path: Path) -> int:
    broken = tmp_path / "broken.geojson"
    broken.write_text('{"type": "FeatureCollection", "features": [')
    file_id = register_upload(conn, open_storage(), broken)
    assert wait_for_file(file_id, timeout=60)["status"] == "ERROR"
    return file_id


def test_list_and_stats(conn: Any, tmp_path: Path) -> None:
    loaded = register_upload(conn, open_storage(), REPO / "samples" / "parks.csv")
    wait_for_file(loaded, timeout=60)
    failed = failed_file(conn, tmp_path)
    listed = as_json(cli("jobs", "list", "--json"))
    assert [(job["file_id"], job["state"]) for job in listed] == [(failed, "failed"), (loaded, "succeeded")]
    assert "attempt_token" not in listed[0] and "pid" in listed[0]["where"]
    assert [job["file_id"] for job in as_json(cli("jobs", "list", "--state", "failed", "--json"))] == [failed]
    assert as_json(cli("jobs", "list", "--file", str(loaded), "--docker", "file_loader", "--json"))[0]["id"] == 1
    assert "no jobs match" in cli("jobs", "list", "--docker", "file_download").stdout
    stats = as_json(cli("jobs", "stats", "--json"))
    loader = next(item for item in stats["dockers"] if item["docker"] == "file_loader")
    assert (loader["succeeded"], loader["failed"], loader["queued"]) == (1, 1, 0)
    assert loader["run_p50"] > 0 and loader["run_p95"] >= loader["run_p50"]
    assert stats["dispatchers"] == []
    shown = cli("jobs", "stats").stdout
    assert "file_loader" in shown and "no dispatcher is alive" in shown


def test_bulk_retry_by_filter_needs_a_confirmation(conn: Any, tmp_path: Path) -> None:
    first, second = failed_file(conn, tmp_path), failed_file(conn, tmp_path)
    unconfirmed = cli("jobs", "retry", "--state", "failed", "--docker", "file_loader", "--since", "1h", check=False)
    assert unconfirmed.returncode == 2 and "retry 2 job(s)? Add --yes" in unconfirmed.stderr
    assert len(JobStore(conn).jobs_of_file(first)) == 1  # nothing happened
    assert cli("jobs", "retry", check=False).returncode == 2  # no ids, no filters: refused
    assert "--since" in cli("jobs", "retry", "--since", "soon", "--yes", check=False).stderr
    done = as_json(cli("jobs", "retry", "--state", "failed", "--docker", "file_loader", "--since", "1h", "--yes",
                       "--json"))
    assert sorted(item["file_id"] for item in done["retried"]) == [first, second]
    assert [job.state for job in JobStore(conn).jobs_of_file(first)][-1] == "queued"
    again = as_json(cli("jobs", "retry", "2", "--yes", "--json"))  # its file now has a job queued
    assert again["retried"] == [] and "already has a job in progress" in again["skipped"][0]["reason"]


def test_bulk_cancel_by_id(conn: Any) -> None:
    ids = [int(add_file(conn, {"name": f"{n}.csv", "upload": True, "ext": "csv"})["id"]) for n in range(3)]
    result = as_json(cli("jobs", "cancel", "1", "2", "--yes", "--json"))
    assert result == {"cancelled": [1, 2], "skipped": []}
    states = {job.file_id: job.state for file_id in ids for job in JobStore(conn).jobs_of_file(file_id)}
    assert states == {ids[0]: "cancelled", ids[1]: "cancelled", ids[2]: "queued"}
    assert as_json(cli("jobs", "cancel", "1", "--yes", "--json")) == {"cancelled": [], "skipped": [1]}


def age_jobs(conn: Any, days: int) -> None:
    conn.execute("UPDATE locaria_core.jobs SET finished_at = finished_at - make_interval(days => %s)", [days])


def test_prune_deletes_old_finished_jobs_their_events_and_logs(conn: Any, locaria_env: Path) -> None:
    file_id = register_upload(conn, open_storage(), REPO / "samples" / "parks.csv")
    wait_for_file(file_id, timeout=60)
    for _ in range(2):
        cli("files", "retry", str(file_id), "--wait")
    jobs = JobStore(conn).jobs_of_file(file_id)
    logs = [Path(job.handle["log"]) for job in jobs if job.handle]
    assert len(jobs) == 3 and all(path.exists() for path in logs)
    queued = int(add_file(conn, {"name": "waiting.csv", "upload": True, "ext": "csv"})["id"])
    age_jobs(conn, 40)
    assert as_json(cli("jobs", "prune", "--older-than", "30d", "--json")) == {"jobs": 2, "log_files": 2}
    kept = JobStore(conn).jobs_of_file(file_id)
    assert [job.id for job in kept] == [jobs[-1].id]  # the newest job of the file stays
    assert [path.exists() for path in logs] == [False, False, True]
    events = conn.execute("SELECT DISTINCT job_id FROM locaria_core.job_events ORDER BY 1").fetchall()
    assert [row["job_id"] for row in events] == [jobs[-1].id, JobStore(conn).jobs_of_file(queued)[0].id]
    assert "pruned 0 finished job(s)" in cli("jobs", "prune", "--older-than", "30d").stdout
    # the events stay append-only for everyone else
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("DELETE FROM locaria_core.job_events")
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"), conn.transaction():
        conn.execute("SELECT set_config('locaria_core.pruning', 'on', true)")
        conn.execute("DELETE FROM locaria_core.job_events")  # the flag alone opens nothing: the job still exists


def test_prune_in_batches_skips_rows_someone_holds(conn: Any, db_url: str, locaria_env: Path) -> None:
    from locaria_batch.db import connect
    from locaria_batch.dispatch.retention import prune_jobs

    ids = [int(add_file(conn, {"name": f"{n}.csv", "upload": True, "ext": "csv"})["id"]) for n in range(5)]
    for file_id in ids:  # a finished job, then a newer one, for each file
        conn.execute("SELECT locaria_core.cancel_file_jobs(%s)", [file_id])
        conn.execute("UPDATE locaria_core.files SET status = 'UPLOADING' WHERE id = %s", [file_id])
        conn.execute("UPDATE locaria_core.files SET status = 'REGISTERED' WHERE id = %s", [file_id])
    age_jobs(conn, 40)
    with connect(db_url) as holder:
        holder.execute("SELECT id FROM locaria_core.jobs WHERE file_id = %s AND state = 'cancelled' FOR UPDATE",
                       [ids[0]])
        batches: list[int] = []
        summary = prune_jobs(conn, timedelta(days=30), locaria_env / "logs", batch=2,
                             on_batch=batches.append)
        holder.rollback()
    assert summary.jobs == 4 and batches == [2, 2, 0]
    assert len(JobStore(conn).jobs_of_file(ids[0])) == 2  # the held row was left for later


def test_files_logs_prints_and_follows_the_local_log(conn: Any) -> None:
    file_id = register_upload(conn, open_storage(), REPO / "samples" / "parks.csv")
    wait_for_file(file_id, timeout=60)
    assert "succeeded" in cli("files", "logs", str(file_id)).stdout
    assert cli("files", "logs", str(file_id), "--lines", "1").stdout.count("\n") == 1
    followed = cli("files", "logs", str(file_id), "--follow")  # the attempt has ended: prints all, then stops
    assert f"job 1: file_loader attempt 1 for file {file_id}" in followed.stdout
    waiting = int(add_file(conn, {"name": "w.csv", "upload": True, "ext": "csv"})["id"])
    none_yet = cli("files", "logs", str(waiting), check=False)
    assert none_yet.returncode == 1 and "has not been launched yet" in none_yet.stderr
    assert "does not exist" in cli("files", "logs", "999", check=False).stderr


def test_files_logs_reads_cloudwatch_for_an_ecs_task(conn: Any, aws: str) -> None:
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="/ecs/locaria-file_loader")
    stream = "file_loader/file_loader/0123456789abcdef"
    logs.create_log_stream(logGroupName="/ecs/locaria-file_loader", logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName="/ecs/locaria-file_loader", logStreamName=stream, logEvents=[
        {"timestamp": now + index, "message": f"line {index} of the task"} for index in range(5)])
    file_id = int(add_file(conn, {"name": "t.csv", "upload": True, "ext": "csv"})["id"])
    handle = {"task_arn": "arn:aws:ecs:eu-west-2:123456789012:task/c/0123456789abcdef", "task_id": "0123456789abcdef",
              "cluster": "c", "region": "eu-west-2", "log_group": "/ecs/locaria-file_loader", "log_stream": stream}
    # what the ECS runner records once it has launched the task (the attempt has ended since)
    conn.execute("UPDATE locaria_core.jobs SET state = 'failed', runner = 'ecs', attempt = 1, handle = %s, "
                 "finished_at = now() WHERE file_id = %s", [psycopg.types.json.Jsonb(handle), file_id])
    tail = cli("files", "logs", str(file_id), "--lines", "2").stdout
    assert tail == "line 3 of the task\nline 4 of the task\n"
    followed = cli("files", "logs", str(file_id), "--follow").stdout
    assert followed.splitlines() == [f"line {index} of the task" for index in range(5)]
    conn.execute("UPDATE locaria_core.jobs SET handle = handle || '{\"log_stream\": \"gone\"}' WHERE file_id = %s",
                 [file_id])
    missing = cli("files", "logs", str(file_id), check=False)
    assert missing.returncode == 1 and "no stream /ecs/locaria-file_loader/gone" in missing.stderr


def test_worker_metrics_count_launches_passes_and_launch_errors(conn: Any, add_docker: Any) -> None:
    add_docker("unstartable", trigger_statuses=["UNSTARTABLE"], command=["/nonexistent/job"], max_attempts=1)
    port = free_port()
    worker = start("worker", "--poll", "0.2", "--metrics-port", str(port))
    try:
        file_id = register_upload(conn, open_storage(), REPO / "samples" / "parks.csv")
        add_file(conn, {"name": "u.csv"}, status="UNSTARTABLE")
        deadline = time.monotonic() + 60
        while True:
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except requests.ConnectionError:
                text = ""
            done = JobStore(conn).file_progress(file_id)
            failed_launch = 'locaria_dispatcher_launch_errors_total{requeued="false"} 1.0' in text
            if done and done.status == "FARGATE_PROCESSED" and failed_launch:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        assert "locaria_dispatcher_launches_total 1.0" in text
        passes = next(line for line in text.splitlines() if line.startswith("locaria_dispatcher_passes_total"))
        assert float(passes.split()[-1]) >= 2
        assert "locaria_dispatcher_adoptions_total 0.0" in text
    finally:
        stop(worker)
