"""The dispatcher: one pass claims, launches, renews, adopts, reconciles and times out jobs.

All state lives in locaria_core.jobs; the SQL functions of 0003_jobs.sql make every transition
atomic and fenced by the attempt token, so any number of dispatchers may run at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from locaria_batch.db import connect
from locaria_batch.dispatch.runner import LaunchError, LaunchRequest, Runner, RunStatus, exit_reason
from locaria_batch.settings import settings

log = logging.getLogger("locaria_batch.dispatch")

ACTIVE = ("launching", "running")


def job_environment(job: dict[str, Any], db_url: str | None) -> dict[str, str]:
    """What a job process needs: who it is, its fencing token, and where data lives."""
    conf = settings()
    env = {
        "LOCARIA_JOB_ID": str(job["id"]),
        "LOCARIA_JOB_TOKEN": str(job["attempt_token"]),
        "LOCARIA_JOB_ATTEMPT": str(job["attempt"]),
        "LOCARIA_FILE_ID": str(job["file_id"]),
        "LOCARIA_DOCKER": str(job["docker"]),
        "LOCARIA_STORAGE": conf.storage_url,
        "LOCARIA_HOME": str(conf.home),
        "LOCARIA_PROJECT_DIR": str(conf.project_dir),
    }
    if db_url:
        env["LOCARIA_DB_URL"] = db_url
    return env


@dataclass
class PassReport:
    launched: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)  # attempts that ended without reporting
    adopted: list[int] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    in_flight: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.launched or self.finished or self.adopted or self.in_flight)


class Dispatcher:
    def __init__(
        self,
        runner: Runner,
        *,
        concurrency: int = 4,
        lease_seconds: int = 30,
        owner: str | None = None,
        db_url: str | None = None,
        job_db_url: str | None = None,
        env_for_job: Callable[[dict[str, Any], str | None], dict[str, str]] = job_environment,
    ) -> None:
        self.runner = runner
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.db_url = db_url
        # local jobs get the database URL; container runners pass credentials their own way
        self.job_db_url = job_db_url
        self.env_for_job = env_for_job
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    # -- plumbing --------------------------------------------------------------------
    @property
    def conn(self) -> psycopg.Connection[dict[str, Any]]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.db_url, autocommit=True, application_name=f"locaria-batch worker {self.owner}")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def _call(self, query: str, params: list[Any]) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return next(iter(row.values())) if row else None

    # -- one pass --------------------------------------------------------------------
    def run_once(self) -> PassReport:
        report = PassReport()
        self._call("SELECT locaria_core.renew_leases(%s, %s)", [self.owner, self.lease_seconds])
        self.adopt(report)
        self.reconcile(report)
        self.release_finished()
        self.claim_and_launch(report)
        return report

    def release_finished(self) -> None:
        """Attempts that reported their own verdict: let the runner remove what they left behind
        (a stopped container) once, then mark the handle released (the lease owner stays as a record)."""
        done = self.conn.execute(
            "SELECT id, handle FROM locaria_core.jobs WHERE lease_owner = %s AND handle IS NOT NULL "
            "AND state IN ('succeeded', 'failed', 'cancelled') AND NOT stop_requested "
            "AND NOT (handle ? 'released')", [self.owner],
        ).fetchall()
        for job in done:
            self.runner.cleanup(job["handle"])
            self._call("UPDATE locaria_core.jobs SET handle = handle || '{\"released\": true}' WHERE id = %s "
                       "RETURNING id", [job["id"]])

    def in_flight(self) -> int:
        return int(self._call(
            "SELECT count(*) FROM locaria_core.jobs WHERE lease_owner = %s AND state IN ('launching', 'running')",
            [self.owner],
        ))

    def claim_and_launch(self, report: PassReport) -> None:
        free = self.concurrency - self.in_flight()
        if free <= 0:
            return
        jobs = self.conn.execute(
            "SELECT * FROM locaria_core.claim_jobs(%s, %s, %s, %s)",
            [self.owner, free, self.lease_seconds, self.runner.name],
        ).fetchall()
        dockers = self._dockers({job["docker"] for job in jobs})
        for job in jobs:
            request = LaunchRequest(
                job_id=job["id"], attempt=job["attempt"], token=str(job["attempt_token"]), file_id=job["file_id"],
                docker=dockers[job["docker"]], env=self.env_for_job(job, self.job_db_url),
            )
            try:
                handle = self.runner.launch(request)
            except LaunchError as exc:
                log.warning("job %s: launch failed: %s", job["id"], exc)
                if exc.requeue:
                    self._call("SELECT locaria_core.job_requeue(%s, %s, %s, %s)",
                               [job["id"], job["attempt_token"], str(exc), exc.delay])
                else:
                    self._call("SELECT locaria_core.job_attempt_failed(%s, %s, NULL, %s)",
                               [job["id"], job["attempt_token"], f"launch failed: {exc}"])
                continue
            self._call("SELECT locaria_core.job_launched(%s, %s, %s)", [job["id"], job["attempt_token"], Jsonb(handle)])
            report.launched.append(job["id"])
            log.info("job %s (%s, file %s, attempt %s) launched: %s",
                     job["id"], job["docker"], job["file_id"], job["attempt"], handle)

    def _dockers(self, names: set[str]) -> dict[str, dict[str, Any]]:
        if not names:
            return {}
        rows = self.conn.execute("SELECT * FROM locaria_core.dockers WHERE name = ANY (%s)", [list(names)]).fetchall()
        return {row["name"]: row for row in rows}

    def adopt(self, report: PassReport) -> None:
        """Take over jobs of a dispatcher that stopped renewing its lease.  An attempt without a
        recorded handle is looked up by job id and attempt before anything is relaunched."""
        adopted = self.conn.execute(
            "SELECT * FROM locaria_core.adopt_expired_jobs(%s, %s, %s, %s)",
            [self.owner, self.lease_seconds, 100, self.runner.name],
        ).fetchall()
        for job in adopted:
            report.adopted.append(job["id"])
            log.info("job %s adopted from an expired lease", job["id"])
            if job["handle"] is not None:
                continue  # reconcile() asks the runner about it
            found = self.runner.find(job["id"], job["attempt"])
            if found is not None:
                self._call("SELECT locaria_core.job_launched(%s, %s, %s)",
                           [job["id"], job["attempt_token"], Jsonb(found)])
            elif job["state"] == "launching":
                # the previous dispatcher died before it started anything: no attempt was spent
                self._call("SELECT locaria_core.job_requeue(%s, %s, %s, 0)",
                           [job["id"], job["attempt_token"], "launch lost: its dispatcher stopped before starting it"])
            elif job["state"] == "running":
                reason = "the job's process could not be found after its dispatcher stopped"
                self._call("SELECT locaria_core.job_attempt_failed(%s, %s, NULL, %s)",
                           [job["id"], job["attempt_token"], reason])

    def reconcile(self, report: PassReport) -> None:
        jobs = self.conn.execute(
            """SELECT j.*, d.timeout_seconds,
                      clock_timestamp() > COALESCE(j.started_at, j.launched_at)
                                          + make_interval(secs => d.timeout_seconds) AS overdue
                 FROM locaria_core.jobs j JOIN locaria_core.dockers d ON d.name = j.docker
                WHERE j.lease_owner = %s AND j.handle IS NOT NULL
                  AND (j.state IN ('launching', 'running') OR j.stop_requested)""",
            [self.owner],
        ).fetchall()
        if not jobs:
            return
        statuses = self.runner.status([job["handle"] for job in jobs])
        for job, status in zip(jobs, statuses, strict=True):
            if job["stop_requested"]:
                self._stop_cancelled(job, status, report)
            elif status.state == "running":
                report.in_flight += 1
                if job["overdue"]:
                    self._time_out(job, report)
            else:
                self._ended_without_report(job, status, report)

    def _stop_cancelled(self, job: dict[str, Any], status: RunStatus, report: PassReport) -> None:
        if status.state == "running":
            self.runner.stop(job["handle"], "cancelled")
        self.runner.cleanup(job["handle"])
        self._call("UPDATE locaria_core.jobs SET stop_requested = false WHERE id = %s RETURNING id", [job["id"]])
        report.stopped.append(job["id"])

    def _time_out(self, job: dict[str, Any], report: PassReport) -> None:
        reason = f"timed out after {job['timeout_seconds']} s"
        log.warning("job %s %s: stopping it", job["id"], reason)
        self.runner.stop(job["handle"], reason)
        self.runner.cleanup(job["handle"])
        self._call("SELECT locaria_core.job_attempt_failed(%s, %s, NULL, %s)",
                   [job["id"], job["attempt_token"], reason])
        report.timed_out.append(job["id"])

    def _ended_without_report(self, job: dict[str, Any], status: RunStatus, report: PassReport) -> None:
        # The job writes its own verdict before it exits; if the row still says in flight, the
        # process died first.  job_attempt_failed is fenced, so a verdict that lands in between wins.
        reason = status.reason or f"the job process {exit_reason(status.exit_code)}"
        new_state = self._call(
            "SELECT locaria_core.job_attempt_failed(%s, %s, %s, %s, %s)",
            [job["id"], job["attempt_token"], status.exit_code, reason, Jsonb(status.details)],
        )
        self.runner.cleanup(job["handle"])
        if new_state:
            log.warning("job %s attempt %s %s -> %s", job["id"], job["attempt"], reason, new_state)
            report.finished.append(job["id"])

    # -- loops -----------------------------------------------------------------------
    def has_pending_work(self) -> bool:
        return bool(self._call(
            """SELECT EXISTS (SELECT 1 FROM locaria_core.jobs j JOIN locaria_core.dockers d ON d.name = j.docker
                               WHERE d.enabled AND (d.runner IS NULL OR d.runner = %s)
                                 AND (j.state = 'queued' OR (j.lease_owner = %s AND
                                      (j.state IN ('launching', 'running') OR j.stop_requested))))""",
            [self.runner.name, self.owner],
        ))

    def next_due_in(self) -> float | None:
        """Seconds until the next queued job becomes due (retries wait for their backoff)."""
        value = self._call(
            "SELECT EXTRACT(EPOCH FROM min(run_after) - clock_timestamp()) AS due "
            "FROM locaria_core.jobs WHERE state = 'queued'",
            [],
        )
        return None if value is None else max(0.0, float(value))

    def drain(self, *, poll: float = 0.2, timeout: float | None = None,
              until: Callable[[], bool] | None = None) -> None:
        """Run passes until nothing is queued or in flight for this dispatcher (or `until()`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.run_once()
            if until is not None and until():
                return
            if until is None and not self.has_pending_work():
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("jobs still in progress when the time ran out")
            due = self.next_due_in()
            time.sleep(poll if due is None else min(max(due, 0.02), poll * 5))

    def serve(self, stop: threading.Event, *, poll: float = 2.0) -> None:
        """LISTEN for new jobs, with a poll as the safety net, until `stop` is set."""
        listener = connect(self.db_url, autocommit=True, application_name=f"locaria-batch worker {self.owner} listen")
        listener.execute("LISTEN locaria_jobs")
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                except psycopg.OperationalError as exc:
                    log.error("database error, retrying: %s", exc)
                    self.close()
                    stop.wait(poll)
                    continue
                due = self.next_due_in()
                self._wait_for_notice(listener, stop, poll if due is None else min(poll, max(due, 0.01)))
        finally:
            # hand our in-flight jobs over at once instead of making others wait out the lease
            with contextlib.suppress(psycopg.Error):
                self._call("UPDATE locaria_core.jobs SET lease_expires = clock_timestamp() "
                           "WHERE lease_owner = %s AND (state IN ('launching', 'running') OR stop_requested) "
                           "RETURNING 1", [self.owner])
            listener.close()
            self.close()


    @staticmethod
    def _wait_for_notice(listener: psycopg.Connection[Any], stop: threading.Event, seconds: float) -> None:
        """Until a notification, the timeout, or `stop` (checked twice a second: a signal handler
        cannot interrupt the wait itself)."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if list(listener.notifies(timeout=min(remaining, 0.5), stop_after=1)):
                return


def make_runner(name: str) -> Runner:
    """The runner called `name`: local, docker or ecs."""
    conf = settings()
    if name == "local":
        from locaria_batch.dispatch.local import LocalRunner

        return LocalRunner(conf.logs_dir, cwd=conf.project_dir)
    if name == "docker":
        from locaria_batch.dispatch.docker import DockerRunner

        return DockerRunner.from_environment()
    if name == "ecs":
        from locaria_batch.dispatch.ecs import EcsRunner

        return EcsRunner.from_database()
    raise ValueError(f"unknown runner {name!r}: choose local, docker or ecs")

