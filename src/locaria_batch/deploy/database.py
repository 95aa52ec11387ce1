"""The stage's own database, as its owner reaches it: where `deploy apply`, `docker deploy` and the
`configure` menu record fargate_config, and what `locaria adopt --stage` migrates.

Its URL comes from the variable the stage names (`databaseUrlEnv`) or, failing that, from the
Secrets Manager secret it names (`databaseSecret`), never from LOCARIA_DB_URL, which may point at
any other database.  Every command says where it writes (host, port, database and user, never the
password) before it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg

from locaria_batch.db.connect import connect, describe, scalar
from locaria_batch.db.secrets import secret_to_url
from locaria_batch.deploy.aws import aws_call, session
from locaria_batch.deploy.stages import StageConfigError, Target
from locaria_batch.errors import DeployError
from locaria_batch.settings import environment_value

OWNER = "the owner's postgresql:// URL (the role that runs `locaria-batch db migrate`)"


class SchemaState(StrEnum):
    """What a database holds: our schema, Locaria's original one not yet adopted, or neither."""

    OURS = "ours"
    LOCARIA = "locaria"
    NONE = "none"


@dataclass(frozen=True)
class StageDatabase:
    url: str
    source: str  # "$LOCARIA_DEV_DB_URL" or "secret LOCARIADB_maindev"

    @property
    def where(self) -> str:
        return describe(self.url)

    def describe(self) -> str:
        return f"{self.where} (from {self.source})"

    def connect(self) -> psycopg.Connection[dict[str, Any]]:
        return connect(self.url, autocommit=True, application_name="locaria-batch deploy")


def stage_database(target: Target, aws: Any = None) -> StageDatabase:
    env = target.database_url_env
    if env and (value := environment_value(env)):
        return StageDatabase(value, f"${env}")
    if target.database_secret:
        client = (aws or session(target)).client("secretsmanager")
        secret = aws_call(f"reading the database secret {target.database_secret}", client.get_secret_value,
                          SecretId=target.database_secret)
        return StageDatabase(secret_to_url(secret["SecretString"]), f"secret {target.database_secret}")
    if env:
        raise DeployError(f"set {env} to {OWNER} of the {target.label} database")
    raise StageConfigError(
        f"{target.label} names no database in the stage configuration: give it databaseUrlEnv (a variable "
        f"holding {OWNER}) or databaseSecret (a Secrets Manager secret holding it)")


def schema_state(conn: psycopg.Connection[Any]) -> SchemaState:
    if scalar(conn, "SELECT to_regclass('locaria_core.schema_migrations') IS NOT NULL"):
        return SchemaState.OURS
    if scalar(conn, "SELECT to_regclass('locaria_core.files') IS NOT NULL"):
        return SchemaState.LOCARIA
    return SchemaState.NONE


def login_of(url: str, variable: str) -> str | None:
    from psycopg.conninfo import conninfo_to_dict

    try:
        user = conninfo_to_dict(url).get("user")
    except psycopg.ProgrammingError as exc:
        raise DeployError(f"{variable} is not a database URL: write postgresql://login:password@host:5432/database"
                          ) from exc
    return str(user) if user else None


def check_login(conn: psycopg.Connection[Any], url: str, role: str, variable: str) -> str | None:
    """Refuse a URL whose login is not a member of ROLE; a warning when it is a superuser."""
    login = login_of(url, variable)
    if login is None:
        raise DeployError(f"{variable} names no user: give the URL of a login granted {role}")
    row = conn.execute("SELECT rolsuper, pg_has_role(oid, %s, 'MEMBER') AS member FROM pg_roles WHERE rolname = %s",
                       [role, login]).fetchone()
    if row is None:
        raise DeployError(f"{variable} logs in as {login}, which does not exist in this database: create it and "
                          f"`GRANT {role} TO {login}` (docs/aws.md, the database roles)")
    superuser, member = (row["rolsuper"], row["member"]) if isinstance(row, dict) else row
    if not member:
        raise DeployError(f"{variable} logs in as {login}, which is not granted {role}: "
                          f"run `GRANT {role} TO {login}` as the owner")
    if superuser:
        return f"{variable} logs in as {login}, a superuser: give it a login granted only {role}"
    return None
