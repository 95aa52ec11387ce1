"""A Locaria database taken over in place (`locaria-batch locaria adopt`), and given back.

Locaria's schema and ours share `locaria_core`.  Of the functions both define, ours take over the
file API and its trigger (TAKEN_OVER): Locaria's versions wait in the schema `locaria_original`
while the database is adopted, and ours in `locaria_batch_parked` while it is rolled back, so
either side comes back exactly as it was (moved, never re-created from text).  Every other function
Locaria had (its gateway, parameters API, log, search, ...) stays Locaria's, untouched: around every
migration of an adopted database, and the grants that follow it, they wait aside, and where a
migration defined the same function (a database of ours needs a gateway too) Locaria's replaces it
when they come back.

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
KEPT_ASIDE = "locaria_original_kept"  # Locaria's other functions, only while migrations run
TAKEN_OVER = ("add_file", "update_file", "get_files", "delete_file", "file_cron", "files_trigger",
              "aws_lambda_interface")
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
Function = tuple[str, str]  # name, identity arguments


def functions(conn: psycopg.Connection[Any], schema: str, names: tuple[str, ...] | None = None) -> list[Function]:
    """(name, identity arguments) of every function in SCHEMA (of these names only, if given)."""
    rows = conn.execute(
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.prokind IN ('f', 'p') "
        "AND (%s::text[] IS NULL OR p.proname = ANY(%s)) ORDER BY 1, 2",
        [schema, list(names) if names else None, list(names) if names else None]).fetchall()
    return [(row["proname"], row["pg_get_function_identity_arguments"]) if isinstance(row, dict) else
            (row[0], row[1]) for row in rows]


def by_types(conn: psycopg.Connection[Any], schema: str) -> dict[tuple[str, str], str]:
    """(name, argument types) -> identity arguments (with names) of the functions in SCHEMA: two
    functions clash when their names and argument types match, whatever their arguments are called."""
    rows = conn.execute(
        "SELECT p.proname, oidvectortypes(p.proargtypes), pg_get_function_identity_arguments(p.oid) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.prokind IN ('f', 'p')",
        [schema]).fetchall()
    values = [tuple(row.values()) if isinstance(row, dict) else tuple(row) for row in rows]
    return {(str(name), str(types)): str(arguments) for name, types, arguments in values}


def signature(schema: str, name: str, arguments: str) -> sql.Composed:
    # the argument list comes from the catalog (pg_get_function_identity_arguments), never from a user
    return sql.SQL("{}.{}({})").format(sql.Identifier(schema), sql.Identifier(name), sql.SQL(arguments))


def move(conn: psycopg.Connection[Any], chosen: list[Function], source: str, target: str) -> list[Function]:
    """Move these functions, where SOURCE has them, to TARGET (same OIDs: what refers to them follows)."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(target)))
    present = set(functions(conn, source))
    moved = [function for function in chosen if function in present]
    for name, arguments in moved:
        conn.execute(sql.SQL("ALTER ROUTINE {} SET SCHEMA {}").format(
            signature(source, name, arguments), sql.Identifier(target)))
    return moved


def move_functions(conn: psycopg.Connection[Any], names: tuple[str, ...], source: str, target: str) -> list[str]:
    """Move every function of these names from SOURCE to TARGET."""
    return [f"{name}({arguments})" for name, arguments in move(conn, functions(conn, source, names), source, target)]


@contextmanager
def keeping_locaria_functions(conn: psycopg.Connection[Any], theirs: list[Function]) -> Iterator[None]:
    """Run migrations and grants while Locaria's own functions wait aside; when they come back,
    theirs replace any function the migrations defined with the same signature.  Call inside a
    transaction."""
    aside = move(conn, theirs, CORE, KEPT_ASIDE)
    yield
    ours = by_types(conn, CORE)
    for name, types in by_types(conn, KEPT_ASIDE):
        if (name, types) in ours:  # the same function as far as PostgreSQL is concerned
            conn.execute(sql.SQL("DROP ROUTINE {}").format(signature(CORE, name, ours[(name, types)])))
    move(conn, aside, KEPT_ASIDE, CORE)
    conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(KEPT_ASIDE)))


def locaria_functions(conn: psycopg.Connection[Any]) -> list[Function]:
    """Locaria's own functions in locaria_core, as recorded when the database was first adopted."""
    recorded = last_entry(conn, "adopt")["detail"].get("locaria_functions") or []
    return [(str(name), str(arguments)) for name, arguments in recorded]


@contextmanager
def around_migrations(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """What `db migrate` does on a database taken over from Locaria."""
    state = adoption_state(conn)
    if state is AdoptionState.ROLLED_BACK:
        raise AdoptionError("this database was handed back to Locaria's batch system (`locaria rollback`): run "
                            "`locaria-batch locaria adopt` to take it over again, which migrates it")
    if state is AdoptionState.ADOPTED:
        with keeping_locaria_functions(conn, locaria_functions(conn)):
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
