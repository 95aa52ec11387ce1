"""The heartbeat thread: proves the attempt alive and carries its progress and log entries to the
file row, on a connection of its own so a handler's long transaction never delays it.

The connection opens only when there is something to write: the first beat is due a heartbeat
interval after the job started (job_start counts as one), so a short job never opens it.  A
connection that drops is opened again at the next beat, after a backoff with jitter; what the
failed beat carried waits for the next one.
"""

from __future__ import annotations

import _thread
import sys
import threading
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from locaria_batch.db import connect
from locaria_batch.db.retry import Backoff
from locaria_batch.job.context import JobContext
from locaria_batch.settings import settings


class Heartbeat:
    """Beats every few seconds on its own connection, carrying progress and log entries.

    A bare thread (`_thread`): `threading.Thread.start` waits until the new thread has run, which
    on a busy machine delays a job's start by as much as a scheduler slice or several."""

    def __init__(self, ctx: JobContext, db_url: str | None) -> None:
        self.ctx = ctx
        self.db_url = db_url
        self.stopping = threading.Event()
        self.done = threading.Event()
        self.conn: psycopg.Connection[Any] | None = None
        self.backoff = Backoff(first=0.2, cap=settings().heartbeat_seconds)

    def start(self) -> None:
        _thread.start_new_thread(self._run, ())

    def stop(self) -> None:
        """Beat once more if anything is pending, then end."""
        self.stopping.set()
        self.ctx.wake()

    def join(self, timeout: float | None = None) -> None:
        self.done.wait(timeout)

    def _run(self) -> None:
        try:
            self.run()
        finally:
            self.done.set()

    def run(self) -> None:
        ctx = self.ctx
        interval = settings().heartbeat_seconds
        wait = interval
        try:
            while not self.stopping.is_set():
                ctx.wait_for_updates(wait)
                if self.stopping.is_set():
                    break
                wait = interval if self.beat() else min(interval, self.backoff.next_delay())
                # honour the once-a-second rule for progress bursts
                pause = ctx.progress_wait()
                if pause > 0 and not self.stopping.is_set():
                    self.stopping.wait(pause)
            if ctx.has_updates():
                self.beat()
        finally:
            if self.conn is not None:
                self.conn.close()

    def beat(self) -> bool:
        """One heartbeat with what is pending; False when the database could not be reached."""
        ctx = self.ctx
        updates = ctx.take_updates()
        progress, logs = updates
        try:
            if self.conn is None or self.conn.closed:
                self.conn = connect(self.db_url, autocommit=True,
                                    application_name=f"locaria-batch job {ctx.job_id} heartbeat")
            conn = self.conn
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
            ctx.restore_updates(updates)
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            if self.backoff.tries == 0:
                print(f"heartbeat failed, retrying with backoff: {exc}", file=sys.stderr, flush=True)
            return False
        if self.backoff.tries:
            print("heartbeat: the database answers again", file=sys.stderr, flush=True)
            self.backoff.reset()
        return True
