"""Locaria Batch against Procrastinate and PgQueuer on one PostgreSQL, side by side.

    pip install -e '.[bench]'                       # the peers (this script installs nothing)
    python bench/dispatch_peers.py                  # the full run (about half an hour on 2 cores)
    python bench/dispatch_peers.py --smoke          # what CI runs

Each system runs under its documented worker, as a process of its own: `locaria-batch worker`,
`procrastinate worker`, and `pgqueuer.run` (what `pgq run` calls; 1.6.0's CLI fails on its own
log-level option), all at concurrency 8.  The peers run two handler variants: an
in-process no-op, and a handler that starts a Python child and waits for it (Locaria Batch always
runs a process per attempt).  Rounds are interleaved (A B C D E, A B C D E, ...) so that a noisy
neighbour hurts every system alike.  PostgreSQL runs with durable settings (fsync, synchronous
commit, full page writes).

- commit → code running: serial jobs, one at a time; from the enqueueing commit to the moment the
  job's code (for the subprocess variants, the child's) says it runs, by a datagram carrying the
  wall clock: one clock for every process of the machine.  p50/p95/p99 over every round.
- commit → claim (Locaria Batch): from the commit to jobs.launched_at, set by the claim.
- no-op throughput: N jobs enqueued in one transaction, until the last one's code has run.
- statements and connections per job: pg_stat_statements (calls by the workers' role) and
  pg_stat_database.sessions over the first throughput phase, divided by its jobs.
- crash takeover: a worker is killed (SIGKILL) while its job runs and another started; the time
  until the job is adopted (Locaria Batch: its process outlives the worker) or runs again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from psycopg.types.json import Jsonb

from bench.common import REPO, benchmark_database, percentile

BIN = Path(sys.executable).parent
DURABLE = ("-c fsync=on -c synchronous_commit=on -c full_page_writes=on "
           "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top")
BENCH_ROLES = ("bench_client", "bench_admin")  # the bench's own connections, left out of the counts
PROBE_DOCKERS = {
    "bench_probe": {"trigger_statuses": ["BENCH"], "success_status": "BENCH_DONE", "handler": "bench.jobs:probe",
                    "concurrency": 1000, "max_attempts": 1},
    "bench_sleep": {"trigger_statuses": ["BENCH_SLEEP"], "success_status": "BENCH_DONE",
                    "handler": "bench.jobs:probe_then_sleep", "concurrency": 1000, "max_attempts": 3},
}


class Probe:
    """Receives the jobs' "my code runs" datagrams: tag -> wall-clock time."""

    def __init__(self, folder: Path) -> None:
        self.path = str(folder / "probe.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.seen: dict[str, list[float]] = {}
        self.changed = threading.Condition()
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        while True:
            tag, at = self.sock.recv(256).decode().rsplit(" ", 1)
            with self.changed:
                self.seen.setdefault(tag, []).append(float(at))
                self.changed.notify_all()

    def wait(self, tags: list[str], timeout: float, runs: int = 1,
             worker: subprocess.Popen[bytes] | None = None) -> dict[str, float]:
        """The first report of each tag (waiting for `runs` reports of each)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all(len(self.seen.get(tag, ())) >= runs for tag in tags):
                if worker is not None and worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with code {worker.returncode}: see its log")
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sum(len(self.seen.get(tag, ())) < runs for tag in tags)
                    raise TimeoutError(f"{missing} of {len(tags)} jobs did not report in {timeout:.0f} s")
                self.changed.wait(min(left, 1.0))
            return {tag: self.seen[tag][runs - 1] for tag in tags}


@dataclass
class Figures:
    code: list[float] = field(default_factory=list)  # commit -> code running, seconds
    claim: list[float] = field(default_factory=list)  # commit -> claim, seconds
    small: list[float] = field(default_factory=list)  # jobs/s
    large: list[float] = field(default_factory=list)
    statements: list[float] = field(default_factory=list)  # per job
    connections: list[float] = field(default_factory=list)


class System(ABC):
    name = ""
    in_process = False

    def __init__(self, urls: dict[str, str], probe: Probe, home: Path, concurrency: int) -> None:
        self.urls = urls
        self.probe = probe
        self.home = home
        self.concurrency = concurrency

    def environment(self) -> dict[str, str]:
        return {**os.environ, "BENCH_PROBE": self.probe.path, "BENCH_PEER_DSN": self.urls["worker"],
                "BENCH_CONCURRENCY": str(self.concurrency),
                "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}

    @abstractmethod
    def worker_argv(self, lease: int) -> list[str]:
        """The command line of this system's documented worker."""

    def start(self, lease: int = 30) -> subprocess.Popen[bytes]:
        log = open(self.home / f"{self.name.replace(' ', '_')}.log", "ab")  # noqa: SIM115 (the worker's own)
        return subprocess.Popen(self.worker_argv(lease), env=self.environment(), stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, cwd=REPO)

    @abstractmethod
    def enqueue(self, tags: list[str], kind: str = "", seconds: float = 0) -> float:
        """Enqueue one job per tag in one transaction; the time its commit returned."""

    def claim_times(self, tags: list[str]) -> dict[str, float]:
        return {}

    def close(self) -> None:  # noqa: B027 (a system with nothing to close keeps this one)
        """Release what the system holds in this process."""


class Locaria(System):
    name = "Locaria Batch (process per job)"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.conn = psycopg.connect(self.urls["client"], autocommit=True)

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "LOCARIA_DB_URL": self.urls["worker"], "LOCARIA_HOME": str(self.home),
                "LOCARIA_PROJECT_DIR": str(REPO)}

    def worker_argv(self, lease: int) -> list[str]:
        return [str(BIN / "locaria-batch"), "worker", "--concurrency", str(self.concurrency),
                "--lease-seconds", str(lease)]

    def enqueue(self, tags: list[str], kind: str = "", seconds: float = 0) -> float:
        status = "BENCH_SLEEP" if kind == "sleep" else "BENCH"
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.executemany("SELECT locaria_core.add_file(%s)", [
                [Jsonb({"status": status, "file_attributes": {"tag": tag, "sleep": seconds}})] for tag in tags])
        return time.time()

    def claim_times(self, tags: list[str]) -> dict[str, float]:
        rows = self.conn.execute(
            "SELECT f.attributes->>'tag', extract(epoch FROM j.launched_at) FROM locaria_core.jobs j "
            "JOIN locaria_core.files f ON f.id = j.file_id WHERE f.attributes->>'tag' = ANY (%s)", [tags]).fetchall()
        return {tag: float(at) for tag, at in rows}

    def adopted_at(self, tag: str) -> float | None:
        row = self.conn.execute(
            "SELECT extract(epoch FROM min(e.at)) FROM locaria_core.job_events e JOIN locaria_core.jobs j "
            "ON j.id = e.job_id JOIN locaria_core.files f ON f.id = j.file_id "
            "WHERE f.attributes->>'tag' = %s AND e.event = 'adopted'", [tag]).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def cancel(self, tag: str) -> None:
        self.conn.execute("SELECT locaria_core.cancel_file_jobs(f.id) FROM locaria_core.files f "
                          "WHERE f.attributes->>'tag' = %s", [tag])

    def close(self) -> None:
        self.conn.close()


class Peer(System):
    """The peers' enqueueing clients share one event loop (both are asyncio libraries)."""

    loop = asyncio.new_event_loop()

    def __init__(self, *args: Any, variant: str) -> None:
        super().__init__(*args)
        self.variant = variant
        self.in_process = variant == "noop"

    def enqueue(self, tags: list[str], kind: str = "", seconds: float = 0) -> float:
        self.loop.run_until_complete(self._enqueue(tags, kind or self.variant, seconds))
        return time.time()

    @abstractmethod
    async def _enqueue(self, tags: list[str], kind: str, seconds: float) -> None:
        """Enqueue through the peer's own API (on the peer's event loop)."""


class Procrastinate(Peer):
    opened = 0  # both variants share the app (and its pool)

    def __init__(self, *args: Any, variant: str) -> None:
        super().__init__(*args, variant=variant)
        self.name = f"Procrastinate, {'in-process handler' if self.in_process else 'handler starts a subprocess'}"
        os.environ["BENCH_PEER_DSN"] = self.urls["client"]  # the app's connector, in this process: the client's
        from bench.peers import procrastinate_app

        self.app: Any = procrastinate_app
        if not Procrastinate.opened:
            self.loop.run_until_complete(self.app.open_async())
        Procrastinate.opened += 1

    def worker_argv(self, lease: int) -> list[str]:
        return [str(BIN / "procrastinate"), "--app=bench.peers.procrastinate_app", "worker",
                "--concurrency", str(self.concurrency)]

    async def _enqueue(self, tags: list[str], kind: str, seconds: float) -> None:
        task = self.app.tasks[kind]
        arguments = [{"tag": tag, **({"seconds": seconds} if kind == "sleep" else {})} for tag in tags]
        await task.batch_defer_async(*arguments)  # one INSERT: one transaction

    def close(self) -> None:
        Procrastinate.opened -= 1
        if not Procrastinate.opened:
            self.loop.run_until_complete(self.app.close_async())


class PgQueuer(Peer):
    def __init__(self, *args: Any, variant: str) -> None:
        super().__init__(*args, variant=variant)
        self.name = f"PgQueuer, {'in-process handler' if self.in_process else 'handler starts a subprocess'}"
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        self.connection = self.loop.run_until_complete(asyncpg.connect(self.urls["client"]))
        self.queries = Queries(AsyncpgDriver(self.connection))

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "PGDSN": self.urls["worker"]}

    def worker_argv(self, lease: int) -> list[str]:
        return [sys.executable, "-m", "bench.peers", str(self.concurrency), str(lease)]

    async def _enqueue(self, tags: list[str], kind: str, seconds: float) -> None:
        payloads = [(f"{tag} {seconds}" if kind == "sleep" else tag).encode() for tag in tags]
        await self.queries.enqueue([kind] * len(tags), payloads, [0] * len(tags))  # one statement

    def close(self) -> None:
        self.loop.run_until_complete(self.connection.close())


def stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


class Counters:
    """Statements the workers and their jobs made (pg_stat_statements: every role but the bench's own)
    and sessions opened."""

    def __init__(self, url: str, bench_roles: tuple[str, ...]) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.bench_roles = list(bench_roles)

    def reset(self) -> tuple[int, int]:
        self.conn.execute("SELECT pg_stat_statements_reset()")
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        return self.read()

    def read(self) -> tuple[int, int]:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        statements = self.conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
            "WHERE r.rolname <> ALL (%s)", [self.bench_roles]).fetchone()
        sessions = self.conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
                                     ).fetchone()
        return int(statements[0] if statements else 0), int(sessions[0] if sessions else 0)


def run_round(system: System, figures: Figures, counters: Counters, sizes: argparse.Namespace, label: str,
              large: bool) -> None:
    worker = system.start()
    try:
        for i in range(4):  # warm: the first jobs of a fresh worker pay for its start-up
            tag = f"{label}-warm{i}"
            system.enqueue([tag])
            system.probe.wait([tag], timeout=120, worker=worker)
        committed: dict[str, float] = {}
        for i in range(sizes.serial):
            tag = f"{label}-serial{i}"
            committed[tag] = system.enqueue([tag])
            ran = system.probe.wait([tag], timeout=60, worker=worker)[tag]
            figures.code.append(ran - committed[tag])
        claims = system.claim_times(list(committed))
        figures.claim.extend(claims[tag] - committed[tag] for tag in committed if tag in claims)
        for size, into in ((sizes.small, figures.small), *([(sizes.large, figures.large)] if large else [])):
            tags = [f"{label}-n{size}-{i}" for i in range(size)]
            time.sleep(1)  # the serial phase's last ends are written
            before = counters.reset() if size == sizes.small else (0, 0)
            start = system.enqueue(tags)
            done = system.probe.wait(tags, timeout=max(120, size / 4), worker=worker)
            into.append(size / (max(done.values()) - start))
            if size == sizes.small:
                time.sleep(1.5)  # the last jobs' ends and releases belong to this phase
                statements, sessions = counters.read()
                figures.statements.append((statements - before[0]) / size)
                figures.connections.append((sessions - before[1]) / size)
    finally:
        stop(worker)


def takeover(system: System, lease: int, cap: float) -> float | None:
    """Seconds from a worker's SIGKILL (its job running) until the job is adopted or runs again."""
    tag = f"takeover-{system.name[:4]}-{lease}-{time.monotonic_ns()}"
    first = system.start(lease)
    try:
        system.enqueue([tag], kind="sleep", seconds=lease * 3 + 20)
        system.probe.wait([tag], timeout=120)
        time.sleep(1)
        first.kill()
        killed = time.time()
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    second = system.start(lease)
    try:
        deadline = time.monotonic() + cap
        while time.monotonic() < deadline:
            if isinstance(system, Locaria):
                adopted = system.adopted_at(tag)
                if adopted is not None:
                    return adopted - killed
            elif len(system.probe.seen.get(tag, ())) >= 2:
                return system.probe.seen[tag][1] - killed
            time.sleep(0.1)
        return None
    finally:
        if isinstance(system, Locaria):  # its job outlived the first worker: the second one stops it
            system.cancel(tag)
            time.sleep(2)
            stop(second)
        else:  # a graceful stop would wait for the sleeping job
            second.kill()
            second.wait()


def ms(values: list[float], fraction: float) -> str:
    return f"{percentile(values, fraction) * 1000:.1f}" if values else "—"


def median(values: list[float]) -> float | None:
    return percentile(values, 0.5) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--serial", type=int, default=170, help="serial jobs per round and system (default 170)")
    parser.add_argument("--small", type=int, default=200, help="jobs in the first throughput phase (default 200)")
    parser.add_argument("--large", type=int, default=10_000, help="jobs in the second (default 10000)")
    parser.add_argument("--large-rounds", type=int, default=1, help="rounds that run the second throughput phase "
                        "(default 1: 10,000 jobs take minutes per system on 2 cores)")
    parser.add_argument("--concurrency", type=int, default=8, help="every worker's concurrency (default 8)")
    parser.add_argument("--leases", default="30,10", help="crash takeover with these leases, seconds (default 30,10)")
    parser.add_argument("--smoke", action="store_true", help="a small, quick run (CI)")
    args = parser.parse_args()
    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # its advice on where to build an app
    if args.smoke:
        args.rounds, args.serial, args.small, args.large, args.leases = 2, 10, 20, 40, "3"
    os.environ["LOCARIA_PG_OPTIONS"] = DURABLE
    folder = Path(tempfile.mkdtemp(prefix="locaria-peers-"))
    with benchmark_database(PROBE_DOCKERS) as url, prepared(url, folder) as urls:
        probe = Probe(folder)
        counters = Counters(urls["admin"], BENCH_ROLES)
        homes = {name: folder / name for name in ("locaria", "procrastinate", "pgqueuer")}
        for home in homes.values():
            home.mkdir()
        shared = (urls, probe)
        systems: list[System] = [
            Locaria(*shared, homes["locaria"], args.concurrency),
            PgQueuer(*shared, homes["pgqueuer"], args.concurrency, variant="child"),
            Procrastinate(*shared, homes["procrastinate"], args.concurrency, variant="child"),
            PgQueuer(*shared, homes["pgqueuer"], args.concurrency, variant="noop"),
            Procrastinate(*shared, homes["procrastinate"], args.concurrency, variant="noop"),
        ]
        figures = {system.name: Figures() for system in systems}
        takeovers: dict[str, dict[int, float | None]] = {}
        try:
            for number in range(args.rounds):
                for index, system in enumerate(systems):
                    print(f"round {number + 1}/{args.rounds}: {system.name}", file=sys.stderr, flush=True)
                    run_round(system, figures[system.name], counters, args, f"r{number}s{index}",
                              large=number < args.large_rounds)
            for lease in [int(value) for value in args.leases.split(",") if value]:
                for system in systems[:3]:
                    print(f"takeover, lease {lease} s: {system.name}", file=sys.stderr, flush=True)
                    takeovers.setdefault(system.name.split(",")[0].split(" (")[0], {})[lease] = takeover(
                        system, lease, cap=lease * 2 + 20)
        finally:
            for system in systems:
                system.close()
            shutil.rmtree(folder, ignore_errors=True)  # the probe socket, the workers' homes and logs
    report(systems, figures, takeovers, args)


@contextmanager
def prepared(url: str, folder: Path) -> Iterator[dict[str, str]]:
    """Roles for the bench's own connections (so that counting sees only the workers'), the peers'
    schemas, pg_stat_statements."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for role in BENCH_ROLES:
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
    urls = {"worker": url, "client": url.replace("//locaria@", "//bench_client@"),
            "admin": url.replace("//locaria@", "//bench_admin@")}
    env = {**os.environ, "BENCH_PEER_DSN": url, "PGDSN": url, "PYTHONPATH": str(REPO)}
    subprocess.run([str(BIN / "procrastinate"), "--app=bench.peers.procrastinate_app", "schema", "--apply"],
                   env=env, check=True, capture_output=True, cwd=REPO)
    subprocess.run([str(BIN / "pgq"), "install"], env=env, check=True, capture_output=True, cwd=REPO)
    yield urls


def report(systems: list[System], figures: dict[str, Figures], takeovers: dict[str, dict[int, float | None]],
           args: argparse.Namespace) -> None:
    print(f"\ndispatch against peers: {args.rounds} interleaved rounds ({args.large_rounds} with the {args.large}-job "
          f"phase), {args.serial * args.rounds} serial jobs per system, concurrency {args.concurrency}, durable "
          "PostgreSQL (fsync, synchronous_commit on)\n")
    header = (f"| | commit → claim p50 | commit → code running p50 / p95 / p99 | no-op jobs/s, {args.small} | "
              f"no-op jobs/s, {args.large} | statements / job | connections / job |")
    print(header)
    print("|---|---|---|---|---|---|---|")
    for system in systems:
        f = figures[system.name]
        small, large = median(f.small), median(f.large)
        print(f"| {system.name} | {ms(f.claim, 0.5) + ' ms' if f.claim else '—'} | "
              f"{ms(f.code, 0.5)} / {ms(f.code, 0.95)} / {ms(f.code, 0.99)} ms | "
              f"{small or 0:.0f} | {large or 0:.0f} | {median(f.statements) or 0:.1f} | "
              f"{median(f.connections) or 0:.2f} |")
    ours = figures[systems[0].name]
    pgq_child, proc_child, pgq_noop = (figures[s.name] for s in systems[1:4])
    checks = []

    def ratio(name: str, mine: float | None, theirs: float | None, target: str, good: bool | None) -> None:
        value = f"{mine / theirs:.2f}x" if mine is not None and theirs else "—"
        checks.append(f"| {name} | {value} | {target} | {'met' if good else 'MISSED'} |")

    code_ratio = (median(ours.code) or 0) / (median(pgq_child.code) or 1)
    ratio("commit → code running p50, vs PgQueuer's subprocess variant", median(ours.code), median(pgq_child.code),
          "≤ 0.7x", code_ratio <= 0.7)
    p99 = percentile(ours.code, 0.99) if ours.code else None
    checks.append(f"| commit → code running p99 | {p99 * 1000 if p99 else 0:.1f} ms | ≤ 50 ms | "
                  f"{'met' if p99 is not None and p99 <= 0.05 else 'MISSED'} |")
    for label, attribute in ((str(args.small), "small"), (str(args.large), "large")):
        best = max(median(getattr(pgq_child, attribute)) or 0, median(getattr(proc_child, attribute)) or 0)
        mine = median(getattr(ours, attribute))
        ratio(f"no-op throughput, {label} jobs, vs the better peer's subprocess variant", mine, best, "≥ 1.5x",
              mine is not None and best > 0 and mine / best >= 1.5)
    claim_ratio = (median(ours.claim) or 0) / (median(pgq_noop.code) or 1)
    ratio("commit → claim p50, vs PgQueuer's in-process commit → code running", median(ours.claim),
          median(pgq_noop.code), "≤ 1.5x", claim_ratio <= 1.5)
    statements, connections = median(ours.statements) or 0, median(ours.connections) or 0
    checks.append(f"| statements per job | {statements:.1f} | ≤ 6 | {'met' if statements <= 6 else 'MISSED'} |")
    checks.append(f"| connections per job | {connections:.2f} | ≤ 1 | {'met' if connections <= 1 else 'MISSED'} |")
    print("\n| Locaria Batch against the targets | ours | target | |\n|---|---|---|---|")
    print("\n".join(checks))
    print("\n| crash takeover: SIGKILL the worker while its job runs, start another | " +
          " | ".join(f"lease {lease} s" for lease in next(iter(takeovers.values()), {})) + " |")
    print("|---|" + "---|" * len(next(iter(takeovers.values()), {})))
    for name, by_lease in takeovers.items():
        what = "adopted (the job ran on)" if name.startswith("Locaria") else "ran again"
        cells = [f"{value:.1f} s" if value is not None else f"not within {lease * 2 + 20} s"
                 for lease, value in by_lease.items()]
        print(f"| {name}: {what} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
