"""A Locaria database taken over in place (`locaria-batch locaria adopt`), and given back.

Locaria's schema and ours share `locaria_core`.  Of the functions both define, ours take over the
file API and its trigger (TAKEN_OVER): Locaria's versions wait in the schema `locaria_original`
while the database is adopted, and ours in `locaria_batch_parked` while it is rolled back, so
either side comes back exactly as it was (moved, never re-created from text).  The rest of the CMS
keeps its own gateway, parameters API and log (KEPT): migrations may define those too (a database
of ours needs them), so around every migration of an adopted database Locaria's are set aside and
put back afterwards, replacing ours.

The triggers on `locaria_core.files` are swapped the same way, their definitions kept in
`locaria_original.adoption_log` with every adopt and rollback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from locaria_batch.db.connect import scalar
from locaria_batch.errors import LocariaError

CORE = "locaria_core"
ORIGINAL = "locaria_original"  # Locaria's functions while the database is adopted
PARKED = "locaria_batch_parked"  # ours while it is rolled back
KEPT_ASIDE = "locaria_original_kept"  # Locaria's kept functions, only while migrations run
TAKEN_OVER = ("add_file", "update_file", "get_files", "delete_file", "file_cron", "files_trigger",
              "aws_lambda_interface")
KEPT = ("locaria_internal_gateway", "get_parameters", "set_parameters", "log")
LOG_TABLE = f"{ORIGINAL}.adoption_log"

SETUP = f"""
CREATE SCHEMA IF NOT EXISTS {ORIGINAL};
COMMENT ON SCHEMA {ORIGINAL} IS 'Locaria''s own batch functions, set aside by locaria-batch locaria adopt';
CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
    id      BIGSERIAL PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    action  TEXT NOT NULL CHECK (action IN ('adopt', 'rollback')),
    by_role TEXT NOT NULL DEFAULT current_user,
    detail  JSONB NOT NULL
);
"""


class AdoptionError(LocariaError):
    """The database is not in a state this step can start from."""


class AdoptionState(StrEnum):
    NONE = "none"  # no Locaria tables at all
    LOCARIA = "locaria"  # Locaria's own batch system, never adopted
    OURS = "ours"  # a Locaria Batch database from the start
    ADOPTED = "adopted"
    ROLLED_BACK = "rolled back"


def adoption_state(conn: psycopg.Connection[Any]) -> AdoptionState:
    if scalar(conn, f"SELECT to_regclass('{LOG_TABLE}') IS NOT NULL"):
        last = scalar(conn, f"SELECT action FROM {LOG_TABLE} ORDER BY id DESC LIMIT 1")
        return AdoptionState.ADOPTED if last == "adopt" else AdoptionState.ROLLED_BACK
    if scalar(conn, "SELECT to_regclass('locaria_core.schema_migrations') IS NOT NULL"):
        return AdoptionState.OURS
    if scalar(conn, "SELECT to_regclass('locaria_core.files') IS NOT NULL"):
        return AdoptionState.LOCARIA
    return AdoptionState.NONE


def last_entry(conn: psycopg.Connection[Any], action: str) -> dict[str, Any]:
    row = conn.execute(f"SELECT at, detail FROM {LOG_TABLE} WHERE action = %s ORDER BY id DESC LIMIT 1",
                       [action]).fetchone()
    if row is None:
        raise AdoptionError(f"no {action} recorded in {LOG_TABLE}")
    return dict(row) if isinstance(row, dict) else {"at": row[0], "detail": row[1]}


def record(conn: psycopg.Connection[Any], action: str, detail: dict[str, Any]) -> None:
    conn.execute(SETUP.encode())
    conn.execute(f"INSERT INTO {LOG_TABLE} (action, detail) VALUES (%s, %s)", [action, Jsonb(detail)])


# -- functions ----------------------------------------------------------------------------------
def functions(conn: psycopg.Connection[Any], schema: str, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, identity arguments) of every function of these names in SCHEMA."""
    rows = conn.execute(
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname = ANY(%s) "
        "ORDER BY 1, 2", [schema, list(names)]).fetchall()
    return [(row["proname"], row["pg_get_function_identity_arguments"]) if isinstance(row, dict) else
            (row[0], row[1]) for row in rows]


def signature(schema: str, name: str, arguments: str) -> sql.Composed:
    # the argument list comes from the catalog (pg_get_function_identity_arguments), never from a user
    return sql.SQL("{}.{}({})").format(sql.Identifier(schema), sql.Identifier(name), sql.SQL(arguments))


def move_functions(conn: psycopg.Connection[Any], names: tuple[str, ...], source: str, target: str) -> list[str]:
    """Move every function of these names from SOURCE to TARGET (same OIDs: what refers to them follows)."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(target)))
    moved = []
    for name, arguments in functions(conn, source, names):
        conn.execute(sql.SQL("ALTER FUNCTION {} SET SCHEMA {}").format(
            signature(source, name, arguments), sql.Identifier(target)))
        moved.append(f"{name}({arguments})")
    return moved


def drop_functions(conn: psycopg.Connection[Any], names: tuple[str, ...], schema: str) -> None:
    for name, arguments in functions(conn, schema, names):
        conn.execute(sql.SQL("DROP FUNCTION {}").format(signature(schema, name, arguments)))


@contextmanager
def keeping_locaria_functions(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run migrations while Locaria's KEPT functions wait aside; then theirs replace what the
    migrations defined under the same names.  Call inside a transaction."""
    move_functions(conn, KEPT, CORE, KEPT_ASIDE)
    yield
    drop_functions(conn, KEPT, CORE)
    move_functions(conn, KEPT, KEPT_ASIDE, CORE)
    conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(KEPT_ASIDE)))


@contextmanager
def around_migrations(conn: psycopg.Connection[Any], pending: bool) -> Iterator[None]:
    """What `db migrate` does on a database taken over from Locaria."""
    state = adoption_state(conn) if pending else AdoptionState.NONE
    if state is AdoptionState.ROLLED_BACK:
        raise AdoptionError("this database was handed back to Locaria's batch system (`locaria rollback`): run "
                            "`locaria-batch locaria adopt` to take it over again, which migrates it")
    if state is AdoptionState.ADOPTED:
        with keeping_locaria_functions(conn):
            yield
    else:
        yield


# -- triggers on the files table -----------------------------------------------------------------
def file_triggers(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Name -> definition of every trigger on locaria_core.files, fully qualified."""
    previous = scalar(conn, "SELECT current_setting('search_path')")
    conn.execute("SELECT set_config('search_path', 'pg_catalog', true)")
    try:
        rows = conn.execute("SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                            "WHERE tgrelid = 'locaria_core.files'::regclass AND NOT tgisinternal ORDER BY tgname"
                            ).fetchall()
    finally:
        conn.execute("SELECT set_config('search_path', %s, true)", [previous])
    return {row["tgname"]: row["pg_get_triggerdef"] for row in rows} if rows and isinstance(rows[0], dict) else \
        {row[0]: row[1] for row in rows}


def drop_file_triggers(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Drop every trigger on the files table; their definitions."""
    saved = file_triggers(conn)
    for name in saved:
        conn.execute(sql.SQL("DROP TRIGGER {} ON locaria_core.files").format(sql.Identifier(name)))
    return saved


def create_triggers(conn: psycopg.Connection[Any], definitions: dict[str, str]) -> None:
    for definition in definitions.values():
        # pg_get_triggerdef's own text, kept in the adoption log
        conn.execute(sql.SQL(definition))
