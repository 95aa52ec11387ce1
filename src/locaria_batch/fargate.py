"""`parameters.fargate_config`: where and how each docker runs on ECS Fargate.

One entry per docker, with the original Locaria's keys (task, ecsName, vpcPrivateSubnetA/B,
ServerlessSecurityGroup, region, arn, ecrRepositoryUri) plus containerName, logGroup, streamPrefix,
assignPublicIp and image.  `FargateTarget` is the one shape of an entry: `docker deploy` writes it,
the ECS runner reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from locaria_batch.errors import ApiError, ConfigurationError

PARAMETER = "fargate_config"
ADMINS = {"_groups": ["Admins"]}
REQUIRED_KEYS = ("task", "ecsName", "vpcPrivateSubnetA", "ServerlessSecurityGroup")


class FargateConfigError(ConfigurationError):
    """parameters.fargate_config lacks what a docker needs to run on ECS."""


@dataclass(frozen=True)
class FargateTarget:
    """Where one docker runs: its fargate_config entry."""

    docker: str
    task_definition: str
    cluster: str
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    region: str | None
    container: str
    log_group: str | None
    stream_prefix: str
    assign_public_ip: str = "DISABLED"
    launcher_arn: str | None = None  # written for the original's tools; the runner does not need them
    repository_uri: str | None = None
    image: str | None = None

    @classmethod
    def from_entry(cls, docker: str, entry: dict[str, Any]) -> FargateTarget:
        missing = [key for key in REQUIRED_KEYS if not entry.get(key)]
        if missing:
            raise FargateConfigError(
                f"parameters.fargate_config.{docker} lacks {', '.join(missing)}: "
                f"redeploy it with `locaria-batch docker deploy {docker}`")
        groups = entry["ServerlessSecurityGroup"]
        return cls(
            docker=docker, task_definition=str(entry["task"]), cluster=str(entry["ecsName"]),
            subnets=tuple(str(s) for s in (entry.get("vpcPrivateSubnetA"), entry.get("vpcPrivateSubnetB")) if s),
            security_groups=tuple(groups) if isinstance(groups, list) else (str(groups),),
            region=entry.get("region") or None, container=str(entry.get("containerName") or docker),
            log_group=entry.get("logGroup") or None, stream_prefix=str(entry.get("streamPrefix") or docker),
            assign_public_ip=str(entry.get("assignPublicIp") or "DISABLED"),
            launcher_arn=entry.get("arn") or None, repository_uri=entry.get("ecrRepositoryUri") or None,
            image=entry.get("image") or None,
        )

    def to_entry(self) -> dict[str, Any]:
        subnets = [*self.subnets, None, None]
        groups = self.security_groups[0] if len(self.security_groups) == 1 else list(self.security_groups)
        entry = {
            "task": self.task_definition, "ecsName": self.cluster, "vpcPrivateSubnetA": subnets[0],
            "vpcPrivateSubnetB": subnets[1], "ServerlessSecurityGroup": groups, "region": self.region,
            "arn": self.launcher_arn, "ecrRepositoryUri": self.repository_uri, "image": self.image,
            "containerName": self.container, "logGroup": self.log_group, "streamPrefix": self.stream_prefix,
            "assignPublicIp": self.assign_public_ip,
        }
        return {key: value for key, value in entry.items() if value is not None}

    def log_stream(self, task_id: str) -> str:
        return f"{self.stream_prefix}/{self.container}/{task_id}"


def _parameters_call(conn: psycopg.Connection[Any], function: str, payload: dict[str, Any]) -> dict[str, Any]:
    row = conn.execute(f"SELECT locaria_core.{function}(%s) AS result", [Jsonb(payload)]).fetchone()
    result = row["result"] if isinstance(row, dict) else row[0]  # type: ignore[index]
    return dict(result)


def load_fargate_config(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """parameters.fargate_config, read through the SQL API as an Admin ({} when there is none)."""
    result = _parameters_call(conn, "get_parameters", {"parameter_name": PARAMETER, "acl": ADMINS})
    if "error" in result:
        return {}
    data = result["parameters"][PARAMETER]["data"]
    return dict(data) if isinstance(data, dict) else {}


def save_fargate_config(conn: psycopg.Connection[Any], config: dict[str, Any]) -> None:
    """Replace parameters.fargate_config, through the SQL API as an Admin."""
    result = _parameters_call(conn, "set_parameters", {"parameter_name": PARAMETER, "parameters": config,
                                                       "acl": ADMINS})
    if "error" in result:
        raise ApiError(f"writing fargate_config failed: {result['error']}")


def write_fargate_config(conn: psycopg.Connection[Any], target: FargateTarget) -> dict[str, Any]:
    """Merge the target's entry into parameters.fargate_config, keeping the other dockers' entries."""
    with conn.transaction():
        merged = {**load_fargate_config(conn), target.docker: target.to_entry()}
        save_fargate_config(conn, merged)
    return merged
