"""What a handler sees: the JobContext it is given, the JobResult it returns, the errors it raises.

Progress and log entries wait in the context until the heartbeat thread takes them: the handler
never waits on the database to report, and the row is written at most once a second.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from locaria_batch.errors import LocariaError
from locaria_batch.storage import Storage

PROGRESS_MIN_INTERVAL = 1.0  # progress reaches the row at most once a second


class JobError(LocariaError):
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


Updates = tuple[dict[str, Any] | None, list[dict[str, Any]]]  # (latest progress, log entries)


@dataclass
class JobContext:
    job_id: int
    attempt: int
    token: str
    docker: dict[str, Any]
    file: dict[str, Any]
    storage: Storage
    conn: psycopg.Connection[dict[str, Any]]  # for the handler's own data work
    _progress: dict[str, Any] | None = field(default=None, init=False, repr=False)
    _progress_sent_at: float = field(default=0.0, init=False, repr=False)
    _cancelled: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _pending_logs: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _wake: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

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
        if self.progress_wait() <= 0:
            self.wake()

    def log(self, message: str | dict[str, Any]) -> None:
        """Append an entry to the file's log_messages (and to this job's own log)."""
        print(f"[job {self.job_id}] {message}", flush=True)
        with self._lock:
            self._pending_logs.append({"message": message})
        self.wake()

    # -- the heartbeat's side -------------------------------------------------------------------
    def wake(self) -> None:
        """Have the heartbeat write now rather than at its next beat (updates wait, or it stops)."""
        self._wake.set()

    def wait_for_updates(self, timeout: float) -> None:
        """Block until woken or `timeout` seconds pass."""
        self._wake.wait(timeout)
        self._wake.clear()

    def take_updates(self) -> Updates:
        """The latest progress (None if unchanged) and the log entries since the last call."""
        with self._lock:
            progress, self._progress = self._progress, None
            logs, self._pending_logs = self._pending_logs, []
        return progress, logs

    def restore_updates(self, updates: Updates) -> None:
        """Updates a failed write took: keep them for the next one (newer progress wins)."""
        progress, logs = updates
        with self._lock:
            if self._progress is None:
                self._progress = progress
            self._pending_logs[:0] = logs

    def has_updates(self) -> bool:
        with self._lock:
            return self._progress is not None or bool(self._pending_logs)

    def mark_progress_sent(self) -> None:
        self._progress_sent_at = time.monotonic()

    def progress_wait(self) -> float:
        """Seconds until progress may reach the row again (zero or less: now)."""
        return PROGRESS_MIN_INTERVAL - (time.monotonic() - self._progress_sent_at)

    def mark_cancelled(self) -> None:
        """The attempt is no longer alive; the handler's next check raises JobCancelled."""
        self._cancelled.set()
