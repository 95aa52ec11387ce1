"""The AWS path the way a user takes it, on moto: `deploy apply` (the bucket made by the command),
a presigned PUT of a real file, the S3 event moto's notification sends handed to the upload
Lambda's handler, the launcher starting the task through ECS, the task's job run from its
overrides and secrets, the row reaching FARGATE_PROCESSED; then a download ending in a presigned GET
that returns the file.  Each Lambda handler runs with the environment its function was deployed
with, so it finds the database only through the secret the stack names."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from typer.testing import CliRunner

from locaria_batch.cli.main import app
from locaria_batch.dispatch.lambdas import launcher_handler, task_state_handler, upload_handler
from locaria_batch.files import get_file
from locaria_batch.settings import reset as reset_settings
from tests.aws_fixtures import FargateStack

pytest_plugins = ["tests.aws"]
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
REGION = "eu-west-2"


def cli(*args: str) -> Any:
    """A command as the user runs it; its JSON reply."""
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@contextmanager
def as_deployed(function_arn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The environment the function was deployed with, and nothing of the user's database settings."""
    variables = boto3.client("lambda", region_name=REGION).get_function_configuration(
        FunctionName=function_arn)["Environment"]["Variables"]
    with monkeypatch.context() as patch:
        for name in ("LOCARIA_DB_URL", "LOCARIA_STORAGE", "LOCARIA_DB_SECRET"):
            patch.delenv(name, raising=False)
        for name, value in variables.items():
            patch.setenv(name, value)
        reset_settings()
        yield variables
    reset_settings()


def file_job(conn: Any, file_id: int) -> dict[str, Any]:
    return conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s ORDER BY id DESC LIMIT 1",
                        [file_id]).fetchone()


def stopped_task_event(stack: FargateStack, task_arn: str) -> dict[str, Any]:
    return {"source": "aws.ecs", "detail-type": "ECS Task State Change",
            "detail": json.loads(json.dumps(stack.task(task_arn), default=str))}


def test_upload_and_download_on_aws_from_deploy_apply(stage_config: Path, deploy_aws: str, db_url: str, conn: Any,
                                                      s3_lambda_events: list[tuple[str, dict[str, Any]]],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # the user's locaria.json names subnets and a security group of their VPC
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]]
    group = ec2.create_security_group(GroupName="locaria-jobs", Description="jobs", VpcId=vpc)["GroupId"]
    stages = json.loads(stage_config.read_text())
    stages["dev"].update(vpcPrivateSubnetA=subnets[0], vpcPrivateSubnetB=subnets[1], securityGroup=group)
    stage_config.write_text(json.dumps(stages))

    job_login = os.environ["LOCARIA_DEV_JOB_DB_URL"]
    assert job_login.startswith("postgresql://locaria_test_job:")  # a login granted locaria_job (tests/aws.py)
    outputs = cli("deploy", "apply", "--stage", "dev", "--poll", "0.2")["outputs"]
    bucket = outputs["BucketName"]
    assert bucket == "locaria-dev-maindev"

    # the user asks for an upload URL and PUTs a real file to it, as a browser would
    monkeypatch.setenv("LOCARIA_STORAGE", f"s3://{bucket}")
    reset_settings()
    data = (SAMPLES / "parks.geojson").read_bytes()
    ticket = cli("files", "upload-url", "parks.geojson")
    assert get_file(conn, ticket["id"])["status"] == "UPLOADING"
    assert requests.put(ticket["url"], data=data, timeout=30).status_code == 200

    # moto's notification: one event, for the upload Lambda, naming the object
    [(function_arn, event)] = s3_lambda_events
    assert function_arn == outputs["UploadFunctionArn"]
    assert event["Records"][0]["s3"]["object"]["key"] == ticket["key"].replace("/", "%2F")
    with as_deployed(outputs["UploadFunctionArn"], monkeypatch) as variables:
        assert variables["LOCARIA_DB_SECRET"] == "locaria-batch/dev-maindev/dispatcher-database-url"
        assert upload_handler(event) == {"uploads": [{"id": ticket["id"], "status": "REGISTERED", "completed": True}]}

    # the launcher starts the loader's task through ECS
    with as_deployed(outputs["LauncherFunctionArn"], monkeypatch):
        launched = launcher_handler({"source": "aws.events", "detail-type": "Scheduled Event"})
    job = file_job(conn, ticket["id"])
    assert launched["launched"] == [job["id"]] and job["state"] == "launching"
    stack = FargateStack(endpoint=deploy_aws, db_url=db_url, subnets=subnets[:2], security_group=group,
                         ecs=boto3.client("ecs", region_name=REGION), cluster=outputs["ClusterName"])
    task = stack.task(job["handle"]["task_arn"])
    assert task["taskDefinitionArn"] == outputs["FileLoaderTaskDefinitionArn"]

    def run_task(task_arn: str) -> None:
        """The container: its secrets from Secrets Manager, its job from the overrides."""
        env = stack.container_env(task_arn)
        # the task logs in as the job login, not the owner nor the dispatcher
        assert env["LOCARIA_STORAGE"] == f"s3://{bucket}" and env["LOCARIA_DB_URL"] == job_login
        done = stack.run_container(task_arn)
        assert done.returncode == 0, done.stdout + done.stderr
        with as_deployed(outputs["LauncherFunctionArn"], monkeypatch):
            assert launcher_handler({})["in_flight"] == 0
        # EventBridge then tells the task-state Lambda: the job had reported, nothing to fail
        with as_deployed(outputs["TaskStateFunctionArn"], monkeypatch):
            assert "already ended" in task_state_handler(stopped_task_event(stack, task_arn))["ignored"]

    run_task(job["handle"]["task_arn"])
    loaded = get_file(conn, ticket["id"])
    assert loaded["status"] == "FARGATE_PROCESSED", loaded["attributes"]["log_messages"]
    table = loaded["attributes"]["imported_table_name"]
    assert conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"] == 20

    # a download request ends in a presigned GET that returns the file
    requested = cli("download", "request", "--table", table, "--format", "csv")
    download_id = requested["id"]
    with as_deployed(outputs["LauncherFunctionArn"], monkeypatch):
        assert launcher_handler({})["launched"] == [file_job(conn, download_id)["id"]]
    download_task = file_job(conn, download_id)["handle"]["task_arn"]
    assert stack.task(download_task)["taskDefinitionArn"] == outputs["FileDownloadTaskDefinitionArn"]
    run_task(download_task)
    done = get_file(conn, download_id)
    assert done["status"] == "DOWNLOAD_COMPLETED", done["attributes"]["log_messages"]
    url = done["attributes"]["url"]
    assert url.startswith(deploy_aws) and "Signature" in url
    fetched = requests.get(url, timeout=30)
    assert fetched.status_code == 200
    rows = list(csv.DictReader(io.StringIO(fetched.text)))
    assert len(rows) == 20 and "Hyde Park" in {row["name"] for row in rows}
