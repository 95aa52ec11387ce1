"""The stage configuration file (locaria.json): one entry per stage, each with its themes and
environments.  A deployment target is one (stage, theme, environment).

Per theme and environment: the `bucket` (and an optional `storagePrefix`), the browser origins
allowed to PUT uploads (`corsOrigins`), the stage's own database as its owner sees it
(`databaseUrlEnv`, an environment variable holding the URL, or `databaseSecret`, a Secrets Manager
secret holding it), and the variables holding the URLs of the two login roles the stack stores
as secrets (`jobDatabaseUrlEnv`: a locaria_job login for the tasks; `dispatcherDatabaseUrlEnv`: a
locaria_dispatcher login for the Lambdas)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locaria_batch.errors import ConfigurationError
from locaria_batch.jsonfile import read_json_object
from locaria_batch.settings import settings

REQUIRED = ("region", "vpcPrivateSubnetA", "vpcPrivateSubnetB", "securityGroup", "themes")
NAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")


class StageConfigError(ConfigurationError):
    pass


def load_stages(path: Path) -> dict[str, dict[str, Any]]:
    raw = read_json_object(path, StageConfigError, "copy locaria.example.json to locaria.json and fill it in",
                           "stage name")
    if not raw:
        raise StageConfigError(f"{path} must hold a JSON object keyed by stage name")
    return raw


@dataclass(frozen=True)
class Target:
    stage: str
    theme: str
    environment: str
    config: dict[str, Any]  # the stage's entry
    project_dir: Path

    @property
    def settings(self) -> dict[str, Any]:
        """The theme/environment entry (bucket, databaseUrlEnv, storagePrefix)."""
        return dict(self.config["themes"][self.theme][self.environment] or {})

    @property
    def suffix(self) -> str:
        return f"{self.stage}-{self.theme}{self.environment}"

    @property
    def stack_name(self) -> str:
        return f"locaria-batch-{self.suffix}"

    @property
    def service(self) -> str:
        """The serverless service name (serverless adds `-{stage}` itself)."""
        return f"locaria-batch-{self.theme}{self.environment}"

    @property
    def region(self) -> str:
        return str(self.config["region"])

    @property
    def profile(self) -> str | None:
        return self.config.get("profile")

    @property
    def bucket(self) -> str:
        return str(self.settings.get("bucket") or f"locaria-{self.stage}-{self.theme}{self.environment}")

    @property
    def storage_prefix(self) -> str:
        prefix = str(self.settings.get("storagePrefix") or "").strip("/")
        return f"{prefix}/" if prefix else ""

    @property
    def storage_url(self) -> str:
        return f"s3://{self.bucket}/{self.storage_prefix}".rstrip("/")

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.theme}/{self.environment}"

    @property
    def upload_prefix(self) -> str:
        """Where browsers PUT uploads in the bucket: what the upload Lambda listens to."""
        return f"{self.storage_prefix}incoming/"

    @property
    def cors_origins(self) -> list[str]:
        return [str(origin) for origin in self.settings.get("corsOrigins") or ["*"]]

    def _name(self, key: str) -> str | None:
        value = self.settings.get(key)
        return str(value) if value else None

    @property
    def database_url_env(self) -> str | None:
        """The variable holding the owner's URL of the stage's database."""
        return self._name("databaseUrlEnv")

    @property
    def database_secret(self) -> str | None:
        """A Secrets Manager secret holding it instead."""
        return self._name("databaseSecret")

    @property
    def job_database_url_env(self) -> str | None:
        return self._name("jobDatabaseUrlEnv")

    @property
    def dispatcher_database_url_env(self) -> str | None:
        return self._name("dispatcherDatabaseUrlEnv")

    def secret_name(self, what: str) -> str:
        """The stack's secrets: job-database-url, dispatcher-database-url, storage."""
        return f"locaria-batch/{self.suffix}/{what}"

    @property
    def outputs_file(self) -> Path:
        """Where `deploy apply` keeps the stack's outputs (under LOCARIA_HOME, default .locaria)."""
        return settings().home / "outputs" / f"{self.suffix}.json"

    @property
    def work_dir(self) -> Path:
        return settings().home / "build" / self.suffix


def themes(stages: dict[str, dict[str, Any]], stage: str) -> dict[str, Any]:
    return dict(stages.get(stage, {}).get("themes") or {})


def target(stages: dict[str, dict[str, Any]], stage: str, theme: str | None, environment: str | None,
           project_dir: Path) -> Target:
    """Stage, theme and environment checked against the file; theme/environment default to the first."""
    if stage not in stages:
        raise StageConfigError(f"unknown stage {stage!r}: the configuration has {', '.join(sorted(stages))}")
    config = stages[stage]
    missing = [key for key in REQUIRED if not config.get(key)]
    if missing:
        raise StageConfigError(f"stage {stage!r} lacks {', '.join(missing)}: see locaria.example.json")
    available = themes(stages, stage)
    theme = theme or next(iter(available))
    if theme not in available:
        raise StageConfigError(f"stage {stage!r} has no theme {theme!r}: it has {', '.join(available)}")
    environments = available[theme] or {}
    if not isinstance(environments, dict) or not environments:
        raise StageConfigError(
            f"theme {theme!r} of stage {stage!r} needs at least one environment, e.g. {{\"dev\": {{}}}}")
    environment = environment or next(iter(environments))
    if environment not in environments:
        raise StageConfigError(f"theme {theme!r} has no environment {environment!r}: it has {', '.join(environments)}")
    entry = environments[environment]
    if entry is not None and not isinstance(entry, dict):
        raise StageConfigError(f"{stage}/{theme}/{environment} must be an object of settings, e.g. {{\"bucket\": …}}")
    origins = (entry or {}).get("corsOrigins")
    if origins is not None and not (isinstance(origins, list) and all(isinstance(o, str) and o for o in origins)):
        raise StageConfigError(f"corsOrigins of {stage}/{theme}/{environment} must be a list of origins, "
                               "e.g. [\"https://admin.example.org\"]")
    for label, value in (("stage", stage), ("theme", theme), ("environment", environment)):
        if not NAME.match(value):
            raise StageConfigError(
                f"{label} {value!r} must be 1-16 lower-case letters or digits, starting with a letter")
    return Target(stage, theme, environment, config, project_dir)
