"""The peers of bench/dispatch_peers.py, each as its documentation sets it up: a Procrastinate app
(run by `procrastinate --app=bench.peers.procrastinate_app worker`) and a PgQueuer factory (run by
`pgq run bench.peers:pgqueuer_factory`).  Their database comes from BENCH_PEER_DSN.

Each has the handler variants of the benchmark: `noop` (in-process), `child` (starts a Python child
and waits for it), and `sleep` (the crash takeover: says it runs, then sleeps)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bench.probe import CHILD_CODE, report


async def run_child(tag: str) -> None:
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD_CODE, tag)
    await child.wait()


# -- Procrastinate ------------------------------------------------------------------------
def _procrastinate_app() -> object:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("BENCH_PEER_DSN", "")))

    @app.task(name="noop")
    async def noop(tag: str) -> None:
        report(tag)

    @app.task(name="child")
    async def child(tag: str) -> None:
        await run_child(tag)

    @app.task(name="sleep")
    async def sleep(tag: str, seconds: float) -> None:
        report(tag)
        await asyncio.sleep(seconds)

    return app


procrastinate_app = _procrastinate_app()


# -- PgQueuer -------------------------------------------------------------------------------
@asynccontextmanager
async def pgqueuer_factory() -> AsyncIterator[object]:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Job, PgQueuer

    connection = await asyncpg.connect(os.environ["BENCH_PEER_DSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))
    limit = int(os.environ.get("BENCH_CONCURRENCY", "8"))

    @pgq.entrypoint("noop", concurrency_limit=limit)
    async def noop(job: Job) -> None:
        report((job.payload or b"").decode())

    @pgq.entrypoint("child", concurrency_limit=limit)
    async def child(job: Job) -> None:
        await run_child((job.payload or b"").decode())

    @pgq.entrypoint("sleep", concurrency_limit=limit)
    async def sleep(job: Job) -> None:
        tag, seconds = (job.payload or b"").decode().split()
        report(tag)
        await asyncio.sleep(float(seconds))

    try:
        yield pgq
    finally:
        await connection.close()


def run_pgqueuer_worker(argv: list[str]) -> None:
    """`pgqueuer.run`, which its docs give as `pgq run` without the CLI (1.6.0's `pgq run` fails on
    its own --log-level default): python -m bench.peers CONCURRENCY HEARTBEAT_TIMEOUT."""
    from datetime import timedelta

    import pgqueuer

    concurrency, heartbeat = int(argv[0]), float(argv[1])
    asyncio.run(pgqueuer.run(pgqueuer_factory, max_concurrent_tasks=concurrency,  # type: ignore[arg-type]
                             batch_size=max(1, concurrency // 2), heartbeat_timeout=timedelta(seconds=heartbeat)))


if __name__ == "__main__":
    run_pgqueuer_worker(sys.argv[1:])
