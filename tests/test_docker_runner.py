"""The docker runner against a real container engine (Podman's Docker-compatible service): the
file_loader image built from the registry-free base loads a file into the test PostGIS; containers
are reconciled by exit code, adopted by label, stopped on cancel and timeout, and removed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import NotFound

from locaria_batch.db import dockers
from locaria_batch.dispatch.dispatcher import Dispatcher, make_runner
from locaria_batch.dispatch.docker import LABEL_ATTEMPT, LABEL_DATABASE, LABEL_JOB, DockerRunner, container_db_url
from locaria_batch.files import cancel_file, get_file, register_upload
from locaria_batch.settings import reset as reset_settings
from locaria_batch.storage import open_storage
from tests.containers import REPO

pytest_plugins = ["tests.containers"]
pytestmark = pytest.mark.container
SAMPLES = REPO / "samples"


@pytest.fixture
def docker_host(engine_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DOCKER_HOST", engine_url)
    return engine_url


def test_file_loaded_in_a_real_container(conn: Any, docker_host: str, file_loader_image: str,
                                         engine: docker.DockerClient, locaria_env: Path, dispatchers: Any) -> None:
    file_id = register_upload(conn, open_storage(), SAMPLES / "parks.geojson")
    dispatcher = dispatchers(make_runner("docker"), concurrency=1)
    run_until(dispatcher, conn, file_id, {"succeeded", "failed"}, timeout=180)
    dispatcher.run_once()  # the next pass releases what the finished attempt left behind
    row = get_file(conn, file_id)
    assert row["status"] == "FARGATE_PROCESSED", row["attributes"].get("log_messages")
    assert row["attributes"]["record_count"] == 20
    assert conn.execute("SELECT count(*) AS n FROM locaria_uploads.upload_file_1").fetchone()["n"] == 20
    job = conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s", [file_id]).fetchone()
    assert job["state"] == "succeeded" and job["runner"] == "docker"
    assert job["handle"]["name"] == f"locaria-file-loader-job{job['id']}-a1-{str(job['attempt_token'])[:8]}"
    # the finished container was removed once its output was kept in the job log
    with pytest.raises(NotFound):
        engine.containers.get(job["handle"]["container_id"])
    kept_log = locaria_env / "logs" / f"job-{job['id']}-attempt-1.log"
    assert f"job {job['id']}: file_loader attempt 1" in kept_log.read_text()


# -- lifecycle with small commands in the same image -------------------------------------------------
def add_docker(conn: Any, name: str, image: str, command: list[str], timeout: int = 600) -> None:
    specs = dockers.load(REPO / "docker" / "dockers.json")
    specs[name] = dockers.DockerSpec(
        name=name, trigger_statuses=[f"{name.upper()}_REQUESTED"], running_status=f"{name.upper()}_RUNNING",
        success_status=f"{name.upper()}_DONE", error_status=f"{name.upper()}_ERROR", command=command, image=image,
        timeout_seconds=timeout, max_attempts=1, memory=256, cpu=256,
    )
    dockers.sync(conn, specs)


def add_file(conn: Any, status: str) -> int:
    return conn.execute("SELECT (locaria_core.add_file(%s::jsonb)->>'id')::bigint AS id",
                        [f'{{"status": "{status}", "file_attributes": {{"name": "x"}}}}']).fetchone()["id"]


def job_of(conn: Any, file_id: int) -> dict[str, Any]:
    return conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s ORDER BY id DESC", [file_id]).fetchone()


@pytest.fixture
def runner(docker_host: str, db_url: str, engine: docker.DockerClient) -> Iterator[DockerRunner]:
    reset_settings()
    made = DockerRunner.from_environment()
    made.stop_grace = 2
    yield made
    for container in engine.containers.list(all=True, filters={"label": f"{LABEL_DATABASE}={made.scope}"}):
        container.remove(force=True)


def run_until(dispatcher: Dispatcher, conn: Any, file_id: int, states: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        dispatcher.run_once()
        job = job_of(conn, file_id)
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job still {job['state']}"
        time.sleep(0.3)


def container_state(engine: docker.DockerClient, container_id: str) -> str | None:
    try:
        return str(engine.containers.get(container_id).status)
    except NotFound:
        return None


def test_exit_code_reconciled_and_container_removed(conn: Any, runner: DockerRunner, file_loader_image: str,
                                                    engine: docker.DockerClient, dispatchers: Any) -> None:
    add_docker(conn, "crash", file_loader_image, ["{python}", "-c", "import sys; sys.exit(3)"])
    file_id = add_file(conn, "CRASH_REQUESTED")
    dispatcher = dispatchers(runner, concurrency=1)
    job = run_until(dispatcher, conn, file_id, {"failed"})
    assert job["exit_code"] == 3
    assert "exit code 3" in job["error"]
    assert conn.execute("SELECT status FROM locaria_core.files WHERE id = %s", [file_id]).fetchone()["status"] == \
        "CRASH_ERROR"
    assert container_state(engine, job["handle"]["container_id"]) is None


def test_cancel_stops_the_container(conn: Any, runner: DockerRunner, file_loader_image: str,
                                    engine: docker.DockerClient, dispatchers: Any) -> None:
    add_docker(conn, "sleeper", file_loader_image, ["{python}", "-c", "import time; time.sleep(600)"])
    file_id = add_file(conn, "SLEEPER_REQUESTED")
    dispatcher = dispatchers(runner, concurrency=1)
    job = run_until(dispatcher, conn, file_id, {"running", "launching"})
    container = engine.containers.get(job["handle"]["container_id"])
    assert container.labels[LABEL_JOB] == str(job["id"]) and container.labels[LABEL_ATTEMPT] == "1"
    assert container.status == "running"
    assert runner.status([runner.handle(job["handle"])])[0].state == "running"
    cancel_file(conn, file_id)
    dispatcher.run_once()
    assert container_state(engine, job["handle"]["container_id"]) is None
    assert job_of(conn, file_id)["state"] == "cancelled"


def test_timeout_stops_the_container(conn: Any, runner: DockerRunner, file_loader_image: str,
                                     engine: docker.DockerClient, dispatchers: Any) -> None:
    add_docker(conn, "overrun", file_loader_image, ["{python}", "-c", "import time; time.sleep(600)"], timeout=1)
    file_id = add_file(conn, "OVERRUN_REQUESTED")
    dispatcher = dispatchers(runner, concurrency=1)
    job = run_until(dispatcher, conn, file_id, {"failed"}, timeout=90)
    assert "timed out after 1 s" in job["error"]
    assert container_state(engine, job["handle"]["container_id"]) is None


def test_adopted_by_label_after_a_dispatcher_restart(conn: Any, runner: DockerRunner, file_loader_image: str,
                                                     engine: docker.DockerClient, dispatchers: Any) -> None:
    add_docker(conn, "survivor", file_loader_image, ["{python}", "-c", "import time; time.sleep(600)"])
    file_id = add_file(conn, "SURVIVOR_REQUESTED")
    first = dispatchers(runner, concurrency=1, lease_seconds=30)
    job = run_until(first, conn, file_id, {"launching", "running"})
    launched_id = job["handle"]["container_id"]
    # the first dispatcher dies after starting the container but before its handle was kept
    conn.execute("UPDATE locaria_core.jobs SET handle = NULL, lease_expires = clock_timestamp() - interval '1 s' "
                 "WHERE id = %s", [job["id"]])
    second = dispatchers(DockerRunner.from_environment(), concurrency=1)
    report = second.run_once()
    assert job["id"] in report.adopted
    adopted = job_of(conn, file_id)
    assert adopted["lease_owner"] == second.owner
    assert adopted["handle"]["container_id"] == launched_id and adopted["handle"]["adopted"] is True
    assert adopted["attempt"] == 1  # found by its labels, not relaunched
    assert len(engine.containers.list(filters={"label": f"{LABEL_JOB}={job['id']}"})) == 1


def test_missing_image_is_a_clear_launch_failure(conn: Any, runner: DockerRunner, dispatchers: Any) -> None:
    add_docker(conn, "ghost", "localhost/locaria-batch/ghost:latest", ["{python}", "-c", "pass"])
    file_id = add_file(conn, "GHOST_REQUESTED")
    job = run_until(dispatchers(runner, concurrency=1), conn, file_id, {"failed"})
    assert "not found" in job["error"] and "locaria-batch docker build ghost" in job["error"]


def test_database_url_for_a_bridge_network() -> None:
    assert container_db_url("postgresql://u:p@127.0.0.1:5432/db", "host") == "postgresql://u:p@127.0.0.1:5432/db"
    assert container_db_url("postgresql://u:p@localhost:5432/db", "bridge") == \
        "postgresql://u:p@host.docker.internal:5432/db"
    assert container_db_url("postgresql://u:p@db.example.org/db", "bridge") == "postgresql://u:p@db.example.org/db"
    assert container_db_url("postgresql://localhost:localhost@localhost/db", "bridge") == \
        "postgresql://localhost:localhost@host.docker.internal/db"
