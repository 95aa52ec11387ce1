"""Numbered plain-SQL migrations, applied once each, under an advisory lock."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from locaria_batch.db.adoption import around_migrations

MIGRATION_LOCK = 0x10CA61A  # any constant shared by every process running migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    folder = resources.files("locaria_batch.db") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def migrate(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Apply every migration not yet applied, in one transaction.  Two processes at once are
    safe: the second waits on the lock, then finds nothing left to do."""
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        conn.execute("CREATE SCHEMA IF NOT EXISTS locaria_core")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS locaria_core.schema_migrations (
                   version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
        )
        rows = conn.execute("SELECT version FROM locaria_core.schema_migrations").fetchall()
        done = {row["version"] if isinstance(row, dict) else row[0] for row in rows}
        pending = [migration for migration in available_migrations() if migration.version not in done]
        # a database taken over from Locaria keeps the CMS's own functions as they are (db/adoption.py)
        with around_migrations(conn):
            for migration in pending:
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO locaria_core.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    [migration.version, migration.name, migration.checksum],
                )
                applied_now.append(migration)
            # every run: functions added or replaced by any migration get their role's grants again
            conn.execute("SELECT locaria_core.grant_roles()")
    return applied_now
