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


def hold_the_gil(ctx: JobContext) -> JobResult:
    """Report its pid, then sit in a C call that keeps the GIL (PyDLL does not release it): the
    heartbeat thread cannot run, and no Python signal handler either."""
    import ctypes

    ctx.conn.execute("INSERT INTO public.test_runs (file_id, job_id, attempt, pid) VALUES (%s, %s, %s, %s)",
                     [ctx.file_id, ctx.job_id, ctx.attempt, os.getpid()])
    ctx.conn.commit()
    ctypes.PyDLL("libc.so.6").sleep(int(ctx.attributes.get("sleep", 60)))
    return JobResult()


def unpack_then_sleep(ctx: JobContext) -> JobResult:
    """Leave a temporary folder with a file in it (as an unzip does), then sleep."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="locaria-test-unpack-")
    with open(os.path.join(folder, "data.bin"), "wb") as out:
        out.write(b"x" * 1024)
    return sleeper(ctx)
