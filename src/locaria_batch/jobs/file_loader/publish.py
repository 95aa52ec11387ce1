"""Publishing staging tables under their final names, through the one fenced function that may
(locaria_core.job_publish_tables): it checks the attempt is live, that each target is the file's own
or allowed by the mode, then swaps or appends, records the owner and hands the table over.  The job
itself only ever creates and fills its own staging tables."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from locaria_batch.job import JobCancelled, JobError

STALE_ATTEMPT = "LB001"  # SQLSTATEs job_publish_tables raises
REFUSED = "LB002"


class LoadMode(StrEnum):
    """What to do when a target table exists (the default: replace the file's own, refuse others')."""

    fail = "fail"
    overwrite = "overwrite"
    append = "append"


@dataclass(frozen=True)
class Fence:
    """The attempt a load belongs to: every staging table is named after it, and publishing is
    refused once it is no longer the job's live attempt."""

    job_id: int
    attempt: int
    token: str

    def staging_name(self, index: int) -> str:
        return f"_lb_{self.job_id}_{self.attempt}_{index}"


@dataclass(frozen=True)
class Target:
    table: str  # in locaria_uploads
    label: str  # the user's file and layer, for messages
    staging: str | None = None


def check_targets(conn: psycopg.Connection[Any], fence: Fence, targets: list[Target], mode: LoadMode | None) -> None:
    """Refuse before loading anything what publishing would refuse afterwards."""
    _call(conn, fence, targets, mode, check_only=True)


def publish(conn: psycopg.Connection[Any], fence: Fence, targets: list[Target],
            mode: LoadMode | None) -> dict[str, Any]:
    """Swap or append every staging table into its target, in the caller's transaction."""
    return _call(conn, fence, targets, mode, check_only=False)


def _call(conn: psycopg.Connection[Any], fence: Fence, targets: list[Target], mode: LoadMode | None,
          check_only: bool) -> dict[str, Any]:
    tables = [{"target": t.table, "label": t.label, **({"staging": t.staging} if t.staging else {})} for t in targets]
    try:
        with conn.transaction():
            row = conn.execute("SELECT locaria_core.job_publish_tables(%s, %s, %s, %s, %s) AS result",
                               [fence.job_id, fence.token, Jsonb(tables), mode.value if mode else None,
                                check_only]).fetchone()
    except psycopg.Error as exc:
        if exc.sqlstate == STALE_ATTEMPT:
            raise JobCancelled(str(exc.diag.message_primary)) from exc
        if exc.sqlstate == REFUSED:
            raise JobError(str(exc.diag.message_primary)) from exc
        raise
    assert row is not None
    result = row["result"] if isinstance(row, dict) else row[0]
    return dict(result)
