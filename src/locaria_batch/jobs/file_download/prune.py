"""Housekeeping: delete the objects of old downloads and mark their rows.

A pruned row keeps its status (DOWNLOAD_COMPLETED, or DELETED), so Locaria's screens still
list it; its attributes gain expired=true and expired_at, its url becomes null, and its
log_messages gain an entry saying the file was deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from locaria_batch.storage import Storage, download_key

OLD_DOWNLOADS = """
SELECT id, attributes->>'fileName' AS file_name
  FROM locaria_core.files
 WHERE attributes @> '{"download": true}'
   AND status IN ('DOWNLOAD_COMPLETED', 'DELETED')
   AND NOT attributes @> '{"expired": true}'
   AND attributes ? 'fileName'
   AND COALESCE((attributes->>'completed_at')::timestamptz, last_update::timestamptz) < now() - %s::interval
 ORDER BY id
"""


@dataclass(frozen=True)
class Pruned:
    file_id: int
    key: str
    existed: bool  # False when the object was already gone from storage


def old_downloads(conn: psycopg.Connection[Any], older_than: timedelta) -> list[dict[str, Any]]:
    return conn.execute(OLD_DOWNLOADS, [older_than]).fetchall()


def prune_downloads(conn: psycopg.Connection[Any], storage: Storage, older_than: timedelta,
                    on_pruned: Callable[[Pruned], None] | None = None) -> list[Pruned]:
    """Delete each old download's object, then mark its row (one row at a time, so an
    interrupted prune leaves every row either untouched or fully pruned)."""
    pruned = []
    age = f"{older_than.days} day(s)" if older_than.days else f"{int(older_than.total_seconds())} second(s)"
    for row in old_downloads(conn, older_than):
        key = download_key(row["file_name"])
        existed = storage.exists(key)
        storage.delete(key)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        conn.execute("SELECT locaria_core.update_file(%s)", [Jsonb({
            "id": row["id"], "attributes": {"expired": True, "expired_at": now, "url": None},
            "message": f"Download expired: {key} deleted, older than {age}"})])
        if not conn.autocommit:
            conn.commit()
        item = Pruned(int(row["id"]), key, existed)
        pruned.append(item)
        if on_pruned is not None:
            on_pruned(item)
    return pruned
