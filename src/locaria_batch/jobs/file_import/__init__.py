"""file_import: the rows of a loaded file into the search data, locaria_data.items.

Triggered by IMPORT_REQUESTED on a file the loader has loaded.  The file's attributes name a
`category` and which columns give each item its title, text, url and tags (`title_field`,
`text_field`, `url_field`, `tag_field`; a column's original name or its loaded name).  Rows are
copied in batches keyed by the table's ogc_fid; each item remembers its source file, table and
row, so importing again updates the same items (and drops items whose rows have gone) instead of
duplicating them.  The whole import is one transaction: readers see the old items or the new.
Items are written through locaria_core.job_import_items / job_import_prune, fenced by the attempt and
limited to tables the file itself loaded.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from locaria_batch.db import one, scalar
from locaria_batch.job import JobCancelled, JobContext, JobError, JobResult

SCHEMA = "locaria_uploads"
BATCH_ROWS = 5000
MAPPINGS = {"title": "title_field", "text": "text_field", "url": "url_field", "tags": "tag_field"}
DEFAULT_COLUMNS = {"title": ("title", "name", "description"), "text": ("text", "description"),
                   "url": ("url", "website", "link"), "tags": ("tags",)}  # the original's fallbacks

def category_id(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT id FROM locaria_core.categories WHERE category = %s", [name]).fetchone()
    if row is None:
        known = [r["category"] for r in conn.execute(
            "SELECT category FROM locaria_core.categories ORDER BY category LIMIT 20").fetchall()]
        raise JobError(f"category {name!r} does not exist; create it first or use one of: "
                       f"{', '.join(known) or '(none yet)'}")
    return int(row["id"])


def table_columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                        "AND table_name = %s ORDER BY ordinal_position", [SCHEMA, table]).fetchall()
    return [r["column_name"] for r in rows]


def resolve_mappings(attributes: dict[str, Any], columns: list[str], described: list[dict[str, Any]],
                     table: str) -> dict[str, str | None]:
    """Which column feeds title, text, url and tags; a user may name a column as it was in the file."""
    loaded_name = {str(c.get("source")): str(c.get("column")) for c in described}
    chosen: dict[str, str | None] = {}
    for role, key in MAPPINGS.items():
        wanted = attributes.get(key) or attributes.get(f"{role}_field") or attributes.get(f"{role}s_field")
        if wanted:
            column = str(wanted) if str(wanted) in columns else loaded_name.get(str(wanted))
            if column is None or column not in columns:
                raise JobError(f"{key} {str(wanted)[:60]!r} is not a column of {SCHEMA}.{table}; its columns are "
                               f"{', '.join(c for c in columns if c != 'wkb_geometry')}")
            chosen[role] = column
        else:
            chosen[role] = next((c for c in DEFAULT_COLUMNS[role] if c in columns), None)
    return chosen


def fenced(conn: psycopg.Connection[Any], statement: str, params: list[Any]) -> int:
    """A fenced import function's result; its refusals become the user's sentence."""
    try:
        return int(scalar(conn, statement, params))
    except psycopg.Error as exc:
        if exc.sqlstate == "LB001":
            raise JobCancelled(str(exc.diag.message_primary)) from exc
        if exc.sqlstate == "LB002":
            raise JobError(str(exc.diag.message_primary)) from exc
        raise


def run(ctx: JobContext) -> JobResult:
    attributes = ctx.attributes
    conn = ctx.conn
    name = str(attributes.get("name") or f"file {ctx.file_id}")
    if not attributes.get("category"):
        raise JobError(f"{name}: name the category to import into in the category attribute, then request the "
                       "import again")
    tables = attributes.get("tables")
    if attributes.get("table"):
        tables = [str(attributes["table"])]
    if not isinstance(tables, list) or not tables:
        raise JobError(f"{name} has no loaded table to import; load the file first (status REGISTERED)")
    bare = [str(t).removeprefix(f"{SCHEMA}.") for t in tables]
    category = category_id(conn, str(attributes["category"]))
    details = {d.get("table"): d.get("columns", []) for d in attributes.get("layer_details", [])
               if isinstance(d, dict)}
    plans = []
    total = 0
    for table in bare:
        columns = table_columns(conn, table)
        if not columns or "ogc_fid" not in columns:
            raise JobError(f"{name}: the table {SCHEMA}.{table} is missing or was not made by the loader; "
                           "load the file again, then import")
        mapping = resolve_mappings(attributes, columns, details.get(f"{SCHEMA}.{table}", attributes.get(
            "columns", []) if len(bare) == 1 else []), table)
        source = sql.Identifier(SCHEMA, table)
        bounds = one(conn, sql.SQL("SELECT count(*) AS n, coalesce(max(ogc_fid), 0) AS high FROM {}").format(source))
        total += int(bounds["n"])
        plans.append((table, columns, mapping, source, int(bounds["high"])))
    done = 0
    ctx.progress(0, total)
    for table, _columns, mapping, _source, high in plans:
        for low in range(0, high, BATCH_ROWS):
            done += fenced(conn, "SELECT locaria_core.job_import_items(%s, %s, %s, %s, %s, %s, %s)",
                           [ctx.job_id, ctx.token, table, category, Jsonb(mapping), low, low + BATCH_ROWS])
            ctx.progress(min(done, total), total)
        fenced(conn, "SELECT locaria_core.job_import_prune(%s, %s, %s, %s)", [ctx.job_id, ctx.token, bare, table])
    conn.commit()
    return JobResult(
        attributes={"processed": done, "imported_count": done, "category": attributes["category"],
                    "category_id": category, "import_tables": [f"{SCHEMA}.{t}" for t in bare],
                    "import_mappings": {t: m for t, _c, m, _s, _h in plans}},
        log={"message": f"Imported {done:,} rows into category {attributes['category']}"},
    )
