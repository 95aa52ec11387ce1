"""`docker new NAME` scaffolds a job that runs as written: as a local process and as a container."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import docker
import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from locaria_batch.cli.main import app
from locaria_batch.db import dockers
from locaria_batch.dispatch.dispatcher import make_runner
from locaria_batch.dispatch.wait import wait_for_file
from locaria_batch.settings import reset as reset_settings
from locaria_batch.storage import incoming_key, open_storage

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "parks.csv"

pytest_plugins = ["tests.containers"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of this project to scaffold into."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "docker", root / "docker", ignore=shutil.ignore_patterns("builds"))
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    monkeypatch.setenv("LOCARIA_PROJECT_DIR", str(root))
    reset_settings()
    return root


def scaffold(project: Path) -> None:
    result = CliRunner().invoke(app, ["docker", "new", "line_counter", "--description", "Line counter"])
    assert result.exit_code == 0, result.output
    assert "files set to LINE_COUNTER_REQUESTED run it" in " ".join(result.output.split())


def counted_file(conn: Any) -> int:
    """A file row for the new job, its object stored before any dispatcher sees it."""
    with conn.transaction():
        file_id = conn.execute("SELECT (locaria_core.add_file(%s)->>'id')::bigint AS id", [Jsonb(
            {"status": "LINE_COUNTER_REQUESTED", "file_attributes": {"name": "parks.csv", "ext": "csv"}})]
        ).fetchone()["id"]
        open_storage().put(incoming_key(file_id, "csv"), SAMPLE)
    return int(file_id)


def test_scaffold_files_and_entry(project: Path) -> None:
    scaffold(project)
    folder = project / "docker" / "line_counter"
    assert sorted(p.name for p in folder.iterdir()) == ["line_counter_job.py"]
    entry = json.loads((project / "docker" / "dockers.json").read_text())["line_counter"]
    assert entry["handler"] == "line_counter_job:run"
    assert entry["trigger_statuses"] == ["LINE_COUNTER_REQUESTED"]
    assert entry["command"] == ["{python}", "docker/line_counter/line_counter_job.py"]
    assert "file_loader" in json.loads((project / "docker" / "dockers.json").read_text())  # others kept
    again = CliRunner().invoke(app, ["docker", "new", "line_counter"])
    assert again.exit_code == 1 and "already exists" in again.output
    bad = CliRunner().invoke(app, ["docker", "new", "Line-Counter"])
    assert bad.exit_code == 1 and "must be lower-case letters" in " ".join(bad.output.split())


def test_scaffolded_job_runs_locally(project: Path, conn: Any) -> None:
    scaffold(project)
    dockers.sync(conn, dockers.load(project / "docker" / "dockers.json"))
    file_id = counted_file(conn)
    row = wait_for_file(file_id, timeout=60)
    assert row["status"] == "LINE_COUNTER_COMPLETED", row["attributes"].get("log_messages")
    assert row["attributes"]["line_count"] == SAMPLE.read_bytes().count(b"\n")


def test_scaffolded_job_runs_as_a_container(project: Path, conn: Any, engine_url: str, engine: docker.DockerClient,
                                            base_image: str, monkeypatch: pytest.MonkeyPatch, dispatchers: Any) -> None:
    scaffold(project)
    monkeypatch.setenv("DOCKER_HOST", engine_url)
    result = CliRunner().invoke(app, ["docker", "build", "line_counter", "--base", base_image])
    assert result.exit_code == 0, result.output
    assert engine.images.get("localhost/locaria-batch/line_counter:latest")
    dockers.sync(conn, dockers.load(project / "docker" / "dockers.json"))
    file_id = counted_file(conn)
    dispatcher = dispatchers(make_runner("docker"), concurrency=1)
    deadline = time.monotonic() + 120
    while (job := conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s", [file_id]).fetchone()) is None \
            or job["state"] not in {"succeeded", "failed"}:
        assert time.monotonic() < deadline, "the container did not finish"
        dispatcher.run_once()
        time.sleep(0.3)
    row = conn.execute("SELECT status, attributes FROM locaria_core.files WHERE id = %s", [file_id]).fetchone()
    assert row["status"] == "LINE_COUNTER_COMPLETED", (job, row["attributes"].get("log_messages"))
    assert row["attributes"]["line_count"] == SAMPLE.read_bytes().count(b"\n")
    assert job["handle"]["container_id"]
