"""The `docker` runner: each attempt is a container on one host, through the Docker Engine API.

It talks to Docker or to Podman's Docker-compatible socket alike (DOCKER_HOST).  Containers carry
labels naming the job id and attempt, so a dispatcher that restarts finds (adopts) what its
predecessor started; finished containers are removed after their output is kept in the job log.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from locaria_batch.containers import DockerClient, connect_engine, local_image
from locaria_batch.db.retry import Backoff
from locaria_batch.dispatch.handles import ContainerHandle
from locaria_batch.dispatch.runner import LaunchError, LaunchRequest, RunStatus
from locaria_batch.settings import settings

LABEL = "io.locaria.batch"
LABEL_JOB = f"{LABEL}.job-id"
LABEL_ATTEMPT = f"{LABEL}.attempt"
LABEL_DOCKER = f"{LABEL}.docker"
LABEL_FILE = f"{LABEL}.file-id"
LABEL_DATABASE = f"{LABEL}.database"  # job ids are per database: several may share one engine
HOST_GATEWAY = "host.docker.internal"
RUNNING_STATES = {"created", "running", "restarting", "paused", "configured", "initialized", "stopping"}
# host paths that mean nothing inside a container
HOST_ONLY_ENV = ("LOCARIA_HOME", "LOCARIA_PROJECT_DIR")

REMOVE_TRIES = 4  # over about two seconds; then the dispatcher tries again on its next timer


def container_db_url(url: str, network_mode: str) -> str:
    """With host networking the host's URL works as is; on a bridge, localhost means the host gateway."""
    if network_mode == "host":
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host not in {"localhost", "127.0.0.1", "::1"}:
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    hostport = hostport.replace(f"[{host}]" if ":" in host else host, HOST_GATEWAY, 1)
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{hostport}"))


def database_scope(url: str) -> str:
    """Names the database (host, port, name; never the password) in a label."""
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port}{parts.path}?{parts.query}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


@dataclass
class DockerRunner:
    client: DockerClient
    db_url: str  # as the container must see it
    storage_url: str
    logs_dir: Path
    network_mode: str = "host"
    stop_grace: int = 10
    name: str = "docker"
    needs_job_credentials: bool = True

    @classmethod
    def from_environment(cls) -> DockerRunner:
        """DOCKER_HOST for the engine; LOCARIA_DOCKER_NETWORK (default host) for the network; the
        jobs' own database URL (never the dispatcher's)."""
        from locaria_batch.db.connect import job_database_url

        conf = settings()
        network = conf.docker_network
        db_url = job_database_url()
        return cls(connect_engine(), container_db_url(db_url, network), conf.storage_url, conf.logs_dir,
                   network_mode=network)

    @property
    def scope(self) -> str:
        return database_scope(self.db_url)

    # -- launch ----------------------------------------------------------------------------
    def image(self, request: LaunchRequest) -> str:
        return request.docker.image or local_image(request.docker_name)

    @staticmethod
    def command(request: LaunchRequest) -> list[str] | None:
        """A docker's declared command (`{python}` is the image's interpreter), else the image's own CMD."""
        declared = request.docker.command
        return ["python" if part == "{python}" else str(part) for part in declared] if declared else None

    def environment(self, request: LaunchRequest) -> dict[str, str]:
        env = {k: v for k, v in request.env.items() if k not in HOST_ONLY_ENV}
        env["LOCARIA_DB_URL"] = self.db_url
        env["LOCARIA_STORAGE"] = self.storage_url
        env["LOCARIA_HOME"] = "/tmp/locaria"
        return env

    def volumes(self) -> dict[str, dict[str, str]]:
        """Local storage is mounted at the same path, so keys and file URLs mean the same inside."""
        if self.storage_url.startswith("s3://"):
            return {}
        folder = Path(self.storage_url.removeprefix("file://")).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return {str(folder): {"bind": str(folder), "mode": "rw"}}

    def handle(self, stored: dict[str, Any]) -> ContainerHandle:
        return ContainerHandle.from_json(stored)

    def launch(self, request: LaunchRequest) -> ContainerHandle:
        spec = request.docker
        name = (f"locaria-{request.docker_name.replace('_', '-')}-job{request.job_id}-a{request.attempt}"
                f"-{request.token[:8]}")
        labels = {LABEL: "true", LABEL_JOB: str(request.job_id), LABEL_ATTEMPT: str(request.attempt),
                  LABEL_DOCKER: request.docker_name, LABEL_FILE: str(request.file_id),
                  LABEL_DATABASE: self.scope}
        options: dict[str, Any] = {
            "name": name, "labels": labels, "environment": self.environment(request), "detach": True,
            "volumes": self.volumes(), "network_mode": self.network_mode,
            "mem_limit": f"{int(spec.memory or 512)}m",
            "nano_cpus": int(float(spec.cpu or 1024) / 1024 * 1e9),
        }
        if self.network_mode != "host":
            options["extra_hosts"] = {HOST_GATEWAY: "host-gateway"}
        try:
            container = self.client.containers.run(self.image(request), self.command(request), **options)
        except ImageNotFound as exc:
            raise LaunchError(f"image {self.image(request)} not found: build it with "
                              f"`locaria-batch docker build {request.docker_name}`") from exc
        except APIError as exc:
            # this very attempt (its token is in the name) was started by a dispatcher that died before recording it
            existing = self.find(request.job_id, request.attempt)
            if existing is not None and existing.name == name:
                return existing
            raise LaunchError(f"could not start a container for {request.docker_name}: {exc.explanation or exc}",
                              requeue=exc.status_code in {429, 500, 503}, delay=5.0) from exc
        except DockerException as exc:
            raise LaunchError(f"the container engine is unreachable: {exc}", requeue=True, delay=5.0) from exc
        return ContainerHandle(container.id, name, request.job_id, request.attempt,
                               log=str(self._log(request.job_id, request.attempt)))

    def _log(self, job_id: int | None, attempt: int | None) -> Path:
        """Where a container's output is kept once it has been removed."""
        return self.logs_dir / f"job-{job_id}-attempt-{attempt}.log"

    # -- reconcile -------------------------------------------------------------------------
    def status(self, handles: list[ContainerHandle]) -> list[RunStatus]:
        if not handles:
            return []
        listed = {c["Id"]: c for c in self.client.api.containers(
            all=True, filters={"label": f"{LABEL_DATABASE}={self.scope}"})}
        result = []
        for handle in handles:
            summary = listed.get(handle.container_id)
            if summary is None:
                result.append(RunStatus("missing", None, "the container disappeared before it reported"))
            elif summary["State"] in RUNNING_STATES:
                result.append(RunStatus("running"))
            else:
                result.append(self._exited(handle.container_id))
        return result

    def _exited(self, container_id: str) -> RunStatus:
        try:
            state = self.client.api.inspect_container(container_id)["State"]
        except NotFound:
            return RunStatus("missing", None, "the container disappeared before it reported")
        code = state.get("ExitCode")
        details = {k: state[k] for k in ("OOMKilled", "Error", "FinishedAt") if state.get(k)}
        if state.get("OOMKilled"):
            return RunStatus("exited", code, "the container ran out of memory (raise `memory` in dockers.json)",
                             details)
        return RunStatus("exited", code, None, details)

    def find(self, job_id: int, attempt: int) -> ContainerHandle | None:
        found = self.client.api.containers(
            all=True, filters={"label": [f"{LABEL_DATABASE}={self.scope}", f"{LABEL_JOB}={job_id}",
                                         f"{LABEL_ATTEMPT}={attempt}"]}
        )
        if not found:
            return None
        names = found[0].get("Names") or [""]
        return ContainerHandle(found[0]["Id"], names[0].lstrip("/"), job_id, attempt, adopted=True,
                               log=str(self._log(job_id, attempt)))

    # -- stop and clean up -----------------------------------------------------------------
    def stop(self, handle: ContainerHandle, reason: str) -> None:
        try:
            self.client.api.stop(handle.container_id, timeout=self.stop_grace)
        except NotFound:
            return

    def cleanup(self, handle: ContainerHandle) -> None:
        """Keep the container's output in the job log, then remove the container."""
        container_id = handle.container_id
        try:
            output = self.client.api.logs(container_id, stdout=True, stderr=True)
        except NotFound:
            return
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._log(handle.job_id, handle.attempt).write_bytes(output)
        backoff = Backoff(first=0.2, cap=1.0)
        while True:
            try:
                self.client.api.remove_container(container_id, force=True)
                return
            except NotFound:
                return
            except APIError:
                # Podman refuses a forced removal while the container is still settling into
                # "stopped" ("container state improper"); a moment later it succeeds
                if backoff.tries >= REMOVE_TRIES - 1:
                    raise
                backoff.sleep()
