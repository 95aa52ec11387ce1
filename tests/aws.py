"""AWS for the deploy tests, on the moto server of tests.aws_fixtures: a stage configuration written
from locaria.example.json, the data bucket the stack's Lambda package goes to, the applied stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from locaria_batch.deploy.stages import Target, load_stages, target

REPO = Path(__file__).resolve().parent.parent
JOB_DB_URL = "postgresql://locaria_jobs:secret@db.internal:5432/locaria"


@pytest.fixture
def deploy_aws(aws: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The moto endpoint of tests.aws_fixtures (reset, credentials set), plus the dev stage's job
    database URL in the variable the example stage configuration names."""
    monkeypatch.setenv("LOCARIA_DEV_JOB_DB_URL", JOB_DB_URL)
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
    chosen = target(load_stages(stage_config), "dev", None, None, REPO)
    boto3.client("s3", region_name=chosen.region).create_bucket(
        Bucket=chosen.bucket, CreateBucketConfiguration={"LocationConstraint": chosen.region})
    return chosen


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
