"""file_download: search data or a loaded table out to a file under loaderDownloads/.

First cut: GeoJSON (built by PostGIS, streamed out over COPY) and CSV (geometry as WKT).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from locaria_batch.config import settings
from locaria_batch.job import JobContext, JobError, JobResult
from locaria_batch.storage import download_key

FORMATS = {"geojson": "geojson", "json": "geojson", "csv": "csv"}
TABLE = re.compile(r"^(?:(locaria_uploads)\.)?([a-z_][a-z0-9_]{0,62})$")
# COPY's csv format with control characters as quote and delimiter passes JSON text through untouched
RAW_COPY = "(FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"


def selection(conn: psycopg.Connection[Any], attributes: dict[str, Any]) -> sql.Composable:
    """A SELECT of (properties jsonb, geom) rows for the requested source."""
    if attributes.get("table"):
        match = TABLE.match(str(attributes["table"]))
        if not match:
            raise JobError(f"table {attributes['table']!r} is not a loaded table name (e.g. upload_file_12)")
        table = match.group(2)
        found = conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = 'locaria_uploads' AND table_name = %s",
            [table],
        ).fetchone()
        if not found:
            raise JobError(f"table locaria_uploads.{table} does not exist")
        ident = sql.SQL("locaria_uploads.{}").format(sql.Identifier(table))
        return sql.SQL("SELECT to_jsonb(t) - 'wkb_geometry' AS properties, t.wkb_geometry AS geom "
                       "FROM {} t ORDER BY t.ogc_fid").format(ident)
    categories = attributes.get("categories") or []
    if categories:
        known = {r["category"] for r in conn.execute(
            "SELECT category FROM locaria_core.categories WHERE category = ANY (%s)", [categories]).fetchall()}
        missing = [c for c in categories if c not in known]
        if missing:
            raise JobError(f"unknown categor{'y' if len(missing) == 1 else 'ies'}: {', '.join(map(repr, missing))}")
    return sql.SQL(
        "SELECT i.attributes || jsonb_build_object('id', i.id, 'title', i.title, 'category', c.category) AS properties,"
        " i.wkb_geometry AS geom FROM locaria_data.items i JOIN locaria_core.categories c ON c.id = i.category_id"
        " WHERE (cardinality({cats}::text[]) = 0 OR c.category = ANY ({cats}::text[])) ORDER BY i.id"
    ).format(cats=sql.Literal(list(categories)))


def write_geojson(conn: psycopg.Connection[Any], query: sql.Composable, out: Any) -> int:
    feature = sql.SQL(
        "SELECT json_build_object('type', 'Feature', 'properties', s.properties, "
        "'geometry', ST_AsGeoJSON(s.geom)::json)::text FROM ({}) s"
    ).format(query)
    count = 0
    out.write(b'{"type": "FeatureCollection", "features": [\n')
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY ({}) TO STDOUT " + RAW_COPY).format(feature)) as copy:
        for line in _lines(copy):
            if count:
                out.write(b",\n")
            out.write(line)
            count += 1
    out.write(b"\n]}\n")
    return count


def _lines(copy: Any) -> Any:
    pending = b""
    for chunk in copy:
        pending += bytes(chunk)
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def write_csv(conn: psycopg.Connection[Any], query: sql.Composable, out: Any) -> int:
    columns = conn.execute(sql.SQL("SELECT properties FROM ({}) s LIMIT 1").format(query)).fetchone()
    keys = sorted(columns["properties"]) if columns else []
    fields = [sql.SQL("s.properties ->> {} AS {}").format(sql.Literal(k), sql.Identifier(k)) for k in keys]
    fields.append(sql.SQL("ST_AsText(s.geom) AS wkt"))
    statement = sql.SQL("COPY (SELECT {} FROM ({}) s) TO STDOUT (FORMAT csv, HEADER true)").format(
        sql.SQL(", ").join(fields), query)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for chunk in copy:
            out.write(chunk)
    return int(conn.execute(sql.SQL("SELECT count(*) AS n FROM ({}) s").format(query)).fetchone()["n"])


def run(ctx: JobContext) -> JobResult:
    attributes = ctx.attributes
    requested = str(attributes.get("format") or "").lower()
    if requested not in FORMATS:
        raise JobError(f"unknown download format {requested or '(none)'!r}: choose one of {', '.join(sorted(FORMATS))}")
    ext = FORMATS[requested]
    query = selection(ctx.conn, attributes)
    file_name = f"{ctx.file_id}.{ext}"
    with tempfile.TemporaryDirectory(prefix="locaria-download-") as tmp:
        path = Path(tmp) / file_name
        with path.open("wb") as out:
            count = (write_geojson if ext == "geojson" else write_csv)(ctx.conn, query, out)
        ctx.progress(count, count)
        with path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        size = path.stat().st_size
        key = download_key(file_name)
        ctx.storage.put(key, path, content_type="application/geo+json" if ext == "geojson" else "text/csv")
    expiry = settings().download_url_expiry
    return JobResult(
        attributes={
            "name": attributes.get("name") or file_name, "fileName": file_name, "format": ext,
            "size_bytes": size, "record_count": count, "sha256": digest,
            "url": ctx.storage.url(key, expiry),
            "expires_at": (datetime.now(UTC) + timedelta(seconds=expiry)).isoformat(timespec="seconds"),
        },
        log={"message": "Download Completed"},
    )
