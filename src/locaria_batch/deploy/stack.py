"""Create or update a target's stack through CloudFormation, follow its events until it settles,
and keep its outputs in .locaria/outputs/{stage}-{theme}{environment}.json."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ProfileNotFound

from locaria_batch.db.dockers import DockerSpec
from locaria_batch.deploy.package import build_lambda_package, digest
from locaria_batch.deploy.render import cloudformation
from locaria_batch.deploy.stages import Target
from locaria_batch.errors import DeployError
from locaria_batch.settings import environment_value

MAX_INLINE_TEMPLATE = 51_200  # CloudFormation's limit for TemplateBody
SETTLED_FAILED = ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "UPDATE_ROLLBACK_COMPLETE", "UPDATE_ROLLBACK_FAILED",
                  "CREATE_FAILED", "DELETE_COMPLETE", "DELETE_FAILED")

Report = Callable[[str], None]


class StackNotDeployed(DeployError):
    pass


def _silent(message: str) -> None:
    return None


def session(target: Target) -> boto3.Session:
    """Credentials from the environment when it has any, else the stage's profile."""
    use_profile = target.profile and not (os.environ.get("AWS_PROFILE") or os.environ.get("AWS_ACCESS_KEY_ID"))
    try:
        made = boto3.Session(profile_name=target.profile if use_profile else None, region_name=target.region)
    except ProfileNotFound as exc:
        raise DeployError(f"AWS profile {target.profile!r} (stage {target.stage}) is not configured: "
                          f"run `aws configure --profile {target.profile}` or set AWS_PROFILE") from exc
    if made.get_credentials() is None:
        raise DeployError("no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                          f"or configure the profile {target.profile!r} named in locaria.json")
    return made


def aws_call(what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One AWS call, its failure told as one plain sentence."""
    try:
        return call(*args, **kwargs)
    except NoCredentialsError as exc:
        raise DeployError(f"{what}: no AWS credentials (set AWS_PROFILE or configure the stage's profile)") from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DeployError(f"{what} failed: {error.get('Code')}: {error.get('Message')}") from exc
    except BotoCoreError as exc:
        raise DeployError(f"{what} failed: {exc}") from exc


def describe(cfn: Any, name: str) -> dict[str, Any] | None:
    try:
        return dict(cfn.describe_stacks(StackName=name)["Stacks"][0])
    except ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise DeployError(f"reading stack {name} failed: {exc}") from exc


def database_parameter(target: Target, exists: bool) -> dict[str, Any]:
    value = environment_value(target.database_url_env)
    if value:
        return {"ParameterKey": "DatabaseUrl", "ParameterValue": value}
    if exists:
        return {"ParameterKey": "DatabaseUrl", "UsePreviousValue": True}
    raise DeployError(f"set {target.database_url_env} to the postgresql:// URL of the jobs' database role "
                      "(it is stored in Secrets Manager, never in the template)")


def upload_code(s3: Any, target: Target, work_dir: Path) -> tuple[str, str]:
    package = build_lambda_package(target.project_dir, work_dir / "lambda.zip")
    key = f"deploy/{target.suffix}/lambda-{digest(package)[:20]}.zip"
    aws_call(f"uploading the Lambda package to s3://{target.bucket}/{key}", s3.upload_file, str(package),
             target.bucket, key)
    return target.bucket, key


def apply(target: Target, specs: dict[str, DockerSpec], *, report: Report = _silent, poll: float = 5.0,
          aws: boto3.Session | None = None) -> dict[str, str]:
    """Create or update the stack, report each event until it settles, record and return its outputs."""
    aws = aws or session(target)
    cfn, s3 = aws.client("cloudformation"), aws.client("s3")
    existing = aws_call("reading the stack", describe, cfn, target.stack_name)
    if existing and existing["StackStatus"].endswith("_IN_PROGRESS"):
        raise DeployError(f"stack {target.stack_name} is busy ({existing['StackStatus']}): wait for it and retry")
    if existing and existing["StackStatus"] == "ROLLBACK_COMPLETE":
        raise DeployError(f"stack {target.stack_name} failed to create earlier and must be deleted first: "
                          f"aws cloudformation delete-stack --stack-name {target.stack_name}")
    report("building the Lambda package")
    bucket, key = upload_code(s3, target, target.work_dir)
    body = json.dumps(cloudformation(target, specs))
    template: dict[str, str] = {"TemplateBody": body}
    if len(body) > MAX_INLINE_TEMPLATE:
        template_key = f"deploy/{target.suffix}/cloudformation-{int(time.time())}.json"
        aws_call("uploading the template", s3.put_object, Bucket=bucket, Key=template_key, Body=body.encode())
        template = {"TemplateURL": f"https://{bucket}.s3.amazonaws.com/{template_key}"}
    parameters = [database_parameter(target, existing is not None),
                  {"ParameterKey": "CodeBucket", "ParameterValue": bucket},
                  {"ParameterKey": "CodeKey", "ParameterValue": key}]
    # events already there belong to earlier deployments (matched by id: clocks may differ)
    earlier = {e["EventId"] for e in cfn.describe_stack_events(StackName=target.stack_name)["StackEvents"]} \
        if existing else set()
    call = cfn.update_stack if existing else cfn.create_stack
    report(("updating" if existing else "creating") + f" stack {target.stack_name} in {target.region}")
    try:
        call(StackName=target.stack_name, Parameters=parameters, Capabilities=["CAPABILITY_IAM"],
             Tags=[{"Key": "locaria:stage", "Value": target.stage}], **template)
    except ClientError as exc:
        if "No updates are to be performed" not in str(exc):
            raise DeployError(f"{'updating' if existing else 'creating'} stack {target.stack_name} failed: "
                              f"{exc.response.get('Error', {}).get('Message')}") from exc
        report("no changes")
    else:
        wait(cfn, target.stack_name, earlier, report, poll)
    return record_outputs(target, cfn)


def wait(cfn: Any, name: str, earlier: set[str], report: Report, poll: float) -> None:
    seen = set(earlier)
    failures: list[str] = []
    while True:
        events = aws_call("reading stack events", cfn.describe_stack_events, StackName=name)["StackEvents"]
        for event in reversed(events):
            if event["EventId"] in seen:
                continue
            seen.add(event["EventId"])
            reason = event.get("ResourceStatusReason") or ""
            report(f"{event['LogicalResourceId']}: {event['ResourceStatus']}" + (f" ({reason})" if reason else ""))
            if event["ResourceStatus"].endswith("_FAILED") and reason:
                failures.append(f"{event['LogicalResourceId']}: {reason}")
        status = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            if status in SETTLED_FAILED:
                raise DeployError(f"stack {name} ended {status}: " + ("; ".join(failures[:3]) or "see its events"))
            return
        time.sleep(poll)


def record_outputs(target: Target, cfn: Any) -> dict[str, str]:
    stack = describe(cfn, target.stack_name) or {}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    target.outputs_file.parent.mkdir(parents=True, exist_ok=True)
    target.outputs_file.write_text(json.dumps({
        "stack": target.stack_name, "region": target.region, "stage": target.stage, "theme": target.theme,
        "environment": target.environment, "updated": datetime.now(UTC).isoformat(), "outputs": outputs,
    }, indent=2) + "\n")
    return outputs


def load_outputs(target: Target) -> dict[str, str]:
    try:
        return dict(json.loads(target.outputs_file.read_text())["outputs"])
    except FileNotFoundError as exc:
        raise StackNotDeployed(
            f"the stack for {target.stage}/{target.theme}/{target.environment} is not deployed yet: run "
            f"`locaria-batch deploy apply --stage {target.stage} --theme {target.theme} "
            f"--environment {target.environment}` first"
        ) from exc
