"""Create, update or delete a target's stack through CloudFormation, follow its events until it
settles, and keep its outputs in .locaria/outputs/{stage}-{theme}{environment}.json."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from locaria_batch.db.dockers import DockerSpec
from locaria_batch.deploy.aws import Report, aws_call, session, silent
from locaria_batch.deploy.package import build_lambda_package, digest
from locaria_batch.deploy.render import cloudformation
from locaria_batch.deploy.stages import Target
from locaria_batch.errors import DeployError

MAX_INLINE_TEMPLATE = 51_200  # CloudFormation's limit for TemplateBody
SETTLED_FAILED = ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "UPDATE_ROLLBACK_COMPLETE", "UPDATE_ROLLBACK_FAILED",
                  "CREATE_FAILED", "DELETE_FAILED")


class StackNotDeployed(DeployError):
    pass


def describe(cfn: Any, name: str) -> dict[str, Any] | None:
    try:
        stack = dict(cfn.describe_stacks(StackName=name)["Stacks"][0])
    except ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise DeployError(f"reading stack {name} failed: {exc}") from exc
    return None if stack["StackStatus"] == "DELETE_COMPLETE" else stack


def upload_code(s3: Any, target: Target, work_dir: Path) -> tuple[str, str]:
    package = build_lambda_package(target.project_dir, work_dir / "lambda.zip")
    key = f"deploy/{target.suffix}/lambda-{digest(package)[:20]}.zip"
    aws_call(f"uploading the Lambda package to s3://{target.bucket}/{key}", s3.upload_file, str(package),
             target.bucket, key)
    return target.bucket, key


def check_settled(cfn: Any, target: Target) -> dict[str, Any] | None:
    """The stack's description, when it may be created or updated now."""
    existing: dict[str, Any] | None = aws_call("reading the stack", describe, cfn, target.stack_name)
    if existing and existing["StackStatus"].endswith("_IN_PROGRESS"):
        raise DeployError(f"stack {target.stack_name} is busy ({existing['StackStatus']}): wait for it and retry")
    if existing and existing["StackStatus"] == "ROLLBACK_COMPLETE":
        raise DeployError(f"stack {target.stack_name} failed to create earlier and must be deleted first: "
                          f"locaria-batch deploy destroy --stage {target.stage} --theme {target.theme} "
                          f"--environment {target.environment}")
    return existing


def apply(target: Target, specs: dict[str, DockerSpec], *, report: Report = silent, poll: float = 5.0,
          aws: boto3.Session | None = None) -> dict[str, str]:
    """Create or update the stack, report each event until it settles, record and return its outputs.
    The bucket the Lambda package goes to must exist (bucket.ensure_bucket)."""
    aws = aws or session(target)
    cfn, s3 = aws.client("cloudformation"), aws.client("s3")
    existing = check_settled(cfn, target)
    report("building the Lambda package")
    bucket, key = upload_code(s3, target, target.work_dir)
    body = json.dumps(cloudformation(target, specs))
    template: dict[str, str] = {"TemplateBody": body}
    if len(body) > MAX_INLINE_TEMPLATE:
        template_key = f"deploy/{target.suffix}/cloudformation-{int(time.time())}.json"
        aws_call("uploading the template", s3.put_object, Bucket=bucket, Key=template_key, Body=body.encode())
        template = {"TemplateURL": f"https://{bucket}.s3.amazonaws.com/{template_key}"}
    parameters = [{"ParameterKey": "CodeBucket", "ParameterValue": bucket},
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


def destroy(target: Target, *, report: Report = silent, poll: float = 5.0, aws: boto3.Session | None = None) -> bool:
    """Delete the stack and wait until it is gone; False when there was none."""
    aws = aws or session(target)
    cfn = aws.client("cloudformation")
    existing = aws_call("reading the stack", describe, cfn, target.stack_name)
    if existing is None:
        report(f"no stack {target.stack_name} in {target.region}")
        target.outputs_file.unlink(missing_ok=True)
        return False
    if existing["StackStatus"].endswith("_IN_PROGRESS"):
        raise DeployError(f"stack {target.stack_name} is busy ({existing['StackStatus']}): wait for it and retry")
    earlier = {e["EventId"] for e in cfn.describe_stack_events(StackName=target.stack_name)["StackEvents"]}
    report(f"deleting stack {target.stack_name} in {target.region}")
    aws_call(f"deleting stack {target.stack_name}", cfn.delete_stack, StackName=target.stack_name)
    wait(cfn, target.stack_name, earlier, report, poll)
    target.outputs_file.unlink(missing_ok=True)
    return True


def wait(cfn: Any, name: str, earlier: set[str], report: Report, poll: float) -> None:
    seen = set(earlier)
    failures: list[str] = []
    while True:
        stack = aws_call("reading the stack", describe, cfn, name)
        if stack is None:  # deleted: its events went with it
            report(f"{name}: DELETE_COMPLETE")
            return
        events = aws_call("reading stack events", cfn.describe_stack_events, StackName=name)["StackEvents"]
        for event in reversed(events):
            if event["EventId"] in seen:
                continue
            seen.add(event["EventId"])
            reason = event.get("ResourceStatusReason") or ""
            report(f"{event['LogicalResourceId']}: {event['ResourceStatus']}" + (f" ({reason})" if reason else ""))
            if event["ResourceStatus"].endswith("_FAILED") and reason:
                failures.append(f"{event['LogicalResourceId']}: {reason}")
        status = stack["StackStatus"]
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
            f"the stack for {target.label} is not deployed yet: run "
            f"`locaria-batch deploy apply --stage {target.stage} --theme {target.theme} "
            f"--environment {target.environment}` first"
        ) from exc
