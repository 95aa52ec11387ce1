"""file_download: search data (by category) or a table out to a file under loaderDownloads/.

The rows never pass through Python one by one where it can be helped: the text formats are
built by PostgreSQL and streamed over COPY; the GDAL formats and GeoParquet read Arrow batches
decoded from binary COPY by ADBC's PostgreSQL driver; XLSX streams a server-side cursor into sheet XML.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import IsolationLevel

from locaria_batch.job import JobContext, JobError, JobResult
from locaria_batch.jobs.file_download.copyout import prepare_session
from locaria_batch.jobs.file_download.formats import FORMATS, Format, find_format
from locaria_batch.jobs.file_download.request import DownloadRequest, parse_request
from locaria_batch.jobs.file_download.selection import build_selection
from locaria_batch.settings import settings
from locaria_batch.storage import download_key


def allowed_schemas() -> tuple[str, ...]:
    """Schemas besides locaria_uploads whose tables may be downloaded (LOCARIA_DOWNLOAD_SCHEMAS)."""
    return settings().download_schemas


def max_rows() -> int:
    return settings().download_max_rows


@dataclass(frozen=True)
class Export:
    path: Path
    format: Format
    record_count: int
    notes: list[str]  # what the format made the export change (dimensions dropped, no spatial index)


def export(conn: psycopg.Connection[Any], request: DownloadRequest, folder: Path, stem: str,
           progress: Callable[[int, int], None]) -> Export:
    """Write the requested selection to folder/{stem}.{extension}: the job's work, minus storage."""
    fmt = find_format(request.format)
    if fmt is None:
        names = ", ".join(f.name for f in FORMATS)
        raise JobError(f"unknown download format {request.format or '(none)'!r}: choose one of {names}")
    # one snapshot for the counts and the rows, so the record count is the rows written
    conn.isolation_level = IsolationLevel.REPEATABLE_READ
    try:
        prepare_session(conn)
        selection = build_selection(conn, request, allowed_schemas(), max_rows())
        total = selection.total
        progress(0, total)
        path = folder / f"{stem}.{fmt.extension}"
        count = fmt.writer(conn, selection, request, path, lambda done: progress(min(done, total), total))
    finally:
        conn.rollback()
        conn.isolation_level = None
    return Export(path, fmt, count, selection.notes)


def run(ctx: JobContext) -> JobResult:
    request = parse_request(ctx.attributes, ctx.file_id)
    with tempfile.TemporaryDirectory(prefix="locaria-download-") as tmp:
        result = export(ctx.conn, request, Path(tmp), str(ctx.file_id), ctx.progress)
        ctx.check_cancelled()
        for note in result.notes:
            ctx.log(note)
        with result.path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        size = result.path.stat().st_size
        key = download_key(result.path.name)
        ctx.storage.put(key, result.path, content_type=result.format.content_type)
    expiry = settings().download_url_expiry
    now = datetime.now(UTC)
    attributes: dict[str, Any] = {
        "name": request.name, "fileName": result.path.name, "format": result.format.name, "size_bytes": size,
        "record_count": result.record_count, "sha256": digest, "url": ctx.storage.url(key, expiry),
        "completed_at": now.isoformat(timespec="seconds"),
        "expires_at": (now + timedelta(seconds=expiry)).isoformat(timespec="seconds"),
        # a retry of a pruned download makes it fresh again, and says only what this run changed
        "expired": False, "expired_at": None, "warnings": result.notes or None,
    }
    empty = "" if result.record_count else ": the selection matched no rows, the file is empty"
    return JobResult(attributes=attributes, log={"message": f"Download Completed{empty}"})
