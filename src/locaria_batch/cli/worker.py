"""`locaria-batch worker`: the dispatcher as a long-running process."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from locaria_batch.cli.common import database, runner_name, say
from locaria_batch.settings import RunnerName


def worker(
    once: Annotated[bool, typer.Option("--once", help="Drain the queue and exit.")] = False,
    concurrency: Annotated[int, typer.Option(metavar="JOBS", min=1, help="Jobs this worker runs at once.")] = 4,
    runner: Annotated[RunnerName | None, typer.Option(help=(
        "Where jobs run (default: $LOCARIA_RUNNER, else local)."))] = None,
    poll: Annotated[float, typer.Option(metavar="SECONDS", min=0.05, help=(
        "Seconds between passes when nothing is notified."))] = 2.0,
) -> None:
    """Dispatch jobs: LISTEN for new ones, launch, reconcile, retry and time them out."""
    from locaria_batch.dispatch.dispatcher import Dispatcher, make_runner

    with database():
        pass  # a clear message when there is no database, before the runner starts
    name = runner_name(runner)
    dispatcher = Dispatcher(make_runner(name), concurrency=concurrency)
    if once:
        dispatcher.drain()
        dispatcher.close()
        say("queue drained")
        return
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        say("stopping: no new jobs are claimed; running ones carry on and are adopted later")
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    say(f"worker {dispatcher.owner} ({name} runner, concurrency {concurrency}) waiting for jobs")
    dispatcher.serve(stop, poll=poll)
