"""The SDK a job uses inside its process or container.

    python -m locaria_batch.job <docker>

reads LOCARIA_JOB_ID and LOCARIA_JOB_TOKEN, claims the attempt (a stale or cancelled one exits
without touching anything), sets the file's running status, runs the docker's handler with a
JobContext while a thread heartbeats, then finishes the job and writes the file's final status
and result attributes in one transaction.  context: what a handler sees; heartbeat: the thread;
run: the attempt from claim to finish.
"""

from locaria_batch.job.context import (
    PROGRESS_MIN_INTERVAL,
    JobCancelled,
    JobContext,
    JobError,
    JobResult,
    RetryableJobError,
    Terminated,
)
from locaria_batch.job.run import main, user_message

__all__ = [
    "PROGRESS_MIN_INTERVAL",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobResult",
    "RetryableJobError",
    "Terminated",
    "main",
    "user_message",
]
