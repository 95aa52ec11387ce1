"""The job store: every statement on locaria_core.jobs that dispatchers, waiting clients, the
Lambdas and the CLI make, one named method each.

The dispatcher and the runners decide; the writes go through the fenced SQL functions of
0003_jobs.sql and 0050_job_store.sql (a write naming a stale attempt token changes nothing).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal
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
    hung_in: float | None = None  # running: seconds until it counts as hung (see JobStore.in_flight)

    @property
    def hung(self) -> bool:
        """Running, and silent for longer than its docker's heartbeat_timeout."""
        return self.hung_in is not None and self.hung_in <= 0


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

    def in_flight(self, owner: str, outages: Sequence[tuple[datetime, datetime]] = (),
                  rebeat_seconds: float = 0.0) -> list[InFlight]:
        """This owner's launched attempts, and cancelled ones still to stop.  The timeout rule:
        an attempt is overdue once its docker's timeout_seconds have passed since it started
        (or, if it never started, since its launch).  The heartbeat rule: a running attempt is hung
        once it has been silent for its docker's heartbeat_timeout while the database could hear it:
        the `outages` this dispatcher saw (database time, began and ended) do not count, nor does
        anything before an adoption until `rebeat_seconds` after it (the previous owner's outages
        are not known here; a live job beats again within its heartbeat interval)."""
        began = [outage[0] for outage in outages]
        ended = [outage[1] for outage in outages]
        rows = self.conn.execute(
            """SELECT j.*, d.timeout_seconds, d.heartbeat_timeout,
                      clock_timestamp() > COALESCE(j.started_at, j.launched_at)
                                          + make_interval(secs => d.timeout_seconds) AS overdue,
                      CASE WHEN j.state = 'running' THEN GREATEST(
                          d.heartbeat_timeout - extract(epoch FROM clock_timestamp() - silent.since - silent.unheard),
                          extract(epoch FROM silent.adopted + make_interval(secs => %s) - clock_timestamp()))
                      END AS hung_in
                 FROM locaria_core.jobs j JOIN locaria_core.dockers d ON d.name = j.docker
                 CROSS JOIN LATERAL (SELECT COALESCE(j.heartbeat_at, j.started_at, j.launched_at) AS since) beat
                 CROSS JOIN LATERAL (
                     SELECT beat.since,
                            (SELECT max(e.at) FROM locaria_core.job_events e
                              WHERE e.job_id = j.id AND e.event = 'adopted') AS adopted,
                            (SELECT COALESCE(sum(GREATEST(LEAST(o.ended, clock_timestamp())
                                                          - GREATEST(o.began, beat.since), interval '0')), interval '0')
                               FROM unnest(%s::timestamptz[], %s::timestamptz[]) AS o(began, ended)) AS unheard
                 ) silent
                WHERE j.lease_owner = %s AND j.handle IS NOT NULL
                  AND (j.state IN ('launching', 'running') OR j.stop_requested)""",
            [rebeat_seconds, began, ended, owner],
        ).fetchall()
        return [InFlight(Job.from_row(row), int(row["timeout_seconds"]), bool(row["overdue"]),
                         int(row["heartbeat_timeout"]),
                         None if row["hung_in"] is None else float(row["hung_in"])) for row in rows]

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

    def release_lost_launches(self, owner: str, grace_seconds: int, known: Collection[int] = ()) -> list[int]:
        """Hand the owner's jobs that have no handle after the grace, and are not among `known`, to adoption."""
        rows = self.conn.execute("SELECT locaria_core.release_lost_launches(%s, %s, %s) AS id",
                                 [owner, grace_seconds, list(known)]).fetchall()
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

    # -- operating the queue: listings, bulk actions, pruning, statistics ---------------------
    def list_jobs(self, where: JobFilter, *, limit: int = 100, before_id: int | None = None) -> list[Job]:
        """Jobs matching `where`, newest first, `limit` at a time (keyset: pass the last id seen)."""
        condition, params = where.sql()
        if before_id is not None:
            condition, params = f"{condition} AND id < %s", [*params, before_id]
        return self._jobs(f"SELECT * FROM locaria_core.jobs WHERE {condition} ORDER BY id DESC LIMIT %s",
                          [*params, limit])

    def job_ids(self, where: JobFilter) -> list[int]:
        """Every job matching `where` (what a bulk retry or cancel acts on)."""
        condition, params = where.sql()
        rows = self.conn.execute(f"SELECT id FROM locaria_core.jobs WHERE {condition} ORDER BY id", params)
        return [int(row["id"]) for row in rows.fetchall()]

    def retry_jobs(self, job_ids: list[int]) -> dict[str, Any]:
        """Re-run the files of these jobs: {retried: [{file_id, status}], skipped: [{file_id, reason}]}."""
        return dict(self._value("SELECT locaria_core.jobs_retry(%s)", [job_ids]))

    def cancel_jobs(self, job_ids: list[int], reason: str = "cancelled by user") -> dict[str, Any]:
        """Cancel these jobs: {cancelled: [job ids], skipped: [job ids that were not active]}."""
        return dict(self._value("SELECT locaria_core.jobs_cancel(%s, %s)", [job_ids, reason]))

    def prune_batch(self, older_than: timedelta, batch: int) -> list[PrunedJob]:
        """Delete one batch of finished jobs (and their events) older than `older_than`."""
        rows = self.conn.execute("SELECT * FROM locaria_core.prune_jobs(%s, %s)", [older_than, batch]).fetchall()
        return [PrunedJob(int(row["job_id"]), list(row["handles"])) for row in rows]

    def queue_stats(self) -> list[DockerStats]:
        """Per docker: what is queued and running now, what finished in the last hour, the age of the
        oldest due job, and the run time percentiles of the last hour."""
        rows = self.conn.execute(
            """WITH now AS (SELECT clock_timestamp() AS t),
                    current AS (
                        SELECT docker,
                               count(*) FILTER (WHERE state = 'queued') AS queued,
                               count(*) FILTER (WHERE state = 'queued' AND run_after <= (SELECT t FROM now)) AS due,
                               count(*) FILTER (WHERE state IN ('launching', 'running')) AS running,
                               EXTRACT(EPOCH FROM (SELECT t FROM now) - min(run_after)
                                                  FILTER (WHERE state = 'queued' AND run_after <= (SELECT t FROM now)))
                                   AS oldest_due_seconds
                          FROM locaria_core.jobs WHERE state IN ('queued', 'launching', 'running')
                         GROUP BY docker),
                    recent AS (
                        SELECT docker,
                               count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
                               count(*) FILTER (WHERE state = 'failed') AS failed,
                               count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
                               percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at
                                                                                   - started_at))
                                   FILTER (WHERE started_at IS NOT NULL) AS run_p50,
                               percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at
                                                                                    - started_at))
                                   FILTER (WHERE started_at IS NOT NULL) AS run_p95
                          FROM locaria_core.jobs
                         WHERE state IN ('succeeded', 'failed', 'cancelled')
                           AND finished_at > (SELECT t FROM now) - interval '1 hour'
                         GROUP BY docker)
               SELECT d.name AS docker, d.enabled, d.concurrency,
                      COALESCE(c.queued, 0) AS queued, COALESCE(c.due, 0) AS due, COALESCE(c.running, 0) AS running,
                      COALESCE(r.succeeded, 0) AS succeeded, COALESCE(r.failed, 0) AS failed,
                      COALESCE(r.cancelled, 0) AS cancelled, c.oldest_due_seconds, r.run_p50, r.run_p95
                 FROM locaria_core.dockers d
                 LEFT JOIN current c ON c.docker = d.name LEFT JOIN recent r ON r.docker = d.name
                ORDER BY d.name""", []).fetchall()
        return [DockerStats(**{key: _plain(value) for key, value in row.items()}) for row in rows]

    def dispatchers_alive(self) -> list[dict[str, Any]]:
        """The dispatchers serving this database, with their last heartbeat."""
        return list(self.conn.execute(
            "SELECT owner, host, pid, runner, concurrency, started_at, heartbeat_at, "
            "EXTRACT(EPOCH FROM clock_timestamp() - heartbeat_at)::float AS heartbeat_age_seconds "
            "FROM locaria_core.dispatchers_alive ORDER BY owner", []).fetchall())

    def state_counts(self) -> list[dict[str, Any]]:
        """Jobs per docker and state (every state of every docker, zeros included)."""
        return list(self.conn.execute(
            """SELECT d.name AS docker, s.state, count(j.id)::int AS jobs
                 FROM locaria_core.dockers d CROSS JOIN unnest(%s::text[]) AS s(state)
                 LEFT JOIN locaria_core.jobs j ON j.docker = d.name AND j.state = s.state
                GROUP BY d.name, s.state ORDER BY d.name, s.state""", [[state.value for state in JobState]]
        ).fetchall())

    def duration_histogram(self, measure: Duration, bounds: tuple[float, ...]) -> list[dict[str, Any]]:
        """Per docker, how many attempts took at most each of `bounds` seconds (cumulative, as
        Prometheus histograms count), with their count and sum.  Queue wait: from due to launched;
        run time: from started to finished."""
        start, end = DURATIONS[measure]
        rows = self.conn.execute(
            f"""SELECT docker, width_bucket(EXTRACT(EPOCH FROM {end} - {start})::float, %s::float8[]) AS slot,
                       count(*)::int AS n, sum(greatest(EXTRACT(EPOCH FROM {end} - {start})::float, 0)) AS total
                  FROM locaria_core.jobs WHERE {end} IS NOT NULL AND {start} IS NOT NULL
                 GROUP BY docker, slot""", [list(bounds)]).fetchall()
        # slot i holds the durations between bounds[i-1] and bounds[i]; Prometheus counts cumulatively
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            item = found.setdefault(row["docker"], {"docker": row["docker"], "count": 0, "sum": 0.0,
                                                    "buckets": [0] * len(bounds)})
            item["count"] += row["n"]
            item["sum"] += float(row["total"] or 0)
            for index in range(row["slot"], len(bounds)):
                item["buckets"][index] += row["n"]
        return [found[name] for name in sorted(found)]

    def file_page(self, query: FilePageQuery) -> list[dict[str, Any]]:
        """One page of the console's files table, newest first, after `query.before_id` (keyset:
        each page is an index range scan however many rows there are)."""
        conditions: list[str] = ["TRUE"]
        params: list[Any] = []
        if query.ids:
            conditions.append("f.id = ANY (%s)")
            params.append(list(query.ids))
        if query.before_id is not None:
            conditions.append("f.id < %s")
            params.append(query.before_id)
        if query.status:
            conditions.append("f.status = %s")
            params.append(query.status)
        elif not query.deleted and not query.ids:
            conditions.append("f.status <> 'DELETED'")
        if query.docker:
            conditions.append("EXISTS (SELECT 1 FROM locaria_core.jobs j WHERE j.file_id = f.id AND j.docker = %s)")
            params.append(query.docker)
        if query.text:
            # each arm has an index (trigrams, the primary key), so the planner can OR them together
            pattern = "%" + query.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            arms = ["f.attributes->>'name' ILIKE %s", "f.attributes->>'imported_table_name' ILIKE %s"]
            params += [pattern, pattern]
            if query.text.strip().isdigit():
                arms.append("f.id = %s")
                params.append(int(query.text.strip()))
            conditions.append("(" + " OR ".join(arms) + ")")
        return list(self.conn.execute(
            f"""SELECT f.id, f.status, f.created, f.last_update,
                       f.attributes->>'name' AS name,
                       COALESCE((f.attributes->>'download')::boolean, false) AS download,
                       f.attributes->'progress' AS progress,
                       f.attributes->'record_count' AS record_count,
                       f.attributes->'size_bytes' AS size_bytes,
                       EXTRACT(EPOCH FROM now()::timestamp - f.created)::float AS age_seconds
                  FROM locaria_core.files f
                 WHERE {" AND ".join(conditions)}
                 ORDER BY f.id DESC LIMIT %s""", [*params, query.limit]).fetchall())

    def attempts_of_file(self, file_id: int) -> list[Attempt]:
        """Every attempt of every job of the file, from the job's events: how each ended, its exit
        code and error, and the handle of what ran it."""
        rows = self.conn.execute(
            """SELECT e.job_id, j.docker, j.runner, e.attempt, j.attempt AS last_attempt, j.state AS job_state,
                      (array_agg(e.event ORDER BY e.id DESC)
                           FILTER (WHERE e.event IN ('queued', 'launching', 'running', 'succeeded', 'failed',
                                                     'cancelled')))[1] AS last_event,
                      (array_agg(e.detail->'exit_code' ORDER BY e.id DESC) FILTER (WHERE e.detail ? 'exit_code'))[1]
                          AS exit_code,
                      (array_agg(e.detail->>'error' ORDER BY e.id DESC) FILTER (WHERE e.detail ? 'error'
                                                                                AND e.event <> 'launching'))[1]
                          AS error,
                      (array_agg(e.detail->'handle' ORDER BY e.id DESC) FILTER (WHERE e.event = 'launched'))[1]
                          AS handle,
                      min(e.at) AS started, max(e.at) AS ended
                 FROM locaria_core.job_events e JOIN locaria_core.jobs j ON j.id = e.job_id
                WHERE j.file_id = %s AND e.attempt > 0
                GROUP BY e.job_id, j.docker, j.runner, e.attempt, j.attempt, j.state
                ORDER BY e.job_id, e.attempt""", [file_id]).fetchall()
        return [Attempt.from_row(row) for row in rows]

    def docker_names(self) -> list[str]:
        return [row["name"] for row in self.conn.execute("SELECT name FROM locaria_core.dockers ORDER BY name",
                                                         []).fetchall()]

    def file_status_counts(self) -> dict[str, int]:
        """How many files are in each status (the console's filter shows them)."""
        rows = self.conn.execute("SELECT status, count(*)::int AS n FROM locaria_core.files GROUP BY status "
                                 "ORDER BY status", []).fetchall()
        return {row["status"]: row["n"] for row in rows}


class Duration(StrEnum):
    QUEUE_WAIT = "queue_wait"
    RUN_TIME = "run_time"


# the columns each duration runs between (fixed SQL text, never user input)
DURATIONS = {Duration.QUEUE_WAIT: ("run_after", "launched_at"), Duration.RUN_TIME: ("started_at", "finished_at")}


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing or a bulk action means; empty fields match everything."""

    ids: tuple[int, ...] = ()
    states: tuple[JobState, ...] = ()
    dockers: tuple[str, ...] = ()
    file_id: int | None = None
    since: timedelta | None = None  # whose state changed within this long

    def sql(self) -> tuple[str, list[Any]]:
        conditions: list[str] = ["TRUE"]
        params: list[Any] = []
        for column, values in (("id", list(self.ids)), ("state", [str(s) for s in self.states]),
                               ("docker", list(self.dockers))):
            if values:
                conditions.append(f"{column} = ANY (%s)")
                params.append(values)
        if self.file_id is not None:
            conditions.append("file_id = %s")
            params.append(self.file_id)
        if self.since is not None:
            conditions.append("updated_at >= clock_timestamp() - %s")
            params.append(self.since)
        return " AND ".join(conditions), params

    @property
    def empty(self) -> bool:
        return not (self.ids or self.states or self.dockers or self.file_id is not None or self.since is not None)


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job, as its events tell it."""

    job_id: int
    docker: str
    attempt: int
    state: str  # the job's state for its latest attempt; "retried" for an earlier one that failed
    exit_code: int | None
    error: str | None
    runner: str | None
    handle: dict[str, Any] | None
    started: datetime
    ended: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Attempt:
        latest = row["attempt"] == row["last_attempt"]
        state = row["job_state"] if latest else "retried" if row["last_event"] == "queued" else row["last_event"]
        exit_code = row["exit_code"]
        return cls(row["job_id"], row["docker"], row["attempt"], str(state),
                   exit_code if isinstance(exit_code, int) else None, row["error"], row["runner"],
                   row["handle"] if isinstance(row["handle"], dict) else None, row["started"], row["ended"])


@dataclass(frozen=True)
class PrunedJob:
    job_id: int
    handles: list[dict[str, Any]]  # of each of its attempts (where their logs were)


@dataclass(frozen=True)
class DockerStats:
    docker: str
    enabled: bool
    concurrency: int
    queued: int
    due: int  # queued and past its backoff: waiting for a dispatcher
    running: int  # launching or running
    succeeded: int  # in the last hour, as are failed and cancelled
    failed: int
    cancelled: int
    oldest_due_seconds: float | None
    run_p50: float | None
    run_p95: float | None


@dataclass(frozen=True)
class FilePageQuery:
    ids: tuple[int, ...] = ()  # these rows only (a live update of rows on screen)
    status: str | None = None
    docker: str | None = None
    text: str | None = None
    deleted: bool = False
    before_id: int | None = None
    limit: int = 50


def _plain(value: Any) -> Any:
    """Decimals from SQL aggregates as floats (JSON and templates take them as they are)."""
    return float(value) if isinstance(value, Decimal) else value
