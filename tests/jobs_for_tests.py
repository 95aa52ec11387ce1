"""Job handlers used by the dispatch tests (they run in real job subprocesses)."""

from __future__ import annotations

import os
import time

from locaria_batch.job import JobContext, JobError, JobResult


def record(ctx: JobContext) -> JobResult:
    """Note every execution, so a test can prove each job ran exactly once."""
    ctx.conn.execute(
        "INSERT INTO public.test_runs (file_id, job_id, attempt, pid) VALUES (%s, %s, %s, %s)",
        [ctx.file_id, ctx.job_id, ctx.attempt, os.getpid()],
    )
    ctx.conn.commit()
    time.sleep(float(ctx.attributes.get("sleep", 0)))
    return JobResult(attributes={"ran_in": os.getpid()})


def sleeper(ctx: JobContext) -> JobResult:
    """Report its pid, then sleep in small steps (so cancellation is noticed)."""
    seconds = float(ctx.attributes.get("sleep", 60))
    ctx.conn.execute("INSERT INTO public.test_runs (file_id, job_id, attempt, pid) VALUES (%s, %s, %s, %s)",
                     [ctx.file_id, ctx.job_id, ctx.attempt, os.getpid()])
    ctx.conn.commit()
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        time.sleep(0.05)
        done += 1
        ctx.progress(done)
    return JobResult(attributes={"slept": seconds})


def refuse(ctx: JobContext) -> JobResult:
    raise JobError(f"file {ctx.attributes.get('name')} is not acceptable: send a CSV instead")


def explode(ctx: JobContext) -> JobResult:
    raise ZeroDivisionError("division by zero")


def noop(ctx: JobContext) -> JobResult:
    return JobResult()


def report_environment(ctx: JobContext) -> JobResult:
    return JobResult(attributes={"marker": os.environ.get("LOCARIA_TEST_MARKER")})
