"""The deployment steps, shared by the commands and the `configure` menu: build, push, deploy a
docker (which also writes its `fargate_config` entry), render, apply and destroy the stack.

Whatever a step writes to a database goes to the stage's own database (database.py), and the
step says where before it writes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from locaria_batch import __version__
from locaria_batch.containers import connect_engine, local_image
from locaria_batch.db.dockers import DockerSpec, load
from locaria_batch.deploy import bucket, images, render, secrets, stack
from locaria_batch.deploy.aws import Report, aws_call, session
from locaria_batch.deploy.database import SchemaState, StageDatabase, check_login, schema_state, stage_database
from locaria_batch.deploy.stages import Target
from locaria_batch.errors import DeployError
from locaria_batch.fargate import FargateTarget, load_fargate_config, save_fargate_config, write_fargate_config

Progress = images.Progress


def specs(project_dir: Path) -> dict[str, DockerSpec]:
    return load(project_dir / "docker" / "dockers.json")


def build(project_dir: Path, name: str, *, base_image: str = images.DEFAULT_BASE_IMAGE,
          progress: Progress = images._quiet, engine: Any = None) -> images.BuiltImage:
    images.docker_spec(project_dir, name)
    engine = engine or connect_engine()
    return images.build(engine, project_dir, name, wheel_cache=images.wheel_cache(), base_image=base_image,
                        progress=progress)


def repository_uri(target: Target, name: str, outputs: dict[str, str]) -> str:
    key = render.output_keys(name)["repository_uri"]
    if key not in outputs:
        raise stack.StackNotDeployed(
            f"docker {name!r} has no repository in the deployed stack {target.stack_name}: run "
            f"`locaria-batch deploy apply --stage {target.stage}` after adding it to docker/dockers.json")
    return outputs[key]


def push(target: Target, name: str, *, progress: Progress = images._quiet, engine: Any = None,
         aws: Any = None) -> images.PushedImage:
    """Tag the locally built image with the docker's own ECR repository and push it."""
    images.docker_spec(target.project_dir, name)
    outputs = stack.load_outputs(target)
    uri = repository_uri(target, name, outputs)
    engine = engine or connect_engine()
    try:
        image = engine.images.get(local_image(name))
    except Exception as exc:  # docker.errors.ImageNotFound and engine errors alike
        raise images.ImageError(f"no image {local_image(name)}: build it first with "
                                f"`locaria-batch docker build {name}`") from exc
    aws = aws or session(target)
    ecr = aws.client("ecr")
    auth = aws_call("getting an ECR login token", images.ecr_auth, ecr, uri)
    built = images.BuiltImage(tag=local_image(name), image_id=str(image.id))
    return images.push(engine, built, uri, auth, __version__, progress)


def fargate_target(target: Target, name: str, outputs: dict[str, str], image: str | None = None) -> FargateTarget:
    """What the ECS runner needs to run docker NAME."""
    keys = render.output_keys(name)
    return FargateTarget(
        docker=name, task_definition=outputs[keys["task_definition"]], cluster=outputs["ClusterName"],
        subnets=(target.config["vpcPrivateSubnetA"], target.config["vpcPrivateSubnetB"]),
        security_groups=(target.config["securityGroup"],), region=target.region, container=name,
        log_group=outputs[keys["log_group"]], stream_prefix=name,
        assign_public_ip=str(target.config.get("assignPublicIp") or "DISABLED"),
        launcher_arn=outputs["LauncherFunctionArn"], repository_uri=outputs[keys["repository_uri"]], image=image)


def require_our_schema(conn: psycopg.Connection[Any], target: Target, database: StageDatabase) -> SchemaState:
    """Our schema, or Locaria's original one (which `locaria adopt` takes over); nothing else."""
    state = schema_state(conn)
    if state is SchemaState.NONE:
        raise DeployError(f"{database.where} has no Locaria Batch schema yet: run `locaria-batch db migrate` with "
                          f"LOCARIA_DB_URL set to the {target.label} database's owner URL")
    return state


def not_adopted(target: Target, database: StageDatabase) -> str:
    return (f"{database.where} still runs Locaria's own batch system: `locaria-batch locaria adopt --stage "
            f"{target.stage} --theme {target.theme} --environment {target.environment}` records fargate_config "
            "as it switches over")


def record_fargate_config(conn: psycopg.Connection[Any], target: Target, outputs: dict[str, str],
                          names: list[str]) -> dict[str, Any]:
    """Every docker's entry, from the stack's outputs; a pushed image is kept while it is still of
    the docker's repository; other dockers' entries are kept."""
    with conn.transaction():
        config = load_fargate_config(conn)
        for name in names:
            earlier = str(config.get(name, {}).get("image") or "")
            uri = repository_uri(target, name, outputs)
            entry = fargate_target(target, name, outputs, earlier if earlier.startswith(f"{uri}:") else None)
            config[name] = entry.to_entry()
        save_fargate_config(conn, config)
    return config


def deploy(target: Target, name: str, *, base_image: str = images.DEFAULT_BASE_IMAGE,
           progress: Progress = images._quiet, engine: Any = None, aws: Any = None,
           report: Report = print) -> dict[str, Any]:
    """Build, push, then record where and how the docker runs on Fargate in the stage's database."""
    outputs = stack.load_outputs(target)  # fail before a long build when the stack is missing
    repository_uri(target, name, outputs)
    aws = aws or session(target)
    database = stage_database(target, aws)
    report(f"fargate_config.{name} will be recorded in {database.describe()}")
    with database.connect() as conn:  # reachable and ours, before a long build
        if require_our_schema(conn, target, database) is SchemaState.LOCARIA:
            raise DeployError(not_adopted(target, database) + f"; until then, `locaria-batch docker push {name}` "
                              "pushes the image without touching the database")
    engine = engine or connect_engine()
    build(target.project_dir, name, base_image=base_image, progress=progress, engine=engine)
    pushed = push(target, name, progress=progress, engine=engine, aws=aws)
    chosen = fargate_target(target, name, outputs, pushed.image)
    with database.connect() as conn:
        write_fargate_config(conn, chosen)
    return chosen.to_entry()


def render_stack(target: Target, out_dir: Path, *, with_package: bool = True) -> list[Path]:
    """serverless.yml + cloudformation.json (+ the Lambda package serverless.yml refers to)."""
    from locaria_batch.deploy.package import build_lambda_package

    written = list(render.write(target, specs(target.project_dir), out_dir))
    if with_package:
        written.append(build_lambda_package(target.project_dir, out_dir / render.LAMBDA_ZIP))
    return written


def check_database(target: Target, aws: Any, values: dict[str, str | None], report: Report) -> \
        tuple[StageDatabase, SchemaState]:
    """The stage's database is reachable, migrated (or Locaria's, to adopt), and the logins the
    secrets will hold are granted their roles."""
    database = stage_database(target, aws)
    report(f"database: {database.describe()}")
    with database.connect() as conn:
        state = require_our_schema(conn, target, database)
        if state is SchemaState.OURS:
            for secret in secrets.SECRETS:
                value = values[secret.key]
                if secret.role and value:
                    warning = check_login(conn, value, secret.role, str(secrets.variable_of(target, secret)))
                    if warning:
                        report(f"warning: {warning}")
    return database, state


def apply_stack(target: Target, *, report: Callable[[str], None] = print, poll: float = 5.0,
                aws: Any = None) -> dict[str, str]:
    """Everything the stage needs, checked first and then made: bucket, secrets, the stack, the
    bucket's upload notification, and fargate_config in the stage's database."""
    aws = aws or session(target)
    secrets_client, s3 = aws.client("secretsmanager"), aws.client("s3")
    values = secrets.check_values(secrets_client, target)
    database, state = check_database(target, aws, values, report)
    bucket.ensure_bucket(s3, target, report)
    secrets.ensure_secrets(secrets_client, target, values, report)
    outputs = stack.apply(target, specs(target.project_dir), report=report, poll=poll, aws=aws)
    bucket.notify_uploads(s3, target, outputs["UploadFunctionArn"], report)
    if state is SchemaState.OURS:
        names = list(specs(target.project_dir))
        report(f"recording fargate_config ({', '.join(names)}) in {database.where}")
        with database.connect() as conn:
            record_fargate_config(conn, target, outputs, names)
    else:
        report(f"fargate_config not recorded: {not_adopted(target, database)}")
    return outputs


def destroy_stack(target: Target, *, delete_bucket: bool = False, delete_secrets: bool = False,
                  forget_fargate_config: bool = False, report: Callable[[str], None] = print, poll: float = 5.0,
                  aws: Any = None) -> None:
    """Delete the stack; the bucket, the secrets and the database's fargate_config stay unless asked."""
    aws = aws or session(target)
    if forget_fargate_config:
        database = stage_database(target, aws)
        report(f"removing this stack's fargate_config entries from {database.describe()}")
        cluster = f"locaria-batch-{target.suffix}"
        with database.connect() as conn, conn.transaction():
            config = load_fargate_config(conn)
            kept = {name: entry for name, entry in config.items() if entry.get("ecsName") != cluster}
            save_fargate_config(conn, kept)
        report(f"fargate_config: {', '.join(sorted(set(config) - set(kept))) or 'nothing'} removed")
    s3 = aws.client("s3")
    bucket.forget_uploads(s3, target, report)
    stack.destroy(target, report=report, poll=poll, aws=aws)
    if delete_secrets:
        secrets.delete_secrets(aws.client("secretsmanager"), target, report)
    if delete_bucket:
        bucket.delete_bucket(s3, target, report)
