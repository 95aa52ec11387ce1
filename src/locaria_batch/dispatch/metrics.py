"""The worker's own Prometheus metrics, counted from what each dispatcher pass reports.

The dispatcher stays unaware of them: `MeteredDispatcher` reads the `PassReport` each pass
returns, and `CountingRunner` sees every launch that fails, whatever the loop around them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from locaria_batch.dispatch.dispatcher import Dispatcher, PassReport
from locaria_batch.dispatch.handles import Handle
from locaria_batch.dispatch.runner import LaunchError, LaunchRequest, Runner, RunStatus, launch_all


class DispatcherMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        options: dict[str, Any] = {"registry": self.registry}
        self.passes = Counter("locaria_dispatcher_passes", "Dispatch passes run (claim, launch, reconcile).",
                              **options)
        self.launches = Counter("locaria_dispatcher_launches", "Job attempts launched.", **options)
        self.adoptions = Counter("locaria_dispatcher_adoptions",
                                 "In-flight jobs adopted from a dispatcher whose lease expired.", **options)
        self.launch_errors = Counter("locaria_dispatcher_launch_errors", "Launches that started nothing.",
                                     ["requeued"], **options)
        self.ended_unreported = Counter("locaria_dispatcher_ended_unreported",
                                        "Attempts found ended without reporting (crash, kill, out of memory).",
                                        **options)
        self.timeouts = Counter("locaria_dispatcher_timeouts", "Attempts stopped at their docker's timeout.",
                                **options)
        self.in_flight = Gauge("locaria_dispatcher_jobs_in_flight", "Attempts this dispatcher watches.", **options)
        self.pruned = Counter("locaria_dispatcher_pruned_jobs", "Finished jobs deleted by the retention timer.",
                              **options)

    def observe(self, report: PassReport) -> None:
        self.passes.inc()
        self.launches.inc(len(report.launched))
        self.adoptions.inc(len(report.adopted))
        self.ended_unreported.inc(len(report.finished))
        self.timeouts.inc(len(report.timed_out))
        self.in_flight.set(report.in_flight)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """GET /metrics on host:port, from a thread of its own."""
        start_http_server(port, addr=host, registry=self.registry)


class MeteredDispatcher(Dispatcher):
    """A dispatcher whose every pass is counted."""

    def __init__(self, runner: Runner[Any], metrics: DispatcherMetrics, **options: Any) -> None:
        # serve() reports each loop iteration through on_pass; run_once (drain, --once) below
        super().__init__(CountingRunner(runner, metrics), on_pass=metrics.observe, **options)
        self.metrics = metrics

    def run_once(self) -> PassReport:
        report = super().run_once()
        self.metrics.observe(report)
        return report


class CountingRunner:
    """A runner that counts the launches its inner runner refuses, and otherwise is that runner."""

    def __init__(self, inner: Runner[Any], metrics: DispatcherMetrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.name = inner.name
        self.needs_job_credentials = inner.needs_job_credentials

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # whatever else a runner has, it is the inner one's

    def handle(self, stored: dict[str, Any]) -> Any:
        return self.inner.handle(stored)

    def launch(self, request: LaunchRequest) -> Any:
        try:
            return self.inner.launch(request)
        except LaunchError as exc:
            self.metrics.launch_errors.labels(requeued=str(exc.requeue).lower()).inc()
            raise

    def launch_many(self, requests: list[LaunchRequest]) -> list[Any]:
        results = launch_all(self.inner, requests)
        for result in results:
            if isinstance(result, LaunchError):
                self.metrics.launch_errors.labels(requeued=str(result.requeue).lower()).inc()
        return results

    def status(self, handles: list[Any]) -> list[RunStatus]:
        return self.inner.status(handles)

    def find(self, job_id: int, attempt: int) -> Handle | None:
        return self.inner.find(job_id, attempt)

    def stop(self, handle: Any, reason: str) -> None:
        self.inner.stop(handle, reason)

    def cleanup(self, handle: Any) -> None:
        self.inner.cleanup(handle)
