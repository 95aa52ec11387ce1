"""`deploy render`: the CloudFormation template passes cfn-lint, serverless.yml packages with the
serverless framework, both hold the same resources, and the roles are as narrow as promised."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from locaria_batch.cli.main import app
from locaria_batch.db.dockers import load
from locaria_batch.deploy import render
from locaria_batch.deploy.stages import StageConfigError, Target, load_stages, target

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SERVERLESS_INSTALL = "npm install --prefix .locaria/npm serverless@3"

pytest_plugins = ["tests.aws"]


@pytest.fixture
def rendered(stage_config: Path, tmp_path: Path) -> Path:
    out = tmp_path / "stack"
    result = CliRunner().invoke(app, ["deploy", "render", "--stage", "dev", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "serverless.yml" in result.output and "cloudformation.json" in result.output
    return out


def template(out: Path) -> dict[str, Any]:
    return json.loads((out / "cloudformation.json").read_text())


def test_template_passes_cfn_lint(rendered: Path) -> None:
    cfn_lint = str(VENV_BIN / "cfn-lint") if (VENV_BIN / "cfn-lint").exists() else shutil.which("cfn-lint")
    assert cfn_lint, "cfn-lint is not installed: pip install cfn-lint"
    done = subprocess.run([cfn_lint, str(rendered / "cloudformation.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_one_repository_task_definition_and_log_group_per_docker(rendered: Path) -> None:
    resources = template(rendered)["Resources"]
    outputs = template(rendered)["Outputs"]
    specs = load(REPO / "docker" / "dockers.json")
    for name, spec in specs.items():
        p = render.pascal(name)
        assert resources[f"{p}Repository"]["Properties"]["RepositoryName"] == f"locaria-batch-dev-maindev/{name}"
        task = resources[f"{p}TaskDefinition"]["Properties"]
        assert (task["Cpu"], task["Memory"]) == (str(spec.cpu), str(spec.memory))
        container = task["ContainerDefinitions"][0]
        assert container["Memory"] == spec.memory and container["Name"] == name
        assert container["Image"] == {"Fn::Sub": f"${{{p}Repository.RepositoryUri}}:latest"}
        assert {s["Name"]: s["ValueFrom"] for s in container["Secrets"]} == {
            "LOCARIA_DB_URL": "locaria-batch/dev-maindev/job-database-url",
            "LOCARIA_STORAGE": "locaria-batch/dev-maindev/storage"}
        assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": f"{p}LogGroup"}
        for key in ("RepositoryUri", "RepositoryArn", "TaskDefinitionArn", "LogGroupName", "LogGroupArn"):
            assert f"{p}{key}" in outputs
    for key in ("ClusterArn", "TaskRoleArn", "ExecutionRoleArn", "LauncherRoleArn", "TaskStateRoleArn", "UploadRoleArn",
                "JobDatabaseSecretName", "DispatcherDatabaseSecretName", "StorageSecretName", "LauncherFunctionArn",
                "TaskStateFunctionArn", "UploadFunctionArn", "LauncherScheduleArn", "TaskStateRuleArn", "BucketName"):
        assert key in outputs
    # no secret value and no bucket in the template: `deploy apply` makes those
    assert set(template(rendered)["Parameters"]) == {"CodeBucket", "CodeKey"}
    assert not [r for r in resources.values() if r["Type"] in ("AWS::SecretsManager::Secret", "AWS::S3::Bucket")]


def statements(resources: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return resources[role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]


def test_roles_are_least_privilege(rendered: Path) -> None:
    resources = template(rendered)["Resources"]
    task = statements(resources, "TaskRole")
    assert task[0]["Resource"] == [{"Fn::Sub": "arn:${AWS::Partition}:s3:::locaria-dev-maindev/incoming/*"},
                                   {"Fn::Sub": "arn:${AWS::Partition}:s3:::locaria-dev-maindev/loaderDownloads/*"}]
    assert task[1]["Condition"]["StringLike"]["s3:prefix"] == ["incoming/*", "loaderDownloads/*"]
    execution = statements(resources, "ExecutionRole")
    wildcard = [s["Action"] for s in execution if s["Resource"] == "*"]
    assert wildcard == ["ecr:GetAuthorizationToken"]  # the one ECR action without resource-level permissions
    assert {"Fn::GetAtt": ["FileLoaderRepository", "Arn"]} in execution[1]["Resource"]
    arn = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:locaria-batch/dev-maindev/"
    assert execution[2]["Resource"] == [{"Fn::Sub": f"{arn}job-database-url-??????"},
                                        {"Fn::Sub": f"{arn}storage-??????"}]
    # the Lambdas read only the dispatcher's secret; the upload Lambda only heads uploads
    for lambda_role in ("LauncherRole", "TaskStateRole", "UploadRole"):
        read = [s for s in statements(resources, lambda_role) if s["Action"] == "secretsmanager:GetSecretValue"]
        assert read == [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                         "Resource": [{"Fn::Sub": f"{arn}dispatcher-database-url-??????"}]}]
    upload = statements(resources, "UploadRole")
    assert [s["Resource"] for s in upload if s["Action"] == "s3:GetObject"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:s3:::locaria-dev-maindev/incoming/*"}]
    launcher = statements(resources, "LauncherRole")
    run_task = next(s for s in launcher if s["Action"] == "ecs:RunTask")
    assert run_task["Condition"] == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["Cluster", "Arn"]}}}
    passed = next(s for s in launcher if s["Action"] == "iam:PassRole")
    assert passed["Resource"] == [{"Fn::GetAtt": ["TaskRole", "Arn"]}, {"Fn::GetAtt": ["ExecutionRole", "Arn"]}]
    for role in ("TaskRole", "ExecutionRole", "LauncherRole", "TaskStateRole", "UploadRole"):
        for statement in statements(resources, role):
            assert "*" not in str(statement["Action"]), statement


def test_lambdas_and_their_triggers(rendered: Path) -> None:
    resources = template(rendered)["Resources"]
    launcher = resources["LauncherLambdaFunction"]["Properties"]
    assert launcher["Handler"] == "locaria_batch.dispatch.lambdas.launcher_handler"
    assert launcher["Runtime"] == "python3.13"
    assert launcher["Environment"]["Variables"] == {
        "LOCARIA_DB_SECRET": "locaria-batch/dev-maindev/dispatcher-database-url", "LOCARIA_RUNNER": "ecs"}
    assert launcher["VpcConfig"]["SubnetIds"] == ["subnet-0a1b2c3d4e5f60001", "subnet-0a1b2c3d4e5f60002"]
    task_state = resources["TaskStateLambdaFunction"]["Properties"]
    assert task_state["Handler"] == "locaria_batch.dispatch.lambdas.task_state_handler"
    assert resources["LauncherSchedule"]["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    pattern = resources["TaskStateRule"]["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["ECS Task State Change"]
    assert pattern["detail"] == {"clusterArn": [{"Fn::GetAtt": ["Cluster", "Arn"]}], "lastStatus": ["STOPPED"],
                                 "startedBy": [{"prefix": "locaria/"}]}
    upload = resources["UploadLambdaFunction"]["Properties"]
    assert upload["Handler"] == "locaria_batch.dispatch.lambdas.upload_handler"
    assert upload["Environment"]["Variables"]["LOCARIA_STORAGE"] == "s3://locaria-dev-maindev"
    permission = resources["UploadPermission"]["Properties"]
    assert (permission["Principal"], permission["SourceArn"], permission["SourceAccount"]) == (
        "s3.amazonaws.com", {"Fn::Sub": "arn:${AWS::Partition}:s3:::locaria-dev-maindev"}, {"Ref": "AWS::AccountId"})


def test_serverless_yml_holds_the_same_resources(rendered: Path) -> None:
    sls = yaml.safe_load((rendered / "serverless.yml").read_text())
    cfn = template(rendered)
    generated_by_serverless = set(render.lambda_resources(target_of("dev")))
    assert set(sls["resources"]["Resources"]) == set(cfn["Resources"]) - generated_by_serverless
    assert sls["functions"]["launcher"]["handler"] == "locaria_batch/dispatch/lambdas.launcher_handler"
    assert sls["functions"]["launcher"]["events"] == [
        {"schedule": {"rate": "rate(1 minute)", "description": "run the launcher every minute"}}]
    assert sls["functions"]["taskState"]["events"][0]["eventBridge"]["pattern"]["detail-type"] == [
        "ECS Task State Change"]
    assert sls["functions"]["upload"]["events"] == [{"s3": {
        "bucket": "locaria-dev-maindev", "event": "s3:ObjectCreated:*", "existing": True,
        "rules": [{"prefix": "incoming/"}]}}]
    assert (rendered / "lambda.zip").stat().st_size > 100_000


def target_of(stage: str) -> Target:
    return target(load_stages(Path(os.environ["LOCARIA_STAGE_CONFIG"])), stage, None, None, REPO)


def serverless_binary() -> str:
    found = os.environ.get("LOCARIA_SERVERLESS") or shutil.which("serverless")
    local = REPO / ".locaria" / "npm" / "node_modules" / ".bin" / "serverless"
    if found:
        return found
    if local.exists():
        return str(local)
    pytest.fail(f"the serverless framework is not installed: run `{SERVERLESS_INSTALL}` in {REPO}")


def test_serverless_package_succeeds(rendered: Path) -> None:
    env = {**os.environ, "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off"}
    done = subprocess.run([serverless_binary(), "package"], cwd=rendered, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    packaged = json.loads((rendered / ".serverless" / "cloudformation-template-update-stack.json").read_text())
    assert packaged["Resources"]["LauncherLambdaFunction"]["Properties"]["Handler"] == \
        "locaria_batch/dispatch/lambdas.launcher_handler"
    assert packaged["Resources"]["LauncherLambdaFunction"]["Properties"]["Runtime"] == "python3.13"
    assert "FileLoaderTaskDefinition" in packaged["Resources"]
    assert "TaskStateFunctionArn" in packaged["Outputs"]
    assert packaged["Resources"]["UploadLambdaFunction"]["Properties"]["Handler"] == \
        "locaria_batch/dispatch/lambdas.upload_handler"


# -- the stage configuration's errors ----------------------------------------------------------
def test_unknown_stage_is_a_clear_error(stage_config: Path) -> None:
    result = CliRunner().invoke(app, ["deploy", "render", "--stage", "staging"])
    assert result.exit_code == 1
    assert "unknown stage 'staging': the configuration has dev, prod" in " ".join(result.output.split())


def test_stage_config_errors(tmp_path: Path) -> None:
    with pytest.raises(StageConfigError, match=r"not found: copy locaria\.example\.json"):
        load_stages(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(StageConfigError, match="not valid JSON"):
        load_stages(broken)
    partial = {"dev": {"region": "eu-west-2", "themes": {"main": {"dev": {}}}}}
    with pytest.raises(StageConfigError, match="lacks vpcPrivateSubnetA, vpcPrivateSubnetB, securityGroup"):
        target(partial, "dev", None, None, REPO)
    example = load_stages(REPO / "locaria.example.json")
    with pytest.raises(StageConfigError, match="has no environment 'qa': it has dev, live"):
        target(example, "dev", "main", "qa", REPO)
    assert target(example, "dev", "main", "live", REPO).bucket == "locaria-dev-mainlive"
