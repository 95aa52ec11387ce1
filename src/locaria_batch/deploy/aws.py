"""The AWS session of a deployment target and one way to turn an AWS failure into a sentence."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ProfileNotFound

from locaria_batch.deploy.stages import Target
from locaria_batch.errors import DeployError

Report = Callable[[str], None]


def silent(message: str) -> None:
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


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


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
