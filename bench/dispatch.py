"""Dispatch latency and throughput of the local runner.

    python bench/dispatch.py [--jobs 200] [--concurrency 8]

Latency: files are added one at a time; for each, the time from the committing add_file to the
job's process claiming its attempt (jobs.started_at, written by the job process itself).
Throughput: as many files added in one transaction, no-op jobs, until the last one finishes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psycopg.types.json import Jsonb

from bench.common import REPO, benchmark_database, percentile
from locaria_batch.db import connect
from locaria_batch.dispatch.dispatcher import Dispatcher
from locaria_batch.dispatch.local import LocalRunner
from locaria_batch.settings import reset as reset_settings

NOOP = {"trigger_statuses": ["BENCH"], "success_status": "BENCH_DONE", "handler": "bench.jobs:noop",
        "concurrency": 1000, "max_attempts": 1}


def add(conn: object, n: int) -> None:
    for _ in range(n):
        conn.execute("SELECT locaria_core.add_file(%s)", [Jsonb({"status": "BENCH", "file_attributes": {}})])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200, help="jobs per phase (default 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="worker concurrency (default 8)")
    args = parser.parse_args()
    paths = [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    home = Path(tempfile.mkdtemp(prefix="locaria-bench-home-"))
    os.environ["LOCARIA_HOME"] = str(home)
    reset_settings()
    with benchmark_database({"bench_noop": NOOP}) as url, connect(url, autocommit=True) as conn:
        stop = threading.Event()
        dispatcher = Dispatcher(LocalRunner(home / "logs"), concurrency=args.concurrency, db_url=url)
        worker = threading.Thread(target=dispatcher.serve, args=(stop,), kwargs={"poll": 1.0})
        worker.start()
        time.sleep(0.5)

        latencies = []
        for _ in range(args.jobs):
            with conn.transaction():
                file_id = conn.execute("SELECT (locaria_core.add_file(%s)->>'id')::bigint AS id",
                                       [Jsonb({"status": "BENCH", "file_attributes": {}})]).fetchone()["id"]
            committed = datetime.now().astimezone()
            while True:
                row = conn.execute("SELECT started_at FROM locaria_core.jobs WHERE file_id = %s", [file_id]).fetchone()
                if row and row["started_at"]:
                    latencies.append((row["started_at"] - committed).total_seconds())
                    break
                time.sleep(0.002)

        start = time.perf_counter()
        with conn.transaction():
            add(conn, args.jobs)
        while conn.execute("SELECT count(*) AS n FROM locaria_core.jobs WHERE state IN ('queued', 'launching', "
                           "'running')").fetchone()["n"]:
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        stop.set()
        worker.join()
        failed = conn.execute("SELECT count(*) AS n FROM locaria_core.jobs WHERE state <> 'succeeded'").fetchone()["n"]

    print(f"dispatch benchmark: {args.jobs} jobs per phase, local runner, worker concurrency {args.concurrency}")
    print(f"  add_file commit -> job process started:  p50 {percentile(latencies, 0.5) * 1000:7.1f} ms   "
          f"p95 {percentile(latencies, 0.95) * 1000:7.1f} ms   max {max(latencies) * 1000:7.1f} ms")
    print(f"  no-op throughput:                       {args.jobs / elapsed:7.1f} jobs/s "
          f"({args.jobs} jobs in {elapsed:.1f} s)")
    if failed:
        sys.exit(f"{failed} job(s) did not succeed")


if __name__ == "__main__":
    main()
