"""Render the AWS stack of one target from docker/dockers.json: a CloudFormation template and the
equivalent serverless.yml (the same resources; serverless adds only its deployment bucket).

Per docker: an ECR repository, a log group and a Fargate task definition whose container gets the
database URL and the storage location as secrets named as the code reads them.  Shared: the ECS
cluster, the two secrets, a task role limited to the bucket prefixes jobs use, an execution role
limited to these repositories, secrets and log groups, and the launcher / task-state Lambdas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from locaria_batch.db.dockers import DockerSpec
from locaria_batch.deploy.stages import Target

LAUNCHER_HANDLER = "locaria_batch.dispatch.lambdas.launcher_handler"
TASK_STATE_HANDLER = "locaria_batch.dispatch.lambdas.task_state_handler"
# AWS disabled creating python3.11 functions on 2026-07-31; the code runs unchanged on 3.13
LAMBDA_RUNTIME = "python3.13"
JOB_PREFIXES = ("incoming/", "loaderDownloads/")  # what jobs read (uploads) and write (downloads)
LAMBDA_ZIP = "lambda.zip"
LOG_RETENTION_DAYS = 30
# the serverless framework's logical ids for functions `launcher` and `taskState`; the plain
# template uses the same ids so outputs and policies are shared
FUNCTIONS: dict[str, dict[str, Any]] = {
    "launcher": {"id": "LauncherLambdaFunction", "handler": LAUNCHER_HANDLER, "timeout": 60},
    "taskState": {"id": "TaskStateLambdaFunction", "handler": TASK_STATE_HANDLER, "timeout": 30},
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
                    "Secrets": [{"Name": "LOCARIA_DB_URL", "ValueFrom": ref("DatabaseUrlSecret")},
                                {"Name": "LOCARIA_STORAGE", "ValueFrom": ref("StorageSecret")}],
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
    bucket = f"arn:${{AWS::Partition}}:s3:::{target.bucket}"
    prefixes = [f"{target.storage_prefix}{prefix}" for prefix in JOB_PREFIXES]
    names = [pascal(name) for name in specs]
    secrets = [ref("DatabaseUrlSecret"), ref("StorageSecret")]
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

    read_db_secret = {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                      "Resource": ref("DatabaseUrlSecret")}
    return {
        "Cluster": {"Type": "AWS::ECS::Cluster", "Properties": {
            "ClusterName": f"locaria-batch-{target.suffix}",
            "ClusterSettings": [{"Name": "containerInsights", "Value": "disabled"}]}},
        "DatabaseUrlSecret": {"Type": "AWS::SecretsManager::Secret", "Properties": {
            "Name": f"locaria-batch/{target.suffix}/LOCARIA_DB_URL",
            "Description": "URL of the database role the jobs and Lambdas use (not the master user)",
            "SecretString": ref("DatabaseUrl")}},
        "StorageSecret": {"Type": "AWS::SecretsManager::Secret", "Properties": {
            "Name": f"locaria-batch/{target.suffix}/LOCARIA_STORAGE",
            "Description": "Where job data lives (s3://bucket/prefix)",
            "SecretString": target.storage_url}},
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
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secrets},
            {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": [get_att(f"{p}LogGroup", "Arn") for p in names]},
        ], "pull-images-read-secrets-write-logs"),
        "LauncherRole": role("lambda.amazonaws.com", [
            own_logs("launcher"), vpc_enis, read_db_secret,
            {"Effect": "Allow", "Action": "ecs:RunTask", "Resource": task_arns,
             "Condition": {"ArnEquals": {"ecs:cluster": get_att("Cluster", "Arn")}}},
            {"Effect": "Allow", "Action": ["ecs:DescribeTasks", "ecs:StopTask", "ecs:TagResource"],
             "Resource": cluster_tasks},
            {"Effect": "Allow", "Action": "ecs:ListTasks", "Resource": "*",
             "Condition": {"ArnEquals": {"ecs:cluster": get_att("Cluster", "Arn")}}},
            {"Effect": "Allow", "Action": "iam:PassRole",
             "Resource": [get_att("TaskRole", "Arn"), get_att("ExecutionRole", "Arn")]},
        ], "launch-job-tasks"),
        "TaskStateRole": role("lambda.amazonaws.com", [
            own_logs("taskState"), vpc_enis, read_db_secret,
            {"Effect": "Allow", "Action": "ecs:DescribeTasks", "Resource": cluster_tasks},
        ], "record-task-states"),
    }


def shared_outputs() -> dict[str, Any]:
    return {
        "ClusterName": {"Value": ref("Cluster")},
        "ClusterArn": {"Value": get_att("Cluster", "Arn")},
        "TaskRoleArn": {"Value": get_att("TaskRole", "Arn")},
        "ExecutionRoleArn": {"Value": get_att("ExecutionRole", "Arn")},
        "LauncherRoleArn": {"Value": get_att("LauncherRole", "Arn")},
        "TaskStateRoleArn": {"Value": get_att("TaskStateRole", "Arn")},
        "DatabaseUrlSecretArn": {"Value": ref("DatabaseUrlSecret")},
        "StorageSecretArn": {"Value": ref("StorageSecret")},
        "LauncherFunctionArn": {"Value": get_att(FUNCTIONS["launcher"]["id"], "Arn")},
        "TaskStateFunctionArn": {"Value": get_att(FUNCTIONS["taskState"]["id"], "Arn")},
        "LauncherScheduleArn": {"Value": get_att("LauncherSchedule", "Arn")},
        "TaskStateRuleArn": {"Value": get_att("TaskStateRule", "Arn")},
    }


def lambda_environment() -> dict[str, Any]:
    return {"LOCARIA_DB_SECRET": ref("DatabaseUrlSecret"), "LOCARIA_RUNNER": "ecs"}


def vpc(target: Target) -> dict[str, Any]:
    return {"SubnetIds": [target.config["vpcPrivateSubnetA"], target.config["vpcPrivateSubnetB"]],
            "SecurityGroupIds": [target.config["securityGroup"]]}


def task_state_pattern() -> dict[str, Any]:
    return {"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
            "detail": {"clusterArn": [get_att("Cluster", "Arn")]}}


def database_parameter() -> dict[str, Any]:
    return {"DatabaseUrl": {"Type": "String", "NoEcho": True, "MinLength": 1,
                            "Description": "postgresql:// URL of the jobs' own database role"}}


def stack_body(target: Target, specs: dict[str, DockerSpec]) -> tuple[dict[str, Any], dict[str, Any]]:
    resources = shared_resources(target, specs)
    outputs = shared_outputs()
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
            "VpcConfig": vpc(target), "Environment": {"Variables": lambda_environment()}}}
    resources["LauncherSchedule"] = {"Type": "AWS::Events::Rule", "Properties": {
        "Description": "run the launcher every minute", "ScheduleExpression": "rate(1 minute)",
        "Targets": [{"Id": "launcher", "Arn": get_att("LauncherLambdaFunction", "Arn")}]}}
    resources["TaskStateRule"] = {"Type": "AWS::Events::Rule", "Properties": {
        "Description": "ECS task state changes of the job cluster", "EventPattern": task_state_pattern(),
        "Targets": [{"Id": "taskState", "Arn": get_att("TaskStateLambdaFunction", "Arn")}]}}
    triggers = (("LauncherSchedule", "LauncherLambdaFunction"), ("TaskStateRule", "TaskStateLambdaFunction"))
    for rule, invoked in triggers:
        resources[f"{rule}Permission"] = {"Type": "AWS::Lambda::Permission", "Properties": {
            "Action": "lambda:InvokeFunction", "FunctionName": ref(invoked), "Principal": "events.amazonaws.com",
            "SourceArn": get_att(rule, "Arn")}}
    return resources


def cloudformation(target: Target, specs: dict[str, DockerSpec]) -> dict[str, Any]:
    resources, outputs = stack_body(target, specs)
    resources.update(lambda_resources(target))
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"Locaria Batch jobs: {target.stage} / {target.theme} / {target.environment}",
        "Parameters": {**database_parameter(),
                       "CodeBucket": {"Type": "String", "Description": "bucket holding the Lambda package"},
                       "CodeKey": {"Type": "String", "Description": "key of the Lambda package"}},
        "Resources": resources,
        "Outputs": outputs,
    }


def serverless(target: Target, specs: dict[str, DockerSpec]) -> dict[str, Any]:
    resources, outputs = stack_body(target, specs)
    # serverless names the schedule/EventBridge rules itself: refer to them by what it creates
    outputs.pop("LauncherScheduleArn")
    outputs.pop("TaskStateRuleArn")
    functions = {}
    for key, function in FUNCTIONS.items():
        module, _, attr = str(function["handler"]).rpartition(".")
        events: list[dict[str, Any]] = (
            [{"schedule": {"rate": "rate(1 minute)", "description": "run the launcher every minute"}}]
            if key == "launcher" else [{"eventBridge": {"pattern": task_state_pattern()}}]
        )
        functions[key] = {"name": function_name(target, key), "handler": f"{module.replace('.', '/')}.{attr}",
                          "role": f"{pascal(key)}Role", "timeout": function["timeout"], "memorySize": 256,
                          "vpc": {"securityGroupIds": vpc(target)["SecurityGroupIds"],
                                  "subnetIds": vpc(target)["SubnetIds"]},
                          "environment": lambda_environment(), "events": events}
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
        "resources": {"Parameters": database_parameter(), "Resources": resources, "Outputs": outputs},
    }


def write(target: Target, specs: dict[str, DockerSpec], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    template = out_dir / "cloudformation.json"
    template.write_text(json.dumps(cloudformation(target, specs), indent=2) + "\n")
    serverless_yml = out_dir / "serverless.yml"
    header = (f"# Locaria Batch jobs for {target.stage}/{target.theme}/{target.environment}, rendered by "
              f"`locaria-batch deploy render`.\n# Equivalent to cloudformation.json; `{LAMBDA_ZIP}` is the Lambda "
              "package `deploy apply` builds.\n")
    serverless_yml.write_text(header + yaml.safe_dump(serverless(target, specs), sort_keys=False, width=120))
    return serverless_yml, template
