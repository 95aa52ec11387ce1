"""`deploy apply` against moto (the bucket, the secrets, CloudFormation, the upload notification) and
the stage's own database, `deploy destroy`, `docker push` up to the Engine API's push (tags and ECR
login for real, on Podman), `docker deploy` writing fargate_config to the stage's database, and the
errors a user meets on the way."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import docker
import psycopg
import pytest
from typer.testing import CliRunner

from locaria_batch import __version__
from locaria_batch.cli.main import app
from locaria_batch.db.connect import describe
from locaria_batch.deploy import workflow
from locaria_batch.deploy.bucket import BLOCK_ALL
from locaria_batch.deploy.stack import StackNotDeployed
from locaria_batch.deploy.stages import StageConfigError, Target, load_stages, target
from locaria_batch.errors import DeployError
from tests.aws import REPO, RecordedPush, fargate_config

pytest_plugins = ["tests.aws", "tests.containers"]
REGION = "eu-west-2"


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)


def test_apply_makes_everything_the_stage_needs(dev: Target, db_url: str, conn: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    outputs = workflow.apply_stack(dev, report=events.append, poll=0.2)
    # where it writes, said before anything is made
    assert events[0] == f"database: {describe(db_url)} (from $LOCARIA_DEV_DB_URL)"
    assert "bucket locaria-dev-maindev created (public access blocked, encrypted, CORS for presigned PUT/GET)" \
        in events
    assert "creating stack locaria-batch-dev-maindev in eu-west-2" in events
    assert "locaria-batch-dev-maindev: CREATE_COMPLETE" in events
    recording = next(i for i, e in enumerate(events) if e.startswith("recording fargate_config"))
    assert events[recording] == ("recording fargate_config (file_loader, file_download, file_import) in "
                                 f"{describe(db_url)}")
    recorded = json.loads(dev.outputs_file.read_text())
    assert recorded["outputs"] == outputs and recorded["stack"] == "locaria-batch-dev-maindev"

    # the bucket: private, owner-enforced, encrypted, CORS for the admin site's presigned PUTs
    s3 = client("s3")
    assert s3.get_public_access_block(Bucket=dev.bucket)["PublicAccessBlockConfiguration"] == BLOCK_ALL
    [cors] = s3.get_bucket_cors(Bucket=dev.bucket)["CORSRules"]
    assert cors["AllowedOrigins"] == ["https://admin-dev.example.org"] and "PUT" in cors["AllowedMethods"]
    rules = s3.get_bucket_encryption(Bucket=dev.bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # objects created under incoming/ invoke the upload Lambda
    [notification] = s3.get_bucket_notification_configuration(Bucket=dev.bucket)["LambdaFunctionConfigurations"]
    assert notification["LambdaFunctionArn"] == outputs["UploadFunctionArn"]
    assert [(r["Name"].lower(), r["Value"]) for r in notification["Filter"]["Key"]["FilterRules"]] == [
        ("prefix", "incoming/")]
    lambdas = client("lambda")
    upload = lambdas.get_function_configuration(FunctionName=outputs["UploadFunctionArn"])
    assert upload["Handler"] == "locaria_batch.dispatch.lambdas.upload_handler"
    assert upload["Environment"]["Variables"] == {
        "LOCARIA_DB_SECRET": "locaria-batch/dev-maindev/dispatcher-database-url", "LOCARIA_RUNNER": "ecs",
        "LOCARIA_STORAGE": "s3://locaria-dev-maindev"}
    policy = json.loads(lambdas.get_policy(FunctionName=outputs["UploadFunctionArn"])["Policy"])
    assert [s["Principal"] for s in policy["Statement"]] == [{"Service": "s3.amazonaws.com"}]

    # the secrets hold the logins of the job and dispatcher roles, and the storage
    secrets = client("secretsmanager")
    stored = {name: secrets.get_secret_value(SecretId=f"locaria-batch/dev-maindev/{name}")["SecretString"]
              for name in ("job-database-url", "dispatcher-database-url", "storage")}
    assert stored["job-database-url"].startswith("postgresql://locaria_test_job:")
    assert stored["dispatcher-database-url"].startswith("postgresql://locaria_test_dispatcher:")
    assert stored["storage"] == "s3://locaria-dev-maindev"

    ecs = client("ecs")
    task = ecs.describe_task_definition(taskDefinition=outputs["FileLoaderTaskDefinitionArn"])["taskDefinition"]
    # moto's CloudFormation keeps the memory but drops cpu, roles and the network mode (the template test
    # checks those)
    assert task["memory"] == "2048" and task["containerDefinitions"][0]["memory"] == 2048
    assert {s["name"]: s["valueFrom"] for s in task["containerDefinitions"][0]["secrets"]} == {
        "LOCARIA_DB_URL": "locaria-batch/dev-maindev/job-database-url",
        "LOCARIA_STORAGE": "locaria-batch/dev-maindev/storage"}
    assert ecs.describe_clusters(clusters=[outputs["ClusterName"]])["clusters"][0]["status"] == "ACTIVE"
    repositories = client("ecr").describe_repositories()["repositories"]
    assert sorted(r["repositoryUri"] for r in repositories) == sorted(
        [outputs["FileDownloadRepositoryUri"], outputs["FileImportRepositoryUri"], outputs["FileLoaderRepositoryUri"]])
    groups = client("logs").describe_log_groups(logGroupNamePrefix="/locaria-batch/")
    assert {g["logGroupName"] for g in groups["logGroups"]} == {
        "/locaria-batch/dev-maindev/file_loader", "/locaria-batch/dev-maindev/file_download",
        "/locaria-batch/dev-maindev/file_import"}
    launcher = lambdas.get_function_configuration(FunctionName=outputs["LauncherFunctionArn"])
    assert launcher["Handler"] == "locaria_batch.dispatch.lambdas.launcher_handler"
    rule = client("events").describe_rule(Name=outputs["LauncherScheduleArn"].rsplit("/", 1)[1])
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    # the Lambda package landed in the bucket under a content-addressed key
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=dev.bucket)["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("deploy/dev-maindev/lambda-")

    # fargate_config: every docker, in the stage's database
    config = fargate_config(conn)
    assert sorted(config) == ["file_download", "file_import", "file_loader"]
    assert config["file_loader"] == {
        "task": outputs["FileLoaderTaskDefinitionArn"], "ecsName": "locaria-batch-dev-maindev",
        "vpcPrivateSubnetA": "subnet-0a1b2c3d4e5f60001", "vpcPrivateSubnetB": "subnet-0a1b2c3d4e5f60002",
        "ServerlessSecurityGroup": "sg-0a1b2c3d4e5f60003", "region": "eu-west-2",
        "arn": outputs["LauncherFunctionArn"], "ecrRepositoryUri": outputs["FileLoaderRepositoryUri"],
        "containerName": "file_loader", "logGroup": "/locaria-batch/dev-maindev/file_loader",
        "streamPrefix": "file_loader", "assignPublicIp": "DISABLED"}

    # again: nothing to change; a secret rotated by hand stays rotated when its variable is unset
    secrets.put_secret_value(SecretId="locaria-batch/dev-maindev/job-database-url", SecretString="rotated")
    monkeypatch.delenv("LOCARIA_DEV_JOB_DB_URL")
    again: list[str] = []
    assert workflow.apply_stack(dev, report=again.append, poll=0.2) == outputs
    assert "no changes" in again and "bucket locaria-dev-maindev checked" in again
    assert "secret locaria-batch/dev-maindev/job-database-url kept" in again
    assert secrets.get_secret_value(SecretId="locaria-batch/dev-maindev/job-database-url")["SecretString"] == \
        "rotated"


def test_apply_completes_an_existing_bucket_and_keeps_its_settings(dev: Target) -> None:
    s3 = client("s3")
    s3.create_bucket(Bucket=dev.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    theirs = {"ID": "cms", "AllowedOrigins": ["https://cms.example.org"], "AllowedMethods": ["GET"]}
    s3.put_bucket_cors(Bucket=dev.bucket, CORSConfiguration={"CORSRules": [theirs]})
    queue = client("sqs").create_queue(QueueName="audit")["QueueUrl"]
    queue_arn = client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=dev.bucket, NotificationConfiguration={
        "QueueConfigurations": [{"Id": "audit", "QueueArn": queue_arn, "Events": ["s3:ObjectRemoved:*"]}]})
    events: list[str] = []
    outputs = workflow.apply_stack(dev, report=events.append, poll=0.2)
    assert "bucket locaria-dev-maindev: public access now blocked" in events
    assert ("bucket locaria-dev-maindev: CORS rule for presigned PUT/GET from https://admin-dev.example.org set "
            "(beside 1 other rule(s))") in events
    assert "bucket locaria-dev-maindev checked" in events
    assert s3.get_public_access_block(Bucket=dev.bucket)["PublicAccessBlockConfiguration"] == BLOCK_ALL
    rules = s3.get_bucket_cors(Bucket=dev.bucket)["CORSRules"]
    assert rules[0]["ID"] == "cms" and rules[1]["AllowedOrigins"] == ["https://admin-dev.example.org"]
    notifications = s3.get_bucket_notification_configuration(Bucket=dev.bucket)
    assert [q["Id"] for q in notifications["QueueConfigurations"]] == ["audit"]
    assert [f["LambdaFunctionArn"] for f in notifications["LambdaFunctionConfigurations"]] == [
        outputs["UploadFunctionArn"]]


def test_apply_checks_before_it_makes_anything(dev: Target, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing_made() -> None:
        assert client("s3").list_buckets()["Buckets"] == []
        assert client("secretsmanager").list_secrets()["SecretList"] == []

    monkeypatch.delenv("LOCARIA_DEV_JOB_DB_URL")
    with pytest.raises(DeployError, match="set LOCARIA_DEV_JOB_DB_URL to the postgresql:// URL of a login granted "
                                          "locaria_job: it is stored as the secret "
                                          "locaria-batch/dev-maindev/job-database-url"):
        workflow.apply_stack(dev, poll=0.2)
    # a login of the wrong role
    monkeypatch.setenv("LOCARIA_DEV_JOB_DB_URL", os.environ["LOCARIA_DEV_DISPATCHER_DB_URL"])
    with pytest.raises(DeployError, match="LOCARIA_DEV_JOB_DB_URL logs in as locaria_test_dispatcher, which is "
                                          "not granted locaria_job: run `GRANT locaria_job TO "
                                          "locaria_test_dispatcher` as the owner"):
        workflow.apply_stack(dev, poll=0.2)
    monkeypatch.setenv("LOCARIA_DEV_JOB_DB_URL", "db.internal locaria")
    with pytest.raises(DeployError, match="LOCARIA_DEV_JOB_DB_URL is not a database URL: write postgresql://"):
        workflow.apply_stack(dev, poll=0.2)
    monkeypatch.setenv("LOCARIA_DEV_JOB_DB_URL", "postgresql://nobody:x@db.internal/locaria")
    with pytest.raises(DeployError, match="logs in as nobody, which does not exist in this database"):
        workflow.apply_stack(dev, poll=0.2)
    # the stage's database unset, or without our schema
    monkeypatch.delenv("LOCARIA_DEV_DB_URL")
    with pytest.raises(DeployError, match="set LOCARIA_DEV_DB_URL to the owner's postgresql:// URL"):
        workflow.apply_stack(dev, poll=0.2)
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS locaria_empty")
        admin.execute("CREATE DATABASE locaria_empty")
    monkeypatch.setenv("LOCARIA_DEV_DB_URL", db_url.rsplit("/", 1)[0] + "/locaria_empty")
    with pytest.raises(DeployError, match=r"/locaria_empty as \w+ has no Locaria Batch schema yet: run "
                                          "`locaria-batch db migrate`"):
        workflow.apply_stack(dev, poll=0.2)
    nothing_made()


def test_the_stage_database_may_live_in_a_secret(stage_config: Path, deploy_aws: str, db_url: str, conn: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`live` names databaseSecret (Locaria's LOCARIADB_{theme}{env}); LOCARIA_DB_URL points elsewhere and
    is not used."""
    from urllib.parse import urlsplit

    parts = urlsplit(db_url)
    client("secretsmanager").create_secret(Name="LOCARIADB_mainlive", SecretString=json.dumps({
        "username": parts.username, "password": parts.password or "", "host": parts.hostname, "port": parts.port,
        "dbname": parts.path.lstrip("/")}))
    monkeypatch.setenv("LOCARIA_DB_URL", "postgresql://elsewhere.invalid/other")
    monkeypatch.setenv("LOCARIA_LIVE_JOB_DB_URL", os.environ["LOCARIA_DEV_JOB_DB_URL"])
    monkeypatch.setenv("LOCARIA_LIVE_DISPATCHER_DB_URL", os.environ["LOCARIA_DEV_DISPATCHER_DB_URL"])
    result = CliRunner().invoke(app, ["deploy", "apply", "--stage", "dev", "--environment", "live", "--poll", "0.2"])
    assert result.exit_code == 0, result.output
    assert f"database: {describe(db_url)} (from secret LOCARIADB_mainlive)" in result.output
    assert fargate_config(conn)["file_loader"]["ecsName"] == "locaria-batch-dev-mainlive"

    example = load_stages(stage_config)
    del example["dev"]["themes"]["main"]["live"]["databaseSecret"]
    with pytest.raises(StageConfigError, match="dev/main/live names no database in the stage configuration: give it "
                                               "databaseUrlEnv"):
        workflow.apply_stack(target(example, "dev", "main", "live", REPO), poll=0.2)


def flat(output: str) -> str:
    """The CLI's message without the console's line wrapping."""
    return " ".join(output.split())


def test_cli_apply_prints_the_outputs_then_push_without_a_daemon(dev: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["deploy", "apply", "--stage", "dev", "--poll", "0.2"])
    assert result.exit_code == 0, result.output
    outputs = json.loads(dev.outputs_file.read_text())["outputs"]
    text = flat(result.output)
    assert "stack locaria-batch-dev-maindev ready" in text
    for key in ("UploadFunctionArn", "LauncherFunctionArn", "FileLoaderRepositoryUri", "BucketName"):
        assert f"{key} {outputs[key]}" in text or f"{key} │ {outputs[key]}" in text, key
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = CliRunner().invoke(app, ["docker", "push", "file_loader", "--stage", "dev"])
    assert result.exit_code == 1
    assert "no Docker daemon answers at unix:///nonexistent/docker.sock" in flat(result.output)
    result = CliRunner().invoke(app, ["docker", "push", "nosuch", "--stage", "dev"])
    listed = "docker/dockers.json lists file_download, file_import, file_loader"
    assert f"unknown docker 'nosuch': {listed}" in flat(result.output)


def test_destroy_keeps_the_bucket_secrets_and_database_unless_asked(deployed: dict[str, str], dev: Target,
                                                                     conn: Any) -> None:
    s3, secrets = client("s3"), client("secretsmanager")
    s3.put_object(Bucket=dev.bucket, Key="incoming/1.csv", Body=b"a,b\n")
    refused = CliRunner().invoke(app, ["deploy", "destroy", "--stage", "dev"], input="n\n")
    assert refused.exit_code == 1 and "delete stack locaria-batch-dev-maindev in eu-west-2?" in refused.output
    assert client("cloudformation").describe_stacks(StackName=dev.stack_name)["Stacks"]

    result = CliRunner().invoke(app, ["deploy", "destroy", "--stage", "dev", "--yes", "--poll", "0.2"])
    assert result.exit_code == 0, result.output
    assert "stack locaria-batch-dev-maindev deleted; kept: bucket locaria-dev-maindev, secrets, fargate_config" \
        in flat(result.output)
    stacks = client("cloudformation").list_stacks(StackStatusFilter=["CREATE_COMPLETE", "UPDATE_COMPLETE"])
    assert stacks["StackSummaries"] == []
    assert "LambdaFunctionConfigurations" not in s3.get_bucket_notification_configuration(Bucket=dev.bucket)
    assert s3.get_object(Bucket=dev.bucket, Key="incoming/1.csv")["Body"].read() == b"a,b\n"
    assert len(secrets.list_secrets()["SecretList"]) == 3
    assert sorted(fargate_config(conn)) == ["file_download", "file_import", "file_loader"]
    assert not dev.outputs_file.exists()

    # applied again, then destroyed with everything
    workflow.apply_stack(dev, report=lambda line: None, poll=0.2)
    conn.execute("SELECT locaria_core.set_parameters(%s::jsonb)", [json.dumps({
        "parameter_name": "fargate_config", "acl": {"_groups": ["Admins"]},
        "parameters": {**fargate_config(conn), "elsewhere": {"task": "t", "ecsName": "another-cluster"}}})])
    result = CliRunner().invoke(app, ["deploy", "destroy", "--stage", "dev", "--yes", "--poll", "0.2",
                                      "--delete-bucket", "--delete-secrets", "--forget-fargate-config"])
    assert result.exit_code == 0, result.output
    assert "fargate_config: file_download, file_import, file_loader removed" in flat(result.output)
    assert f"bucket {dev.bucket} deleted (2 object(s))" in flat(result.output)  # the upload, the Lambda package
    assert dev.bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert secrets.list_secrets()["SecretList"] == []
    assert list(fargate_config(conn)) == ["elsewhere"]


def test_push_before_the_stack_exists(dev: Target) -> None:
    with pytest.raises(StackNotDeployed, match="not deployed yet: run `locaria-batch deploy apply --stage dev"):
        workflow.push(dev, "file_loader")


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
    token = client("ecr").get_authorization_token()["authorizationData"][0]
    username, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
    expected_auth = {"username": username, "password": password, "serveraddress": uri.split("/")[0]}
    assert [(c["repository"], c["tag"], c["auth_config"]) for c in recording.calls] == [
        (uri, version, expected_auth), (uri, "latest", expected_auth)]
    assert username == "AWS"


@pytest.mark.container
def test_docker_deploy_writes_fargate_config_to_the_stage_database(
        deployed: dict[str, str], dev: Target, conn: Any, db_url: str, engine: docker.DockerClient, base_image: str,
        recording: RecordedPush, monkeypatch: pytest.MonkeyPatch) -> None:
    # LOCARIA_DB_URL points at another database: the stage's own one is written, and said so
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS locaria_elsewhere")
        admin.execute("CREATE DATABASE locaria_elsewhere")
    monkeypatch.setenv("LOCARIA_DB_URL", db_url.rsplit("/", 1)[0] + "/locaria_elsewhere")
    # another docker's entry, written by hand, is kept
    config = fargate_config(conn)
    conn.execute("SELECT locaria_core.set_parameters(%s::jsonb)", [json.dumps({
        "parameter_name": "fargate_config", "parameters": {**config, "custom": {"task": "earlier"}},
        "acl": {"_groups": ["Admins"]}})])
    lines: list[str] = []
    reported: list[str] = []
    entry = workflow.deploy(dev, "file_loader", base_image=base_image, engine=engine, report=reported.append,
                            progress=lambda line, step, total: lines.append(line))
    assert reported == [f"fargate_config.file_loader will be recorded in {describe(db_url)} "
                        "(from $LOCARIA_DEV_DB_URL)"]
    assert any(line.upper().startswith("STEP") for line in lines)
    stored = fargate_config(conn)
    assert stored["custom"] == {"task": "earlier"} and stored["file_download"] == config["file_download"]
    assert stored["file_loader"] == entry == {
        **config["file_loader"], "image": f"{deployed['FileLoaderRepositoryUri']}:{recording.calls[0]['tag']}"}
    acl = conn.execute("SELECT acl FROM locaria_core.parameters WHERE parameter_name = 'fargate_config'").fetchone()
    assert acl["acl"]["update"] == ["Admins"]
    assert "login-secret" not in json.dumps(stored)  # credentials live in Secrets Manager only
    # deploy apply again keeps the pushed image
    workflow.apply_stack(dev, report=lambda line: None, poll=0.2)
    assert fargate_config(conn)["file_loader"]["image"] == entry["image"]
