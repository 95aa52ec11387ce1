"""A job attempt's log, wherever its runner keeps it: a file under LOCARIA_HOME/logs (local
processes, and containers once removed), the container engine (a container still there), or
CloudWatch Logs (ECS tasks).  `tail` for a page, `follow` for `files logs --follow`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from locaria_batch.dispatch.handles import ContainerHandle, ProcessHandle, TaskHandle, where_of
from locaria_batch.dispatch.store import Job
from locaria_batch.errors import LocariaError

TAIL_BYTES = 64 * 1024


class LogUnavailable(LocariaError):
    """The attempt's log cannot be read from here."""


class JobLog(Protocol):
    def tail(self, lines: int) -> str:
        """The last `lines` lines."""

    def follow(self, done: Callable[[], bool], poll: float) -> Iterator[str]:
        """Everything from the start, then what is added, until `done()` and nothing more came."""


def last_lines(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:]) + ("\n" if text.endswith("\n") else "")


@dataclass(frozen=True)
class FileLog:
    path: Path

    def tail(self, lines: int) -> str:
        try:
            with self.path.open("rb") as stream:
                stream.seek(0, 2)
                stream.seek(max(0, stream.tell() - TAIL_BYTES))
                data = stream.read()
        except FileNotFoundError:
            raise LogUnavailable(f"the log file {self.path} is gone (pruned, or written on another machine)") from None
        return last_lines(data.decode("utf-8", "replace"), lines)

    def follow(self, done: Callable[[], bool], poll: float) -> Iterator[str]:
        offset = 0
        while True:
            finished = done()  # asked before reading: what came before the end is read afterwards
            with contextlib.suppress(FileNotFoundError), self.path.open("rb") as stream:
                stream.seek(offset)
                data = stream.read()
                offset += len(data)
                if data:
                    yield data.decode("utf-8", "replace")
                    continue
            if finished:
                return
            time.sleep(poll)


@dataclass(frozen=True)
class ContainerLog:
    """A container the engine still has; once removed, its output is in `kept` (the runner's copy)."""

    container_id: str
    kept: FileLog | None
    client: Any

    def _engine(self) -> bool:
        from docker.errors import NotFound

        try:
            self.client.api.inspect_container(self.container_id)
        except NotFound:
            return False
        return True

    def tail(self, lines: int) -> str:
        if not self._engine():
            return self._kept().tail(lines)
        return bytes(self.client.api.logs(self.container_id, stdout=True, stderr=True, tail=lines)).decode(
            "utf-8", "replace")

    def follow(self, done: Callable[[], bool], poll: float) -> Iterator[str]:
        if not self._engine():
            yield from self._kept().follow(done, poll)
            return
        for chunk in self.client.api.logs(self.container_id, stdout=True, stderr=True, stream=True, follow=True):
            yield bytes(chunk).decode("utf-8", "replace")

    def _kept(self) -> FileLog:
        if self.kept is None:
            raise LogUnavailable(f"container {self.container_id} is gone and its output was not kept")
        return self.kept


@dataclass(frozen=True)
class CloudWatchLog:
    group: str
    stream: str
    client: Any

    def _events(self, **params: Any) -> dict[str, Any]:
        try:
            return dict(self.client.get_log_events(logGroupName=self.group, logStreamName=self.stream, **params))
        except self.client.exceptions.ResourceNotFoundException:
            raise LogUnavailable(f"CloudWatch Logs has no stream {self.group}/{self.stream} (yet, or any more)"
                                 ) from None

    def tail(self, lines: int) -> str:
        events = self._events(startFromHead=False, limit=lines)["events"]
        return "".join(event["message"].rstrip("\n") + "\n" for event in events)

    def follow(self, done: Callable[[], bool], poll: float) -> Iterator[str]:
        token: str | None = None
        while True:
            finished = done()
            page = self._events(startFromHead=True, **({"nextToken": token} if token else {}))
            events = page["events"]
            token = page.get("nextForwardToken") or token
            if events:
                yield "".join(event["message"].rstrip("\n") + "\n" for event in events)
                continue
            if finished:
                return
            time.sleep(poll)


def job_log(job: Job, logs_dir: Path) -> JobLog:
    """Where the latest attempt of `job` logs."""
    if not job.handle:
        raise LogUnavailable(f"job {job.id} has not been launched yet: it has no log")
    return attempt_log(job.handle, logs_dir)


def attempt_log(stored: dict[str, Any], logs_dir: Path) -> JobLog:
    """Where the attempt a stored handle describes logs (the handle's keys say its runner)."""
    if "task_arn" in stored:
        task = TaskHandle.from_json(stored)
        if not (task.log_group and task.log_stream):
            raise LogUnavailable(f"task {task.task_arn} logs nowhere: its docker's fargate_config names no logGroup")
        import boto3

        return CloudWatchLog(task.log_group, task.log_stream, boto3.client("logs", region_name=task.region))
    if "container_id" in stored:
        container = ContainerHandle.from_json(stored)
        from locaria_batch.containers import connect_engine

        kept = FileLog(_confined(container.log, logs_dir)) if container.log else None
        try:
            client = connect_engine(timeout=30)
        except LocariaError:
            if kept is None:
                raise
            return kept
        return ContainerLog(container.container_id, kept, client)
    if "pid" in stored:
        return FileLog(_confined(ProcessHandle.from_json(stored).log, logs_dir))
    raise LogUnavailable(f"no log is known for {where_of(stored) or 'this attempt'}")


def _confined(path: str, logs_dir: Path) -> Path:
    """Only files of this machine's job log folder are read (a handle is data, not a licence)."""
    resolved = Path(path).resolve()
    if resolved.parent != logs_dir.resolve():
        raise LogUnavailable(f"the log {path} is not in this machine's job log folder {logs_dir}: read it where "
                             "the worker runs (or set LOCARIA_HOME as it has it)")
    return resolved
