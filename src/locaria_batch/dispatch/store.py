"""The job store: every statement on locaria_core.jobs that dispatchers, waiting clients, the
Lambdas and the CLI make, one named method each.

The dispatcher and the runners decide; the writes go through the fenced SQL functions of
0003_jobs.sql and 0050_job_store.sql (a write naming a stale attempt token changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from locaria_batch.db.dockers import DockerSpec, read

Conn = psycopg.Connection[dict[str, Any]]


class JobState(StrEnum):
    QUEUED = "queued"
    LAUNCHING = "launching"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in ACTIVE

    @property
    def finished(self) -> bool:
        return self in FINISHED


IN_FLIGHT = (JobState.LAUNCHING, JobState.RUNNING)
ACTIVE = (JobState.QUEUED, *IN_FLIGHT)
FINISHED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Job:
    """A locaria_core.jobs row."""

    id: int
    file_id: int
    docker: str
    state: JobState
    attempt: int
    max_attempts: int
    trigger_status: str | None = None
    attempt_token: str | None = None
    lease_owner: str | None = None
    runner: str | None = None
    handle: dict[str, Any] | None = None
    exit_code: int | None = None
    error: str | None = None
    progress: dict[str, Any] | None = None
    stop_requested: bool = False
    released: bool = False
    run_after: datetime | None = None
    created_at: datetime | None = None
    launched_at: datetime | None = None
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        values = {name: row[name] for name in JOB_FIELDS if name in row}
        values["state"] = JobState(row["state"])
        if row.get("attempt_token") is not None:
            values["attempt_token"] = str(row["attempt_token"])
        return cls(**values)

    @property
    def token(self) -> str:
        if self.attempt_token is None:
            raise ValueError(f"job {self.id} has no attempt in flight")
        return self.attempt_token


JOB_FIELDS = tuple(item.name for item in fields(Job))


@dataclass(frozen=True)
class InFlight:
    """A launched attempt the dispatcher watches, with what its timeout and heartbeat rules say of it."""

    job: Job
    timeout_seconds: int
    overdue: bool
    heartbeat_timeout: int = 0
    hung: bool = False  # running, and silent for longer than its docker's heartbeat_timeout


@dataclass(frozen=True)
class Ended:
    """An attempt whose process ended, as its runner saw it."""

    job: Job
    exit_code: int | None
    reason: str
    details: dict[str, Any]


@dataclass(frozen=True)
class FileProgress:
    """What a waiting client needs to know of a file."""

    id: int
    status: str
    attributes: dict[str, Any]
    active: bool  # a job is queued or in flight
    waiting: bool  # in a status that is about to queue one (or still uploading)

    @property
    def settled(self) -> bool:
        return not self.active and not self.waiting

    def row(self) -> dict[str, Any]:
        """The file as Locaria's API shows it."""
        return {"id": self.id, "status": self.status, "attributes": self.attributes}


class JobStore:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def _value(self, query: str, params: list[Any]) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return next(iter(row.values())) if row else None

    def _jobs(self, query: str, params: list[Any]) -> list[Job]:
        return [Job.from_row(row) for row in self.conn.execute(query, params).fetchall()]

    # -- a dispatcher's pass ---------------------------------------------------------------
    def renew_leases(self, owner: str, lease_seconds: int) -> int:
        return int(self._value("SELECT locaria_core.renew_leases(%s, %s)", [owner, lease_seconds]))

    def claim_free_slots(self, owner: str, concurrency: int, lease_seconds: int, runner: str) -> list[Job]:
        """Claim as many due jobs as `owner` has free slots of `concurrency` (one statement)."""
        return self._jobs("SELECT * FROM locaria_core.claim_free_slots(%s, %s, %s, %s)",
                          [owner, concurrency, lease_seconds, runner])

    def launched_many(self, owner: str, launched: list[tuple[Job, dict[str, Any]]]) -> int:
        """Record the handles of a whole claim's launches in one statement."""
        if not launched:
            return 0
        return int(self._value("SELECT locaria_core.jobs_launched(%s, %s, %s, %s)", [
            owner, [job.id for job, _ in launched], [job.token for job, _ in launched],
            [Jsonb(handle) for _, handle in launched]]))

    def ended(self, owner: str, ended: list[Ended]) -> dict[int, str]:
        """Attempts whose processes ended, in one statement: those that did not report fail (and are
        retried while attempts remain), cancelled ones are done stopping, the rest are released.
        Returns {job id: 'queued' | 'failed' | 'stopped'} for what changed."""
        if not ended:
            return {}
        rows = self.conn.execute(
            "SELECT * FROM locaria_core.jobs_ended(%s, %s, %s, %s, %s, %s)",
            [owner, [item.job.id for item in ended], [item.job.token for item in ended],
             [item.exit_code for item in ended], [item.reason for item in ended],
             [Jsonb(item.details) for item in ended]]).fetchall()
        return {int(row["job_id"]): str(row["outcome"]) for row in rows}

    def claim(self, owner: str, limit: int, lease_seconds: int, runner: str) -> list[Job]:
        return self._jobs("SELECT * FROM locaria_core.claim_jobs(%s, %s, %s, %s)",
                          [owner, limit, lease_seconds, runner])

    def adopt_expired(self, owner: str, lease_seconds: int, limit: int, runner: str) -> list[Job]:
        return self._jobs("SELECT * FROM locaria_core.adopt_expired_jobs(%s, %s, %s, %s)",
                          [owner, lease_seconds, limit, runner])

    def launched(self, job: Job, handle: dict[str, Any]) -> bool:
        return bool(self._value("SELECT locaria_core.job_launched(%s, %s, %s)", [job.id, job.token, Jsonb(handle)]))

    def requeue(self, job: Job, reason: str, delay: float = 0.0) -> bool:
        """A launch that started nothing: queue the job again without spending an attempt."""
        return bool(self._value("SELECT locaria_core.job_requeue(%s, %s, %s, %s)",
                                [job.id, job.token, reason, delay]))

    def attempt_failed(self, job: Job, reason: str, exit_code: int | None = None,
                       details: dict[str, Any] | None = None) -> JobState | None:
        """Retry with backoff while attempts remain, else fail the job and its file; None when the
        attempt had already ended (its own verdict landed first)."""
        state = self._value("SELECT locaria_core.job_attempt_failed(%s, %s, %s, %s, %s)",
                            [job.id, job.token, exit_code, reason, Jsonb(details or {})])
        return None if state is None else JobState(state)

    def in_flight_count(self, owner: str) -> int:
        return int(self._value("SELECT count(*) FROM locaria_core.jobs WHERE lease_owner = %s "
                               "AND state IN ('launching', 'running')", [owner]))

    def in_flight(self, owner: str, watching_since: datetime | None = None) -> list[InFlight]:
        """This owner's launched attempts, and cancelled ones still to stop.  The timeout rule:
        an attempt is overdue once its docker's timeout_seconds have passed since it started
        (or, if it never started, since its launch).  The heartbeat rule: a running attempt is hung
        once its docker's heartbeat_timeout has passed since its last heartbeat, or since
        `watching_since` (when the dispatcher last (re)connected: nobody could beat while the
        database was away)."""
        rows = self.conn.execute(
            """SELECT j.*, d.timeout_seconds, d.heartbeat_timeout,
                      clock_timestamp() > COALESCE(j.started_at, j.launched_at)
                                          + make_interval(secs => d.timeout_seconds) AS overdue,
                      j.state = 'running' AND clock_timestamp() >
                          GREATEST(j.heartbeat_at, %s::timestamptz) + make_interval(secs => d.heartbeat_timeout)
                          AS hung
                 FROM locaria_core.jobs j JOIN locaria_core.dockers d ON d.name = j.docker
                WHERE j.lease_owner = %s AND j.handle IS NOT NULL
                  AND (j.state IN ('launching', 'running') OR j.stop_requested)""",
            [watching_since, owner],
        ).fetchall()
        return [InFlight(Job.from_row(row), int(row["timeout_seconds"]), bool(row["overdue"]),
                         int(row["heartbeat_timeout"]), bool(row["hung"])) for row in rows]

    def stop_done(self, job: Job, owner: str) -> bool:
        return bool(self._value("SELECT locaria_core.job_stop_done(%s, %s)", [job.id, owner]))

    def unreleased(self, owner: str) -> list[Job]:
        """Finished attempts whose leftovers (a stopped container) this owner has not removed yet."""
        return self._jobs("SELECT * FROM locaria_core.jobs WHERE lease_owner = %s AND handle IS NOT NULL "
                          "AND state IN ('succeeded', 'failed', 'cancelled') AND NOT stop_requested "
                          "AND NOT released", [owner])

    def mark_released(self, owner: str, jobs: list[Job]) -> int:
        if not jobs:
            return 0
        return int(self._value("SELECT locaria_core.jobs_released(%s, %s)", [owner, [job.id for job in jobs]]))

    def release_leases(self, owner: str) -> int:
        return int(self._value("SELECT locaria_core.release_leases(%s)", [owner]))

    def release_lost_launches(self, owner: str, grace_seconds: int) -> list[int]:
        rows = self.conn.execute("SELECT locaria_core.release_lost_launches(%s, %s) AS id",
                                 [owner, grace_seconds]).fetchall()
        return [int(row["id"]) for row in rows]

    def has_pending_work(self, owner: str, runner: str) -> bool:
        return bool(self._value(
            """SELECT EXISTS (SELECT 1 FROM locaria_core.jobs j JOIN locaria_core.dockers d ON d.name = j.docker
                               WHERE d.enabled AND (d.runner IS NULL OR d.runner = %s)
                                 AND (j.state = 'queued' OR (j.lease_owner = %s AND
                                      (j.state IN ('launching', 'running') OR j.stop_requested))))""",
            [runner, owner],
        ))

    def next_due_in(self) -> float | None:
        """Seconds until the next queued job becomes due (retries wait for their backoff)."""
        value = self._value("SELECT EXTRACT(EPOCH FROM min(run_after) - clock_timestamp()) AS due "
                            "FROM locaria_core.jobs WHERE state = 'queued'", [])
        return None if value is None else max(0.0, float(value))

    def dockers(self, names: set[str]) -> dict[str, DockerSpec]:
        return read(self.conn, names) if names else {}

    # -- dispatchers ------------------------------------------------------------------------
    def attach(self, owner: str, host: str, pid: int, runner: str, concurrency: int) -> None:
        """Register a serving dispatcher; it counts as attached while this session lives."""
        self.conn.execute("SELECT locaria_core.dispatcher_attach(%s, %s, %s, %s, %s)",
                          [owner, host, pid, runner, concurrency])

    def beat(self, owner: str) -> None:
        self.conn.execute("SELECT locaria_core.dispatcher_beat(%s)", [owner])

    def detach(self, owner: str) -> None:
        self.conn.execute("SELECT locaria_core.dispatcher_detach(%s)", [owner])

    def worker_attached(self) -> bool:
        return bool(self._value("SELECT EXISTS (SELECT 1 FROM locaria_core.dispatchers_alive)", []))

    # -- reads for clients ------------------------------------------------------------------
    def job(self, job_id: int) -> Job | None:
        jobs = self._jobs("SELECT * FROM locaria_core.jobs WHERE id = %s", [job_id])
        return jobs[0] if jobs else None

    def jobs_of_file(self, file_id: int) -> list[Job]:
        return self._jobs("SELECT * FROM locaria_core.jobs WHERE file_id = %s ORDER BY id", [file_id])

    def file_progress(self, file_id: int) -> FileProgress | None:
        row = self.conn.execute(
            """SELECT f.id, f.status, f.attributes,
                      EXISTS (SELECT 1 FROM locaria_core.jobs j
                               WHERE j.file_id = f.id AND j.state IN ('queued', 'launching', 'running')) AS active,
                      f.status = 'UPLOADING'
                      OR f.status = ANY (SELECT unnest(trigger_statuses) FROM locaria_core.dockers WHERE enabled)
                      AS waiting
                 FROM locaria_core.files f WHERE f.id = %s""",
            [file_id],
        ).fetchone()
        if row is None:
            return None
        return FileProgress(row["id"], row["status"], dict(row["attributes"] or {}), row["active"], row["waiting"])
