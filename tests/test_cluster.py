"""The embedded cluster and migrations, for real."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

from locaria_batch.db import connect
from locaria_batch.db.migrate import available_migrations, migrate

REPO = Path(__file__).resolve().parent.parent


def test_db_up_status_url_down(monkeypatch) -> None:
    home = Path(tempfile.mkdtemp(prefix="locaria-test-home-"))
    home.chmod(0o755)
    env = {**os.environ, "LOCARIA_HOME": str(home)}
    for name in ("LOCARIA_DB_URL", "LOCARIA_JOB_DB_URL"):
        env.pop(name, None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "locaria_batch.cli.main", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    try:
        assert cli("db", "status").returncode == 1
        up = cli("db", "up")
        assert up.returncode == 0, up.stderr
        credentials = json.loads((home / "credentials.json").read_text())
        assert stat.S_IMODE((home / "credentials.json").stat().st_mode) == 0o600
        assert stat.S_IMODE((home / "pgpass").stat().st_mode) == 0o600
        url = cli("db", "url").stdout.strip()
        assert url.startswith("postgresql://locaria_dispatcher@127.0.0.1:") and "passfile=" in url
        shown = cli("db", "status").stdout + up.stdout + cli("db", "status", "--json").stdout
        assert not any(password in shown + url for password in credentials.values())
        with psycopg.connect(url, autocommit=True) as conn:  # what `psql "$(locaria-batch db url)"` does
            assert conn.execute("SELECT postgis_lib_version()").fetchone()[0].startswith("3.")
            assert conn.execute("SELECT count(*) FROM locaria_core.dockers WHERE enabled").fetchone()[0] >= 2
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0] is False
            port = conn.info.port
            # password authentication: nobody gets in without one
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(f"postgresql://locaria@127.0.0.1:{port}/locaria", connect_timeout=5)
            assert "running" in cli("db", "status").stdout
            assert cli("db", "up").returncode == 0  # idempotent
            # down and up again while a client was connected: the port stays (saved URLs keep working)
            assert "stopped" in cli("db", "down").stdout
        assert cli("db", "status").returncode == 1
        assert "locaria-batch db up" in cli("db", "url").stderr
        assert cli("db", "up").returncode == 0
        assert cli("db", "url").stdout.strip() == url
    finally:
        cli("db", "down")
        shutil.rmtree(home, ignore_errors=True)


def test_a_worker_outlives_db_down_and_up_of_the_embedded_cluster() -> None:
    """The embedded cluster stopped under a worker is an outage like any other: the worker waits for
    it on the same port and carries on, while one-shot commands say how to start it."""
    home = Path(tempfile.mkdtemp(prefix="locaria-test-home-"))
    home.chmod(0o755)
    env = {**os.environ, "LOCARIA_HOME": str(home), "LOCARIA_HEARTBEAT_SECONDS": "0.5"}
    for name in ("LOCARIA_DB_URL", "LOCARIA_JOB_DB_URL"):
        env.pop(name, None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "locaria_batch.cli.main", *args], env=env, capture_output=True,
                              text=True, timeout=120, cwd=REPO)

    worker = None
    try:
        assert cli("db", "up").returncode == 0
        worker = subprocess.Popen([sys.executable, "-m", "locaria_batch.cli.main", "worker", "--poll", "1"], env=env,
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(3)
        assert "stopped" in cli("db", "down").stdout
        time.sleep(3)
        assert worker.poll() is None, worker.communicate()[0]
        listed = cli("files", "list")
        assert listed.returncode != 0 and "locaria-batch db up" in listed.stderr, listed.stderr
        assert cli("db", "up").returncode == 0
        added = cli("files", "add", str(REPO / "samples" / "parks.csv"), "--json")
        assert added.returncode == 0, added.stderr
        file_id = json.loads(added.stdout.strip().splitlines()[-1])["id"]
        deadline = time.monotonic() + 60
        while json.loads(cli("files", "show", str(file_id), "--json").stdout)["status"] != "FARGATE_PROCESSED":
            assert time.monotonic() < deadline and worker.poll() is None, "the worker did not load the file"
            time.sleep(0.5)
    finally:
        output = ""
        if worker is not None:
            worker.terminate()
            output = worker.communicate(timeout=30)[0]
        cli("db", "down")
        shutil.rmtree(home, ignore_errors=True)
    assert worker.returncode == 0, output
    assert "database unreachable" in output and "reachable again" in output, output


def test_two_migrations_at_once_are_safe(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS migrate_race")
        admin.execute("CREATE DATABASE migrate_race")
    url = pg_url.rsplit("/", 1)[0] + "/migrate_race"
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with connect(url, autocommit=True) as conn:
                results.append([m.version for m in migrate(conn)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    everything = [m.version for m in available_migrations()]
    assert sorted(results, key=len) == [[], everything]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE migrate_race")
