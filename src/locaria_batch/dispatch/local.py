"""The `local` runner: each attempt is a process on this machine.

Jobs with the default entrypoint are forked from a fork server that has already imported the
job SDK and psycopg (a fresh interpreter spends ~0.4 s of CPU on imports alone); a docker that
declares its own `command` runs it as a subprocess.  Either way the attempt writes a pid file,
so a dispatcher that adopts it later can find it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from locaria_batch.dispatch.handles import ProcessHandle
from locaria_batch.dispatch.runner import LaunchError, LaunchRequest, RunStatus, child_environment


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of pid (clock ticks since boot): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has ended
        return None
    return int(fields[19])


def exit_code_of(returncode: int) -> int:
    """Python reports -N for a signal; report it as a shell would (128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def _forked_job(docker: str, env: dict[str, str], log_path: str) -> None:
    """Entry point of a forked attempt: its own session, its own log, its job environment."""
    os.setsid()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    # the fork server started with the environment of its first launch: use this launch's instead
    os.environ.clear()
    os.environ.update(env)
    from locaria_batch.job import main
    from locaria_batch.settings import reset as reset_settings

    reset_settings()
    code = main([docker])
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


_fork_server: ForkServerContext | None = None


def fork_server() -> ForkServerContext:
    global _fork_server
    if _fork_server is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["locaria_batch.job", "locaria_batch.dispatch.local"])
        _fork_server = context
    return _fork_server


class LocalRunner:
    name = "local"
    needs_job_credentials = True

    def __init__(self, logs_dir: Path, *, python: str = sys.executable, stop_grace: float = 10.0,
                 cwd: Path | None = None) -> None:
        self.logs_dir = logs_dir
        self.python = python
        self.stop_grace = stop_grace
        self.cwd = cwd
        self._children: dict[int, BaseProcess | subprocess.Popen[bytes]] = {}
        self._exit_codes: dict[int, int] = {}  # reaped children whose status nobody asked for yet
        self._pid_files: dict[int, Path] = {}

    def _paths(self, job_id: int, attempt: int) -> tuple[Path, Path]:
        stem = self.logs_dir / f"job-{job_id}-attempt-{attempt}"
        return stem.with_suffix(".log"), stem.with_suffix(".pid")

    def handle(self, stored: dict[str, Any]) -> ProcessHandle:
        return ProcessHandle.from_json(stored)

    def launch(self, request: LaunchRequest) -> ProcessHandle:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path, pid_path = self._paths(request.job_id, request.attempt)
        try:
            if request.docker.command:
                pid = self._spawn(request, log_path)
            else:
                environment = child_environment(request.env)
                process = fork_server().Process(target=_forked_job, args=(request.docker_name, environment,
                                                                           str(log_path)), daemon=False)
                process.start()
                pid = int(process.pid or 0)
                self._children[pid] = process
        except OSError as exc:
            raise LaunchError(f"could not start {request.docker_name}: {exc}") from exc
        handle = ProcessHandle(pid, process_start_time(pid), str(log_path), request.job_id, request.attempt)
        pid_path.write_text(f"{pid} {handle.start_time}\n")
        self._pid_files[pid] = pid_path
        return handle

    def _spawn(self, request: LaunchRequest, log_path: Path) -> int:
        argv = [self.python if part == "{python}" else part for part in request.docker.command or []]
        with log_path.open("ab") as log:
            child = subprocess.Popen(argv, env=child_environment(request.env), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.cwd)
        self._children[child.pid] = child
        return child.pid

    def _reap(self) -> None:
        for pid, child in list(self._children.items()):
            code = child.poll() if isinstance(child, subprocess.Popen) else child.exitcode
            if code is not None:
                self._exit_codes[pid] = exit_code_of(code)
                del self._children[pid]
                pid_file = self._pid_files.pop(pid, None)
                if pid_file is not None:
                    pid_file.unlink(missing_ok=True)
        while len(self._exit_codes) > 10_000:  # jobs that reported their own verdict are never asked about
            del self._exit_codes[next(iter(self._exit_codes))]

    def _alive(self, handle: ProcessHandle) -> bool:
        start = process_start_time(handle.pid)
        return start is not None and (handle.start_time is None or start == handle.start_time)

    def status(self, handles: list[ProcessHandle]) -> list[RunStatus]:
        self._reap()
        result = []
        for handle in handles:
            pid = handle.pid
            if pid in self._exit_codes:
                result.append(RunStatus("exited", self._exit_codes[pid]))
            elif pid in self._children or self._alive(handle):
                result.append(RunStatus("running"))
            else:
                # not our child (we adopted it): it has gone, and nobody can tell its exit code
                result.append(RunStatus("missing", None, "the process ended while no dispatcher was watching it"))
        return result

    def find(self, job_id: int, attempt: int) -> ProcessHandle | None:
        log_path, pid_path = self._paths(job_id, attempt)
        try:
            pid_text, start_text = pid_path.read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        handle = ProcessHandle(int(pid_text), None if start_text == "None" else int(start_text), str(log_path),
                               job_id, attempt, adopted=True)
        return handle if self._alive(handle) else None

    def stop(self, handle: ProcessHandle, reason: str) -> None:
        pid = handle.pid
        if not self._alive(handle):
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.stop_grace
        while time.monotonic() < deadline:
            self._reap()
            if pid in self._exit_codes or not self._alive(handle):
                return
            time.sleep(0.05)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        while pid in self._children and time.monotonic() < deadline + 5:
            self._reap()
            time.sleep(0.02)

    def cleanup(self, handle: ProcessHandle) -> None:
        self._exit_codes.pop(handle.pid, None)
