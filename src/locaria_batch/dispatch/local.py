"""The `local` runner: each attempt is a process on this machine.

Attempts are forked by a fork server of our own (`forkserver.py`): a warm process that has
imported the job SDK, psycopg and the light built-in handlers, and nothing of the command line.  A
docker that declares its own `command` is forked and exec'd by the same server.  Either way each
attempt gets a process and a session of its own, its log, the dispatcher's environment of the
moment plus the job's, and a work directory of its own under $LOCARIA_HOME/work (LOCARIA_WORK_DIR: temporary files,
unpacked archives, the pid file that adoption reads), removed when the attempt ends however it ends.

The server reports every exit with its code; `wakeup_fds()` is readable when one is waiting (and,
through a pidfd, when an adopted process ends), so the dispatcher reconciles without polling.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locaria_batch.dispatch.forkserver import MAX_MESSAGE, process_start_time
from locaria_batch.dispatch.handles import ProcessHandle
from locaria_batch.dispatch.runner import LaunchError, LaunchRequest, RunStatus, child_environment

__all__ = ["LocalRunner", "process_start_time"]

# built-in handlers the fork server imports before its first fork; the loader's (Arrow, NumPy: 56 MB) is left
# to the keepers that run loads, as every other handler is: see forkserver.py
LIGHT_HANDLERS = ("locaria_batch.jobs.file_download", "locaria_batch.jobs.file_import", "locaria_batch.storage.local")


MAX_KEPT = 8  # keepers kept open however many jobs a worker runs at once: each idle one holds a server process


def keepers_for(concurrency: int) -> int:
    """How many keepers (a connection each) a worker keeps open: one per job it may run, up to MAX_KEPT,
    so that a burst of jobs finds its sessions ready."""
    return max(1, min(concurrency, MAX_KEPT))


class ForkServerGone(LaunchError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"the job fork server stopped ({detail}); it is restarted for the next launch",
                         requeue=True, delay=1.0)


@dataclass
class _Started:
    pid: int
    start_time: int | None


class ForkServer:
    """The dispatcher's side of the fork server: start it, send launches, collect replies and exits."""

    def __init__(self, python: str, preload: tuple[str, ...], pool_size: int = 0) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.channel = ours
        # its own session: a Ctrl-C at the terminal goes to the worker, which decides what jobs get
        self.process = subprocess.Popen(
            [python, "-m", "locaria_batch.dispatch.forkserver", str(theirs.fileno()), str(pool_size), *preload],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True,
            env=child_environment({}))  # never the dispatcher's credentials, even in its parent
        theirs.close()
        self.lock = threading.Lock()
        self.exits: dict[int, int | None] = {}  # pid -> exit code (None: lost), reported but not yet taken
        self.seq = 0
        ready = self._receive(timeout=120)
        if ready.get("op") != "ready":
            raise ForkServerGone(f"unexpected greeting {ready}")

    def fileno(self) -> int:
        return self.channel.fileno()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _receive(self, timeout: float | None) -> dict[str, Any]:
        if timeout is not None:
            ready, _, _ = select.select([self.channel], [], [], timeout)
            if not ready:
                return {}
        data = self.channel.recv(MAX_MESSAGE)
        if not data:
            raise ForkServerGone("it closed its socket")
        message: dict[str, Any] = json.loads(data)
        if message.get("op") == "exited":
            code = message["code"]
            self.exits[int(message["pid"])] = None if code is None else int(code)
        return message

    def drain(self) -> None:
        """Take whatever the server has sent (exits) without waiting."""
        with self.lock:
            while self._receive(timeout=0):
                pass

    def launch_many(self, requests: list[dict[str, Any]]) -> list[_Started | str]:
        """Send every request, then collect the replies: the launches of a claim are forked while
        the dispatcher is still sending the next ones."""
        with self.lock:
            seqs = []
            for request in requests:
                self.seq += 1
                seqs.append(self.seq)
                try:
                    self.channel.send(json.dumps({**request, "seq": self.seq}).encode())
                except OSError as exc:
                    raise ForkServerGone(str(exc)) from exc
            replies: dict[int, _Started | str] = {}
            while len(replies) < len(seqs):
                message = self._receive(timeout=60)
                if not message:
                    raise ForkServerGone("no answer in 60 s")
                if message.get("op") == "started":
                    replies[int(message["seq"])] = _Started(int(message["pid"]), message.get("start_time"))
                elif message.get("op") == "failed":
                    replies[int(message["seq"])] = str(message["error"])
            return [replies[seq] for seq in seqs]

    def take_exit(self, pid: int) -> None:
        self.exits.pop(pid, None)

    def close(self) -> None:
        self.channel.close()  # the server exits on EOF; its running jobs carry on
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


class LocalRunner:
    name = "local"
    needs_job_credentials = True

    def __init__(self, logs_dir: Path, *, python: str = sys.executable, stop_grace: float = 10.0,
                 cwd: Path | None = None, work_root: Path | None = None,
                 preload: tuple[str, ...] = LIGHT_HANDLERS, pool_size: int = 2) -> None:
        self.logs_dir = logs_dir
        self.work_root = work_root or logs_dir.parent / "work"
        self.python = python
        self.stop_grace = stop_grace
        self.cwd = cwd
        self.preload = preload
        self.pool_size = pool_size  # keepers (each with a connection open) kept for attempts, busy or idle
        self._server: ForkServer | None = None
        self._ours: set[int] = set()  # pids the fork server started for this runner (it reports their exits)
        self._watched: dict[int, ProcessHandle] = {}  # attempts followed until they end
        self._pidfds: dict[int, int] = {}  # adopted pid -> pidfd (readable once it ends)
        self._kill_at: dict[int, tuple[float, ProcessHandle]] = {}  # stopped, to be killed if still alive

    # -- paths --------------------------------------------------------------------------
    def _log_path(self, job_id: int, attempt: int) -> Path:
        return self.logs_dir / f"job-{job_id}-attempt-{attempt}.log"

    def work_dir(self, job_id: int, attempt: int) -> Path:
        return self.work_root / f"job-{job_id}-attempt-{attempt}"

    def handle(self, stored: dict[str, Any]) -> ProcessHandle:
        return ProcessHandle.from_json(stored)

    # -- launch -------------------------------------------------------------------------
    @property
    def server(self) -> ForkServer:
        if self._server is None or not self._server.alive:
            if self._server is not None:
                self._server.close()
            self._server = ForkServer(self.python, self.preload, self.pool_size)
        return self._server

    def launch(self, request: LaunchRequest) -> ProcessHandle:
        [result] = self.launch_many([request])
        if isinstance(result, LaunchError):
            raise result
        return result

    def launch_many(self, requests: list[LaunchRequest]) -> list[ProcessHandle | LaunchError]:
        """Launch every request without waiting for each in turn."""
        if not requests:
            return []
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        messages: list[dict[str, Any]] = []
        prepared: list[LaunchRequest | LaunchError] = []
        for request in requests:
            work = self.work_dir(request.job_id, request.attempt)
            try:
                work.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                prepared.append(LaunchError(f"could not create the work directory {work}: {exc}"))
                continue
            env = {**child_environment(request.env), "LOCARIA_WORK_DIR": str(work), "TMPDIR": str(work)}
            command = request.docker.command
            argv = [self.python if part == "{python}" else part for part in command] if command else None
            messages.append({"env": env, "argv": argv, "docker": request.docker_name,
                             "handler": request.docker.handler, "log": str(self._log_path(request.job_id,
                                                                                           request.attempt)),
                             "pid_file": str(work / "pid"), "cwd": str(self.cwd) if self.cwd else None})
            prepared.append(request)
        try:
            server = self.server
            replies = iter(server.launch_many(messages))
        except LaunchError as exc:
            self._server = None
            return [exc for _ in requests]
        results: list[ProcessHandle | LaunchError] = []
        for item in prepared:
            if isinstance(item, LaunchError):
                results.append(item)
                continue
            reply = next(replies)
            work = self.work_dir(item.job_id, item.attempt)
            if isinstance(reply, str):
                shutil.rmtree(work, ignore_errors=True)
                results.append(LaunchError(f"could not start {item.docker_name}: {reply}"))
                continue
            server.exits.pop(reply.pid, None)  # an earlier process's, whose pid the kernel reused
            self._ours.add(reply.pid)
            handle = ProcessHandle(reply.pid, reply.start_time, str(self._log_path(item.job_id, item.attempt)),
                                   item.job_id, item.attempt, work_dir=str(work))
            self._watched[reply.pid] = handle
            results.append(handle)
        return results

    # -- watching -----------------------------------------------------------------------
    def wakeup_fds(self) -> list[int]:
        """Readable when an attempt this runner watches may have ended."""
        fds = list(self._pidfds.values())
        if self._server is not None and self._server.alive:
            fds.append(self._server.fileno())
        return fds

    def watch(self, handle: ProcessHandle) -> None:
        """Follow an attempt until it ends (for one this runner did not start, through a pidfd)."""
        if handle.pid in self._watched:
            return
        self._watched[handle.pid] = handle
        if handle.pid not in self._ours and self._alive(handle):
            with contextlib.suppress(OSError):
                self._pidfds[handle.pid] = os.pidfd_open(handle.pid)

    def _alive(self, handle: ProcessHandle) -> bool:
        start = process_start_time(handle.pid)
        return start is not None and (handle.start_time is None or start == handle.start_time)

    def _reported(self, pid: int) -> bool:
        """Whether the fork server has reported the end of this attempt it started."""
        return self._server is not None and pid in self._ours and pid in self._server.exits

    def _drain(self) -> None:
        """Read what the fork server has reported (exit codes) without waiting."""
        if self._server is not None:
            with contextlib.suppress(LaunchError):
                self._server.drain()

    def _over(self, handle: ProcessHandle) -> bool:
        """Whether the attempt has ended as far as we can know: our children when the server has
        reported their exit code (or has gone itself), others when their process has gone."""
        if handle.pid in self._ours and self._server is not None and self._server.alive:
            return self._reported(handle.pid)
        return not self._alive(handle)

    def ended(self) -> list[ProcessHandle]:
        """Watched attempts that have ended since the last call (status() says how); their work
        directories are removed at once."""
        self._drain()
        done = []
        for pid, handle in list(self._watched.items()):
            if self._over(handle):
                del self._watched[pid]
                fd = self._pidfds.pop(pid, None)
                if fd is not None:
                    os.close(fd)
                self._remove_work_dir(handle)
                done.append(handle)
        self._kill_overdue()
        return done

    def status(self, handles: list[ProcessHandle]) -> list[RunStatus]:
        self._drain()
        server_alive = self._server is not None and self._server.alive
        result = []
        for handle in handles:
            if self._reported(handle.pid):
                code = self._server.exits[handle.pid] if self._server is not None else None
                result.append(RunStatus("exited", code) if code is not None else RunStatus(
                    "missing", None, "the process ended and its exit code was lost with the process that forked it"))
            elif (handle.pid in self._ours and server_alive) or self._alive(handle):
                result.append(RunStatus("running"))  # (one of ours that ended: its report is on its way)
            elif handle.pid in self._ours:
                result.append(RunStatus("missing", None, "the process ended and its exit code was lost"))
            else:
                # not our child (we adopted it): it has gone, and nobody can tell its exit code
                result.append(RunStatus("missing", None, "the process ended while no dispatcher was watching it"))
        return result

    def find(self, job_id: int, attempt: int) -> ProcessHandle | None:
        work = self.work_dir(job_id, attempt)
        try:
            pid_text, start_text = (work / "pid").read_text().split()
        except (OSError, ValueError):
            return None
        handle = ProcessHandle(int(pid_text), None if start_text == "None" else int(start_text),
                               str(self._log_path(job_id, attempt)), job_id, attempt, adopted=True,
                               work_dir=str(work))
        return handle if self._alive(handle) else None

    # -- stopping -----------------------------------------------------------------------
    def stop(self, handle: ProcessHandle, reason: str) -> None:
        """SIGTERM to the attempt's process group (with SIGCONT: a stopped process must wake to
        die), then SIGKILL after the grace period unless it has ended.  Returns at once."""
        if not self._alive(handle):
            return
        try:
            os.killpg(handle.pid, signal.SIGTERM)
            os.killpg(handle.pid, signal.SIGCONT)
        except ProcessLookupError:
            return
        self._kill_at.setdefault(handle.pid, (time.monotonic() + self.stop_grace, handle))
        self.watch(handle)

    def kill(self, handle: ProcessHandle) -> None:
        """SIGKILL the attempt's process group: a hung process (stopped, or stuck in a C call) cannot
        be asked to end."""
        if self._alive(handle):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(handle.pid, signal.SIGKILL)
        self.watch(handle)

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for pid, (deadline, handle) in list(self._kill_at.items()):
            if not self._alive(handle):
                del self._kill_at[pid]
            elif now >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                del self._kill_at[pid]

    def next_deadline(self) -> float | None:
        """Seconds until a stopped attempt is due its SIGKILL (the dispatcher wakes for it)."""
        if not self._kill_at:
            return None
        return max(0.0, min(deadline for deadline, _ in self._kill_at.values()) - time.monotonic())

    def stop_now(self, handles: list[ProcessHandle], grace: float) -> None:
        """Stop these attempts and return once they have ended, their exit codes known for ended()
        (at most `grace` after SIGTERM, then SIGKILL)."""
        for handle in handles:
            self.stop(handle, "the worker is stopping")
        if not self._wait_over(handles, grace):
            for handle in handles:
                if self._alive(handle):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(handle.pid, signal.SIGKILL)
            self._wait_over(handles, 2.0)  # SIGKILL is not instant either

    def _wait_over(self, handles: list[ProcessHandle], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            self._drain()
            if all(self._over(handle) for handle in handles):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def cleanup(self, handle: ProcessHandle) -> None:
        """The attempt is over for the dispatcher: forget its exit code and remove its work directory
        (with its pid file), now if the process has gone, else as soon as it ends."""
        if self._alive(handle):
            self.watch(handle)
            return
        self._watched.pop(handle.pid, None)
        self._ours.discard(handle.pid)
        if self._server is not None:
            self._server.take_exit(handle.pid)
        fd = self._pidfds.pop(handle.pid, None)
        if fd is not None:
            os.close(fd)
        self._remove_work_dir(handle)

    def _remove_work_dir(self, handle: ProcessHandle) -> None:
        work = handle.work_dir or (str(self.work_dir(handle.job_id, handle.attempt))
                                   if handle.job_id is not None and handle.attempt is not None else None)
        if work:
            shutil.rmtree(work, ignore_errors=True)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for fd in self._pidfds.values():
            os.close(fd)
        self._pidfds.clear()
