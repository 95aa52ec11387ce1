"""The local runner's fork server: a warm process that forks job attempts directly.

    python -m locaria_batch.dispatch.forkserver FD POOL [MODULE ...]

It imports the job SDK, psycopg and the given handler modules once, then serves requests on the
SEQPACKET socket FD: each `launch` forks a child that starts a session of its own, points its
output at the attempt's log, takes the launch's environment and runs the job (or execs a docker's
`command`).  A forked child costs a few milliseconds; a fresh interpreter spends hundreds on
imports.  To take the fork and the connection off a job's start, the server keeps POOL children
forked ahead, each with its database connection already open (to the URL the last launch's
environment named: the job's, never the dispatcher's), waiting for a job of their own; a launch
hands its request to one of them, and a new one is forked to take its place.

The server reaps its children on SIGCHLD and reports each exit code back, so the dispatcher
reconciles when a job ends instead of polling.  When the dispatcher goes away (EOF), the server
exits at once and the running jobs carry on, to be adopted.

Nothing of the command line is imported here: a job must not pay for typer or rich.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

import locaria_batch.job
import locaria_batch.job.run  # noqa: F401

MAX_MESSAGE = 1 << 20  # a launch carries the job's whole environment
REFILL_DELAY = 0.05  # seconds between handing a spare its job and forking the next one


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
    # what is loaded now lives as long as the server: the children's collector leaves it alone, so their
    # memory stays shared with ours instead of being copied page by page as the collector walks it
    gc.freeze()


def connection_key(env: dict[str, str]) -> tuple[str, ...]:
    """What decides where a job connects: a pre-forked child serves only launches that agree."""
    return tuple(env.get(name, "") for name in ("LOCARIA_DB_URL", "LOCARIA_DB_SECRET", "LOCARIA_HOME"))


@dataclass
class Spare:
    """A pre-forked child waiting for its job, its connection open."""

    pid: int
    channel: socket.socket
    key: tuple[str, ...]


class Server:
    def __init__(self, channel: socket.socket, pool_size: int = 0) -> None:
        self.channel = channel
        self.pool_size = pool_size
        self.spares: list[Spare] = []
        self.assigned: set[int] = set()  # children running a job: their exits are reported
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_w, False)
        os.set_blocking(self.wakeup_r, False)

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd is written
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides; Ctrl-C reaches its group
        refill: tuple[float, dict[str, str]] | None = None  # when, and with which environment
        while True:
            timeout = None if refill is None else max(0.0, refill[0] - time.monotonic())
            ready, _, _ = select.select([self.channel.fileno(), self.wakeup_r], [], [], timeout)
            if self.wakeup_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wakeup_r, 4096)
            self.reap()
            if self.channel.fileno() in ready:
                try:
                    data = self.channel.recv(MAX_MESSAGE)
                except OSError:
                    data = b""
                if not data:  # the dispatcher is gone: its jobs carry on without us, the spares go
                    for spare in self.spares:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(spare.pid, signal.SIGKILL)
                    return
                request = json.loads(data)
                self.handle(request)
                if not request.get("argv"):  # the next spares start with this job's handler imported
                    preload([str(request.get("handler") or "").partition(":")[0]])
                    # a moment later: forking and connecting now would take the CPU from the job just started
                    refill = (time.monotonic() + (REFILL_DELAY if self.spares else 0.0), request["env"])
            if refill is not None and time.monotonic() >= refill[0]:
                self.refill(refill[1])
                refill = None

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
            if pid in self.assigned:
                self.assigned.discard(pid)
                self.send({"op": "exited", "pid": pid, "code": exit_code_of(status)})
            else:  # a spare whose connection dropped: another takes its place at the next launch
                for spare in [spare for spare in self.spares if spare.pid == pid]:
                    spare.channel.close()
                    self.spares.remove(spare)

    def handle(self, request: dict[str, Any]) -> None:
        seq = request.get("seq")
        try:
            pid = self.hand_to_spare(request) or self.launch(request)
            self.assigned.add(pid)
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

    def hand_to_spare(self, request: dict[str, Any]) -> int | None:
        """Give the launch to a pre-forked child whose connection suits it; None if there is none."""
        if request.get("argv"):
            return None
        key = connection_key(request["env"])
        while self.spares:
            spare = self.spares.pop(0)
            if spare.key != key:
                self.retire(spare)
                continue
            try:
                spare.channel.send(json.dumps(request).encode())
            except OSError:
                self.retire(spare)
                continue
            spare.channel.close()
            return spare.pid
        return None

    def retire(self, spare: Spare) -> None:
        spare.channel.close()  # it exits on EOF
        self.assigned.discard(spare.pid)

    def refill(self, env: dict[str, str]) -> None:
        """Fork spares until the pool is full, with the environment of the launch just served."""
        while len(self.spares) < self.pool_size:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                pid = os.fork()
            except OSError:
                ours.close()
                theirs.close()
                return
            if pid == 0:
                ours.close()
                self.wait_as_spare(theirs, env)
            theirs.close()
            self.spares.append(Spare(pid, ours, connection_key(env)))

    def wait_as_spare(self, channel: socket.socket, env: dict[str, str]) -> None:
        """In a pre-forked child: open the job's connection, then wait for a job (or exit when the
        server or the database goes away first)."""
        code = 0
        try:
            os.setsid()
            self.reset_signals()
            for spare in self.spares:
                spare.channel.close()
            for fd in (self.wakeup_r, self.wakeup_w, self.channel.fileno()):
                os.close(fd)
            os.environ.clear()
            os.environ.update(env)
            from locaria_batch.job.run import Session
            from locaria_batch.settings import reset as reset_settings
            from locaria_batch.settings import settings

            reset_settings()
            conn = None
            with contextlib.suppress(Exception):
                conn = Session.connect(settings().db_url)
            watched = [channel.fileno(), *([conn.fileno()] if conn is not None else [])]
            ready, _, _ = select.select(watched, [], [])
            data = channel.recv(MAX_MESSAGE) if channel.fileno() in ready else b""
            if not data:
                os._exit(0)  # no job for us (the server left, or the database dropped our connection)
            channel.close()
            request = json.loads(data)
            log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self.become_job(request, request["env"], None, log_fd, conn)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)

    @staticmethod
    def reset_signals() -> None:
        for number in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(number, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)

    def become_job(self, request: dict[str, Any], env: dict[str, str], argv: list[str] | None, log_fd: int,
                   conn: psycopg.Connection[Any] | None = None) -> None:
        code = 1
        try:
            if conn is None:  # a spare has done this already
                os.setsid()
                self.reset_signals()
                for fd in (self.wakeup_r, self.wakeup_w, self.channel.fileno()):
                    os.close(fd)
                for spare in self.spares:
                    spare.channel.close()
            null_fd = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null_fd, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            for fd in (null_fd, log_fd):
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
            code = main([request["docker"]], conn=conn)
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
    preload(argv[2:])
    channel.send(b'{"op": "ready"}')
    Server(channel, int(argv[1])).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
