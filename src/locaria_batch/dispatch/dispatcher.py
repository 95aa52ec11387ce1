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

from locaria_batch.db import connect
from locaria_batch.db.connect import job_database_url
from locaria_batch.dispatch.handles import Handle
from locaria_batch.dispatch.runner import LaunchError, LaunchRequest, Runner, RunStatus, exit_reason
from locaria_batch.dispatch.store import InFlight, Job, JobState, JobStore
from locaria_batch.errors import ConfigurationError
from locaria_batch.settings import settings

log = logging.getLogger("locaria_batch.dispatch")

def job_environment(job: Job, db_url: str | None) -> dict[str, str]:
    """What a job process needs: who it is, its fencing token, and where data lives."""
    conf = settings()
    env = {
        "LOCARIA_JOB_ID": str(job.id),
        "LOCARIA_JOB_TOKEN": job.token,
        "LOCARIA_JOB_ATTEMPT": str(job.attempt),
        "LOCARIA_FILE_ID": str(job.file_id),
        "LOCARIA_DOCKER": job.docker,
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
        runner: Runner[Any],
        *,
        concurrency: int = 4,
        lease_seconds: int = 30,
        owner: str | None = None,
        db_url: str | None = None,
        job_db_url: str | None = None,
        env_for_job: Callable[[Job, str | None], dict[str, str]] = job_environment,
    ) -> None:
        self.runner = runner
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.db_url = db_url
        # jobs get credentials of their own (locaria_job), never this dispatcher's
        if job_db_url is None and runner.needs_job_credentials:
            job_db_url = job_database_url()
        self.job_db_url = job_db_url
        self.env_for_job = env_for_job
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    # -- plumbing --------------------------------------------------------------------
    @property
    def conn(self) -> psycopg.Connection[dict[str, Any]]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.db_url, autocommit=True,
                                 application_name=f"locaria-batch dispatcher {self.owner}")
        return self._conn

    @property
    def store(self) -> JobStore:
        return JobStore(self.conn)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    # -- one pass --------------------------------------------------------------------
    def run_once(self) -> PassReport:
        report = PassReport()
        self.store.renew_leases(self.owner, self.lease_seconds)
        self.adopt(report)
        self.reconcile(report)
        self.release_finished()
        self.claim_and_launch(report)
        return report

    def release_finished(self) -> None:
        """Attempts that reported their own verdict: let the runner remove what they left behind
        (a stopped container) once, then mark them released (the lease owner stays as a record)."""
        store = self.store
        done = store.unreleased(self.owner)
        for job in done:
            if job.handle is not None:
                self.runner.cleanup(self.runner.handle(job.handle))
        store.mark_released(self.owner, done)

    def claim_and_launch(self, report: PassReport) -> None:
        store = self.store
        free = self.concurrency - store.in_flight_count(self.owner)
        if free <= 0:
            return
        jobs = store.claim(self.owner, free, self.lease_seconds, self.runner.name)
        dockers = store.dockers({job.docker for job in jobs})
        for job in jobs:
            request = LaunchRequest(job_id=job.id, attempt=job.attempt, token=job.token, file_id=job.file_id,
                                    docker=dockers[job.docker], env=self.env_for_job(job, self.job_db_url))
            try:
                handle = self.runner.launch(request)
            except LaunchError as exc:
                log.warning("job %s: launch failed: %s", job.id, exc)
                if exc.requeue:
                    store.requeue(job, str(exc), exc.delay)
                else:
                    store.attempt_failed(job, f"launch failed: {exc}")
                continue
            store.launched(job, handle.to_json())
            report.launched.append(job.id)
            log.info("job %s (%s, file %s, attempt %s) launched: %s",
                     job.id, job.docker, job.file_id, job.attempt, handle.where)

    def adopt(self, report: PassReport) -> None:
        """Take over jobs of a dispatcher that stopped renewing its lease.  An attempt without a
        recorded handle is looked up by job id and attempt before anything is relaunched."""
        store = self.store
        for job in store.adopt_expired(self.owner, self.lease_seconds, 100, self.runner.name):
            report.adopted.append(job.id)
            log.info("job %s adopted from an expired lease", job.id)
            if job.handle is not None:
                continue  # reconcile() asks the runner about it
            found = self.runner.find(job.id, job.attempt)
            if found is not None:
                store.launched(job, found.to_json())
            elif job.state is JobState.LAUNCHING:
                # the previous dispatcher died before it started anything: no attempt was spent
                store.requeue(job, "launch lost: its dispatcher stopped before starting it")
            elif job.state is JobState.RUNNING:
                store.attempt_failed(job, "the job's process could not be found after its dispatcher stopped")

    def reconcile(self, report: PassReport) -> None:
        watched = self.store.in_flight(self.owner)
        if not watched:
            return
        handles = [self.runner.handle(item.job.handle or {}) for item in watched]
        statuses = self.runner.status(handles)
        for item, handle, status in zip(watched, handles, statuses, strict=True):
            if item.job.stop_requested:
                self._stop_cancelled(item.job, handle, status, report)
            elif status.state == "running":
                report.in_flight += 1
                if item.overdue:
                    self._time_out(item, handle, report)
            else:
                self._ended_without_report(item.job, handle, status, report)

    def _stop_cancelled(self, job: Job, handle: Handle, status: RunStatus, report: PassReport) -> None:
        if status.state == "running":
            self.runner.stop(handle, "cancelled")
        self.runner.cleanup(handle)
        self.store.stop_done(job, self.owner)
        report.stopped.append(job.id)

    def _time_out(self, item: InFlight, handle: Handle, report: PassReport) -> None:
        reason = f"timed out after {item.timeout_seconds} s"
        log.warning("job %s %s: stopping it", item.job.id, reason)
        self.runner.stop(handle, reason)
        self.runner.cleanup(handle)
        self.store.attempt_failed(item.job, reason)
        report.timed_out.append(item.job.id)

    def _ended_without_report(self, job: Job, handle: Handle, status: RunStatus, report: PassReport) -> None:
        # The job writes its own verdict before it exits; if the row still says in flight, the
        # process died first.  attempt_failed is fenced, so a verdict that lands in between wins.
        reason = status.reason or f"the job process {exit_reason(status.exit_code)}"
        new_state = self.store.attempt_failed(job, reason, status.exit_code, status.details)
        self.runner.cleanup(handle)
        if new_state:
            log.warning("job %s attempt %s %s -> %s", job.id, job.attempt, reason, new_state)
            report.finished.append(job.id)

    # -- loops -----------------------------------------------------------------------
    def has_pending_work(self) -> bool:
        return self.store.has_pending_work(self.owner, self.runner.name)

    def next_due_in(self) -> float | None:
        return self.store.next_due_in()

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
        listener = connect(self.db_url, autocommit=True,
                           application_name=f"locaria-batch dispatcher {self.owner} listen")
        listener.execute("LISTEN locaria_jobs")
        JobStore(listener).attach(self.owner, socket.gethostname(), os.getpid(), self.runner.name, self.concurrency)
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
            with contextlib.suppress(psycopg.Error):
                self.store.release_leases(self.owner)
            with contextlib.suppress(psycopg.Error):
                JobStore(listener).detach(self.owner)
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


def make_runner(name: str) -> Runner[Any]:
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
    raise ConfigurationError(f"unknown runner {name!r}: choose local, docker or ecs")

