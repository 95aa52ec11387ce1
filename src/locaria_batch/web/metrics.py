"""The console's /metrics: the queue as the database has it, read at each scrape (so any number of
consoles agree), in the Prometheus text format."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from locaria_batch.dispatch.store import FINISHED, Duration, JobStore

# seconds: from a no-op job's fraction of a second to an hour-long load
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
HISTOGRAMS = {
    Duration.QUEUE_WAIT: ("locaria_job_queue_wait_seconds", "Time from a job becoming due to its launch."),
    Duration.RUN_TIME: ("locaria_job_run_duration_seconds", "Time from a job attempt starting to its end."),
}


class QueueCollector(Collector):
    def __init__(self, connection: Callable[[], AbstractContextManager[psycopg.Connection[dict[str, Any]]]]) -> None:
        self.connection = connection

    def collect(self) -> Iterator[Metric]:
        with self.connection() as conn:
            store = JobStore(conn)
            counts = store.state_counts()
            stats = store.queue_stats()
            alive = store.dispatchers_alive()
            histograms = {measure: store.duration_histogram(measure, BUCKETS) for measure in HISTOGRAMS}
        jobs = GaugeMetricFamily("locaria_jobs", "Jobs by docker and state.", labels=["docker", "state"])
        finished = CounterMetricFamily("locaria_jobs_finished", "Finished jobs by docker and outcome (pruned jobs "
                                       "leave this count).", labels=["docker", "outcome"])
        for row in counts:
            jobs.add_metric([row["docker"], row["state"]], row["jobs"])
            if row["state"] in FINISHED:
                finished.add_metric([row["docker"], row["state"]], row["jobs"])
        oldest = GaugeMetricFamily("locaria_queue_oldest_due_age_seconds",
                                   "How long the oldest due job has waited for a dispatcher (0: none waits).",
                                   labels=["docker"])
        for item in stats:
            oldest.add_metric([item.docker], item.oldest_due_seconds or 0.0)
        dispatchers = GaugeMetricFamily("locaria_dispatchers_alive", "Dispatchers serving this database.",
                                        value=len(alive))
        yield from (jobs, finished, oldest, dispatchers)
        for measure, (name, documentation) in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, documentation, labels=["docker"])
            for row in histograms[measure]:
                buckets = [(str(bound), count) for bound, count in zip(BUCKETS, row["buckets"], strict=True)]
                family.add_metric([row["docker"]], [*buckets, ("+Inf", row["count"])], row["sum"])
            yield family
