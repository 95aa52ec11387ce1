"""One attempt from start to finish: claim it, run the docker's handler while the heartbeat beats,
then finish the job and write the file's final status and result attributes in one transaction.

On the happy path a job makes two statements (job_start, job_finish) on one connection, which the
handler's own work shares; under the local runner that connection is lent by the process that keeps
it open between attempts (see dispatch/forkserver.py), so that a job pays for neither a connection
nor a fresh server process.  A database that goes away is waited for, with backoff, for as long as
the attempt's lease would last: claiming and finishing are retried; a handler that lost its
connection is retried as a new attempt.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from types import FrameType
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from locaria_batch.db import connect
from locaria_batch.db.connect import ensure_iso_dates
from locaria_batch.db.retry import Backoff, connection_lost
from locaria_batch.job.context import JobCancelled, JobContext, JobError, JobResult, RetryableJobError, Terminated
from locaria_batch.job.heartbeat import Heartbeat
from locaria_batch.settings import settings
from locaria_batch.storage import open_storage

Conn = psycopg.Connection[dict[str, Any]]
UNREACHABLE_EXIT = 75  # EX_TEMPFAIL: the database stayed away longer than the lease; the attempt is retried
CLIENT_CHECK_SECONDS = 2  # how soon the server notices a killed job and stops its statement


class DatabaseAway(Exception):
    """The database could not be reached before the attempt's lease would have ended."""


def _resolve(reference: str) -> Any:
    module, _, name = reference.partition(":")
    try:
        return getattr(importlib.import_module(module), name or "run")
    except (ImportError, AttributeError) as exc:
        raise JobError(f"handler {reference!r} cannot be loaded: {exc}") from exc


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def user_message(exc: BaseException, docker: str) -> str:
    if isinstance(exc, JobError):
        return str(exc)
    return f"{docker} failed unexpectedly: {type(exc).__name__}: {exc}. The job's log has the details."


# set with the claim: the server checks every few seconds that the job is still there, so that the
# statement of a job that was killed (an index build can run for minutes) stops with it instead of
# running on, holding a CPU and its locks; its TCP keepalives find a job whose host or network went
# away within a minute or so
SESSION_SETTINGS = (f"set_config('client_connection_check_interval', '{CLIENT_CHECK_SECONDS}s', false), "
                    "set_config('tcp_keepalives_idle', '30', false), set_config('tcp_keepalives_interval', '10', "
                    "false), set_config('tcp_keepalives_count', '3', false)")


def connect_job(db_url: str | None) -> Conn:
    return connect(db_url, application_name="locaria-batch job")


def open_ahead(db_url: str | None) -> Conn:
    """A connection opened before its job is known, in autocommit, its server process's caches loaded
    by a call that changes nothing (about 10 ms that no job then waits for)."""
    conn = connect(db_url, application_name="locaria-batch job", autocommit=True, connect_timeout=10)
    conn.execute("SELECT locaria_core.job_start(NULL, NULL)", prepare=False)
    return conn


def ready_for_next(conn: Conn) -> bool:
    """After an attempt that ended cleanly on a lent connection: reset its session as a pooler does
    (settings, prepared statements, temporary tables, locks, listeners: DISCARD ALL) so that the next
    attempt finds it as new.  False when it cannot be vouched for (the server has something unread
    for it, a transaction was left open, the connection broke): it must then be closed, not lent."""
    if conn.closed:
        return False
    unread = select.poll()
    unread.register(conn.fileno(), select.POLLIN)
    if unread.poll(0):
        return False
    try:
        conn.execute("DISCARD ALL", prepare=False)
        ensure_iso_dates(conn)
    except psycopg.Error:
        return False
    return conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


class Session:
    """The job's one connection, reopened (with backoff) while the lease lasts when it drops.  A lent
    connection is never closed here: it is left idle for the process that keeps it."""

    def __init__(self, db_url: str | None, job_id: int, lease_seconds: float, lent: Conn | None = None) -> None:
        self.db_url = db_url
        self.job_id = job_id
        self.lease_seconds = lease_seconds
        self.lent = lent
        self.conn = lent
        if lent is not None:
            lent.autocommit = False  # as a handler expects its connection (the keeper's copy stays in autocommit)

    def open(self) -> Conn:
        if self.conn is None or self.conn.closed:
            self.conn = connect_job(self.db_url)
        return self.conn

    def call(self, query: str, params: list[Any]) -> Any:
        """One function call in autocommit (a statement of its own), retried while the database is
        away; its first value."""
        deadline = time.monotonic() + self.lease_seconds
        backoff = Backoff()
        while True:
            try:
                conn = self.open()
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()
                conn.autocommit = True
                row = conn.execute(query, params).fetchone()
                conn.autocommit = False
                if backoff.tries:
                    print(f"job {self.job_id}: the database answers again", flush=True)
                return next(iter(row.values())) if row else None
            except psycopg.Error as exc:
                if not connection_lost(exc):
                    raise
                self.close()
                if time.monotonic() >= deadline:
                    raise DatabaseAway(str(exc)) from exc
                if not backoff.tries:
                    print(f"job {self.job_id}: database unreachable, retrying until the lease would end: {exc}",
                          flush=True)
                time.sleep(min(backoff.next_delay(), max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        if self.conn is None:
            return
        if self.conn is self.lent:  # left idle for its keeper, who checks it before lending it again
            if not self.conn.closed and self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    self.conn.rollback()
        else:
            self.conn.close()
        self.conn = None


def main(argv: list[str] | None = None, *, conn: Conn | None = None) -> int:
    """Run the attempt the environment names; `conn`: a connection to the same database lent for this
    attempt by the process that keeps it open (see Session)."""
    args = sys.argv[1:] if argv is None else argv
    conf = settings()
    identity = conf.job
    if identity is None:
        print("locaria_batch.job runs a job started by a dispatcher: LOCARIA_JOB_ID and LOCARIA_JOB_TOKEN "
              "must be set (use `locaria-batch worker` to run jobs).", file=sys.stderr)
        return 2
    if conf.work_dir is not None:  # what the job unpacks goes when its attempt ends, however it ends
        tempfile.tempdir = str(conf.work_dir)
    job_id, token = identity.job_id, identity.token
    docker_name = args[0] if args else identity.docker
    signal.signal(signal.SIGTERM, _on_sigterm)
    session = Session(conf.db_url, job_id, conf.lease_seconds, conn)
    try:
        return _attempt(session, job_id, token, docker_name)
    except DatabaseAway as exc:
        print(f"job {job_id}: the database stayed unreachable for the attempt's lease ({exc}); "
              "the dispatcher retries the job", flush=True)
        return UNREACHABLE_EXIT
    finally:
        session.close()
        if conf.work_dir is not None:  # an attempt that ends abnormally has its directory removed by its dispatcher
            shutil.rmtree(conf.work_dir, ignore_errors=True)


def _attempt(session: Session, job_id: int, token: str, docker_name: str) -> int:
    claim = session.call(f"SELECT locaria_core.job_start(%s, %s) AS claim, {SESSION_SETTINGS}", [job_id, token])
    if claim is None:
        print(f"job {job_id}: this attempt is stale, cancelled or its file is gone; nothing to do", flush=True)
        return 0
    job, docker, file_row = claim["job"], claim["docker"], claim["file"]
    if docker_name and docker_name != docker["name"]:
        print(f"warning: started as {docker_name!r} but job {job_id} belongs to {docker['name']!r}", file=sys.stderr)
    print(f"job {job_id}: {docker['name']} attempt {job['attempt']} for file {file_row['id']}", flush=True)
    ctx = JobContext(job_id=job_id, attempt=job["attempt"], token=token, docker=docker, file=file_row,
                     storage=open_storage(), conn=session.open())
    heartbeat = Heartbeat(ctx, session.db_url)
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
        if isinstance(exc, psycopg.Error) and connection_lost(exc):  # worth another attempt
            outcome = {"state": "retry", "error": f"the database connection was lost: {exc}"}
        else:
            message = user_message(exc, docker["name"])
            outcome = {"state": "failed", "error": message, "log": {"message": message},
                       "attributes": {"error": message}}
    finally:
        heartbeat.stop()
        heartbeat.join(timeout=10)
    accepted = session.call("SELECT locaria_core.job_finish(%s, %s, %s) AS ok", [job_id, token, Jsonb(outcome)])
    if not accepted:
        print(f"job {job_id}: attempt superseded before it finished; result discarded", flush=True)
        return 0
    print(f"job {job_id}: {outcome['state']}: {json.dumps(outcome.get('log', {}), default=str)[:500]}", flush=True)
    return 0
