"""AWS for the deploy tests, on the moto server of tests.aws_fixtures: a stage configuration written
from locaria.example.json, the dev stage's database (the test database as its owner sees it) and
login roles granted the job and dispatcher roles, and the applied stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from locaria_batch.deploy.stages import Target, load_stages, target

REPO = Path(__file__).resolve().parent.parent
LOGIN_PASSWORD = "login-secret"


def login_url(owner_url: str, login: str, role: str) -> str:
    """A login granted ROLE (made once per cluster), and its URL to the owner's database."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [login]).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(login), sql.Literal(LOGIN_PASSWORD)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(login)))
    parts = urlsplit(owner_url)
    return urlunsplit(parts._replace(netloc=f"{login}:{LOGIN_PASSWORD}@{parts.hostname}:{parts.port}"))


@pytest.fixture
def deploy_aws(aws: str, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The moto endpoint of tests.aws_fixtures (reset, credentials set), and the variables the example
    stage configuration names: the dev database's owner URL and the two logins the secrets hold."""
    monkeypatch.setenv("LOCARIA_DEV_DB_URL", db_url)
    monkeypatch.setenv("LOCARIA_DEV_JOB_DB_URL", login_url(db_url, "locaria_test_job", "locaria_job"))
    monkeypatch.setenv("LOCARIA_DEV_DISPATCHER_DB_URL",
                       login_url(db_url, "locaria_test_dispatcher", "locaria_dispatcher"))
    return aws


@pytest.fixture
def stage_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped example, as the stage configuration the commands read."""
    path = tmp_path / "locaria.json"
    path.write_text((REPO / "locaria.example.json").read_text())
    monkeypatch.setenv("LOCARIA_STAGE_CONFIG", str(path))
    return path


@pytest.fixture
def dev(stage_config: Path, deploy_aws: str) -> Target:
    """The dev stage of the example; its bucket does not exist yet (`deploy apply` makes it)."""
    return target(load_stages(stage_config), "dev", None, None, REPO)


@pytest.fixture
def deployed(dev: Target) -> dict[str, str]:
    """The dev stack applied to moto's CloudFormation; its outputs."""
    from locaria_batch.deploy import workflow

    return workflow.apply_stack(dev, report=lambda line: None, poll=0.2)


class RecordedPush:
    """Stands in for the Engine API's push only: a registry at ECR's address does not exist here."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, repository: str, tag: str | None = None, auth_config: dict[str, str] | None = None,
                 **options: Any) -> Iterator[dict[str, str]]:
        self.calls.append({"repository": repository, "tag": tag, "auth_config": auth_config, **options})
        return iter([{"status": "Pushed", "id": str(tag)}, {"status": f"{tag}: digest: sha256:0 size: 0"}])


def fargate_config(conn: Any) -> dict[str, Any]:
    row = conn.execute("SELECT parameter FROM locaria_core.parameters WHERE parameter_name = 'fargate_config'"
                       ).fetchone()
    return json.loads(row["parameter"]) if isinstance(row["parameter"], str) else row["parameter"]
