"""Locaria's categories: list, add, remove, through the SQL functions of the same names."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from locaria_batch.db import scalar
from locaria_batch.errors import ApiError
from locaria_batch.files.api import Conn


def list_categories(conn: Conn) -> list[dict[str, Any]]:
    """Every category, with how many search items it holds."""
    return list(scalar(conn, "SELECT locaria_core.list_categories()"))


def add_category(conn: Conn, name: str, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"id", "category", "created"}: an existing category is kept as it is (created false)."""
    return _checked(scalar(conn, "SELECT locaria_core.add_category(%s, %s)", [name, Jsonb(attributes or {})]))


def remove_category(conn: Conn, name: str, with_items: bool = False) -> dict[str, Any]:
    """Remove a category; one holding items only with with_items (they are removed with it)."""
    return _checked(scalar(conn, "SELECT locaria_core.remove_category(%s, %s)", [name, with_items]))


def _checked(result: dict[str, Any]) -> dict[str, Any]:
    if "error" in result:
        raise ApiError(str(result["error"]))
    return dict(result)
