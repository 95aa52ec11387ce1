"""Python face of the SQL file API.  Each function is one call of the SQL function that owns
the logic (locaria_core.add_file, update_file, get_files, ...); nothing is re-implemented here."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from locaria_batch.db import scalar
from locaria_batch.errors import ApiError, NotFound
from locaria_batch.settings import settings
from locaria_batch.storage import Storage, incoming_key

Conn = psycopg.Connection[dict[str, Any]]  # connections from locaria_batch.db.connect (dict rows)


class FileNotFound(NotFound):
    """The file row named does not exist."""


def _call(conn: Conn, function: str, payload: dict[str, Any]) -> Any:
    query = sql.SQL("SELECT locaria_core.{}(%s) AS result").format(sql.Identifier(function))
    return scalar(conn, query, [Jsonb(payload)])


def add_file(conn: Conn, attributes: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"file_attributes": attributes}
    if status:
        payload["status"] = status
    return dict(_call(conn, "add_file", payload))


def update_file(conn: Conn, file_id: int, *, status: str | None = None, attributes: dict[str, Any] | None = None,
                **log_entry: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": file_id, **log_entry}
    if status:
        payload["status"] = status
    if attributes:
        payload["attributes"] = attributes
    result = _call(conn, "update_file", payload)
    if result is None:
        raise FileNotFound(f"file {file_id} does not exist")
    return dict(result)


def get_files(conn: Conn, *, file_id: int | None = None, status: str | None = None,
              filter: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    payload: dict[str, Any] = {}
    if file_id is not None:
        payload["id"] = file_id
    if status:
        payload["status"] = status
    if filter:
        payload["filter"] = filter
    return list(_call(conn, "get_files", payload)["files"])


def get_file(conn: Conn, file_id: int) -> dict[str, Any]:
    """One file row, DELETED ones included."""
    row = conn.execute(
        "SELECT id, status, attributes, created, last_update FROM locaria_core.files WHERE id = %s", [file_id]
    ).fetchone()
    if row is None:
        raise FileNotFound(f"file {file_id} does not exist")
    return dict(row)


def delete_file(conn: Conn, file_id: int) -> dict[str, Any]:
    return dict(_call(conn, "delete_file", {"id": file_id}))


def retry_file(conn: Conn, file_id: int) -> dict[str, Any]:
    result = scalar(conn, "SELECT locaria_core.retry_file(%s)", [file_id])
    if "error" in result:
        raise ApiError(result["error"])
    return dict(result)


def cancel_file(conn: Conn, file_id: int, reason: str = "cancelled by user") -> dict[str, Any]:
    get_file(conn, file_id)
    return dict(scalar(conn, "SELECT locaria_core.cancel_file_jobs(%s, %s)", [file_id, reason]))


def upload_attributes(name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    ext = Path(name).suffix.lower().lstrip(".")
    if name.lower().endswith(".gz") and "." in name[:-3]:
        ext = name.lower().rsplit(".", 2)[-2] + ".gz"
    return {
        "name": name,
        "ext": ext,
        "file_type": mimetypes.guess_type(name)[0] or "application/octet-stream",
        "upload": True,
        "path": "incoming/",
        "id_as_filename": True,
        **(extra or {}),
    }


def register_upload(conn: Conn, storage: Storage, source: Path, *, name: str | None = None,
                    attributes: dict[str, Any] | None = None) -> int:
    """Create the row as UPLOADING, store the object under incoming/{id}.{ext}, then REGISTER
    it: the loader is only queued once the object exists."""
    if not source.is_file():
        raise FileNotFoundError(f"{source} is not a file")
    attrs = upload_attributes(name or source.name, {"size_bytes": source.stat().st_size, **(attributes or {})})
    with conn.transaction():
        file_id = int(add_file(conn, attrs, status="UPLOADING")["id"])
    try:
        storage.put(incoming_key(file_id, attrs["ext"]), source, content_type=attrs["file_type"])
    except Exception as exc:
        with conn.transaction():
            update_file(conn, file_id, status="ERROR", message=f"Upload failed: {exc}")
        raise
    with conn.transaction():
        update_file(conn, file_id, status="REGISTERED", message="Upload complete")
    return file_id


def download_attributes(fmt: str, *, table: str | None = None, categories: list[str] | None = None,
                        name: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A download request's attributes: its format, its source (a table, or categories: none means
    every category with data) and the name users see."""
    attributes: dict[str, Any] = {"format": fmt, **(extra or {})}
    if table:
        attributes["table"] = table
    else:
        attributes["categories"] = list(categories or [])
    attributes["name"] = name or table or "-".join(categories or []) or "all-data"
    return attributes


def download_sources(conn: Conn, limit: int = 500) -> dict[str, list[str]]:
    """What a download can be asked of: the tables of the schemas downloads may read (the loaded
    ones, and LOCARIA_DOWNLOAD_SCHEMAS) and the categories of search data."""
    schemas = ["locaria_uploads", *settings().download_schemas]
    tables = conn.execute("SELECT format('%%I.%%I', schemaname, tablename) AS name FROM pg_tables "
                          "WHERE schemaname = ANY (%s) ORDER BY schemaname, tablename LIMIT %s",
                          [schemas, limit]).fetchall()
    categories = conn.execute("SELECT category FROM locaria_core.categories ORDER BY category LIMIT %s",
                              [limit]).fetchall()
    return {"tables": [row["name"] for row in tables], "categories": [row["category"] for row in categories]}


def request_download(conn: Conn, attributes: dict[str, Any]) -> int:
    """A download request: a row in DOWNLOAD_REQUESTED whose attributes name format, name and source."""
    attrs = {"download": True, "type": "all_data", **attributes}
    with conn.transaction():
        return int(add_file(conn, attrs, status="DOWNLOAD_REQUESTED")["id"])
