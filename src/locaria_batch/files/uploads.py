"""Uploads through a presigned PUT, without the original's race: the row is UPLOADING while the
client sends the object and becomes REGISTERED (queueing the loader) only once the object exists.
The SQL functions request_upload / complete_upload own the row; this module owns the storage side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from locaria_batch.db import scalar
from locaria_batch.errors import ApiError
from locaria_batch.files.api import Conn, get_file, upload_attributes
from locaria_batch.storage import ObjectNotFound, Storage, incoming_key


class UploadNotReady(ApiError):
    """complete_upload was asked for before the object reached storage."""


@dataclass(frozen=True)
class UploadTicket:
    file_id: int
    key: str
    url: str  # presigned PUT
    expires_in: int | None


def request_upload(conn: Conn, storage: Storage, name: str, *, attributes: dict[str, Any] | None = None,
                   expires_in: int | None = None) -> UploadTicket:
    """Create the row as UPLOADING and return where to PUT the data."""
    presign = getattr(storage, "upload_url", None)
    if presign is None:
        raise ApiError("upload URLs need S3 storage: set LOCARIA_STORAGE=s3://bucket/prefix, "
                         "or upload a local file with `locaria-batch files add PATH`")
    attrs = upload_attributes(name, attributes)
    if not attrs["ext"]:
        raise ApiError(f"{name!r} has no extension: name the file as it is, e.g. parks.geojson or roads.csv")
    with conn.transaction():
        result = scalar(conn, "SELECT locaria_core.request_upload(%s)", [Jsonb({"file_attributes": attrs})])
    if "error" in result:
        raise ApiError(result["error"])
    file_id = int(result["id"])
    key = incoming_key(file_id, attrs["ext"])
    return UploadTicket(file_id, key, presign(key, expires_in), expires_in)


def complete_upload(conn: Conn, storage: Storage, file_id: int) -> dict[str, Any]:
    """REGISTER an UPLOADING file once its object is in storage.  Returns the row with
    `completed` true, or false when the file was not waiting (completed already, say)."""
    row = get_file(conn, file_id)
    if row["status"] != "UPLOADING":
        return {"id": file_id, "status": row["status"], "completed": False}
    key = incoming_key(file_id, str((row["attributes"] or {}).get("ext") or ""))
    try:
        size = storage.size(key)
    except ObjectNotFound as exc:
        raise UploadNotReady(f"file {file_id} has no object at {key} yet: PUT the data to its upload URL, "
                             f"then complete it again") from exc
    with conn.transaction():
        result = scalar(conn, "SELECT locaria_core.complete_upload(%s, %s)", [file_id, Jsonb({"size_bytes": size})])
    if "error" in result:
        raise ApiError(result["error"])
    return dict(result)


STALE_UPLOAD_SECONDS = 60  # the uploading client completes at once; a minute later it is not coming back
ABANDONED_UPLOAD_HOURS = 24  # older UPLOADING rows are uploads never sent: not looked at again


def complete_stale_uploads(conn: Conn, storage: Storage, limit: int = 100) -> list[int]:
    """REGISTER the UPLOADING files whose object reached storage while the completion was lost (the
    uploading client or its database connection died in between, a storage event went astray).
    Returns the ids completed; files whose object is not there are left as they are."""
    rows = conn.execute(
        "SELECT id FROM locaria_core.files WHERE status = 'UPLOADING' "
        "AND last_update < now() - make_interval(secs => %s) AND last_update > now() - make_interval(hours => %s) "
        "ORDER BY last_update DESC LIMIT %s", [STALE_UPLOAD_SECONDS, ABANDONED_UPLOAD_HOURS, limit]).fetchall()
    completed = []
    for row in rows:
        file_id = int(row["id"] if isinstance(row, dict) else row[0])
        try:
            if complete_upload(conn, storage, file_id)["completed"]:
                completed.append(file_id)
        except UploadNotReady:
            continue
    return completed
