"""A handler whose module maps a large library when it is imported (as the loader's does)."""

from __future__ import annotations

import pyarrow  # noqa: F401  (imported for its memory: what a keeper running this handler carries)

from locaria_batch.job import JobContext, JobResult
from tests.jobs_for_tests import record


def run(ctx: JobContext) -> JobResult:
    return record(ctx)
