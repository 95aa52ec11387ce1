"""The local runner's fork server: a warm process that forks job attempts directly.

    python -m locaria_batch.dispatch.forkserver FD POOL [MODULE ...]

It imports the job SDK, psycopg and the given handler modules once, then serves requests on the
SEQPACKET socket FD: each `launch` forks a child that starts a session of its own, points its
output at the attempt's log, takes the launch's environment and runs the job (or execs a docker's
`command`).  A forked child costs a few milliseconds; a fresh interpreter spends hundreds on
imports.

Jobs of a handler are forked by keepers: children of the server that each keep one database
connection open (to the URL the launch's environment names: the job's, never the dispatcher's) and
fork one attempt at a time, lending it that connection.  When the attempt ends cleanly the keeper
resets the session as a connection pooler does (DISCARD ALL: settings, prepared statements,
temporary tables, locks, listeners) and lends it to the next attempt; after anything else (a
non-zero exit, a signal, a process of the attempt's group still alive, something left unread or a
transaction left open) it closes the connection and exits.  So an attempt is still a process of its
own, with its own session, log and environment, while no attempt pays for a connection or for a new
server process loading its caches (most of what a short job costs).  POOL keepers are kept open,
one of them at least idle; more are forked as launches need them, and those idle beyond the pool
for KEEPER_IDLE_SECONDS, or older than KEEPER_LIFETIME_SECONDS, go.

A keeper imports the handler of each launch it is handed, and a launch goes to an idle keeper that
has imported its handler already when there is one.  The server itself imports only the light
modules it was started with: forking a process and ending it cost in proportion to the memory it
maps (about 1.7 ms more per attempt with the loader's Arrow and NumPy loaded), so a job pays for a
heavy handler's memory only on the keepers that run that handler.

The server reaps its children on SIGCHLD and reports each attempt's exit code back (a keeper
reports those of its attempts; the server is their subreaper should a keeper die first), so the
dispatcher reconciles when a job ends instead of polling.  When the dispatcher goes away (EOF),
the server and its keepers exit at once and the running jobs carry on, to be adopted.

Nothing of the command line is imported here: a job must not pay for typer or rich.
"""

from __future__ import annotations

import contextlib
import ctypes
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

import locaria_batch.job
import locaria_batch.job.run  # noqa: F401

MAX_MESSAGE = 1 << 20  # a launch carries the job's whole environment
REFILL_DELAY = 0.05  # seconds between handing a keeper its job and forking the next one
KEEPER_IDLE_SECONDS = 30.0
KEEPER_LIFETIME_SECONDS = 600.0
PR_SET_CHILD_SUBREAPER = 36


def process_start_time(pid: int, *, ended_too: bool = False) -> int | None:
    """The kernel's start time of pid (clock ticks since boot): tells a reused pid apart.  None once it
    has ended, unless `ended_too` (a child not yet reaped still has one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X") and not ended_too:  # a zombie has ended
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


def readable(fds: list[int], timeout: float | None) -> set[int]:
    """Which of fds can be read (or have closed), waiting at most timeout seconds (None: until one can)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)}


def handler_module(request: dict[str, Any]) -> str:
    return str(request.get("handler") or "").partition(":")[0]


def connection_key(env: dict[str, str]) -> tuple[str, ...]:
    """What decides where a job connects: a keeper serves only launches that agree."""
    return tuple(env.get(name, "") for name in ("LOCARIA_DB_URL", "LOCARIA_DB_SECRET", "LOCARIA_HOME"))


def send_on(channel: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        channel.send(json.dumps(message).encode())


def become_subreaper() -> None:
    """Orphans of this process's children (a job whose keeper died) become its own, so their exits
    are still reaped and reported."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@dataclass
class Keeper:
    """A child that keeps a database connection open and forks attempts one at a time."""

    pid: int
    channel: socket.socket
    key: tuple[str, ...]
    born: float
    request: dict[str, Any] | None = None  # the launch handed to it, until it says the attempt started
    job: int | None = None  # the attempt it runs
    idle_since: float | None = None  # None while it has a launch
    handlers: set[str] = field(default_factory=set)  # the handler modules it has imported
    ended: bool = False  # its end of the channel has closed: it is settled once reaped

    @property
    def idle(self) -> bool:
        return self.idle_since is not None


class Server:
    def __init__(self, channel: socket.socket, pool_size: int = 0) -> None:
        self.channel = channel
        self.pool_size = pool_size
        self.keepers: dict[int, Keeper] = {}
        self.assigned: set[int] = set()  # attempts running: their exits are reported
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_w, False)
        os.set_blocking(self.wakeup_r, False)

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd is written
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides; Ctrl-C reaches its group
        become_subreaper()
        refill: tuple[float, dict[str, str]] | None = None  # when, and with which environment
        while True:
            wake_at = [KEEPER_IDLE_SECONDS / 2 + time.monotonic()] + ([refill[0]] if refill else [])
            watched = [self.channel.fileno(), self.wakeup_r,
                       *(k.channel.fileno() for k in self.keepers.values() if not k.ended)]
            ready = readable(watched, max(0.0, min(wake_at) - time.monotonic()))
            if self.wakeup_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wakeup_r, 4096)
            for keeper in [k for k in self.keepers.values() if k.channel.fileno() in ready]:
                self.hear(keeper)
            self.reap()
            if self.channel.fileno() in ready:
                try:
                    data = self.channel.recv(MAX_MESSAGE)
                except OSError:
                    data = b""
                if not data:  # the dispatcher is gone: its jobs carry on without us, the keepers go
                    for keeper in self.keepers.values():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(keeper.pid, signal.SIGKILL)
                    return
                request = json.loads(data)
                self.handle(request)
                if not request.get("argv"):
                    # a moment later: forking and connecting now would take the CPU from the job just started
                    refill = (time.monotonic() + (REFILL_DELAY if self.idle_keepers() else 0.0), request["env"])
            if refill is not None and time.monotonic() >= refill[0]:
                self.refill(refill[1])
                refill = None
            self.retire_idle()

    def send(self, message: dict[str, Any]) -> None:
        send_on(self.channel, message)

    def started(self, seq: Any, pid: int, start_time: int | None) -> None:
        self.assigned.add(pid)
        self.send({"op": "started", "seq": seq, "pid": pid, "start_time": start_time})

    def exited(self, pid: int, code: int | None) -> None:
        if pid in self.assigned:
            self.assigned.discard(pid)
            self.send({"op": "exited", "pid": pid, "code": code})

    def reap(self) -> None:
        gone: list[Keeper] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            self.exited(pid, exit_code_of(status))  # one forked directly, or an orphan of a keeper
            if pid in self.keepers:
                gone.append(self.keepers[pid])
        for keeper in gone:  # after every exit reaped: its orphans' among them
            self.hear(keeper)
            self.settle(keeper)

    # -- keepers --------------------------------------------------------------------------------
    def hear(self, keeper: Keeper) -> None:
        """Take what a keeper has said, up to its end (EOF: it is exiting)."""
        while not keeper.ended:
            try:
                data = keeper.channel.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                keeper.ended = True
                return
            self.heard(keeper, json.loads(data))

    def heard(self, keeper: Keeper, message: dict[str, Any]) -> None:
        if message["op"] == "started":
            keeper.request, keeper.job = None, int(message["pid"])
            self.started(message["seq"], keeper.job, message.get("start_time"))
        elif message["op"] == "exited":
            keeper.job = None
            if message["idle"]:
                keeper.idle_since = time.monotonic()
            self.exited(int(message["pid"]), int(message["code"]))

    def settle(self, keeper: Keeper) -> None:
        """A keeper has exited and been reaped.  A launch it had not said it started fails (it may have
        forked the attempt already: the dispatcher retries it as a new attempt, which fences the other
        off).  Its attempt, if it runs on, is our child now (subreaper) and reaped in turn, else (the
        keeper reaped it but died before saying so) its exit code was lost with the keeper."""
        self.keepers.pop(keeper.pid, None)
        keeper.channel.close()
        if keeper.request is not None:
            self.send({"op": "failed", "seq": keeper.request.get("seq"),
                       "error": "the process that was to start it ended first"})
        if keeper.job is not None and keeper.job in self.assigned:
            try:
                pid, status = os.waitpid(keeper.job, os.WNOHANG)
            except ChildProcessError:
                self.exited(keeper.job, None)
                return
            if pid:
                self.exited(pid, exit_code_of(status))

    def idle_keepers(self, key: tuple[str, ...] | None = None) -> list[Keeper]:
        return [k for k in self.keepers.values() if k.idle and not k.ended and (key is None or k.key == key)]

    def retire(self, keeper: Keeper) -> None:
        """An idle keeper goes: it closes its connection and exits on EOF."""
        self.keepers.pop(keeper.pid, None)
        keeper.channel.close()

    def kept(self, key: tuple[str, ...]) -> list[Keeper]:
        return [k for k in self.keepers.values() if not k.ended and k.key == key]

    def retire_idle(self) -> None:
        """Keepers idle for KEEPER_IDLE_SECONDS go while more than POOL are open; any keeper older than
        KEEPER_LIFETIME_SECONDS goes once idle."""
        now = time.monotonic()
        surplus = sum(not k.ended for k in self.keepers.values()) - self.pool_size
        for keeper in sorted(self.idle_keepers(), key=lambda k: k.idle_since or 0.0):
            if now - keeper.born > KEEPER_LIFETIME_SECONDS or (
                    surplus > 0 and now - (keeper.idle_since or now) > KEEPER_IDLE_SECONDS):
                self.retire(keeper)
                surplus -= 1

    def refill(self, env: dict[str, str]) -> None:
        """Fork keepers with the environment of the launch just served until POOL are open, one of
        them idle (those of another environment go)."""
        key = connection_key(env)
        for keeper in [k for k in self.idle_keepers() if k.key != key]:
            self.retire(keeper)
        for _ in range(max(self.pool_size - len(self.kept(key)), 1 - len(self.idle_keepers(key)), 0)):
            if self.fork_keeper(env) is None:
                return

    def fork_keeper(self, env: dict[str, str]) -> Keeper | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            ours.close()
            self.keep(theirs, env)
        theirs.close()
        keeper = Keeper(pid, ours, connection_key(env), time.monotonic(), idle_since=time.monotonic())
        self.keepers[pid] = keeper
        return keeper

    # -- launches -------------------------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> None:
        """A launch: to an idle keeper whose connection suits it (a new one if none waits), or forked
        here for a docker's own command; a keeper answers for it when its attempt has started."""
        if not request.get("argv"):
            key, handler = connection_key(request["env"]), handler_module(request)
            warm_first = min(self.idle_keepers(key), key=lambda k: handler not in k.handlers, default=None)
            keeper = warm_first or self.fork_keeper(request["env"])
            if keeper is not None:
                keeper.idle_since, keeper.request = None, request
                keeper.handlers.add(handler)
                send_on(keeper.channel, {"op": "launch", **request})
                return
        try:
            pid = self.launch(request)
        except OSError as exc:
            self.send({"op": "failed", "seq": request.get("seq"), "error": f"{type(exc).__name__}: {exc}"})
            return
        self.started(request.get("seq"), pid, record_start(pid, request))

    def launch(self, request: dict[str, Any]) -> int:
        env: dict[str, str] = request["env"]
        argv: list[str] | None = request.get("argv")
        if argv:
            program = shutil.which(argv[0], path=env.get("PATH")) if "/" not in argv[0] else argv[0]
            if program is None or not os.access(program, os.X_OK):
                raise FileNotFoundError(f"{argv[0]!r} not found on PATH")
            argv = [program, *argv[1:]]
        else:
            preload([handler_module(request)])
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            pid = os.fork()
        except OSError:
            os.close(log_fd)
            raise
        if pid == 0:  # the child never returns
            code = 1
            try:
                self.leave()
                code = become_job(request, argv, log_fd, None)
            finally:
                os._exit(code)
        os.close(log_fd)
        return pid

    def leave(self) -> None:
        """In a child: a session of its own, default signals, none of the server's descriptors."""
        os.setsid()
        for number in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(number, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for keeper in self.keepers.values():
            keeper.channel.close()
        for fd in (self.wakeup_r, self.wakeup_w, self.channel.fileno()):
            os.close(fd)

    def keep(self, channel: socket.socket, env: dict[str, str]) -> None:
        """In a keeper: open the job's connection, then fork the attempts it is handed one at a time,
        lending each the connection, for as long as the connection can be vouched for (it exits when
        the server goes away, or after an attempt that leaves the connection in doubt or without one)."""
        code = 0
        try:
            self.leave()
            os.environ.clear()
            os.environ.update(env)
            from locaria_batch.job.run import open_ahead, ready_for_next
            from locaria_batch.settings import reset as reset_settings
            from locaria_batch.settings import settings

            reset_settings()
            conn = None
            with contextlib.suppress(Exception):
                conn = open_ahead(settings().db_url)
            while True:
                ready = readable([channel.fileno(), *([conn.fileno()] if conn is not None else [])], None)
                if conn is not None and conn.fileno() in ready:
                    # the database closed the idle connection (a restart, a timeout): the next attempt,
                    # which may be on its way already, connects on its own, and this keeper then goes
                    conn.close()
                    conn = None
                    continue
                data = channel.recv(MAX_MESSAGE)
                if not data:  # the server left
                    break
                request = json.loads(data)
                preload([handler_module(request)])
                pid = self.fork_attempt(channel, request, conn)
                send_on(channel, {"op": "started", "seq": request.get("seq"), "pid": pid,
                                  "start_time": record_start(pid, request)})
                _, status = os.waitpid(pid, 0)
                # ready again before the exit is told: the dispatcher's next launch, which the exit may
                # bring at once, must find this keeper idle rather than make another
                again = conn is not None and status == 0 and not group_lives(pid) and ready_for_next(conn)
                send_on(channel, {"op": "exited", "pid": pid, "code": exit_code_of(status), "idle": again})
                if not again:
                    break
            if conn is not None:
                conn.close()  # at once: a killed attempt's statement is stopped by the server seeing it
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)

    @staticmethod
    def fork_attempt(channel: socket.socket, request: dict[str, Any], conn: psycopg.Connection[Any] | None) -> int:
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            pid = os.fork()
        except OSError:
            os.close(log_fd)
            raise
        if pid == 0:
            code = 1
            try:
                channel.close()
                os.setsid()
                code = become_job(request, None, log_fd, conn)
            finally:
                os._exit(code)
        os.close(log_fd)
        return pid


def group_lives(pgid: int) -> bool:
    """Whether a process of the attempt's group outlives it (a child it left behind, which may hold
    the connection too: then the connection is not lent again)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def record_start(pid: int, request: dict[str, Any]) -> int | None:
    """The attempt's start time, written to its pid file before the dispatcher hears of it: adoption
    finds the attempt even then.  (Its parent has not reaped it yet: a job that has already ended still
    has its start time.)"""
    start = process_start_time(pid, ended_too=True)
    pid_file = request.get("pid_file")
    if pid_file:
        with contextlib.suppress(OSError):
            Path(pid_file).write_text(f"{pid} {start}\n")
    return start


def become_job(request: dict[str, Any], argv: list[str] | None, log_fd: int,
               conn: psycopg.Connection[Any] | None) -> int:
    """In an attempt's process (its session already its own): its log, directory and environment, then
    its command or its handler; the exit code."""
    code = 1
    env: dict[str, str] = request["env"]
    try:
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
    return code


def main(argv: list[str]) -> None:
    channel = socket.socket(fileno=int(argv[0]))
    preload(argv[2:])
    channel.send(b'{"op": "ready"}')
    Server(channel, int(argv[1])).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
