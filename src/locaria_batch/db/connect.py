"""Connections: one place that knows where the database is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.rows import dict_row

from locaria_batch.db.credentials import CONSOLE, DISPATCHER, JOB, OWNER
from locaria_batch.errors import (
    ConfigurationError,
    DatabaseNotConfigured,
    DatabaseUnavailable,
    LocariaError,
    SchemaNotMigrated,
    first_line,
)
from locaria_batch.settings import settings

Query: TypeAlias = str | bytes | sql.SQL | sql.Composed
Params: TypeAlias = Sequence[Any] | Mapping[str, Any] | None

BIGINT_MAX = 2**63 - 1  # the largest id, count or LIMIT PostgreSQL holds


def _embedded_url(role: str) -> str:
    from locaria_batch.db.cluster import EmbeddedCluster

    url = EmbeddedCluster(settings().home).url(role)
    if url is None:
        raise DatabaseNotConfigured(
            "No database: set LOCARIA_DB_URL to an existing PostgreSQL+PostGIS database, "
            "or start the embedded one with `locaria-batch db up`."
        )
    return url


def database_url() -> str:
    """What the CLI, the worker and the Lambdas connect with: LOCARIA_DB_URL, else a URL kept in
    Secrets Manager (LOCARIA_DB_SECRET), else the embedded cluster's dispatcher role (the cluster
    under .locaria/ must be running)."""
    conf = settings()
    if conf.db_url:
        return conf.db_url
    if conf.db_secret:
        from locaria_batch.db.secrets import database_url_from_secret

        return database_url_from_secret(conf.db_secret)
    return _embedded_url(DISPATCHER)


def owner_database_url() -> str:
    """What migrations run as: the given database URL, or the embedded cluster's owner."""
    conf = settings()
    return database_url() if conf.db_url or conf.db_secret else _embedded_url(OWNER)


def job_database_url() -> str:
    """What job processes and containers connect with: never the dispatcher's own credentials."""
    conf = settings()
    if conf.job_db_url:
        return conf.job_db_url
    if not (conf.db_url or conf.db_secret):
        return _embedded_url(JOB)
    raise ConfigurationError(
        "jobs need database credentials of their own: set LOCARIA_JOB_DB_URL to a URL of a login with the "
        "locaria_job role (`locaria-batch db migrate` creates the role and grants it what a job may do)")


def console_database_url() -> str | None:
    """The console's read-only login, where one is known (else the console reads read-only on the
    main connection)."""
    conf = settings()
    if conf.console_db_url:
        return conf.console_db_url
    return None if conf.db_url or conf.db_secret else _embedded_url(CONSOLE)


def connect(url: str | None = None, *, autocommit: bool = False, application_name: str = "locaria-batch",
            **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    conn = psycopg.connect(
        url or database_url(),
        autocommit=autocommit,
        row_factory=dict_row,
        application_name=application_name,
        **kwargs,
    )
    ensure_iso_dates(conn)
    return conn


def ensure_iso_dates(conn: psycopg.Connection[Any]) -> None:
    """psycopg reads dates and times in ISO form only: a server whose default DateStyle is SQL or German
    would make every timestamp unreadable (a SET, not a startup option, which poolers may refuse; called
    again after anything that resets the session)."""
    if not (conn.info.parameter_status("DateStyle") or "").startswith("ISO"):
        conn.execute("SET DateStyle = 'ISO, YMD'", prepare=False)
        if not conn.autocommit:
            conn.commit()


def explain_database_error(exc: psycopg.Error) -> LocariaError | None:
    """The sentence a user needs for a database error they can act on; None for anything else."""
    line = first_line(exc)
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        conf = settings()
        if not (conf.db_url or conf.db_secret):
            return DatabaseUnavailable(f"cannot reach the embedded database: {line}. Start it with "
                                       "`locaria-batch db up` (`locaria-batch db status` shows its state)")
        return DatabaseUnavailable(f"cannot reach the database: {line}. Check that it runs "
                                   "(`locaria-batch db status`) and that LOCARIA_DB_URL points at it")
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedFunction
                  | psycopg.errors.InvalidSchemaName) and "locaria_" in str(exc):
        return SchemaNotMigrated(line)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return LocariaError(f"the database refused: {line}. Connect as a role that `locaria-batch db migrate` "
                            "granted what this needs")
    return None


def redacted(url: str) -> str:
    """The URL without its password, for messages and status lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def describe(url: str) -> str:
    """Where a URL leads, for "writing to ..." lines: host:port/database as user, never the password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return redacted(url)
    host = str(info.get("host") or "the local socket")
    port = f":{info['port']}" if info.get("port") else ""
    user = f" as {info['user']}" if info.get("user") else ""
    return f"{host}{port}/{info.get('dbname') or info.get('user') or '(default)'}{user}"


def scalar(conn: psycopg.Connection[Any], query: Query, params: Params = None) -> Any:
    """The first value of the one row a statement returns (None when it returns no row)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        return None
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def one(conn: psycopg.Connection[dict[str, Any]], query: Query, params: Params = None) -> dict[str, Any]:
    """The one row a statement always returns (an aggregate, a function call)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise AssertionError(f"no row from {query!r}")
    return row
