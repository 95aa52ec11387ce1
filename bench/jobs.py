"""Job handlers for the benchmarks."""

from __future__ import annotations

from locaria_batch.job import JobContext, JobResult


def noop(ctx: JobContext) -> JobResult:
    return JobResult()
