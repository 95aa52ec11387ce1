"""Job handlers for the benchmarks."""

from __future__ import annotations

import time

from bench.probe import report
from locaria_batch.db import scalar
from locaria_batch.job import JobContext, JobResult


def noop(ctx: JobContext) -> JobResult:
    return JobResult()


def probe(ctx: JobContext) -> JobResult:
    """A no-op that says when its code started running (its file's `tag` attribute names it)."""
    report(str(ctx.attributes.get("tag", ctx.file_id)))
    return JobResult()


def probe_then_sleep(ctx: JobContext) -> JobResult:
    """Says it runs, then sleeps `sleep` seconds (the crash takeover: a job that outlives its worker)."""
    report(str(ctx.attributes.get("tag", ctx.file_id)))
    time.sleep(float(ctx.attributes.get("sleep", 60)))
    return JobResult()


def chaos(ctx: JobContext) -> JobResult:
    """A job of the length its file asks for.  It holds a lock on its file for as long as its process
    lives: an attempt that finds the lock taken runs beside another attempt of the same file, and says
    so (the fault harness counts those)."""
    import time

    running_alone = scalar(ctx.conn, "SELECT pg_try_advisory_lock(4242, %s)", [ctx.file_id])
    if not running_alone:
        ctx.conn.execute("INSERT INTO public.chaos_overlaps (file_id, job_id, attempt) VALUES (%s, %s, %s)",
                         [ctx.file_id, ctx.job_id, ctx.attempt])
    ctx.conn.commit()
    seconds = float(ctx.attributes.get("seconds", 1))
    steps = max(1, int(seconds / 0.1))
    for step in range(steps):
        time.sleep(seconds / steps)
        ctx.progress(step + 1, steps)
    return JobResult(attributes={"slept": seconds})
