"""The embedded cluster and migrations, for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psycopg

from locaria_batch.db import connect
from locaria_batch.db.migrate import available_migrations, migrate

REPO = Path(__file__).resolve().parent.parent


def test_db_up_status_url_down(monkeypatch) -> None:
    home = Path(tempfile.mkdtemp(prefix="locaria-test-home-"))
    home.chmod(0o755)
    env = {**os.environ, "LOCARIA_HOME": str(home)}
    env.pop("LOCARIA_DB_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "locaria_batch.cli.main", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    try:
        assert cli("db", "status").returncode == 1
        up = cli("db", "up")
        assert up.returncode == 0, up.stderr
        url = cli("db", "url").stdout.strip()
        assert url.startswith("postgresql://locaria@127.0.0.1:")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT postgis_lib_version()").fetchone()[0].startswith("3.")
            assert conn.execute("SELECT count(*) FROM locaria_core.dockers WHERE enabled").fetchone()[0] >= 2
        assert "running" in cli("db", "status").stdout
        assert cli("db", "up").returncode == 0  # idempotent
        assert "stopped" in cli("db", "down").stdout
        assert cli("db", "status").returncode == 1
        assert "locaria-batch db up" in cli("db", "url").stderr
    finally:
        cli("db", "down")
        shutil.rmtree(home, ignore_errors=True)


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
