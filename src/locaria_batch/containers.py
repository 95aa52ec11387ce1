"""The container engine (Docker, or Podman's Docker-compatible socket) as the image builder and the
`docker` runner both reach it, and the local name of each docker's image."""

from __future__ import annotations

import os
from typing import Any, TypeAlias

from locaria_batch.errors import LocariaError

DockerClient: TypeAlias = Any  # docker.DockerClient: the Docker SDK ships no type information


class DockerUnavailable(LocariaError):
    """No container engine answers."""


def local_image(name: str) -> str:
    """The tag `docker build NAME` gives its image and the docker runner starts by default."""
    return f"localhost/locaria-batch/{name}:latest"


def connect_engine(timeout: int = 900) -> DockerClient:
    """A client for DOCKER_HOST (else the default socket), checked with a ping."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        where = os.environ.get("DOCKER_HOST") or "the default socket (/var/run/docker.sock)"
        raise DockerUnavailable(
            f"no Docker daemon answers at {where}: start Docker, or run `podman system service --time=0 "
            f"unix:///run/podman/podman.sock` and set DOCKER_HOST=unix:///run/podman/podman.sock"
        ) from exc
    return client
