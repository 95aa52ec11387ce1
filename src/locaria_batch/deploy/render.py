"""Render the AWS stack of one target from docker/dockers.json: a CloudFormation template and the
equivalent serverless.yml (the same resources; serverless adds only its deployment bucket).

Per docker: an ECR repository, a log group and a Fargate task definition whose container gets the
jobs' database URL and the storage location as secrets named as the code reads them.  Shared: the
ECS cluster, a task role limited to the bucket prefixes jobs use, an execution role limited to
these repositories, secrets and log groups, and the three Lambdas (launcher, task-state, upload),
each with a role of its own.  The bucket and the secrets are made by `deploy apply` outside the
stack (see bucket.py and secrets.py); the template refers to them by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from locaria_batch.db.dockers import DockerSpec
from locaria_batch.deploy.secrets import DISPATCHER_DATABASE, JOB_DATABASE, STORAGE
from locaria_batch.deploy.stages import Target

# AWS disabled creating python3.11 functions on 2026-07-31; the code runs unchanged on 3.13
LAMBDA_RUNTIME = "python3.13"
JOB_PREFIXES = ("incoming/", "loaderDownloads/")  # what jobs read (uploads) and write (downloads)
LAMBDA_ZIP = "lambda.zip"
LOG_RETENTION_DAYS = 30
HANDLERS = "locaria_batch.dispatch.lambdas"
# the serverless framework's logical ids for these functions; the plain template uses the same ids
# so that outputs and policies are shared
FUNCTIONS: dict[str, dict[str, Any]] = {
    "launcher": {"id": "LauncherLambdaFunction", "handler": f"{HANDLERS}.launcher_handler", "timeout": 60},
    "taskState": {"id": "TaskStateLambdaFunction", "handler": f"{HANDLERS}.task_state_handler", "timeout": 30},
    "upload": {"id": "UploadLambdaFunction", "handler": f"{HANDLERS}.upload_handler", "timeout": 30},
}


def pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace("-", "_").split("_"))


def ref(logical_id: str) -> dict[str, str]:
    return {"Ref": logical_id}


def get_att(logical_id: str, attribute: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def role(service: str, statements: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
            },
            "Policies": [{"PolicyName": name, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}],
        },
    }


def function_name(target: Target, key: str) -> str:
    return f"locaria-batch-{target.suffix}-{key.lower()}"


def secret_arn(target: Target, key: str) -> dict[str, str]:
    """Secrets Manager appends six random characters to a secret's ARN."""
    return sub(f"arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:secret:"
               f"{target.secret_name(key)}-??????")


def bucket_arn(target: Target) -> str:
    return f"arn:${{AWS::Partition}}:s3:::{target.bucket}"


# -- names the deploy code reads back from the stack outputs -------------------------------------
def output_keys(name: str) -> dict[str, str]:
    p = pascal(name)
    return {"repository_uri": f"{p}RepositoryUri", "task_definition": f"{p}TaskDefinitionArn",
            "log_group": f"{p}LogGroupName"}


def docker_resources(target: Target, spec: DockerSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    p = pascal(spec.name)
    resources = {
        f"{p}Repository": {
            "Type": "AWS::ECR::Repository",
            "Properties": {
                "RepositoryName": f"locaria-batch-{target.suffix}/{spec.name}",
                "ImageScanningConfiguration": {"ScanOnPush": True},
                "LifecyclePolicy": {"LifecyclePolicyText": json.dumps({"rules": [{
                    "rulePriority": 1, "description": "keep the 20 newest images",
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 20},
                    "action": {"type": "expire"}}]})},
            },
        },
        f"{p}LogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {"LogGroupName": f"/locaria-batch/{target.suffix}/{spec.name}",
                           "RetentionInDays": LOG_RETENTION_DAYS},
        },
        f"{p}TaskDefinition": {
            "Type": "AWS::ECS::TaskDefinition",
            "Properties": {
                "Family": f"locaria-batch-{target.suffix}-{spec.name}",
                "Cpu": str(spec.cpu),
                "Memory": str(spec.memory),
                "NetworkMode": "awsvpc",
                "RequiresCompatibilities": ["FARGATE"],
                "ExecutionRoleArn": get_att("ExecutionRole", "Arn"),
                "TaskRoleArn": get_att("TaskRole", "Arn"),
                "ContainerDefinitions": [{
                    "Name": spec.name,
                    "Image": sub(f"${{{p}Repository.RepositoryUri}}:latest"),
                    "Essential": True,
                    "Memory": spec.memory,
                    "Environment": [{"Name": "LOCARIA_DOCKER", "Value": spec.name}],
                    # a secret of the task's own region may be named rather than given by ARN
                    "Secrets": [{"Name": "LOCARIA_DB_URL", "ValueFrom": target.secret_name(JOB_DATABASE)},
                                {"Name": "LOCARIA_STORAGE", "ValueFrom": target.secret_name(STORAGE)}],
                    "LogConfiguration": {"LogDriver": "awslogs", "Options": {
                        "awslogs-group": ref(f"{p}LogGroup"), "awslogs-region": ref("AWS::Region"),
                        "awslogs-stream-prefix": spec.name}},
                }],
            },
        },
    }
    keys = output_keys(spec.name)
    outputs = {
        keys["repository_uri"]: {"Value": get_att(f"{p}Repository", "RepositoryUri")},
        f"{p}RepositoryArn": {"Value": get_att(f"{p}Repository", "Arn")},
        keys["task_definition"]: {"Value": ref(f"{p}TaskDefinition")},
        keys["log_group"]: {"Value": ref(f"{p}LogGroup")},
        f"{p}LogGroupArn": {"Value": get_att(f"{p}LogGroup", "Arn")},
    }
    return resources, outputs


def shared_resources(target: Target, specs: dict[str, DockerSpec]) -> dict[str, Any]:
    bucket = bucket_arn(target)
    prefixes = [f"{target.storage_prefix}{prefix}" for prefix in JOB_PREFIXES]
    names = [pascal(name) for name in specs]
    task_arns = [sub(f"arn:${{AWS::Partition}}:ecs:${{AWS::Region}}:${{AWS::AccountId}}:task-definition/"
                     f"locaria-batch-{target.suffix}-{name}:*") for name in specs]
    cluster_tasks = sub("arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task/"
                        "${Cluster}/*")
    vpc_enis = {"Effect": "Allow", "Resource": "*",  # ENI actions take no resource-level permissions
                "Action": ["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
                           "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses",
                           "ec2:UnassignPrivateIpAddresses"]}

    def own_logs(key: str) -> dict[str, Any]:
        return {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": sub(f"arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:"
                                f"/aws/lambda/{function_name(target, key)}:*")}

    def read_secrets(*keys: str) -> dict[str, Any]:
        return {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                "Resource": [secret_arn(target, key) for key in keys]}

    def lambda_role(key: str, statements: list[dict[str, Any]], name: str) -> dict[str, Any]:
        return role("lambda.amazonaws.com", [own_logs(key), vpc_enis, read_secrets(DISPATCHER_DATABASE),
                                             *statements], name)

    return {
        "Cluster": {"Type": "AWS::ECS::Cluster", "Properties": {
            "ClusterName": f"locaria-batch-{target.suffix}",
            "ClusterSettings": [{"Name": "containerInsights", "Value": "disabled"}]}},
        "TaskRole": role("ecs-tasks.amazonaws.com", [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             "Resource": [sub(f"{bucket}/{prefix}*") for prefix in prefixes]},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": sub(bucket),
             "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in prefixes]}}},
        ], "job-storage"),
        "ExecutionRole": role("ecs-tasks.amazonaws.com", [
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},  # account-wide by design
            {"Effect": "Allow", "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                           "ecr:BatchCheckLayerAvailability"],
             "Resource": [get_att(f"{p}Repository", "Arn") for p in names]},
            read_secrets(JOB_DATABASE, STORAGE),
            {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": [get_att(f"{p}LogGroup", "Arn") for p in names]},
        ], "pull-images-read-secrets-write-logs"),
        "LauncherRole": lambda_role("launcher", [
            {"Effect": "Allow", "Action": "ecs:RunTask", "Resource": task_arns,
             "Condition": {"ArnEquals": {"ecs:cluster": get_att("Cluster", "Arn")}}},
            {"Effect": "Allow", "Action": ["ecs:DescribeTasks", "ecs:StopTask", "ecs:TagResource"],
             "Resource": cluster_tasks},
            {"Effect": "Allow", "Action": "ecs:ListTasks", "Resource": "*",
             "Condition": {"ArnEquals": {"ecs:cluster": get_att("Cluster", "Arn")}}},
            {"Effect": "Allow", "Action": "iam:PassRole",
             "Resource": [get_att("TaskRole", "Arn"), get_att("ExecutionRole", "Arn")]},
        ], "launch-job-tasks"),
        "TaskStateRole": lambda_role("taskState", [
            {"Effect": "Allow", "Action": "ecs:DescribeTasks", "Resource": cluster_tasks},
        ], "record-task-states"),
        "UploadRole": lambda_role("upload", [
            # HeadObject needs GetObject; ListBucket turns "no such key" into 404 rather than 403
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": sub(f"{bucket}/{target.upload_prefix}*")},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": sub(bucket),
             "Condition": {"StringLike": {"s3:prefix": [f"{target.upload_prefix}*"]}}},
        ], "complete-uploads"),
    }


def shared_outputs(target: Target) -> dict[str, Any]:
    return {
        "ClusterName": {"Value": ref("Cluster")},
        "ClusterArn": {"Value": get_att("Cluster", "Arn")},
        "BucketName": {"Value": target.bucket},
        "UploadPrefix": {"Value": target.upload_prefix},
        "JobDatabaseSecretName": {"Value": target.secret_name(JOB_DATABASE)},
        "DispatcherDatabaseSecretName": {"Value": target.secret_name(DISPATCHER_DATABASE)},
        "StorageSecretName": {"Value": target.secret_name(STORAGE)},
        "TaskRoleArn": {"Value": get_att("TaskRole", "Arn")},
        "ExecutionRoleArn": {"Value": get_att("ExecutionRole", "Arn")},
        "LauncherRoleArn": {"Value": get_att("LauncherRole", "Arn")},
        "TaskStateRoleArn": {"Value": get_att("TaskStateRole", "Arn")},
        "UploadRoleArn": {"Value": get_att("UploadRole", "Arn")},
        "LauncherFunctionArn": {"Value": get_att(FUNCTIONS["launcher"]["id"], "Arn")},
        "TaskStateFunctionArn": {"Value": get_att(FUNCTIONS["taskState"]["id"], "Arn")},
        "UploadFunctionArn": {"Value": get_att(FUNCTIONS["upload"]["id"], "Arn")},
        "LauncherScheduleArn": {"Value": get_att("LauncherSchedule", "Arn")},
        "TaskStateRuleArn": {"Value": get_att("TaskStateRule", "Arn")},
    }


def lambda_environment(target: Target, key: str) -> dict[str, Any]:
    """The name of the dispatcher's database secret (never its value); the upload Lambda also
    needs to know where uploads land."""
    variables = {"LOCARIA_DB_SECRET": target.secret_name(DISPATCHER_DATABASE), "LOCARIA_RUNNER": "ecs"}
    if key == "upload":
        variables["LOCARIA_STORAGE"] = target.storage_url
    return variables


def vpc(target: Target) -> dict[str, Any]:
    return {"SubnetIds": [target.config["vpcPrivateSubnetA"], target.config["vpcPrivateSubnetB"]],
            "SecurityGroupIds": [target.config["securityGroup"]]}


def task_state_pattern() -> dict[str, Any]:
    """Stopped tasks of the job cluster that a dispatcher started (startedBy locaria/<job>/<attempt>)."""
    return {"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
            "detail": {"clusterArn": [get_att("Cluster", "Arn")], "lastStatus": ["STOPPED"],
                       "startedBy": [{"prefix": "locaria/"}]}}


def upload_permission(target: Target) -> dict[str, Any]:
    return {"Type": "AWS::Lambda::Permission", "Properties": {
        "Action": "lambda:InvokeFunction", "FunctionName": ref(FUNCTIONS["upload"]["id"]),
        "Principal": "s3.amazonaws.com", "SourceArn": sub(bucket_arn(target)),
        "SourceAccount": ref("AWS::AccountId")}}


def stack_body(target: Target, specs: dict[str, DockerSpec]) -> tuple[dict[str, Any], dict[str, Any]]:
    resources = shared_resources(target, specs)
    outputs = shared_outputs(target)
    for spec in specs.values():
        more_resources, more_outputs = docker_resources(target, spec)
        resources.update(more_resources)
        outputs.update(more_outputs)
    return resources, outputs


def lambda_resources(target: Target) -> dict[str, Any]:
    """What serverless generates from `functions:`, spelled out for the plain template."""
    resources: dict[str, Any] = {}
    for key, function in FUNCTIONS.items():
        log_group = f"{pascal(key)}LogGroup"
        resources[log_group] = {"Type": "AWS::Logs::LogGroup", "Properties": {
            "LogGroupName": f"/aws/lambda/{function_name(target, key)}", "RetentionInDays": LOG_RETENTION_DAYS}}
        resources[function["id"]] = {"Type": "AWS::Lambda::Function", "DependsOn": [log_group], "Properties": {
            "FunctionName": function_name(target, key), "Runtime": LAMBDA_RUNTIME, "Handler": function["handler"],
            "Code": {"S3Bucket": ref("CodeBucket"), "S3Key": ref("CodeKey")}, "MemorySize": 256,
            "Timeout": function["timeout"], "Role": get_att(f"{pascal(key)}Role", "Arn"),
            "VpcConfig": vpc(target), "Environment": {"Variables": lambda_environment(target, key)}}}
    resources["LauncherSchedule"] = {"Type": "AWS::Events::Rule", "Properties": {
        "Description": "run the launcher every minute", "ScheduleExpression": "rate(1 minute)",
        "Targets": [{"Id": "launcher", "Arn": get_att("LauncherLambdaFunction", "Arn")}]}}
    resources["TaskStateRule"] = {"Type": "AWS::Events::Rule", "Properties": {
        "Description": "job tasks of the cluster that stopped", "EventPattern": task_state_pattern(),
        "Targets": [{"Id": "taskState", "Arn": get_att("TaskStateLambdaFunction", "Arn")}]}}
    triggers = (("LauncherSchedule", "LauncherLambdaFunction"), ("TaskStateRule", "TaskStateLambdaFunction"))
    for rule, invoked in triggers:
        resources[f"{rule}Permission"] = {"Type": "AWS::Lambda::Permission", "Properties": {
            "Action": "lambda:InvokeFunction", "FunctionName": ref(invoked), "Principal": "events.amazonaws.com",
            "SourceArn": get_att(rule, "Arn")}}
    # S3 may invoke the upload Lambda; `deploy apply` then points the bucket's notification at it
    resources["UploadPermission"] = upload_permission(target)
    return resources


def cloudformation(target: Target, specs: dict[str, DockerSpec]) -> dict[str, Any]:
    resources, outputs = stack_body(target, specs)
    resources.update(lambda_resources(target))
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"Locaria Batch jobs: {target.stage} / {target.theme} / {target.environment}",
        "Parameters": {"CodeBucket": {"Type": "String", "Description": "bucket holding the Lambda package"},
                       "CodeKey": {"Type": "String", "Description": "key of the Lambda package"}},
        "Resources": resources,
        "Outputs": outputs,
    }


def serverless_events(target: Target, key: str) -> list[dict[str, Any]]:
    if key == "launcher":
        return [{"schedule": {"rate": "rate(1 minute)", "description": "run the launcher every minute"}}]
    if key == "taskState":
        return [{"eventBridge": {"pattern": task_state_pattern()}}]
    # the bucket exists outside the stack: serverless wires the notification with its custom resource
    return [{"s3": {"bucket": target.bucket, "event": "s3:ObjectCreated:*", "existing": True,
                    "rules": [{"prefix": target.upload_prefix}]}}]


def serverless(target: Target, specs: dict[str, DockerSpec]) -> dict[str, Any]:
    resources, outputs = stack_body(target, specs)
    # serverless names the schedule/EventBridge rules itself: refer to them by what it creates
    outputs.pop("LauncherScheduleArn")
    outputs.pop("TaskStateRuleArn")
    functions = {}
    for key, function in FUNCTIONS.items():
        module, _, attr = str(function["handler"]).rpartition(".")
        functions[key] = {"name": function_name(target, key), "handler": f"{module.replace('.', '/')}.{attr}",
                          "role": f"{pascal(key)}Role", "timeout": function["timeout"], "memorySize": 256,
                          "vpc": {"securityGroupIds": vpc(target)["SecurityGroupIds"],
                                  "subnetIds": vpc(target)["SubnetIds"]},
                          "environment": lambda_environment(target, key), "events": serverless_events(target, key)}
    provider: dict[str, Any] = {"name": "aws", "runtime": LAMBDA_RUNTIME, "stage": target.stage,
                                "region": target.region, "logRetentionInDays": LOG_RETENTION_DAYS}
    if target.profile:
        provider["profile"] = target.profile
    return {
        "service": target.service,
        "frameworkVersion": "3",
        "provider": provider,
        "package": {"artifact": LAMBDA_ZIP},
        "functions": functions,
        "resources": {"Resources": resources, "Outputs": outputs},
    }


def write(target: Target, specs: dict[str, DockerSpec], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    template = out_dir / "cloudformation.json"
    template.write_text(json.dumps(cloudformation(target, specs), indent=2) + "\n")
    serverless_yml = out_dir / "serverless.yml"
    header = (f"# Locaria Batch jobs for {target.stage}/{target.theme}/{target.environment}, rendered by "
              f"`locaria-batch deploy render`.\n# Equivalent to cloudformation.json; `{LAMBDA_ZIP}` is the Lambda "
              "package `deploy apply` builds.\n# The bucket and the secrets are made by `deploy apply` (or by "
              "hand: docs/aws.md), not by this stack.\n")
    serverless_yml.write_text(header + yaml.safe_dump(serverless(target, specs), sort_keys=False, width=120))
    return serverless_yml, template
