"""What every benchmark needs: a database (LOCARIA_DB_URL, or a throw-away embedded cluster), and
one way to time a command: wall time and the process's own peak RSS."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locaria_batch.db import connect, dockers
from locaria_batch.db.cluster import EmbeddedCluster
from locaria_batch.db.credentials import JOB
from locaria_batch.db.migrate import migrate
from locaria_batch.settings import reset as reset_settings

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def benchmark_database(extra_dockers: dict[str, dict[str, object]] | None = None) -> Iterator[str]:
    """Yield a migrated database URL with the repo's dockers (plus extra ones) synced."""
    home = None
    url = os.environ.get("LOCARIA_DB_URL")
    cluster = None
    if not url:
        home = Path(tempfile.mkdtemp(prefix="locaria-bench-"))
        home.chmod(0o755)  # as root the cluster runs as the postgres user, who must reach it
        os.environ.setdefault("LOCARIA_PG_OPTIONS", "-c fsync=off -c full_page_writes=off")
        cluster = EmbeddedCluster(home)
        url = cluster.up()
    try:
        with connect(url, autocommit=True) as conn:
            migrate(conn)
            specs = dockers.load(REPO / "docker" / "dockers.json")
            for name, entry in (extra_dockers or {}).items():
                specs[name] = dockers.DockerSpec.from_entry(name, dict(entry))
            dockers.sync(conn, specs)
        os.environ["LOCARIA_DB_URL"] = url
        if cluster is not None:  # jobs get the cluster's job login, as they would from `db up`
            os.environ["LOCARIA_JOB_DB_URL"] = cluster.url(JOB) or ""
        reset_settings()  # what was read before these were set (starting the cluster reads settings)
        yield url
    finally:
        if cluster is not None and home is not None:
            cluster.destroy()
            shutil.rmtree(home, ignore_errors=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Timing:
    seconds: float  # wall time; for a command that does the handshake, from "go" to "done"
    peak_mb: float  # the process's own high-water RSS, or its children's and its own together if higher
    startup: float | None = None  # for a handshaking command: interpreter start-up and imports, not in seconds


class CommandFailed(RuntimeError):
    pass


def peak_rss_mb(pid: int) -> float:
    """The process's high-water RSS (VmHWM); 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mb(pid: int) -> float:
    """The RSS of a process and of its children, theirs included (a loader's helper process counts)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/status") as status:
            total = next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")), 0.0)
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                total += sum(tree_rss_mb(int(child)) for child in children.read().split())
    except OSError:
        pass
    return total


def timed(argv: list[str], env: dict[str, str] | None = None, ready_handshake: bool = False) -> Timing:
    """Run a command; its wall time and peak RSS, polled from /proc (rusage would report the memory of
    the benchmark that forked it, which may hold the generated data).  With ready_handshake (the
    command calls wait_for_go() and work_done()) the clock starts once the process has imported its
    modules and stops once its work is done, so interpreter start-up and shut-down are reported apart:
    a job pays them once per attempt, whatever the file.  Dirty pages of earlier runs are flushed
    first, so that writing them back is not billed to this one."""
    os.sync()
    launched = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE if ready_handshake else None,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    startup = None
    if ready_handshake:
        assert process.stdin is not None
        process.stdout.readline()
        startup = time.monotonic() - launched
        process.stdin.write(b"go\n")
        process.stdin.flush()
    started = time.monotonic()
    peak = 0.0
    seconds = None
    if ready_handshake:  # the clock stops when the work is done, not when the interpreter has shut down
        watcher = threading.Thread(target=process.stdout.readline, daemon=True)
        watcher.start()
        while watcher.is_alive() and process.poll() is None:
            peak = max(peak, peak_rss_mb(process.pid), tree_rss_mb(process.pid))
            watcher.join(timeout=0.02)
        seconds = time.monotonic() - started
    while process.poll() is None:
        peak = max(peak, peak_rss_mb(process.pid), tree_rss_mb(process.pid))
        time.sleep(0.02)
    seconds = seconds if seconds is not None else time.monotonic() - started
    if process.returncode != 0:
        stderr = process.stderr.read().decode(errors="replace").strip()
        last = stderr.splitlines()[-1] if stderr else f"exit code {process.returncode}"
        raise CommandFailed(f"{Path(argv[0]).name} failed: {last[:200]}")
    return Timing(seconds, peak, startup)


def wait_for_go() -> None:
    """In a handshaking command: say the modules are imported, and wait for the clock to start."""
    print("ready", flush=True)
    sys.stdin.readline()


def work_done() -> None:
    print("done", flush=True)


def best_of(repeat: int, run: Callable[..., Timing], *args: Any, **kwargs: Any) -> Timing:
    """The fastest of `repeat` calls of run(*args, **kwargs), with the highest peak RSS: on a shared
    machine the fastest run is the one least disturbed by its neighbours."""
    runs = [run(*args, **kwargs) for _ in range(max(repeat, 1))]
    fastest = min(runs, key=lambda r: r.seconds)
    return Timing(fastest.seconds, max(r.peak_mb for r in runs), fastest.startup)


def add_repeat_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=int, default=1, help="run each command this many times and keep the "
                        "fastest (default 1)")


def loader_fence(conn: Any, name: str) -> Any:
    """A file row and a running file_loader job for it: what a load through the Python API publishes under."""
    import uuid

    from psycopg.types.json import Jsonb

    from locaria_batch.jobs.file_loader.publish import Fence

    file_id = conn.execute("INSERT INTO locaria_core.files (status, attributes) VALUES ('FARGATE_PROCESSING', %s) "
                           "RETURNING id", [Jsonb({"name": name, "upload": True})]).fetchone()["id"]
    row = conn.execute("INSERT INTO locaria_core.jobs (file_id, docker, trigger_status, max_attempts, state, attempt, "
                       "attempt_token) VALUES (%s, 'file_loader', 'REGISTERED', 1, 'running', 1, %s) "
                       "RETURNING id, attempt, attempt_token", [file_id, uuid.uuid4()]).fetchone()
    return Fence(int(row["id"]), int(row["attempt"]), str(row["attempt_token"]))
