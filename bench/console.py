"""The console's files page at 50,000 rows: server time per page (target: at most 200 ms).

    python bench/console.py                # 50,000 files
    python bench/console.py --size small   # 5,000 (CI)

A real `locaria-batch serve` answers; the figure is its Server-Timing (the request's time in the
server, rendering included).  Beside it, the page's own query (keyset: `id < last seen`) and the
same page read the usual way, with OFFSET, as the reference: the deeper the page, the more OFFSET
reads and throws away.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests
from tests.console_fixtures import free_port, start, stop, wait_until_serving

from bench.common import benchmark_database
from locaria_batch.db import connect

SIZES = {"full": 50_000, "small": 5_000}
REPEAT = 15

FILES = """
INSERT INTO locaria_core.files (status, attributes, created, last_update)
SELECT (ARRAY['FARGATE_PROCESSED', 'FARGATE_PROCESSED', 'FARGATE_PROCESSED', 'ERROR',
               'DOWNLOAD_COMPLETED'])[1 + n %% 5],
       jsonb_build_object('name', format('survey-%%s.csv', n), 'ext', 'csv', 'upload', n %% 5 <> 4,
                          'download', n %% 5 = 4, 'size_bytes', 1000 + n * 37 %% 90000, 'record_count', n %% 5000,
                          'imported_table_name', format('locaria_uploads.upload_file_%%s', n),
                          'log_messages', jsonb_build_array(jsonb_build_object('message', 'File created'),
                                                            jsonb_build_object('message', 'Loading complete'))),
       now() - make_interval(secs => %(n)s - n), now() - make_interval(secs => %(n)s - n)
  FROM generate_series(1, %(n)s) AS n
"""
JOBS = """
INSERT INTO locaria_core.jobs (file_id, docker, trigger_status, state, attempt, max_attempts, created_at, launched_at,
                               started_at, finished_at, run_after)
SELECT id, CASE WHEN attributes @> '{"download": true}' THEN 'file_download' ELSE 'file_loader' END, 'REGISTERED',
       CASE WHEN status = 'ERROR' THEN 'failed' ELSE 'succeeded' END, 1, 3, created, created, created,
       created + interval '2 seconds', created
  FROM locaria_core.files
"""
# the reference: the same page through OFFSET
OFFSET_PAGE = ("SELECT id, status, attributes->>'name' FROM locaria_core.files WHERE status <> 'DELETED' "
               "ORDER BY id DESC LIMIT 50 OFFSET %s")
KEYSET_PAGE = ("SELECT id, status, attributes->>'name' FROM locaria_core.files WHERE status <> 'DELETED' "
               "AND id < %s ORDER BY id DESC LIMIT 50")


def server_ms(url: str) -> list[float]:
    times = []
    for _ in range(REPEAT):
        answer = requests.get(url, timeout=30)
        answer.raise_for_status()
        times.append(float(answer.headers["server-timing"].split("dur=")[1]))
    return times


def sql_ms(conn: object, query: str, value: int) -> float:
    best = float("inf")
    for _ in range(REPEAT):
        started = time.perf_counter()
        conn.execute(query, [value]).fetchall()  # type: ignore[attr-defined]
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default=os.environ.get("LOCARIA_BENCH_SIZE", "full"))
    n = SIZES[parser.parse_args().size]
    with benchmark_database() as url:
        with connect(url, autocommit=True) as conn:
            started = time.monotonic()
            conn.execute("ALTER TABLE locaria_core.files DISABLE TRIGGER files_trigger")
            conn.execute(FILES, {"n": n})
            conn.execute("ALTER TABLE locaria_core.files ENABLE TRIGGER files_trigger")
            conn.execute(JOBS)
            conn.execute("ANALYZE locaria_core.files")
            conn.execute("ANALYZE locaria_core.jobs")
            print(f"{n:,} files and jobs generated in {time.monotonic() - started:.1f} s")
        port = free_port()
        server = start("serve", "--port", str(port), env={"LOCARIA_DB_URL": url})
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(server, base + "/metrics")
            server_ms(base + "/")  # warm the pools and the template cache
            deep = n // 2
            cases = [
                ("first page", "/", None),
                (f"page after id {deep:,} (keyset)", f"/files/rows?before={deep}", deep),
                ("last page", "/files/rows?before=51", 51),
                ("status = ERROR", "/?status=ERROR", None),
                ("docker = file_download", "/?docker=file_download", None),
                ("text search 'survey-4242'", "/?q=survey-4242", None),
                ("queue page", "/queue", None),
            ]
            print(f"\n{'files page, ' + format(n, ',') + ' rows':<32} {'server p50':>11} {'p95':>9}"
                  f" {'keyset SQL':>11} {'OFFSET SQL':>11} {'ratio':>7}")
            with connect(url, autocommit=True) as conn:
                for label, path, before in cases:
                    times = server_ms(base + path)
                    p50, p95 = statistics.median(times), sorted(times)[int(0.95 * (len(times) - 1))]
                    line = f"{label:<32} {p50:>8.1f} ms {p95:>6.1f} ms"
                    if before is not None:
                        keyset = sql_ms(conn, KEYSET_PAGE, before)
                        offset = sql_ms(conn, OFFSET_PAGE, n - before + 1)
                        line += f" {keyset:>8.2f} ms {offset:>8.2f} ms {keyset / offset:>6.2f}x"
                    print(line)
            print("\ntarget: the files page answers in at most 200 ms of server time at 50,000 rows")
        finally:
            stop(server)


if __name__ == "__main__":
    main()
