"""The `local` runner: each attempt is a subprocess on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from locaria_batch.dispatch.runner import Handle, LaunchError, LaunchRequest, RunStatus


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
    """Popen gives -N for a signal; report it as a shell would (128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


class LocalRunner:
    name = "local"

    def __init__(self, logs_dir: Path, *, python: str = sys.executable, stop_grace: float = 10.0,
                 cwd: Path | None = None) -> None:
        self.logs_dir = logs_dir
        self.python = python
        self.stop_grace = stop_grace
        self.cwd = cwd
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def command(self, request: LaunchRequest) -> list[str]:
        declared = request.docker.get("command")
        if declared:
            return [self.python if part == "{python}" else part for part in declared]
        return [self.python, "-m", "locaria_batch.job", request.docker_name]

    def launch(self, request: LaunchRequest) -> Handle:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"job-{request.job_id}-attempt-{request.attempt}.log"
        try:
            with log_path.open("ab") as log:
                child = subprocess.Popen(
                    self.command(request), env={**os.environ, **request.env}, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.cwd,
                )
        except OSError as exc:
            raise LaunchError(f"could not start {request.docker_name}: {exc}") from exc
        self._children[child.pid] = child
        return {"pid": child.pid, "start_time": process_start_time(child.pid), "log": str(log_path),
                "job_id": request.job_id, "attempt": request.attempt}

    def _alive(self, handle: Handle) -> bool:
        start = process_start_time(int(handle["pid"]))
        return start is not None and (handle.get("start_time") is None or start == handle["start_time"])

    def status(self, handles: list[Handle]) -> list[RunStatus]:
        result = []
        for handle in handles:
            child = self._children.get(int(handle["pid"]))
            if child is not None:
                code = child.poll()
                if code is None:
                    result.append(RunStatus("running"))
                else:
                    self._children.pop(child.pid, None)
                    result.append(RunStatus("exited", exit_code_of(code)))
            elif self._alive(handle):
                result.append(RunStatus("running"))
            else:
                # not our child (we adopted it): it has gone, and nobody can tell its exit code
                result.append(RunStatus("missing", None, "the process ended while no dispatcher was watching it"))
        return result

    def find(self, job_id: int, attempt: int) -> Handle | None:
        wanted = {f"LOCARIA_JOB_ID={job_id}".encode(), f"LOCARIA_JOB_ATTEMPT={attempt}".encode()}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                environ = set((proc / "environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if wanted <= environ:
                pid = int(proc.name)
                return {"pid": pid, "start_time": process_start_time(pid), "job_id": job_id, "attempt": attempt,
                        "adopted": True}
        return None

    def stop(self, handle: Handle, reason: str) -> None:
        pid = int(handle["pid"])
        if not self._alive(handle):
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.stop_grace
        while time.monotonic() < deadline:
            child = self._children.get(pid)
            if (child.poll() is not None) if child is not None else not self._alive(handle):
                return
            time.sleep(0.05)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        child = self._children.get(pid)
        if child is not None:
            child.wait(timeout=5)

    def cleanup(self, handle: Handle) -> None:
        self._children.pop(int(handle["pid"]), None)
