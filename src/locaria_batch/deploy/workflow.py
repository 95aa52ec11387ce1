"""The deployment steps, shared by the commands and the `configure` menu: build, push, deploy a
docker (which also writes its `fargate_config` entry), render and apply the stack."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from locaria_batch import __version__
from locaria_batch.containers import connect_engine, local_image
from locaria_batch.db.dockers import DockerSpec, load
from locaria_batch.deploy import images, render, stack
from locaria_batch.deploy.stages import Target
from locaria_batch.fargate import FargateTarget, write_fargate_config

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
    aws = aws or stack.session(target)
    ecr = aws.client("ecr")
    auth = stack.aws_call("getting an ECR login token", images.ecr_auth, ecr, uri)
    built = images.BuiltImage(tag=local_image(name), image_id=str(image.id))
    return images.push(engine, built, uri, auth, __version__, progress)


def fargate_target(target: Target, name: str, outputs: dict[str, str], pushed: images.PushedImage) -> FargateTarget:
    """What the ECS runner needs to run docker NAME."""
    keys = render.output_keys(name)
    return FargateTarget(
        docker=name, task_definition=outputs[keys["task_definition"]], cluster=outputs["ClusterName"],
        subnets=(target.config["vpcPrivateSubnetA"], target.config["vpcPrivateSubnetB"]),
        security_groups=(target.config["securityGroup"],), region=target.region, container=name,
        log_group=outputs[keys["log_group"]], stream_prefix=name,
        assign_public_ip=str(target.config.get("assignPublicIp") or "DISABLED"),
        launcher_arn=outputs["LauncherFunctionArn"], repository_uri=pushed.repository_uri, image=pushed.image)


def deploy(target: Target, name: str, conn: psycopg.Connection[Any], *, base_image: str = images.DEFAULT_BASE_IMAGE,
           progress: Progress = images._quiet, engine: Any = None, aws: Any = None) -> dict[str, Any]:
    """Build, push, then record where and how the docker runs on Fargate."""
    outputs = stack.load_outputs(target)  # fail before a long build when the stack is missing
    repository_uri(target, name, outputs)
    engine = engine or connect_engine()
    build(target.project_dir, name, base_image=base_image, progress=progress, engine=engine)
    pushed = push(target, name, progress=progress, engine=engine, aws=aws)
    chosen = fargate_target(target, name, outputs, pushed)
    write_fargate_config(conn, chosen)
    return chosen.to_entry()


def render_stack(target: Target, out_dir: Path, *, with_package: bool = True) -> list[Path]:
    """serverless.yml + cloudformation.json (+ the Lambda package serverless.yml refers to)."""
    from locaria_batch.deploy.package import build_lambda_package

    written = list(render.write(target, specs(target.project_dir), out_dir))
    if with_package:
        written.append(build_lambda_package(target.project_dir, out_dir / render.LAMBDA_ZIP))
    return written


def apply_stack(target: Target, *, report: Callable[[str], None] = print, poll: float = 5.0,
                aws: Any = None) -> dict[str, str]:
    return stack.apply(target, specs(target.project_dir), report=report, poll=poll, aws=aws)
