"""The dispatcher: claims, launches, renews, adopts, reconciles and times out jobs.

All state lives in locaria_core.jobs; the SQL functions of the migrations make every transition
atomic and fenced by the attempt token, so any number of dispatchers may run at once.

`run_once()` is one full pass (the Lambda launcher, `--wait` without a worker, tests).  `serve()`
is the worker's event loop: a notification is answered by a claim first; the jobs of a claim are
launched without waiting for each and their handles recorded in one statement; leases are renewed
and expired ones adopted on a timer of their own (a third of the lease); an attempt is reconciled
when its process ends (the runner says so: SIGCHLD through the fork server, a pidfd), and the ends
seen together are written in one statement.  A lost connection is reopened with backoff and
jitter, LISTEN again, and followed by a full pass (notifications sent meanwhile are lost).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from locaria_batch.db import connect
from locaria_batch.db.connect import job_database_url, scalar
from locaria_batch.db.dockers import DockerSpec
from locaria_batch.db.retry import Backoff, connection_lost, worth_retrying
from locaria_batch.dispatch.handles import Handle
from locaria_batch.dispatch.runner import (
    LaunchError,
    LaunchRequest,
    Runner,
    WatchesExits,
    exit_reason,
    launch_all,
)
from locaria_batch.dispatch.store import Ended, InFlight, Job, JobState, JobStore
from locaria_batch.errors import ConfigurationError, first_line
from locaria_batch.files.uploads import complete_stale_uploads
from locaria_batch.settings import settings
from locaria_batch.storage import open_storage

log = logging.getLogger("locaria_batch.dispatch")

UPLOAD_SWEEP_SECONDS = 60.0  # how often a dispatcher looks for uploads whose completion was lost
# a job of this dispatcher's own that it does not know of, with no handle after this long, was claimed
# by a statement whose answer never arrived; longer than any claim takes to reach its launch
LOST_CLAIM_GRACE_SECONDS = 10
SECOND_SIGNAL_WINDOW = 1.0  # seconds after a stop signal in which a second one stops the running jobs too
MAX_OUTAGES_KEPT = 32  # outages remembered for the heartbeat rule (more than any silence it still judges spans)


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

    @property
    def eventful(self) -> bool:
        return bool(self.launched or self.finished or self.adopted or self.timed_out or self.stopped)


class Dispatcher:
    def __init__(
        self,
        runner: Runner[Any],
        *,
        concurrency: int = 4,
        lease_seconds: int | None = None,
        owner: str | None = None,
        db_url: str | None = None,
        job_db_url: str | None = None,
        env_for_job: Callable[[Job, str | None], dict[str, str]] = job_environment,
        on_pass: Callable[[PassReport], None] | None = None,
    ) -> None:
        self.runner = runner
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds or settings().lease_seconds
        # an owner name of its own: every job it holds is one it claimed (a shared name, the Lambda
        # launcher's, is held by many invocations at once, none of which knows all of its jobs)
        self.owns_alone = owner is None
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.db_url = db_url
        # jobs get credentials of their own (locaria_job), never this dispatcher's
        if job_db_url is None and runner.needs_job_credentials:
            job_db_url = job_database_url()
        self.job_db_url = job_db_url
        self.env_for_job = env_for_job
        self.on_pass = on_pass  # called with each serve() iteration's report (metrics)
        self.stop_jobs_on_exit = False  # a second signal: stop the running jobs instead of leaving them
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        self._listener: psycopg.Connection[dict[str, Any]] | None = None
        self._dockers: dict[str, DockerSpec] = {}
        self._watched: dict[int, tuple[Job, Handle]] = {}  # job id -> its attempt launched/adopted here
        self._ended: dict[int, Ended] = {}  # ends seen, not yet written (the database may be away)
        self._unrecorded: list[tuple[Job, dict[str, Any]]] = []  # handles launched, not yet written
        self._outages: list[tuple[datetime, datetime]] = []  # when the database was away (its clock)
        self._hung_check_at: float | None = None  # monotonic: when the next running job turns hung
        self._next_upload_sweep = 0.0
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = -1, -1  # a pipe while serve() runs: wake() interrupts its wait

    # -- plumbing --------------------------------------------------------------------
    def _record_outage(self, lasted: float | None) -> None:
        """Remember an outage that has just ended, on the database's clock, so that a job's silence
        while nobody could hear it does not count against its heartbeat timeout.  `lasted` None: it
        began before this dispatcher started, nobody here knows when."""
        assert self._listener is not None
        ended: datetime = scalar(self._listener, "SELECT clock_timestamp()")
        began = datetime(1970, 1, 1, tzinfo=UTC) if lasted is None else ended - timedelta(seconds=lasted)
        self._outages = [*self._outages[-(MAX_OUTAGES_KEPT - 1):], (began, ended)]

    @property
    def conn(self) -> psycopg.Connection[dict[str, Any]]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.db_url, autocommit=True,
                                 application_name=f"locaria-batch dispatcher {self.owner}")
        return self._conn

    @property
    def store(self) -> JobStore:
        return JobStore(self.conn)

    @property
    def watches_exits(self) -> WatchesExits | None:
        return self.runner if isinstance(self.runner, WatchesExits) else None

    def wake(self) -> None:
        """Interrupt serve()'s wait (a signal handler calls it after setting the stop event)."""
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"!")

    def disconnect(self) -> None:
        """Drop the connections (after the database went away; the next use reconnects)."""
        for conn in (self._conn, self._listener):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self._conn = self._listener = None

    def close(self) -> None:
        self.disconnect()
        watcher = self.watches_exits
        if watcher is not None:
            watcher.close()

    # -- one pass --------------------------------------------------------------------
    def run_once(self) -> PassReport:
        """One full pass: write the ends the runner saw, maintain, claim and launch."""
        report = PassReport()
        self.collect_ends()
        self.write_collected_ends(report)
        self.maintain(report)
        self.claim_and_launch(report)
        return report

    def maintain(self, report: PassReport) -> None:
        """What runs on the lease timer: renew, adopt, reconcile everything in flight (timeouts,
        hung jobs, cancellations, ends), release what finished attempts left behind."""
        self._dockers = {}  # settings changed in dockers.json reach new attempts within this timer
        self.store.renew_leases(self.owner, self.lease_seconds)
        if self.owns_alone:
            self.release_lost_claims()
        self.adopt(report)
        self.reconcile(report)
        self.release_finished()
        if time.monotonic() >= self._next_upload_sweep:
            self._next_upload_sweep = time.monotonic() + UPLOAD_SWEEP_SECONDS
            self.complete_lost_uploads()

    def release_lost_claims(self) -> None:
        """Jobs claimed by a statement that committed but whose answer was lost (the database went away
        in between) are held under this owner yet were never launched: adoption looks for a process and
        queues them again, where the renewals would otherwise keep them waiting for ever."""
        known = {*self._watched, *self._ended, *(job.id for job, _ in self._unrecorded)}
        lost = self.store.release_lost_launches(self.owner, LOST_CLAIM_GRACE_SECONDS, known)
        if lost:
            log.warning("jobs %s: their claim's answer was lost when the database went away; queueing them again",
                        lost)

    def complete_lost_uploads(self) -> None:
        """Uploads whose object is stored but whose completion was lost are completed here, so that
        no file waits in UPLOADING for a client that is gone."""
        try:
            completed = complete_stale_uploads(self.conn, open_storage())
        except psycopg.Error:
            raise  # the serve loop reconnects
        except Exception as exc:  # storage unreachable or misconfigured: never the worker's end; tried again later
            log.warning("lost uploads not checked: %s: %s", type(exc).__name__, exc)
            return
        for file_id in completed:
            log.warning("file %s: its object was stored but its upload never completed; completed it now", file_id)

    def release_finished(self) -> None:
        """Attempts that reported their own verdict: let the runner remove what they left behind
        (a stopped container, a work directory) once, then mark them released in one statement."""
        store = self.store
        released = []
        for job in store.unreleased(self.owner):
            if job.handle is not None:
                try:
                    self.runner.cleanup(self.runner.handle(job.handle))
                except Exception as exc:  # the container engine refused: left for the next timer, not lost
                    log.warning("job %s: what its attempt left behind is not removed yet (%s); trying again later",
                                job.id, first_line(exc))
                    continue
            self._watched.pop(job.id, None)
            released.append(job)
        store.mark_released(self.owner, released)

    def claim_and_launch(self, report: PassReport) -> None:
        self.record_launches()
        store = self.store
        jobs = store.claim_free_slots(self.owner, self.concurrency, self.lease_seconds, self.runner.name)
        if not jobs:
            return
        dockers = self._dockers_of(jobs)
        requests = [LaunchRequest(job_id=job.id, attempt=job.attempt, token=job.token, file_id=job.file_id,
                                  docker=dockers[job.docker], env=self._environment(job)) for job in jobs]
        for job, result in zip(jobs, launch_all(self.runner, requests), strict=True):
            if isinstance(result, LaunchError):
                log.warning("job %s: launch failed: %s", job.id, result)
                if result.requeue:
                    store.requeue(job, str(result), result.delay)
                else:
                    store.attempt_failed(job, f"launch failed: {result}")
                continue
            self._watched[job.id] = (job, result)
            self._unrecorded.append((job, result.to_json()))
            report.launched.append(job.id)
            log.info("job %s (%s, file %s, attempt %s) launched: %s",
                     job.id, job.docker, job.file_id, job.attempt, result.where)
        self.record_launches()

    def _dockers_of(self, jobs: list[Job]) -> dict[str, DockerSpec]:
        """The jobs' docker settings, read again on each lease timer (not on each claim)."""
        missing = {job.docker for job in jobs} - set(self._dockers)
        if missing:
            self._dockers.update(self.store.dockers(missing))
        return self._dockers

    def _environment(self, job: Job) -> dict[str, str]:
        env = self.env_for_job(job, self.job_db_url)
        env["LOCARIA_LEASE_SECONDS"] = str(self.lease_seconds)  # how long the job waits out an outage
        return env

    def record_launches(self) -> None:
        """Write the handles of launched attempts together (kept until the database takes them)."""
        if self._unrecorded:
            self.store.launched_many(self.owner, self._unrecorded)
            self._unrecorded = []

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
        """Everything this dispatcher holds, as the database sees it: stop cancelled attempts, time out
        overdue ones, stop hung ones, and write the ends of those whose process has gone."""
        watched = self.store.in_flight(self.owner, self._outages, rebeat_seconds=2 * settings().heartbeat_seconds)
        turns_hung = [item.hung_in for item in watched if item.hung_in is not None and item.hung_in > 0]
        # looked at again the moment the next one would turn hung, not a maintenance period later
        self._hung_check_at = time.monotonic() + min(turns_hung) + 0.05 if turns_hung else None
        handles = [self.runner.handle(item.job.handle or {}) for item in watched]
        statuses = self.runner.status(handles) if handles else []
        ended: list[tuple[Ended, Handle | None]] = []
        watcher = self.watches_exits
        for item, handle, status in zip(watched, handles, statuses, strict=True):
            if status.state != "running":
                reason = status.reason or f"the job process {exit_reason(status.exit_code)}"
                ended.append((Ended(item.job, status.exit_code, reason, status.details), handle))
            elif item.job.stop_requested:
                self._stop_cancelled(item.job, handle, report)
            elif item.overdue:
                self._give_up(item, handle, f"timed out after {item.timeout_seconds} s", report)
            elif item.hung:
                self._give_up(item, handle, f"no heartbeat for {item.heartbeat_timeout} s", report)
            else:
                report.in_flight += 1
                self._watched.setdefault(item.job.id, (item.job, handle))
                if watcher is not None:
                    watcher.watch(handle)
        self._write_ends(ended, report)

    def _stop_cancelled(self, job: Job, handle: Handle, report: PassReport) -> None:
        self.runner.stop(handle, "cancelled")
        if self.watches_exits is not None:
            return  # its end (and the stop_done) is written when the runner sees it go
        self.runner.cleanup(handle)
        self.store.stop_done(job, self.owner)
        self._watched.pop(job.id, None)
        report.stopped.append(job.id)

    def _give_up(self, item: InFlight, handle: Handle, reason: str, report: PassReport) -> None:
        """A timed-out or hung attempt: stop it (a hung one is killed: it answers no signal it could
        handle) and count the attempt as failed (retried while attempts remain)."""
        log.warning("job %s %s: stopping it", item.job.id, reason)
        watcher = self.watches_exits
        if item.hung and watcher is not None:
            watcher.kill(handle)
        else:
            self.runner.stop(handle, reason)
        self.runner.cleanup(handle)
        self.store.attempt_failed(item.job, reason)
        self._watched.pop(item.job.id, None)
        report.timed_out.append(item.job.id)

    def collect_ends(self) -> None:
        """Ends the runner has seen since the last call, kept until written."""
        watcher = self.watches_exits
        if watcher is None:
            return
        gone = watcher.ended()
        if not gone:
            return
        statuses = self.runner.status(gone)
        for handle, status in zip(gone, statuses, strict=True):
            self.runner.cleanup(handle)  # its exit code is read: forget it (the kernel reuses pids)
            entry = self._watched.pop(handle.job_id or 0, None)
            if entry is None or entry[1].to_json().get("pid") != handle.to_json().get("pid"):
                if entry is not None:
                    self._watched[entry[0].id] = entry
                continue
            job = entry[0]
            reason = status.reason or f"the job process {exit_reason(status.exit_code)}"
            self._ended[job.id] = Ended(job, status.exit_code, reason, status.details)

    def write_collected_ends(self, report: PassReport) -> None:
        """Write the ends collected so far in one statement (the runner already removed what they
        left behind)."""
        if self._ended:
            self._write_ends([(item, None) for item in self._ended.values()], report)
            self._ended.clear()

    def _write_ends(self, ended: list[tuple[Ended, Handle | None]], report: PassReport) -> None:
        if not ended:
            return
        outcomes = self.store.ended(self.owner, [item for item, _ in ended])
        for item, handle in ended:
            if handle is not None:
                self.runner.cleanup(handle)
            self._watched.pop(item.job.id, None)
            outcome = outcomes.get(item.job.id)
            if outcome == "stopped":
                report.stopped.append(item.job.id)
            elif outcome is not None:
                log.warning("job %s attempt %s %s -> %s", item.job.id, item.job.attempt, item.reason, outcome)
                report.finished.append(item.job.id)

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
            report = self.run_once()
            if until is not None and until():
                return
            if until is None and not self.has_pending_work():
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("jobs still in progress when the time ran out")
            due = self.next_due_in()
            time.sleep(min(poll, 0.05) if report.eventful else (poll if due is None else min(max(due, 0.02), poll)))

    def serve(self, stop: threading.Event, *, poll: float = 2.0) -> None:
        """The worker's loop, until `stop` is set (see the module's docstring).  `poll` is the safety
        net: a claim at least that often although nothing was notified."""
        # a third of the lease, and at least every 5 s: hung jobs and dead dispatchers are found that soon
        maintain_every = max(0.5, min(self.lease_seconds / 3, 5.0))
        next_maintenance = 0.0  # a full pass first, and after every reconnection
        next_claim = 0.0
        backoff = Backoff(first=0.5, cap=10.0)
        outage_since: float | None = None
        attached_before = False  # an outage met at start began nobody here knows when
        self._stopping = stop
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        try:
            while not stop.is_set():
                report = PassReport()
                try:
                    if self._listener is None or self._listener.closed:
                        self._listen()
                        if outage_since is not None:
                            lasted = time.monotonic() - outage_since
                            log.warning("database reachable again after %.1f s: running a full pass", lasted)
                            self._record_outage(lasted if attached_before else None)
                            outage_since = None
                        attached_before = True
                        backoff.reset()
                        next_maintenance = next_claim = 0.0
                    self.collect_ends()
                    self.write_collected_ends(report)
                    now = time.monotonic()
                    if now >= next_maintenance:
                        self.maintain(report)
                        next_maintenance = now + maintain_every
                        if self._hung_check_at is not None:
                            next_maintenance = max(now + 0.2, min(next_maintenance, self._hung_check_at))
                    if now >= next_claim or report.finished:
                        self.claim_and_launch(report)
                        next_claim = now + poll
                    if self.on_pass is not None:
                        self.on_pass(report)
                    claim, reconcile = self._wait_for_events(min(next_claim, next_maintenance) - time.monotonic())
                    if claim:
                        next_claim = 0.0
                    if reconcile:
                        next_maintenance = 0.0
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    if not worth_retrying(exc):
                        raise
                    if not connection_lost(exc):  # contention (a deadlock, too many clients): the pass again
                        log.warning("pass interrupted (%s: %s); trying again", type(exc).__name__,
                                    first_line(exc, exc.sqlstate))
                        stop.wait(backoff.next_delay())
                        continue
                    if outage_since is None:
                        outage_since = time.monotonic()
                        log.error("database unreachable (%s); reconnecting with backoff, running jobs carry on",
                                  first_line(exc))
                    self.disconnect()
                    self.collect_ends()  # keep hearing of ends meanwhile; they are written on return
                    stop.wait(backoff.next_delay())
        finally:
            self._shut_down(outage_since is None)
            wake_r, wake_w, self._wake_r, self._wake_w = self._wake_r, self._wake_w, -1, -1
            os.close(wake_r)
            os.close(wake_w)

    def _listen(self) -> None:
        listener = connect(self.db_url, autocommit=True, connect_timeout=10,
                           application_name=f"locaria-batch dispatcher {self.owner} listen")
        listener.execute("LISTEN locaria_jobs")
        JobStore(listener).attach(self.owner, socket.gethostname(), os.getpid(), self.runner.name, self.concurrency)
        self._listener = listener

    def _wait_for_events(self, seconds: float) -> tuple[bool, bool]:
        """Wait until a notification, a runner event, a wake-up or `seconds` (at most half a second at
        a time, so a stop set from another thread is seen).  Returns (claim now, reconcile now)."""
        listener = self._listener
        assert listener is not None
        watcher = self.watches_exits
        deadline = time.monotonic() + max(0.0, seconds)
        kill_due = watcher.next_deadline() if watcher is not None else None
        if kill_due is not None:
            deadline = min(deadline, time.monotonic() + kill_due)
        while True:
            claim = reconcile = False
            for notice in listener.notifies(timeout=0):
                claim = True  # a queued job, or a finished one that freed a slot of its docker
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    reconcile = reconcile or json.loads(notice.payload).get("state") == "cancelled"
            remaining = deadline - time.monotonic()
            if claim or remaining <= 0:
                return claim, reconcile
            fds = [listener.fileno(), self._wake_r, *(watcher.wakeup_fds() if watcher is not None else [])]
            ready, _, _ = select.select(fds, [], [], min(remaining, 0.5))
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                return False, False
            if any(fd != listener.fileno() for fd in ready):
                return False, False  # a runner event: an attempt ended
            if not ready and self._stopping.is_set():
                return False, False

    def _shut_down(self, reachable: bool) -> None:
        """Leave: by default the running jobs carry on and the lease is released at once so the next
        dispatcher adopts them without waiting it out; after a second signal they are stopped."""
        try:
            self._await_second_signal()
            self._stop_running_if_asked()
            if reachable:
                with contextlib.suppress(psycopg.Error):
                    self.write_collected_ends(PassReport())
                    self.record_launches()
                    if self._stop_running_if_asked():  # the second signal came while the ends were written
                        self.write_collected_ends(PassReport())
                with contextlib.suppress(psycopg.Error):
                    self.store.release_leases(self.owner)
                if self._listener is not None and not self._listener.closed:
                    with contextlib.suppress(psycopg.Error):
                        JobStore(self._listener).detach(self.owner)
        finally:
            self.close()

    def _await_second_signal(self) -> None:
        """With attempts running here, a stopped worker gives a second stop signal a moment to come (a
        person's second Ctrl-C) before it hands them over."""
        deadline = time.monotonic() + SECOND_SIGNAL_WINDOW
        while self._stopping.is_set() and self._watched and not self.stop_jobs_on_exit \
                and time.monotonic() < deadline:
            time.sleep(0.02)

    def _stop_running_if_asked(self) -> bool:
        """After a second stop signal: stop the attempts still running here and keep their ends, so
        that they are retried.  True if it stopped any."""
        watcher = self.watches_exits
        if not self.stop_jobs_on_exit or watcher is None or not self._watched:
            return False
        running = [handle for _, handle in self._watched.values()]
        log.warning("stopping %s running job(s)", len(running))
        watcher.stop_now(running, grace=3.0)
        self.collect_ends()
        for job_id, item in list(self._ended.items()):
            self._ended[job_id] = Ended(item.job, item.exit_code,
                                        "stopped with its worker (a second stop signal)", item.details)
        return True


def make_runner(name: str, concurrency: int = 1) -> Runner[Any]:
    """The runner called `name`: local, docker or ecs, for a dispatcher running `concurrency` jobs."""
    conf = settings()
    if name == "local":
        from locaria_batch.dispatch.local import LocalRunner, keepers_for

        return LocalRunner(conf.logs_dir, cwd=conf.project_dir, pool_size=keepers_for(concurrency))
    if name == "docker":
        from locaria_batch.dispatch.docker import DockerRunner

        return DockerRunner.from_environment()
    if name == "ecs":
        from locaria_batch.dispatch.ecs import EcsRunner

        return EcsRunner.from_database()
    raise ConfigurationError(f"unknown runner {name!r}: choose local, docker or ecs")

