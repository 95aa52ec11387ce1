"""Test setup: a real PostgreSQL + PostGIS cluster, started here for the session."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from locaria_batch.db import connect, dockers
from locaria_batch.db.cluster import EmbeddedCluster
from locaria_batch.db.migrate import migrate
from locaria_batch.dispatch.dispatcher import Dispatcher
from locaria_batch.settings import reset as reset_settings

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.aws_fixtures", "tests.console_fixtures"]  # moto and Fargate; the console and a browser
CLUSTERS: list[EmbeddedCluster] = []  # the session's embedded cluster, for tests that restart it


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """LOCARIA_TEST_DB_URL if given, else a throw-away embedded cluster for this session."""
    external = os.environ.get("LOCARIA_TEST_DB_URL")
    if external:
        yield external
        return
    # not under pytest's tmp (mode 0700): as root, the cluster runs as the postgres user
    home = Path(tempfile.mkdtemp(prefix="locaria-test-cluster-"))
    home.chmod(0o755)
    os.environ["LOCARIA_PG_OPTIONS"] = "-c fsync=off -c full_page_writes=off"
    reset_settings()
    cluster = EmbeddedCluster(home)
    url = cluster.up()
    CLUSTERS.append(cluster)
    with connect(url, autocommit=True) as conn:
        migrate(conn)
    yield url
    cluster.destroy()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def locaria_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own LOCARIA_HOME (storage, job logs) and the repo's dockers.json."""
    home = tmp_path / "locaria-home"
    monkeypatch.setenv("LOCARIA_HOME", str(home))
    monkeypatch.setenv("LOCARIA_STORAGE", str(home / "storage"))
    monkeypatch.setenv("LOCARIA_PROJECT_DIR", str(REPO))
    monkeypatch.setenv("LOCARIA_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.delenv("LOCARIA_DB_URL", raising=False)
    # job subprocesses import this checkout, whatever the virtualenv has installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")])))
    reset_settings()
    yield home
    reset_settings()


RESET_SQL = """
TRUNCATE locaria_core.files, locaria_core.jobs, locaria_core.job_events, locaria_core.dispatchers, locaria_core.logs,
         locaria_core.parameters, locaria_data.items, locaria_core.categories RESTART IDENTITY CASCADE;
DELETE FROM locaria_core.dockers;
"""


def role_login(pg_url: str, role: str) -> str:
    """Give ROLE a login with a new password (as the embedded cluster's `db up` does); its URL.  On the
    embedded cluster, its own login (which `db up` sets again after a stop)."""
    if CLUSTERS:
        url = CLUSTERS[0].url(role)
        assert url is not None, "the session's cluster is not running"
        return url
    password = secrets.token_urlsafe(16)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    parts = urlsplit(pg_url)
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{parts.hostname}:{parts.port}"))


@pytest.fixture(scope="session")
def job_url(pg_url: str) -> str:
    """A login of the locaria_job role: what every job process of the tests connects with."""
    return role_login(pg_url, "locaria_job")


@pytest.fixture(scope="session")
def dispatcher_url(pg_url: str) -> str:
    """A login of the locaria_dispatcher role: what the CLI and workers connect with."""
    return role_login(pg_url, "locaria_dispatcher")


@pytest.fixture
def db_url(pg_url: str, job_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A clean database (no rows, the repo's dockers) with LOCARIA_DB_URL pointing at it."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(RESET_SQL)
        for (schema,) in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'locaria_uploads'"
        ).fetchall():
            conn.execute(f"DROP TABLE {schema} CASCADE")
    with connect(pg_url, autocommit=True) as conn:
        dockers.sync(conn, dockers.load(REPO / "docker" / "dockers.json"))
    monkeypatch.setenv("LOCARIA_DB_URL", pg_url)
    monkeypatch.setenv("LOCARIA_JOB_DB_URL", job_url)
    reset_settings()
    yield pg_url


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def add_docker(conn: psycopg.Connection[dict[str, Any]]) -> Any:
    """Register an extra job type (besides the repo's) for one test."""

    specs = dockers.load(REPO / "docker" / "dockers.json")

    def add(name: str, **entry: Any) -> dockers.DockerSpec:
        specs[name] = dockers.DockerSpec.from_entry(name, entry)
        dockers.sync(conn, specs)
        return specs[name]

    return add


@pytest.fixture
def dispatchers() -> Iterator[Callable[..., Dispatcher]]:
    """Makes dispatchers and closes them after the test (their connections would outlive it)."""
    made: list[Dispatcher] = []

    def make(runner: Any, **options: Any) -> Dispatcher:
        made.append(Dispatcher(runner, **options))
        return made[-1]

    yield make
    for dispatcher in made:
        dispatcher.close()


def restart_postgres(url: str, down_seconds: float = 0.0) -> None:
    """`pg_ctl restart -m fast` on the session's embedded cluster, or a stop and a start `down_seconds`
    apart (on its port, as `db down` and `db up` do), then wait until it answers again."""
    if down_seconds > 0:
        with postgres_stopped(url):
            time.sleep(down_seconds)
        return
    assert CLUSTERS, "restarting PostgreSQL needs the embedded test cluster (unset LOCARIA_TEST_DB_URL)"
    CLUSTERS[0].restart()
    _wait_until_answering(url)


@contextlib.contextmanager
def postgres_stopped(url: str) -> Iterator[None]:
    """The session's embedded cluster stopped for the block (`db down`), started again after it (`db up`)."""
    assert CLUSTERS, "stopping PostgreSQL needs the embedded test cluster (unset LOCARIA_TEST_DB_URL)"
    CLUSTERS[0].down()
    try:
        yield
    finally:
        CLUSTERS[0].up()
        _wait_until_answering(url)


def _wait_until_answering(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "PostgreSQL did not come back"
            time.sleep(0.1)


def terminate_backends(url: str, application_prefix: str = "locaria-batch") -> int:
    """pg_terminate_backend on every session whose application_name starts with the prefix."""
    with psycopg.connect(url, autocommit=True) as admin:
        row = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name LIKE %s AND pid <> pg_backend_pid()",
                            [application_prefix + "%"]).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def runs(conn: psycopg.Connection[dict[str, Any]]) -> Any:
    """public.test_runs: one row per execution of a test job (see tests/jobs_for_tests.py)."""
    conn.execute("DROP TABLE IF EXISTS public.test_runs")
    conn.execute("CREATE TABLE public.test_runs (file_id bigint, job_id bigint, attempt int, pid int, "
                 "at timestamptz DEFAULT clock_timestamp())")
    conn.execute("GRANT INSERT ON public.test_runs TO locaria_job")  # test jobs record their runs here

    def rows() -> list[dict[str, Any]]:
        with connect(os.environ["LOCARIA_DB_URL"], autocommit=True) as fresh:  # survives a restart
            return fresh.execute("SELECT * FROM public.test_runs ORDER BY at").fetchall()

    return rows
