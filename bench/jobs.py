"""Job handlers for the benchmarks."""

from __future__ import annotations

import time

from bench.probe import report
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
