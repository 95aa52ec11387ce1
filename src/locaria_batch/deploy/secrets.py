"""The stack's three secrets, written by `deploy apply` through Secrets Manager (never through the
template, whose parameters CloudFormation keeps): the tasks' database URL (a locaria_job login),
the Lambdas' database URL (a locaria_dispatcher login) and the storage location.

A URL comes from the variable the stage names; once stored, a later `deploy apply` without that
variable keeps the stored value, so a secret rotated with `aws secretsmanager put-secret-value`
stays rotated.  The template refers to the secrets by name; tasks get them as LOCARIA_DB_URL and
LOCARIA_STORAGE, the Lambdas the database one's name in LOCARIA_DB_SECRET.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from locaria_batch.deploy.aws import Report, aws_call, error_code
from locaria_batch.deploy.stages import StageConfigError, Target
from locaria_batch.errors import DeployError, LocariaError
from locaria_batch.settings import environment_value

JOB_DATABASE = "job-database-url"
DISPATCHER_DATABASE = "dispatcher-database-url"
STORAGE = "storage"


@dataclass(frozen=True)
class StackSecret:
    key: str  # the last part of its name
    role: str | None  # the database role its login must be granted
    stage_setting: str | None  # the stage setting naming the variable that holds its value
    description: str


SECRETS = (
    StackSecret(JOB_DATABASE, "locaria_job", "jobDatabaseUrlEnv",
                "Database URL the job tasks use (a login granted locaria_job), as LOCARIA_DB_URL"),
    StackSecret(DISPATCHER_DATABASE, "locaria_dispatcher", "dispatcherDatabaseUrlEnv",
                "Database URL the launcher, task-state and upload Lambdas use (a login granted locaria_dispatcher)"),
    StackSecret(STORAGE, None, None, "Where job data lives (s3://bucket/prefix), as LOCARIA_STORAGE"),
)


def variable_of(target: Target, secret: StackSecret) -> str | None:
    return target.settings.get(secret.stage_setting) if secret.stage_setting else None


def wanted_value(target: Target, secret: StackSecret) -> str | None:
    """The value to store: the storage URL, or the URL in the stage's variable (None: keep what is stored)."""
    if secret.stage_setting is None:
        return target.storage_url
    variable = variable_of(target, secret)
    return environment_value(variable) if variable else None


def _stored(client: Any, name: str) -> str | None:
    try:
        return str(client.get_secret_value(SecretId=name)["SecretString"])
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise DeployError(f"reading secret {name} failed: {error_code(exc)}") from exc


def missing_value(target: Target, secret: StackSecret) -> LocariaError:
    variable = variable_of(target, secret)
    if variable is None:
        return StageConfigError(
            f"{target.label} names no {secret.stage_setting} in the stage configuration: name the variable that "
            f"holds the postgresql:// URL of a login granted {secret.role} (docs/aws.md, the database roles)")
    return DeployError(f"set {variable} to the postgresql:// URL of a login granted {secret.role}: it is stored as "
                       f"the secret {target.secret_name(secret.key)} (never in the template)")


def check_values(client: Any, target: Target) -> dict[str, str | None]:
    """Every secret has a value to store or one stored already; the values to store, by key."""
    values = {}
    for secret in SECRETS:
        value = wanted_value(target, secret)
        if value is None and _stored(client, target.secret_name(secret.key)) is None:
            raise missing_value(target, secret)
        values[secret.key] = value
    return values


def ensure_secrets(client: Any, target: Target, values: dict[str, str | None], report: Report) -> None:
    for secret in SECRETS:
        name, value = target.secret_name(secret.key), values[secret.key]
        stored = _stored(client, name)
        if stored is None and value is not None:
            aws_call(f"creating secret {name}", client.create_secret, Name=name, SecretString=value,
                     Description=secret.description, Tags=[{"Key": "locaria:stage", "Value": target.stage}])
            report(f"secret {name} created")
        elif value is not None and value != stored:
            aws_call(f"updating secret {name}", client.put_secret_value, SecretId=name, SecretString=value)
            report(f"secret {name} updated")
        else:
            report(f"secret {name} kept")


def delete_secrets(client: Any, target: Target, report: Report) -> None:
    for secret in SECRETS:
        name = target.secret_name(secret.key)
        if _stored(client, name) is not None:
            aws_call(f"deleting secret {name}", client.delete_secret, SecretId=name, ForceDeleteWithoutRecovery=True)
            report(f"secret {name} deleted")
