"""What a runner records of a launched attempt (stored as JSON in jobs.handle).

Each runner's handle is a small dataclass; `where` says where the attempt runs and where its log
is, so the CLI and the console print it without knowing any runner's keys.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar, Protocol, Self


class Handle(Protocol):
    job_id: int | None
    attempt: int | None
    adopted: bool

    @property
    def where(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


class _Stored:
    """JSON round trip shared by every handle type (unknown keys of older rows are ignored; a field
    without a default that a row lacks, as rows once left out a null start time, reads as None)."""

    runner: ClassVar[str]

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> Self:
        values = {item.name: stored.get(item.name) for item in fields(cls)  # type: ignore[arg-type]
                  if item.name in stored or (item.default is MISSING and item.default_factory is MISSING)}
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        optional = {item.name for item in fields(self)  # type: ignore[arg-type]
                    if item.default is not MISSING or item.default_factory is not MISSING}
        data = {key: value for key, value in asdict(self).items()  # type: ignore[call-overload]
                if value is not None or key not in optional}
        data["where"] = self.where  # type: ignore[attr-defined]
        return data


@dataclass(frozen=True)
class ProcessHandle(_Stored):
    """A local process: its pid and the kernel's start time tell it apart from a reused pid."""

    runner: ClassVar[str] = "local"
    pid: int
    start_time: int | None
    log: str
    job_id: int | None = None
    attempt: int | None = None
    adopted: bool = False
    work_dir: str | None = None  # the attempt's own directory (temporary files, pid file)

    @property
    def where(self) -> str:
        return f"pid {self.pid}, log {self.log}"


@dataclass(frozen=True)
class ContainerHandle(_Stored):
    runner: ClassVar[str] = "docker"
    container_id: str
    name: str
    job_id: int | None = None
    attempt: int | None = None
    adopted: bool = False
    log: str | None = None  # where its output was kept once it was removed

    @property
    def where(self) -> str:
        return f"container {self.name}" + (f", log {self.log}" if self.log else "")


@dataclass(frozen=True)
class TaskHandle(_Stored):
    """An ECS task, and the CloudWatch stream its container logs to."""

    runner: ClassVar[str] = "ecs"
    task_arn: str
    task_id: str
    cluster: str
    region: str | None = None
    docker: str | None = None
    container: str | None = None
    job_id: int | None = None
    attempt: int | None = None
    log_group: str | None = None
    log_stream: str | None = None
    adopted: bool = False

    @property
    def where(self) -> str:
        logs = f", logs {self.log_group}/{self.log_stream}" if self.log_group and self.log_stream else ""
        return f"task {self.task_arn}{logs}"


HANDLE_TYPES: dict[str, type[ProcessHandle] | type[ContainerHandle] | type[TaskHandle]] = {
    kind.runner: kind for kind in (ProcessHandle, ContainerHandle, TaskHandle)}


def where_of(stored: dict[str, Any] | None, runner: str | None = None) -> str:
    """Where a stored handle's attempt runs, whatever its runner."""
    if not stored:
        return ""
    if stored.get("where"):
        return str(stored["where"])
    kind = HANDLE_TYPES.get(runner or "")
    try:
        return kind.from_json(stored).where if kind else ""
    except TypeError:  # a row written by another version: show what it holds
        return ", ".join(f"{key} {value}" for key, value in stored.items())
