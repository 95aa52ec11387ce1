"""Real containers for the tests: Podman's Docker-compatible service on a private socket, the
registry-free Python base image (scripts/container-base.sh) and the job images built from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

REPO = Path(__file__).resolve().parent.parent
CONTAINERS_CONF = REPO / "scripts" / "containers.conf"


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


@pytest.fixture(scope="session")
def engine_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """LOCARIA_TEST_DOCKER_HOST if given (a Docker daemon), else a Podman service started here."""
    given = os.environ.get("LOCARIA_TEST_DOCKER_HOST")
    if given:
        yield given
        return
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: apt-get install podman runc (these tests need real containers)")
    socket = tmp_path_factory.mktemp("podman") / "podman.sock"
    url = f"unix://{socket}"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", url], env=podman_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not socket.exists():
        if service.poll() is not None or time.monotonic() > deadline:
            service.kill()
            reason = service.stderr.read().decode() if service.stderr else ""
            pytest.fail(f"podman system service did not start: {reason}")
        time.sleep(0.1)
    yield url
    service.terminate()
    service.wait(timeout=30)


@pytest.fixture(scope="session")
def engine(engine_url: str, pg_url: str) -> Iterator[docker.DockerClient]:
    from locaria_batch.dispatch.docker import LABEL_DATABASE, database_scope

    client = docker.DockerClient(base_url=engine_url, timeout=900)
    client.ping()
    yield client
    # whatever this session's jobs left behind (other sessions on the engine keep theirs)
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_DATABASE}={database_scope(pg_url)}"}):
        container.remove(force=True)
    client.close()


@pytest.fixture(scope="session")
def base_image(engine_url: str) -> str:
    """The Python base image, made without any registry (cached: seconds once made on a machine)."""
    if os.environ.get("LOCARIA_TEST_DOCKER_HOST"):
        return os.environ.get("LOCARIA_TEST_BASE_IMAGE", "python:3.11-slim-bookworm")
    done = subprocess.run([str(REPO / "scripts" / "container-base.sh")], env=podman_env(), capture_output=True,
                          text=True)
    assert done.returncode == 0, f"scripts/container-base.sh failed:\n{done.stdout}\n{done.stderr}"
    return "localhost/locaria-python-base:bookworm"


@pytest.fixture(scope="session")
def file_loader_image(engine: docker.DockerClient, base_image: str) -> str:
    from locaria_batch.deploy.images import build, wheel_cache

    lines: list[str] = []
    built = build(engine, REPO, "file_loader", wheel_cache=wheel_cache(), base_image=base_image,
                  progress=lambda line, step, total: lines.append(line))
    assert any("STEP" in line.upper() for line in lines), lines
    return built.tag
