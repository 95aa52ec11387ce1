"""Rows out of PostgreSQL over COPY, as the bytes PostgreSQL writes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql

Progress = Callable[[int], None]  # rows written so far
# One text column per row, passed through untouched: CSV with quote and delimiter that never occur
RAW_ROWS = sql.SQL("(FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')")


# Timestamps leave the database in UTC and ISO form, whatever the server's defaults
SESSION_SETTINGS = ("SET TIME ZONE 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET extra_float_digits = 1")


def prepare_session(conn: psycopg.Connection[Any]) -> None:
    for setting in SESSION_SETTINGS:
        conn.execute(setting)


def copy_out(conn: psycopg.Connection[Any], query: sql.Composable, params: dict[str, Any],
             options: sql.Composable) -> Iterator[memoryview]:
    """COPY (query) TO STDOUT: one message per row.  Values are bound client-side by psycopg,
    because COPY takes no server-side parameters."""
    statement = sql.SQL("COPY ({}) TO STDOUT {}").format(query, options)
    with conn.cursor() as cur, cur.copy(statement, params) as copy:
        for row in copy:
            yield memoryview(row)
