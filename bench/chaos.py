"""Fault harness: files at random times, three workers, jobs of random length, and faults at random.

    python bench/chaos.py                       # 2,000 files (uploads, downloads and timed jobs)
    python bench/chaos.py --size small          # what CI runs: 60 files, a few faults of every kind
    python bench/chaos.py --files 500 --spread 120 --fault-every 4

It starts a throw-away embedded cluster, three `locaria-batch worker` processes and a producer that adds
the files over --spread seconds.  Meanwhile it injects faults at random: SIGKILL of a worker (restarted
a moment later) and of a job process, SIGSTOP of a job process (never continued), a PostgreSQL restart,
and pg_terminate_backend of the workers' and jobs' connections.  When every file has settled it prints
the files per final status and what must stay zero: files lost, attempts of one file run at the same
time, attempts above the maximum, rows left in a running status, temporary folders and pid files left
behind, workers that exited on their own; then the takeover time per fault kind (p50/p99: from the fault
to the job being queued again or ending, its adoption by another worker, or the workers attached again;
a retry's own backoff is not counted).
Exits 1 when a figure that must be zero is not.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

import psycopg
from psycopg.types.json import Jsonb

from bench.common import REPO, percentile
from locaria_batch.db import connect, dockers, one, scalar
from locaria_batch.db.cluster import EmbeddedCluster
from locaria_batch.db.credentials import DISPATCHER, JOB
from locaria_batch.db.migrate import migrate
from locaria_batch.files import register_upload, request_download
from locaria_batch.settings import reset as reset_settings
from locaria_batch.storage import open_storage

SIZES = {"small": (60, 25.0, 2.5), "full": (2000, 600.0, 3.0)}  # files, spread (s), seconds between faults
CHAOS_DOCKER = {"trigger_statuses": ["CHAOS"], "running_status": "CHAOS_RUNNING", "success_status": "CHAOS_DONE",
                "handler": "bench.jobs:chaos", "concurrency": 50}
FINAL = {"FARGATE_PROCESSED", "DOWNLOAD_COMPLETED", "CHAOS_DONE", "ERROR", "DOWNLOAD_ERROR"}
FAULTS = ("worker SIGKILL", "job SIGKILL", "job SIGSTOP", "PostgreSQL restart", "connections cut")


@dataclass
class Fault:
    kind: str
    at: datetime
    jobs: list[int] = field(default_factory=list)  # the jobs it hit (worker and job faults)
    seconds: list[float] | None = None  # measured as it happened (database restarts, cut connections)


class Workers:
    """Three `locaria-batch worker` processes; one that was killed is started again after a moment."""

    def __init__(self, env: dict[str, str], logs: Path, count: int = 3) -> None:
        self.env = env
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()
        self.exited_on_their_own: list[str] = []
        self.log_of: dict[int, Path] = {}
        for _ in range(count):
            self.processes.append(self._start())

    def _start(self) -> subprocess.Popen[bytes]:
        path = self.logs / f"worker-{len(self.killed)}-{time.monotonic_ns()}.log"
        with path.open("wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "locaria_batch.cli.main", "worker", "--concurrency",
                                        "8", "--poll", "1"], env=self.env, cwd=REPO, stdout=log,
                                       stderr=subprocess.STDOUT)
        self.log_of[process.pid] = path
        return process

    def kill(self, index: int) -> None:
        """SIGKILL worker INDEX; another takes its place a moment later."""
        victim = self.processes[index]
        self.killed.add(victim.pid)
        victim.kill()
        victim.wait()
        threading.Timer(random.uniform(0.5, 3), self._replace, args=(index, victim)).start()

    def _replace(self, index: int, old: subprocess.Popen[bytes]) -> None:
        if self.processes[index] is old:
            self.processes[index] = self._start()

    def check(self) -> None:
        """A worker that exited without being killed is a failure; start another so the run goes on."""
        for index, process in enumerate(self.processes):
            if process.poll() is not None and process.pid not in self.killed:
                tail = self.log_of[process.pid].read_text(errors="replace").splitlines()[-12:]
                self.exited_on_their_own.append(f"pid {process.pid} exit {process.returncode}; the end of its log:\n"
                                                + "\n".join(f"    {line}" for line in tail))
                self.killed.add(process.pid)
                self.processes[index] = self._start()

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def running_job_pids(conn: Any) -> list[tuple[int, int]]:
    rows = conn.execute("SELECT id, (handle->>'pid')::int AS pid FROM locaria_core.jobs "
                        "WHERE state = 'running' AND handle ? 'pid'").fetchall()
    return [(row["id"], row["pid"]) for row in rows]


def inject(kind: str, conn: Any, cluster: EmbeddedCluster, workers: Workers, stopped: list[int]) -> Fault | None:
    fault = Fault(kind, datetime.now(UTC))
    if kind == "worker SIGKILL":
        index = random.randrange(len(workers.processes))
        fault.jobs = [row["id"] for row in conn.execute(
            "SELECT id FROM locaria_core.jobs WHERE state IN ('launching', 'running') AND lease_owner LIKE %s",
            [f"%:{workers.processes[index].pid}:%"]).fetchall()]
        workers.kill(index)
    elif kind in ("job SIGKILL", "job SIGSTOP"):
        candidates = [(job, pid) for job, pid in running_job_pids(conn) if pid not in stopped]
        if not candidates:
            return None
        job, pid = random.choice(candidates)
        try:
            os.kill(pid, signal.SIGKILL if kind == "job SIGKILL" else signal.SIGSTOP)
        except ProcessLookupError:
            return None
        if kind == "job SIGSTOP":
            stopped.append(pid)
        fault.jobs = [job]
    elif kind == "PostgreSQL restart":
        cluster.restart()
    else:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name LIKE 'locaria-batch %%' AND pid <> pg_backend_pid()")
    return fault


def watch_workers_back(owner_url: str, fault: Fault, expected_workers: int) -> None:
    """In the background, from the fault: the seconds until every worker is attached and has beaten
    again (a database restart, a cut connection)."""

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with connect(owner_url, autocommit=True, connect_timeout=5) as conn:
                    alive = scalar(conn, "SELECT count(*) FROM locaria_core.dispatchers_alive WHERE heartbeat_at > %s",
                                   [fault.at])
                if int(alive) >= expected_workers:
                    fault.seconds = [(datetime.now(UTC) - fault.at).total_seconds()]
                    return
            except psycopg.Error:
                pass  # the database is still coming back
            time.sleep(0.2)
        fault.seconds = [float("inf")]

    threading.Thread(target=watch, daemon=True).start()


def takeover_seconds(conn: Any, fault: Fault) -> list[float | None]:
    """From the fault to what ends it: the hit jobs queued again, adopted or ended; the workers back.
    None for a job whose end was written before the signal reached its exiting process (nothing to take over)."""
    if fault.seconds is not None:
        return fault.seconds
    result: list[float | None] = []
    for job in fault.jobs:
        if one(conn, """SELECT count(*) AS n FROM locaria_core.job_events WHERE job_id = %s AND at <= %s
                          AND event IN ('succeeded', 'failed', 'cancelled')""", [job, fault.at])["n"]:
            result.append(None)
            continue
        ended = one(conn, """SELECT min(at) AS at FROM locaria_core.job_events
                             WHERE job_id = %s AND at > %s
                               AND event IN ('queued', 'running', 'adopted', 'succeeded', 'failed', 'cancelled')""",
                    [job, fault.at])["at"]
        result.append((ended - fault.at).total_seconds() if ended else float("inf"))
    return result


def settle(conn: Any, expected: int, timeout: float, workers: Workers) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers.check()
        busy = scalar(conn, """SELECT count(*) FROM locaria_core.files f
                               WHERE NOT f.status = ANY (%s)
                                  OR EXISTS (SELECT 1 FROM locaria_core.jobs j WHERE j.file_id = f.id
                                              AND j.state IN ('queued', 'launching', 'running'))""", [list(FINAL)])
        total = scalar(conn, "SELECT count(*) FROM locaria_core.files")
        if busy == 0 and total >= expected:  # more: an add retried after an error had already created its row
            return
        time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default=os.environ.get("LOCARIA_BENCH_SIZE", "full"))
    parser.add_argument("--files", type=int, help="files to add (uploads, downloads and timed jobs)")
    parser.add_argument("--spread", type=float, help="seconds over which the files arrive")
    parser.add_argument("--fault-every", type=float, help="mean seconds between faults")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    files, spread, every = SIZES[args.size]
    files, spread, every = args.files or files, args.spread or spread, args.fault_every or every
    random.seed(args.seed)

    home = Path(tempfile.mkdtemp(prefix="locaria-chaos-"))
    home.chmod(0o755)
    os.environ["LOCARIA_HOME"] = str(home)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO),
                                                             os.environ.get("PYTHONPATH")]))
    for name in ("LOCARIA_DB_URL", "LOCARIA_JOB_DB_URL"):
        os.environ.pop(name, None)
    reset_settings()
    temp_before = {p.name for p in Path(tempfile.gettempdir()).iterdir()}
    cluster = EmbeddedCluster(home)
    owner_url = cluster.up()
    workers: Workers | None = None
    stopped: list[int] = []
    try:
        with connect(owner_url, autocommit=True) as owner:
            migrate(owner)
            specs = dockers.load(REPO / "docker" / "dockers.json")
            specs["chaos"] = dockers.DockerSpec.from_entry("chaos", dict(CHAOS_DOCKER))
            dockers.sync(owner, specs)
            owner.execute("CREATE TABLE public.chaos_overlaps (file_id bigint, job_id bigint, attempt int, "
                          "at timestamptz DEFAULT clock_timestamp())")
            owner.execute("GRANT INSERT ON public.chaos_overlaps TO locaria_job")
            owner.execute("CREATE TABLE locaria_uploads.chaos_source AS SELECT g AS ogc_fid, 'row ' || g AS name, "
                          "ST_SetSRID(ST_MakePoint(g % 360 - 180, g % 170 - 85), 4326) AS wkb_geometry "
                          "FROM generate_series(1, 2000) g")
            owner.execute("GRANT SELECT ON locaria_uploads.chaos_source TO locaria_job")
        sources = []
        for rows in (5, 200, 2000):
            path = home / f"points-{rows}.csv"
            path.write_text("name,lon,lat\n" + "".join(f"p{i},{i % 360 - 180},{i % 170 - 85}\n"
                                                        for i in range(rows)))
            sources.append(path)
        env = {**os.environ, "LOCARIA_DB_URL": cluster.url(DISPATCHER) or "", "LOCARIA_JOB_DB_URL": cluster.url(JOB)
               or ""}
        (home / "worker-logs").mkdir()
        workers = Workers(env, home / "worker-logs")
        conn = connect(owner_url, autocommit=True)
        storage = open_storage()
        done_adding = threading.Event()

        def add_one(kind: float) -> None:
            with connect(owner_url, autocommit=True) as writer:
                if kind < 0.4:
                    register_upload(writer, storage, random.choice(sources))
                elif kind < 0.6:
                    request_download(writer, {"format": random.choice(["csv", "geojson", "gpkg"]),
                                              "table": "chaos_source", "name": "chaos"})
                else:
                    writer.execute("SELECT locaria_core.add_file(%s)", [Jsonb(
                        {"status": "CHAOS", "file_attributes": {"seconds": random.uniform(0.1, 6)}})])

        def produce() -> None:
            for _ in range(files):
                time.sleep(random.expovariate(files / spread))
                kind = random.random()
                for _attempt in range(120):  # the database may be restarting: a user would try again
                    try:
                        add_one(kind)
                        break
                    except psycopg.OperationalError:
                        time.sleep(0.5)
            done_adding.set()

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        faults: list[Fault] = []
        kinds = list(FAULTS)
        while not done_adding.is_set():
            time.sleep(random.expovariate(1 / every))
            workers.check()
            kind = kinds.pop(0) if kinds else random.choice(FAULTS)  # every kind at least once
            try:
                fault = inject(kind, conn, cluster, workers, stopped)
            except Exception as exc:  # our own connection dropped with the restart: reconnect and go on
                print(f"  (fault {kind} not injected: {type(exc).__name__})", file=sys.stderr)
                conn = connect(owner_url, autocommit=True)
                continue
            if fault is not None:
                faults.append(fault)
                if kind in ("PostgreSQL restart", "connections cut"):
                    watch_workers_back(owner_url, fault, len(workers.processes))
                if kind == "PostgreSQL restart":
                    conn = connect(owner_url, autocommit=True)
        producer.join()
        settle(conn, files, timeout=900, workers=workers)
        takeovers: dict[str, list[float | None]] = defaultdict(list)
        for fault in faults:
            takeovers[fault.kind] += takeover_seconds(conn, fault)
        report(conn, files, faults, takeovers, workers, home, temp_before)
        return 0 if clean(conn, files, workers, home, temp_before) else 1
    finally:
        for pid in stopped:
            for sig in (signal.SIGKILL, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        if workers is not None:
            workers.stop()
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)


def zero_figures(conn: Any, files: int, workers: Workers, home: Path, temp_before: set[str]) -> dict[str, int]:
    leftovers = [p for p in Path(tempfile.gettempdir()).iterdir()
                 if p.name not in temp_before and p.name.startswith(("locaria", "tmp")) and p.is_dir()]
    work = home / "work"
    never_queued = int(scalar(conn, "SELECT count(*) FROM locaria_core.files f WHERE NOT EXISTS "
                                    "(SELECT 1 FROM locaria_core.jobs j WHERE j.file_id = f.id)"))
    return {
        "files lost": max(0, files - int(scalar(conn, "SELECT count(*) FROM locaria_core.files"))) + never_queued,
        "attempts run at the same time": int(scalar(conn, "SELECT count(*) FROM public.chaos_overlaps")),
        "attempts above the maximum": int(scalar(conn, "SELECT count(*) FROM locaria_core.jobs "
                                                       "WHERE attempt > max_attempts")),
        "left in a running status": int(scalar(conn, "SELECT count(*) FROM locaria_core.files WHERE status IN "
                                                     "('FARGATE_PROCESSING', 'DOWNLOAD_PROCESSING', 'CHAOS_RUNNING', "
                                                     "'UPLOADING', 'REGISTERED', 'DOWNLOAD_REQUESTED', 'CHAOS')"))
        + int(scalar(conn, "SELECT count(*) FROM locaria_core.jobs WHERE state IN ('launching', 'running')")),
        "temporary folders left": len(leftovers) + (len(list(work.iterdir())) if work.exists() else 0),
        "pid files left": len(list((home / "logs").glob("*.pid"))) if (home / "logs").exists() else 0,
        "workers that exited on their own": len(workers.exited_on_their_own),
    }


def clean(conn: Any, files: int, workers: Workers, home: Path, temp_before: set[str]) -> bool:
    return not any(zero_figures(conn, files, workers, home, temp_before).values())


def report(conn: Any, files: int, faults: list[Fault], takeovers: dict[str, list[float | None]], workers: Workers,
           home: Path, temp_before: set[str]) -> None:
    statuses = Counter(row["status"] for row in conn.execute("SELECT status FROM locaria_core.files"))
    kinds = ", ".join(f"{n} {k}" for k, n in Counter(f.kind for f in faults).items())
    print(f"\n{files} files, {len(faults)} faults ({kinds})")
    print("\nfinal status            files")
    for status, count in sorted(statuses.items()):
        print(f"  {status:<22}{count:>6}")
    failed = conn.execute("SELECT id, status, attributes->>'error' AS error FROM locaria_core.files "
                          "WHERE status IN ('ERROR', 'DOWNLOAD_ERROR') ORDER BY id LIMIT 10").fetchall()
    for row in failed:  # attempts used up by faults are expected; anything else is worth a look
        print(f"    file {row['id']} {row['status']}: {row['error']}")
    print("\nmust be zero                         found")
    for name, count in zero_figures(conn, files, workers, home, temp_before).items():
        print(f"  {name:<34}{count:>6}")
    print("\ntakeover (s)              faults     p50     p99   (target p99 <= 30)")
    late = 0
    for kind in FAULTS:
        measured = takeovers.get(kind) or []
        values = [v for v in measured if v is not None]
        late += len(measured) - len(values)
        if values:
            each = "   " + " ".join(f"{v:.1f}" for v in sorted(values)) if len(values) <= 12 else ""
            print(f"  {kind:<22}{len(values):>8}{percentile(values, 0.5):>8.1f}{percentile(values, 0.99):>8.1f}{each}")
    if late:
        print(f"  (and {late} signal(s) that reached a job after it had written its end: nothing to take over)")
    if workers.exited_on_their_own:
        print("\nworkers that exited on their own: " + "; ".join(workers.exited_on_their_own))


if __name__ == "__main__":
    sys.exit(main())
