"""`locaria-batch worker`: the dispatcher as a long-running process."""

from __future__ import annotations

import itertools
import signal
import threading
from types import FrameType
from typing import Annotated, Any

import typer

from locaria_batch.cli.common import database, refuse, runner_name, say
from locaria_batch.settings import RunnerName, settings


def worker(
    once: Annotated[bool, typer.Option("--once", help="Drain the queue and exit.")] = False,
    concurrency: Annotated[int, typer.Option(metavar="JOBS", min=1, help="Jobs this worker runs at once.")] = 4,
    runner: Annotated[RunnerName | None, typer.Option(help=(
        "Where jobs run (default: $LOCARIA_RUNNER, else local)."))] = None,
    poll: Annotated[float, typer.Option(metavar="SECONDS", min=0.05, help=(
        "Seconds between claims when nothing is notified (a safety net: notifications wake it at once)."))] = 2.0,
    lease_seconds: Annotated[int | None, typer.Option("--lease-seconds", metavar="SECONDS", min=1, help=(
        "The lease on running jobs, renewed every third of it; another worker adopts them once it lapses "
        "(default: $LOCARIA_LEASE_SECONDS, else 30)."))] = None,
    metrics_port: Annotated[int | None, typer.Option(metavar="PORT", min=1, max=65535, help=(
        "Serve this worker's Prometheus metrics on PORT (/metrics)."))] = None,
    metrics_host: Annotated[str, typer.Option(metavar="ADDRESS", help=(
        "Address the metrics listen on."))] = "127.0.0.1",
) -> None:
    """Dispatch jobs: LISTEN for new ones, launch, reconcile, retry and time them out; prune finished
    jobs older than $LOCARIA_JOB_RETENTION (30d) every hour.

    SIGTERM or Ctrl-C stops it within a few seconds and leaves running jobs to the next worker,
    which adopts them; a second signal within a second stops the running jobs too."""
    from locaria_batch.dispatch.dispatcher import SECOND_SIGNAL_WINDOW, Dispatcher, make_runner
    from locaria_batch.dispatch.metrics import DispatcherMetrics, MeteredDispatcher
    from locaria_batch.dispatch.retention import RetentionTimer

    with database():
        pass  # a clear message when there is no database, before the runner starts
    name = runner_name(runner)
    dispatcher: Dispatcher
    metrics: DispatcherMetrics | None = None
    if metrics_port is not None:
        metrics = DispatcherMetrics()
        try:
            metrics.serve(metrics_port, metrics_host)
        except OSError as exc:  # the port is taken, or the address is not this machine's
            refuse("--metrics-port", f"cannot listen on {metrics_host}:{metrics_port}: {exc.strerror or exc}; "
                   "choose another port (or --metrics-host)")
        dispatcher = MeteredDispatcher(make_runner(name, concurrency), metrics, concurrency=concurrency,
                                       lease_seconds=lease_seconds)
    else:
        dispatcher = Dispatcher(make_runner(name, concurrency), concurrency=concurrency, lease_seconds=lease_seconds)
    if once:
        try:
            dispatcher.drain()
        finally:
            dispatcher.close()
        say("queue drained")
        return
    stop = threading.Event()
    signals = itertools.count(1)

    def _stop(signum: int, frame: FrameType | None) -> None:
        # counted in one step and acted on before anything is printed: a second signal may run this
        # handler again in the middle of the first one's print
        if next(signals) > 1:
            dispatcher.stop_jobs_on_exit = True
            dispatcher.wake()
            say("stopping the running jobs too")
        else:
            stop.set()
            dispatcher.wake()
            say("stopping: no new jobs are claimed; running ones carry on and are adopted by the next worker "
                f"(signal again within {SECOND_SIGNAL_WINDOW:g} s to stop them)")

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    retention = settings().job_retention
    timer = RetentionTimer(retention, settings().logs_dir, on_pruned=_counted(metrics)) if retention else None
    say(f"worker {dispatcher.owner} ({name} runner, concurrency {concurrency}, lease {dispatcher.lease_seconds} s) "
        "waiting for jobs" + (f"; metrics on http://{metrics_host}:{metrics_port}/metrics" if metrics_port else ""))
    if timer is not None:
        timer.start()
    try:
        dispatcher.serve(stop, poll=poll)
    finally:
        if timer is not None:
            timer.close()


def _counted(metrics: Any) -> Any:
    return None if metrics is None else metrics.pruned.inc
