"""Connections: one place that knows where the database is."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from locaria_batch.settings import settings


class DatabaseNotConfigured(RuntimeError):
    pass


def database_url() -> str:
    """LOCARIA_DB_URL, else a URL kept in Secrets Manager (LOCARIA_DB_SECRET), else the
    embedded cluster under .locaria/ (which must be running)."""
    conf = settings()
    if conf.db_url:
        return conf.db_url
    if conf.db_secret:
        from locaria_batch.db.secrets import database_url_from_secret

        return database_url_from_secret(conf.db_secret)
    from locaria_batch.db.cluster import EmbeddedCluster

    cluster = EmbeddedCluster(conf.home)
    url = cluster.url_if_running()
    if url is None:
        raise DatabaseNotConfigured(
            "No database: set LOCARIA_DB_URL to an existing PostgreSQL+PostGIS database, "
            "or start the embedded one with `locaria-batch db up`."
        )
    return url


def connect(url: str | None = None, *, autocommit: bool = False, application_name: str = "locaria-batch",
            **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    conn = psycopg.connect(
        url or database_url(),
        autocommit=autocommit,
        row_factory=dict_row,
        application_name=application_name,
        **kwargs,
    )
    # psycopg reads dates and times in ISO form only: a server whose default DateStyle is SQL or German
    # would make every timestamp unreadable (a SET, not a startup option, which poolers may refuse)
    if not (conn.info.parameter_status("DateStyle") or "").startswith("ISO"):
        conn.execute("SET DateStyle = 'ISO, YMD'")
        if not autocommit:
            conn.commit()
    return conn
