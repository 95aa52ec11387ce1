"""The local runner's fork server: a warm process that forks job attempts directly.

    python -m locaria_batch.dispatch.forkserver FD [MODULE ...]

It imports the job SDK, psycopg and the given handler modules once, then serves requests on the
SEQPACKET socket FD: each `launch` forks a child that starts a session of its own, points its
output at the attempt's log, takes the launch's environment and runs the job (or execs a docker's
`command`).  A forked child costs about a millisecond; a fresh interpreter spends hundreds on
imports.  The server reaps its children on SIGCHLD and reports each exit code back, so the
dispatcher reconciles when a job ends instead of polling.  When the dispatcher goes away (EOF),
the server exits at once and the running jobs carry on, to be adopted.

Nothing of the command line is imported here: a job must not pay for typer or rich.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

import psycopg  # noqa: F401  (warm: every job connects)

import locaria_batch.job
import locaria_batch.job.run  # noqa: F401

MAX_MESSAGE = 1 << 20  # a launch carries the job's whole environment


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of pid (clock ticks since boot): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # a zombie has ended
        return None
    return int(fields[19])


def exit_code_of(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def preload(modules: list[str]) -> None:
    """Import handler modules before forking, so that no job pays for them (a module that fails to
    import is left for the job to report)."""
    for name in modules:
        if name and name not in sys.modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)


class Server:
    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_w, False)
        os.set_blocking(self.wakeup_r, False)

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd is written
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides; Ctrl-C reaches its group
        while True:
            ready, _, _ = select.select([self.channel.fileno(), self.wakeup_r], [], [])
            if self.wakeup_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wakeup_r, 4096)
            self.reap()
            if self.channel.fileno() in ready:
                data = self.channel.recv(MAX_MESSAGE)
                if not data:
                    return  # the dispatcher is gone: its jobs carry on without us
                self.handle(json.loads(data))

    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.channel.send(json.dumps(message).encode())

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.send({"op": "exited", "pid": pid, "code": exit_code_of(status)})

    def handle(self, request: dict[str, Any]) -> None:
        seq = request.get("seq")
        try:
            pid = self.launch(request)
        except OSError as exc:
            self.send({"op": "failed", "seq": seq, "error": f"{type(exc).__name__}: {exc}"})
            return
        start = process_start_time(pid)
        pid_file = request.get("pid_file")
        if pid_file:  # written before the dispatcher hears of it: adoption finds the attempt even then
            with contextlib.suppress(OSError):
                Path(pid_file).write_text(f"{pid} {start}\n")
        self.send({"op": "started", "seq": seq, "pid": pid, "start_time": start})

    def launch(self, request: dict[str, Any]) -> int:
        env: dict[str, str] = request["env"]
        argv: list[str] | None = request.get("argv")
        if argv:
            program = shutil.which(argv[0], path=env.get("PATH")) if "/" not in argv[0] else argv[0]
            if program is None or not os.access(program, os.X_OK):
                raise FileNotFoundError(f"{argv[0]!r} not found on PATH")
            argv = [program, *argv[1:]]
        else:
            preload([str(request.get("handler") or "").partition(":")[0]])
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            pid = os.fork()
        except OSError:
            os.close(log_fd)
            raise
        if pid == 0:  # the child never returns
            self.become_job(request, env, argv, log_fd)
        os.close(log_fd)
        return pid

    def become_job(self, request: dict[str, Any], env: dict[str, str], argv: list[str] | None, log_fd: int) -> None:
        code = 1
        try:
            os.setsid()
            for number in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
                signal.signal(number, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            null_fd = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null_fd, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            for fd in (null_fd, log_fd, self.wakeup_r, self.wakeup_w, self.channel.fileno()):
                os.close(fd)
            if request.get("cwd"):
                os.chdir(request["cwd"])
            if argv:
                os.execve(argv[0], argv, env)
            os.environ.clear()
            os.environ.update(env)
            from locaria_batch.job import main
            from locaria_batch.settings import reset as reset_settings

            reset_settings()
            code = main([request["docker"]])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def main(argv: list[str]) -> None:
    channel = socket.socket(fileno=int(argv[0]))
    preload(argv[1:])
    channel.send(b'{"op": "ready"}')
    Server(channel).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
