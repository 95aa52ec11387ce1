"""AWS for tests: moto in server mode on a loopback port, plus a Fargate set-up in it.

boto3 reaches moto only through AWS_ENDPOINT_URL, exactly as it would reach any other
AWS-compatible endpoint.  moto starts no containers: `FargateStack.run_container` plays the ECS
agent (resolves the task definition's secrets, runs the job with the task's overrides) and
records the container's exit code and the task's stop in moto, which then reports them through
the ordinary ECS API.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
import requests
from moto.ecs.models import ecs_backends
from moto.server import ThreadedMotoServer

from locaria_batch.settings import reset as reset_settings

REGION = "eu-west-2"
ACCOUNT = "123456789012"
CLUSTER = "locaria-cluster-test"
BUCKET = "locaria-test-bucket"
STORAGE_URL = f"s3://{BUCKET}/data"
LAUNCHER_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:locaria-launcher"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh moto (every resource reset) with the environment pointing boto3 at it."""
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    # tasks stay RUNNING until the test stops them (moto's default moves them on at every describe)
    requests.post(f"{moto_endpoint}/moto-api/state-manager/set-transition", timeout=10, json={
        "model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000}}).raise_for_status()
    yield moto_endpoint
    requests.post(f"{moto_endpoint}/moto-api/state-manager/unset-transition", timeout=10,
                  json={"model_name": "ecs::task"})


@pytest.fixture
def s3_storage(aws: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """LOCARIA_STORAGE on an S3 bucket in moto."""
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    monkeypatch.setenv("LOCARIA_STORAGE", STORAGE_URL)
    reset_settings()
    return STORAGE_URL


@dataclass
class FargateStack:
    """What `deploy` would have created: cluster, task definitions with secrets, network, config."""

    endpoint: str
    db_url: str
    subnets: list[str]
    security_group: str
    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    ecs: Any = None
    cluster: str = CLUSTER

    def task(self, task_arn: str) -> dict[str, Any]:
        return self.ecs.describe_tasks(cluster=self.cluster, tasks=[task_arn], include=["TAGS"])["tasks"][0]

    def task_arns(self, started_by: str | None = None) -> list[str]:
        kwargs = {"startedBy": started_by} if started_by else {}
        return list(self.ecs.list_tasks(cluster=self.cluster, **kwargs)["taskArns"])

    def container_env(self, task_arn: str) -> dict[str, str]:
        """The environment ECS gives the container: task-definition secrets, then the overrides."""
        task = self.task(task_arn)
        definition = self.ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
        container = definition["containerDefinitions"][0]
        secrets = boto3.client("secretsmanager")
        env = {s["name"]: secrets.get_secret_value(SecretId=s["valueFrom"])["SecretString"]
               for s in container.get("secrets", [])}
        for override in task.get("overrides", {}).get("containerOverrides", []):
            if override["name"] == container["name"]:
                env.update({e["name"]: e["value"] for e in override.get("environment", [])})
        return env

    def run_container(self, task_arn: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the job the task carries (python -m locaria_batch.job with the container's env) and
        record its exit in moto, as the ECS agent would."""
        env = {**_base_env(), **self.container_env(task_arn)}
        done = subprocess.run([sys.executable, "-m", "locaria_batch.job"], env=env, capture_output=True, text=True,
                              timeout=timeout)
        self.container_exited(task_arn, done.returncode)
        return done

    def run_file(self, file_id: int) -> dict[str, Any]:
        """Dispatch the file's queued job with the ecs runner, run its task, reconcile; the file row."""
        from locaria_batch.db import connect
        from locaria_batch.dispatch.dispatcher import Dispatcher
        from locaria_batch.dispatch.ecs import EcsRunner
        from locaria_batch.files import get_file

        dispatcher = Dispatcher(EcsRunner.from_database())
        try:
            dispatcher.run_once()
            with connect(self.db_url, autocommit=True) as conn:
                job = conn.execute("SELECT handle FROM locaria_core.jobs WHERE file_id = %s AND state = 'launching'",
                                   [file_id]).fetchone()
                assert job is not None, f"no job of file {file_id} was launched"
                done = self.run_container(job["handle"]["task_arn"])
                assert done.returncode == 0, done.stdout + done.stderr
                dispatcher.run_once()
                return get_file(conn, file_id)
        finally:
            dispatcher.close()

    def container_exited(self, task_arn: str, exit_code: int | None, *,
                         stop_code: str = "EssentialContainerExited",
                         stopped_reason: str = "Essential container in task exited",
                         container_reason: str | None = None) -> None:
        task = _moto_task(task_arn)
        container = task.containers[0]
        container.exitCode = exit_code
        container.last_status = "STOPPED"
        if container_reason:
            container.reason = container_reason
        task.stop_code = stop_code
        task.last_status = "STOPPED"
        task.desired_status = "STOPPED"
        task.stopped_reason = stopped_reason


def _moto_task(task_arn: str) -> Any:
    for cluster_tasks in ecs_backends[ACCOUNT][REGION].tasks.values():
        if task_arn in cluster_tasks:
            return cluster_tasks[task_arn]
    raise LookupError(f"moto has no task {task_arn}")


def _base_env() -> dict[str, str]:
    """What the container image itself provides: Python, this checkout, the AWS endpoint."""
    keep = ("PATH", "PYTHONPATH", "HOME", "LOCARIA_HOME", "LOCARIA_PROJECT_DIR", "LOCARIA_HEARTBEAT_SECONDS",
            "LANG")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    return env


def fargate_entry(stack_subnets: list[str], security_group: str, task: str, container: str) -> dict[str, Any]:
    return {
        "task": task, "ecsName": CLUSTER, "vpcPrivateSubnetA": stack_subnets[0],
        "vpcPrivateSubnetB": stack_subnets[1], "ServerlessSecurityGroup": security_group, "region": REGION,
        "arn": LAUNCHER_ARN, "ecrRepositoryUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/locaria-{container}",
        "containerName": container, "logGroup": f"/locaria/test/{container}", "streamPrefix": "locaria",
    }


@pytest.fixture
def fargate(aws: str, s3_storage: str, db_url: str, conn: Any) -> FargateStack:
    """ECS cluster, one task definition per docker (secrets LOCARIA_DB_URL and LOCARIA_STORAGE from
    Secrets Manager), subnets of moto's default VPC, and parameters.fargate_config pointing at them."""
    ec2 = boto3.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]]
    group = ec2.create_security_group(GroupName="locaria-jobs", Description="jobs", VpcId=vpc)["GroupId"]
    secrets = boto3.client("secretsmanager")
    db_secret = secrets.create_secret(Name="locaria/test/db", SecretString=db_url)["ARN"]
    storage_secret = secrets.create_secret(Name="locaria/test/storage", SecretString=s3_storage)["ARN"]
    ecs = boto3.client("ecs")
    ecs.create_cluster(clusterName=CLUSTER)
    stack = FargateStack(endpoint=aws, db_url=db_url, subnets=subnets[:2], security_group=group, ecs=ecs)
    for row in conn.execute("SELECT name, cpu, memory FROM locaria_core.dockers ORDER BY name").fetchall():
        name = row["name"]
        arn = ecs.register_task_definition(
            family=f"locaria-{name}", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
            cpu=str(row["cpu"]), memory=str(row["memory"]),
            containerDefinitions=[{
                "name": name, "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/locaria-{name}:latest",
                "memory": row["memory"], "essential": True,
                "secrets": [{"name": "LOCARIA_DB_URL", "valueFrom": db_secret},
                            {"name": "LOCARIA_STORAGE", "valueFrom": storage_secret}],
                "logConfiguration": {"logDriver": "awslogs", "options": {
                    "awslogs-group": f"/locaria/test/{name}", "awslogs-region": REGION,
                    "awslogs-stream-prefix": "locaria"}},
            }],
        )["taskDefinition"]["taskDefinitionArn"]
        stack.config[name] = fargate_entry(stack.subnets, group, arn, name)
    conn.execute("SELECT locaria_core.set_parameters(%s)", [json.dumps({
        "parameter_name": "fargate_config", "parameters": stack.config, "acl": {"_groups": ["Admins"]}})])
    return stack


@pytest.fixture
def s3_lambda_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """(function ARN, event) of each Lambda invocation moto's S3 makes for a bucket notification.
    moto runs no Lambda without Docker, so the test hands each event to the handler itself."""
    from moto.s3 import notifications

    delivered: list[tuple[str, dict[str, Any]]] = []

    def deliver(account_id: str, event: dict[str, Any], function_arn: str, region: str) -> None:
        delivered.append((function_arn, event))

    monkeypatch.setattr(notifications, "_invoke_awslambda", deliver)
    return delivered


class FaultInjector:
    """Answers the next calls of one operation with a canned AWS response, then lets calls through to
    moto.  Only for responses moto cannot produce (RunTask `failures[]`, ThrottlingException)."""

    def __init__(self, client: Any, operation: str) -> None:
        self.client = client
        self.operation = operation
        self.queue: list[tuple[int, dict[str, Any]]] = []
        self.calls: list[dict[str, Any]] = []
        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register(f"before-parameter-build.{service}.{operation}", self._record)
        client.meta.events.register(f"before-call.{service}.{operation}", self._answer)

    def respond(self, parsed: dict[str, Any], status: int = 200, times: int = 1) -> FaultInjector:
        self.queue.extend([(status, parsed)] * times)
        return self

    def error(self, code: str, message: str, status: int = 400, times: int = 1) -> FaultInjector:
        return self.respond({"Error": {"Code": code, "Message": message}}, status, times)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.calls.append(dict(params))

    def _answer(self, **_: Any) -> tuple[Any, dict[str, Any]] | None:
        if not self.queue:
            return None
        status, parsed = self.queue.pop(0)
        parsed = {**parsed, "ResponseMetadata": {"HTTPStatusCode": status}}
        return _Http(status), parsed


@dataclass
class _Http:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)


def wait_until(predicate: Callable[[], Any], timeout: float = 30, poll: float = 0.1) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(poll)
