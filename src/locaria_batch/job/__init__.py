"""The SDK a job uses inside its process or container.

    python -m locaria_batch.job <docker>

reads LOCARIA_JOB_ID and LOCARIA_JOB_TOKEN, claims the attempt (a stale or cancelled one exits
without touching anything), sets the file's running status, runs the docker's handler with a
JobContext while a thread heartbeats, then finishes the job and writes the file's final status
and result attributes in one transaction.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from locaria_batch.db import connect
from locaria_batch.storage import Storage, open_storage

PROGRESS_MIN_INTERVAL = 1.0  # progress reaches the row at most once a second


class JobError(Exception):
    """A failure the user can act on; its message goes to the file row as is."""


class RetryableJobError(JobError):
    """A failure worth another attempt (a network hiccup); retried with backoff."""


class JobCancelled(BaseException):
    """Raised inside the handler once the attempt is cancelled or superseded."""


class Terminated(BaseException):
    """SIGTERM: the dispatcher is stopping this attempt (cancel, timeout)."""


@dataclass
class JobResult:
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str | None = None  # overrides the docker's success status (e.g. IMPORTED)
    log: dict[str, Any] = field(default_factory=dict)  # the log_messages entry


@dataclass
class JobContext:
    job_id: int
    attempt: int
    token: str
    docker: dict[str, Any]
    file: dict[str, Any]
    storage: Storage
    conn: psycopg.Connection[dict[str, Any]]  # for the handler's own data work
    _progress: dict[str, Any] | None = None
    _progress_sent_at: float = 0.0
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending_logs: list[dict[str, Any]] = field(default_factory=list)
    _wake: threading.Event = field(default_factory=threading.Event)  # the heartbeat thread does the writes

    @property
    def file_id(self) -> int:
        return int(self.file["id"])

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self.file.get("attributes") or {})

    def check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise JobCancelled("the job was cancelled")

    def progress(self, done: int, total: int | None = None, **extra: Any) -> None:
        """Record progress; it reaches the file row within a second (never more often)."""
        self.check_cancelled()
        value = {"done": done, "total": total, **extra}
        with self._lock:
            self._progress = value
        if time.monotonic() - self._progress_sent_at >= PROGRESS_MIN_INTERVAL:
            self._flush_progress_soon()

    def log(self, message: str | dict[str, Any]) -> None:
        """Append an entry to the file's log_messages (and to this job's own log)."""
        print(f"[job {self.job_id}] {message}", flush=True)
        with self._lock:
            self._pending_logs.append({"message": message})
        self._flush_progress_soon()

    def _flush_progress_soon(self) -> None:
        self._wake.set()

    def _take_updates(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        with self._lock:
            progress, self._progress = self._progress, None
            logs, self._pending_logs = self._pending_logs, []
        return progress, logs


def _resolve(reference: str) -> Any:
    module, _, name = reference.partition(":")
    try:
        return getattr(importlib.import_module(module), name or "run")
    except (ImportError, AttributeError) as exc:
        raise JobError(f"handler {reference!r} cannot be loaded: {exc}") from exc


class _Heartbeat(threading.Thread):
    """Beats every few seconds on its own connection, carrying progress and log entries."""

    def __init__(self, ctx: JobContext, db_url: str | None) -> None:
        super().__init__(name="locaria-heartbeat", daemon=True)
        self.ctx = ctx
        self.db_url = db_url
        self.stopping = threading.Event()

    def run(self) -> None:
        ctx = self.ctx
        try:
            conn = connect(self.db_url, autocommit=True, application_name=f"locaria-batch job {ctx.job_id} heartbeat")
        except psycopg.Error as exc:
            print(f"heartbeat: cannot connect: {exc}", file=sys.stderr)
            return
        heartbeat_seconds = float(os.environ.get("LOCARIA_HEARTBEAT_SECONDS", "5"))
        with conn:
            while not self.stopping.is_set():
                self.beat(conn)
                ctx._wake.wait(heartbeat_seconds)
                ctx._wake.clear()
                # honour the once-a-second rule for progress bursts
                wait = PROGRESS_MIN_INTERVAL - (time.monotonic() - ctx._progress_sent_at)
                if wait > 0 and not self.stopping.is_set():
                    self.stopping.wait(wait)
            self.beat(conn)

    def beat(self, conn: psycopg.Connection[Any]) -> None:
        ctx = self.ctx
        progress, logs = ctx._take_updates()
        try:
            alive = conn.execute(
                "SELECT locaria_core.job_heartbeat(%s, %s, %s) AS alive",
                [ctx.job_id, ctx.token, Jsonb(progress) if progress is not None else None],
            ).fetchone()
            if progress is not None:
                ctx._progress_sent_at = time.monotonic()
            if alive and alive["alive"]:
                for entry in logs:
                    conn.execute("SELECT locaria_core.update_file(%s)", [Jsonb({"id": ctx.file_id, **entry})])
            else:
                ctx._cancelled.set()
        except psycopg.Error as exc:
            print(f"heartbeat failed (will retry): {exc}", file=sys.stderr)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def user_message(exc: BaseException, docker: str) -> str:
    if isinstance(exc, JobError):
        return str(exc)
    return f"{docker} failed unexpectedly: {type(exc).__name__}: {exc}. The job's log has the details."


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    docker_name = args[0] if args else os.environ.get("LOCARIA_DOCKER", "")
    try:
        job_id = int(os.environ["LOCARIA_JOB_ID"])
        token = os.environ["LOCARIA_JOB_TOKEN"]
    except (KeyError, ValueError):
        print("locaria_batch.job runs a job started by a dispatcher: LOCARIA_JOB_ID and LOCARIA_JOB_TOKEN "
              "must be set (use `locaria-batch worker` to run jobs).", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    db_url = os.environ.get("LOCARIA_DB_URL")
    conn = connect(db_url, application_name=f"locaria-batch job {job_id}")
    claim = conn.execute("SELECT locaria_core.job_start(%s, %s) AS claim", [job_id, token]).fetchone()
    conn.commit()
    if not claim or claim["claim"] is None:
        print(f"job {job_id}: this attempt is stale, cancelled or its file is gone; nothing to do", flush=True)
        return 0
    job, docker, file_row = claim["claim"]["job"], claim["claim"]["docker"], claim["claim"]["file"]
    if docker_name and docker_name != docker["name"]:
        print(f"warning: started as {docker_name!r} but job {job_id} belongs to {docker['name']!r}", file=sys.stderr)
    print(f"job {job_id}: {docker['name']} attempt {job['attempt']} for file {file_row['id']}", flush=True)
    ctx = JobContext(job_id=job_id, attempt=job["attempt"], token=token, docker=docker, file=file_row,
                     storage=open_storage(), conn=conn)
    heartbeat = _Heartbeat(ctx, db_url)
    heartbeat.start()
    outcome: dict[str, Any]
    try:
        handler = _resolve(docker["handler"]) if docker.get("handler") else None
        if handler is None:
            raise JobError(f"docker {docker['name']!r} declares no handler")
        result = handler(ctx)
        if not isinstance(result, JobResult):
            result = JobResult(attributes=dict(result or {}))
        outcome = {"state": "succeeded", "status": result.status, "attributes": result.attributes,
                   "log": result.log or {"message": f"{docker['name']} completed"}}
    except Terminated:
        print(f"job {job_id}: terminated by the dispatcher", flush=True)
        return 143
    except JobCancelled:
        print(f"job {job_id}: cancelled; stopping without writing a result", flush=True)
        return 0
    except RetryableJobError as exc:
        outcome = {"state": "retry", "error": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        message = user_message(exc, docker["name"])
        outcome = {"state": "failed", "error": message, "log": {"message": message},
                   "attributes": {"error": message}}
    finally:
        heartbeat.stopping.set()
        ctx._wake.set()
        heartbeat.join(timeout=10)
    if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    accepted = conn.execute("SELECT locaria_core.job_finish(%s, %s, %s) AS ok",
                            [job_id, token, Jsonb(outcome)]).fetchone()
    conn.commit()
    conn.close()
    if not accepted or not accepted["ok"]:
        print(f"job {job_id}: attempt superseded before it finished; result discarded", flush=True)
        return 0
    print(f"job {job_id}: {outcome['state']}: {json.dumps(outcome.get('log', {}), default=str)[:500]}", flush=True)
    return 0
