"""The heartbeat thread: proves the attempt alive and carries its progress and log entries to the
file row, on a connection of its own so a handler's long transaction never delays it."""

from __future__ import annotations

import sys
import threading
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from locaria_batch.db import connect
from locaria_batch.job.context import JobContext
from locaria_batch.settings import settings


class Heartbeat(threading.Thread):
    """Beats every few seconds on its own connection, carrying progress and log entries."""

    def __init__(self, ctx: JobContext, db_url: str | None) -> None:
        super().__init__(name="locaria-heartbeat", daemon=True)
        self.ctx = ctx
        self.db_url = db_url
        self.stopping = threading.Event()

    def stop(self) -> None:
        """Beat once more with what is pending, then end."""
        self.stopping.set()
        self.ctx.wake()

    def run(self) -> None:
        ctx = self.ctx
        try:
            conn = connect(self.db_url, autocommit=True, application_name=f"locaria-batch job {ctx.job_id} heartbeat")
        except psycopg.Error as exc:
            print(f"heartbeat: cannot connect: {exc}", file=sys.stderr)
            return
        heartbeat_seconds = settings().heartbeat_seconds
        with conn:
            while not self.stopping.is_set():
                self.beat(conn)
                ctx.wait_for_updates(heartbeat_seconds)
                # honour the once-a-second rule for progress bursts
                wait = ctx.progress_wait()
                if wait > 0 and not self.stopping.is_set():
                    self.stopping.wait(wait)
            self.beat(conn)

    def beat(self, conn: psycopg.Connection[Any]) -> None:
        ctx = self.ctx
        progress, logs = ctx.take_updates()
        try:
            alive = conn.execute(
                "SELECT locaria_core.job_heartbeat(%s, %s, %s) AS alive",
                [ctx.job_id, ctx.token, Jsonb(progress) if progress is not None else None],
            ).fetchone()
            if progress is not None:
                ctx.mark_progress_sent()
            if alive and alive["alive"]:
                for entry in logs:
                    conn.execute("SELECT locaria_core.job_log(%s, %s, %s)", [ctx.job_id, ctx.token, Jsonb(entry)])
            else:
                ctx.mark_cancelled()
        except psycopg.Error as exc:
            print(f"heartbeat failed (will retry): {exc}", file=sys.stderr)
