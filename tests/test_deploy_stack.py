"""`deploy apply` against moto's CloudFormation, `docker push` up to the Engine API's push (tags
and ECR login for real, on Podman), `docker deploy` writing fargate_config, and the errors a
user meets on the way."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import docker
import pytest
from typer.testing import CliRunner

from locaria_batch import __version__
from locaria_batch.cli.main import app
from locaria_batch.deploy import workflow
from locaria_batch.deploy.stack import DeployError, StackNotDeployed
from locaria_batch.deploy.stages import Target
from tests.aws import JOB_DB_URL, RecordedPush, fargate_config

pytest_plugins = ["tests.aws", "tests.containers"]


def test_apply_creates_the_stack_and_records_outputs(dev: Target) -> None:
    events: list[str] = []
    outputs = workflow.apply_stack(dev, report=events.append, poll=0.2)
    assert "creating stack locaria-batch-dev-maindev in eu-west-2" in events
    assert "locaria-batch-dev-maindev: CREATE_COMPLETE" in events
    recorded = json.loads(dev.outputs_file.read_text())
    assert recorded["outputs"] == outputs and recorded["stack"] == "locaria-batch-dev-maindev"

    ecs = boto3.client("ecs", region_name="eu-west-2")
    task = ecs.describe_task_definition(taskDefinition=outputs["FileLoaderTaskDefinitionArn"])["taskDefinition"]
    # moto's CloudFormation keeps the memory but drops cpu, roles and the network mode (the template test
    # checks those)
    assert task["memory"] == "2048" and task["containerDefinitions"][0]["memory"] == 2048
    assert task["containerDefinitions"][0]["name"] == "file_loader"
    assert ecs.describe_clusters(clusters=[outputs["ClusterName"]])["clusters"][0]["status"] == "ACTIVE"
    repositories = boto3.client("ecr", region_name="eu-west-2").describe_repositories()["repositories"]
    assert sorted(r["repositoryUri"] for r in repositories) == sorted(
        [outputs["FileDownloadRepositoryUri"], outputs["FileImportRepositoryUri"], outputs["FileLoaderRepositoryUri"]])
    groups = boto3.client("logs", region_name="eu-west-2").describe_log_groups(logGroupNamePrefix="/locaria-batch/")
    assert {g["logGroupName"] for g in groups["logGroups"]} == {
        "/locaria-batch/dev-maindev/file_loader", "/locaria-batch/dev-maindev/file_download",
        "/locaria-batch/dev-maindev/file_import"}
    function = boto3.client("lambda", region_name="eu-west-2").get_function_configuration(
        FunctionName=outputs["LauncherFunctionArn"])
    assert function["Handler"] == "locaria_batch.dispatch.lambdas.launcher_handler"
    rule = boto3.client("events", region_name="eu-west-2").describe_rule(Name=outputs["LauncherScheduleArn"]
                                                                       .rsplit("/", 1)[1])
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    # the Lambda package landed in the bucket under a content-addressed key
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=dev.bucket)["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("deploy/dev-maindev/lambda-")

    again: list[str] = []
    assert workflow.apply_stack(dev, report=again.append, poll=0.2) == outputs
    assert "no changes" in again


def test_apply_needs_the_jobs_database_url(dev: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCARIA_DEV_JOB_DB_URL")
    with pytest.raises(DeployError, match="set LOCARIA_DEV_JOB_DB_URL to the postgresql:// URL"):
        workflow.apply_stack(dev, poll=0.2)


def test_push_before_the_stack_exists(dev: Target) -> None:
    with pytest.raises(StackNotDeployed, match="not deployed yet: run `locaria-batch deploy apply --stage dev"):
        workflow.push(dev, "file_loader")


def flat(output: str) -> str:
    """The CLI's message without the console's line wrapping."""
    return " ".join(output.split())


def test_cli_apply_then_push_without_a_daemon(dev: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["deploy", "apply", "--stage", "dev", "--poll", "0.2"])
    assert result.exit_code == 0, result.output
    assert "stack locaria-batch-dev-maindev ready" in flat(result.output)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = CliRunner().invoke(app, ["docker", "push", "file_loader", "--stage", "dev"])
    assert result.exit_code == 1
    assert "no Docker daemon answers at unix:///nonexistent/docker.sock" in flat(result.output)
    result = CliRunner().invoke(app, ["docker", "push", "nosuch", "--stage", "dev"])
    listed = "docker/dockers.json lists file_download, file_import, file_loader"
    assert f"unknown docker 'nosuch': {listed}" in flat(result.output)


def test_no_credentials(stage_config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    result = CliRunner().invoke(app, ["deploy", "apply", "--stage", "dev"])
    assert result.exit_code == 1
    assert "AWS profile 'locaria-dev' (stage dev) is not configured" in flat(result.output)


# -- push and deploy, with the real image on Podman --------------------------------------------
@pytest.fixture
def recording(engine: docker.DockerClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordedPush]:
    recorder = RecordedPush()
    monkeypatch.setattr(engine.api, "push", recorder)
    yield recorder
    for call in recorder.calls:  # the registry tags the push made on the engine
        engine.images.remove(f"{call['repository']}:{call['tag']}", noprune=True)


@pytest.mark.container
def test_push_tags_the_dockers_own_repository(deployed: dict[str, str], dev: Target, engine: docker.DockerClient,
                                              file_loader_image: str, recording: RecordedPush) -> None:
    pushed = workflow.push(dev, "file_loader", engine=engine)
    uri = deployed["FileLoaderRepositoryUri"]
    image = engine.images.get(file_loader_image)
    version = f"{__version__}-{image.id.split(':')[1][:12]}"
    assert pushed.tags == (version, "latest")
    # both tags exist on the engine and point at the built image
    assert engine.images.get(f"{uri}:{version}").id == image.id
    assert engine.images.get(f"{uri}:latest").id == image.id
    token = boto3.client("ecr", region_name="eu-west-2").get_authorization_token()["authorizationData"][0]
    username, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
    expected_auth = {"username": username, "password": password, "serveraddress": uri.split("/")[0]}
    assert [(c["repository"], c["tag"], c["auth_config"]) for c in recording.calls] == [
        (uri, version, expected_auth), (uri, "latest", expected_auth)]
    assert username == "AWS"


@pytest.mark.container
def test_docker_deploy_writes_fargate_config(deployed: dict[str, str], dev: Target, conn: Any,
                                             engine: docker.DockerClient, base_image: str,
                                             recording: RecordedPush) -> None:
    # another docker's entry, written earlier, is kept
    conn.execute("SELECT locaria_core.set_parameters(%s::jsonb)", [json.dumps({
        "parameter_name": "fargate_config", "parameters": {"file_download": {"task": "earlier"}},
        "acl": {"_groups": ["Admins"]}})])
    lines: list[str] = []
    entry = workflow.deploy(dev, "file_loader", conn, base_image=base_image, engine=engine,
                            progress=lambda line, step, total: lines.append(line))
    assert any(line.upper().startswith("STEP") for line in lines)
    stored = fargate_config(conn)
    assert stored["file_download"] == {"task": "earlier"}
    assert stored["file_loader"] == entry
    assert entry == {
        "task": deployed["FileLoaderTaskDefinitionArn"], "ecsName": "locaria-batch-dev-maindev",
        "vpcPrivateSubnetA": "subnet-0a1b2c3d4e5f60001", "vpcPrivateSubnetB": "subnet-0a1b2c3d4e5f60002",
        "ServerlessSecurityGroup": "sg-0a1b2c3d4e5f60003", "region": "eu-west-2",
        "arn": deployed["LauncherFunctionArn"], "ecrRepositoryUri": deployed["FileLoaderRepositoryUri"],
        "image": f"{deployed['FileLoaderRepositoryUri']}:{recording.calls[0]['tag']}",
        "containerName": "file_loader", "logGroup": "/locaria-batch/dev-maindev/file_loader",
        "streamPrefix": "file_loader", "assignPublicIp": "DISABLED",
    }
    acl = conn.execute("SELECT acl FROM locaria_core.parameters WHERE parameter_name = 'fargate_config'").fetchone()
    assert acl["acl"]["update"] == ["Admins"]
    assert JOB_DB_URL not in json.dumps(stored)  # credentials live in Secrets Manager only
