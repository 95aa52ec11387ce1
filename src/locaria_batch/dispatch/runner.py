"""The one protocol every runner (local process, Docker/Podman container, ECS task) implements."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from locaria_batch.db.dockers import DockerSpec
from locaria_batch.dispatch.handles import Handle
from locaria_batch.errors import LocariaError

H = TypeVar("H", bound=Handle)


@dataclass(frozen=True)
class LaunchRequest:
    job_id: int
    attempt: int
    token: str
    file_id: int
    docker: DockerSpec
    env: dict[str, str] = field(default_factory=dict)  # the job environment (ids, token, settings)

    @property
    def docker_name(self) -> str:
        return self.docker.name


@dataclass(frozen=True)
class RunStatus:
    state: Literal["running", "exited", "missing"]
    exit_code: int | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # e.g. ECS stopCode/stoppedReason


class LaunchError(LocariaError):
    """A launch that did not start anything.  `requeue`: try again later without spending an
    attempt (capacity, throttling); otherwise the attempt counts as failed."""

    def __init__(self, message: str, *, requeue: bool = False, delay: float = 0.0) -> None:
        super().__init__(message)
        self.requeue = requeue
        self.delay = delay


class Runner(Protocol[H]):
    name: str
    needs_job_credentials: bool  # the dispatcher must hand jobs a database URL (containers on ECS have theirs)

    def handle(self, stored: dict[str, Any]) -> H:
        """The handle a launch recorded, read back from jobs.handle."""

    def launch(self, request: LaunchRequest) -> H: ...

    def status(self, handles: list[H]) -> list[RunStatus]:
        """One status per handle, in order (runners batch their lookups)."""

    def find(self, job_id: int, attempt: int) -> H | None:
        """Look an attempt up by its job id and attempt number (adoption after a dispatcher died)."""

    def stop(self, handle: H, reason: str) -> None: ...

    def cleanup(self, handle: H) -> None:
        """Release what a finished attempt left behind (a stopped container)."""


# database credentials a job process must never inherit from its dispatcher's environment
CREDENTIAL_VARIABLES = frozenset({"LOCARIA_DB_SECRET", "PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE"})


def is_credential(name: str) -> bool:
    return name in CREDENTIAL_VARIABLES or name.endswith(("DB_URL", "DATABASE_URL"))


def child_environment(job_env: dict[str, str]) -> dict[str, str]:
    """A local job process's environment: the dispatcher's, without any database credentials, plus the
    job's own (which carries the job's credentials)."""
    return {**{key: value for key, value in os.environ.items() if not is_credential(key)}, **job_env}


@runtime_checkable
class WatchesExits(Protocol):
    """A runner that learns at once when an attempt ends (the local runner: its fork server reports
    each exit, a pidfd each adopted process's), so the dispatcher reconciles without polling."""

    def wakeup_fds(self) -> list[int]:
        """Readable when a watched attempt may have ended."""

    def watch(self, handle: Any) -> None:
        """Follow an attempt this runner did not start (an adopted one) until it ends."""

    def ended(self) -> list[Any]:
        """The watched attempts' handles that ended since the last call."""

    def kill(self, handle: Any) -> None:
        """End an attempt at once (a hung one: it answers no signal it could handle)."""

    def next_deadline(self) -> float | None:
        """Seconds until the runner has something to do (a stopped attempt's SIGKILL is due)."""

    def stop_now(self, handles: list[Any], grace: float) -> None:
        """Stop these attempts and wait for them, at most `grace` seconds."""

    def close(self) -> None: ...


def launch_all(runner: Runner[Any], requests: list[LaunchRequest]) -> list[Handle | LaunchError]:
    """Launch every request; a runner that can (the local one) starts them all without waiting for each."""
    many = getattr(runner, "launch_many", None)
    if many is not None:
        return list(many(requests))
    results: list[Handle | LaunchError] = []
    for request in requests:
        try:
            results.append(runner.launch(request))
        except LaunchError as exc:
            results.append(exc)
    return results


def exit_reason(exit_code: int | None) -> str:
    """Words for an exit code, for the file's log."""
    if exit_code is None:
        return "ended without reporting (exit code unknown)"
    if exit_code == 137:
        return "was killed (SIGKILL: out of memory or stopped by force)"
    if exit_code == 143:
        return "was terminated (SIGTERM)"
    if exit_code > 128:
        return f"was killed by signal {exit_code - 128}"
    return f"ended without reporting (exit code {exit_code})"
