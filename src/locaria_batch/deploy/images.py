"""Job images: assemble a build context, build through the Engine API, tag and push to ECR.

The context is the Dockerfile (`docker/Dockerfile`, shared by every job, or `docker/NAME/Dockerfile`
when a docker has its own) + `docker/NAME/` as `job/` + `docker/modules/` + the project's wheel +
the wheels of its dependencies (downloaded on this machine for the image's platform, so a build
needs no network inside the container and no registry but PyPI on the host).
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.errors import APIError, BuildError, DockerException

from locaria_batch.containers import DockerClient, local_image
from locaria_batch.db.dockers import DockerRegistryError, DockerSpec, load
from locaria_batch.errors import DeployError
from locaria_batch.settings import settings

DEFAULT_BASE_IMAGE = "localhost/locaria-python-base:bookworm"
# the image's interpreter: Debian bookworm's python3 (3.11) on x86_64
WHEEL_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64", "linux_x86_64")
STEP = re.compile(r"^\s*step\s+(\d+)\s*/\s*(\d+)", re.IGNORECASE)

Progress = Callable[[str, int | None, int | None], None]  # (line, step, of steps)


class ImageError(DeployError):
    pass




def wheel_cache() -> Path:
    """Where dependency wheels are kept between builds: $LOCARIA_CACHE/wheels (~/.cache/locaria-batch)."""
    return settings().cache_dir / "wheels"


def _quiet(line: str, step: int | None, total: int | None) -> None:
    return None


def docker_spec(project_dir: Path, name: str) -> DockerSpec:
    specs = load(project_dir / "docker" / "dockers.json")
    if name not in specs:
        raise DockerRegistryError(f"unknown docker {name!r}: docker/dockers.json lists {', '.join(sorted(specs))}")
    dockerfile(project_dir, name)
    return specs[name]


def dockerfile(project_dir: Path, name: str) -> Path:
    """docker/NAME/Dockerfile when the docker has its own, else the shared docker/Dockerfile."""
    for candidate in (project_dir / "docker" / name / "Dockerfile", project_dir / "docker" / "Dockerfile"):
        if candidate.is_file():
            return candidate
    raise DockerRegistryError(f"neither docker/{name}/Dockerfile nor the shared docker/Dockerfile exists: "
                              "restore docker/Dockerfile from the project")


def requirements(project_dir: Path) -> list[str]:
    with (project_dir / "pyproject.toml").open("rb") as handle:
        return list(tomllib.load(handle)["project"]["dependencies"])


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageError(f"{what} failed: {(done.stderr or done.stdout).strip()[-2000:]}")


def project_wheel(project_dir: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(into), str(project_dir)],
         "building the project's wheel")
    return next(into.glob("*.whl"))


def dependency_wheels(project_dir: Path, cache: Path) -> Path:
    """The dependencies' wheels for CPython 3.11 on manylinux x86_64, kept in `cache` (pip skips
    files it already has there)."""
    cache.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", *platforms,
          "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
          "--dest", str(cache), *requirements(project_dir)], "downloading the dependencies' wheels")
    return cache


@contextmanager
def build_context(project_dir: Path, name: str, wheel_cache: Path) -> Iterator[Path]:
    """A temporary folder: Dockerfile, job/ (docker/NAME/*), modules/, wheels/deps/*.whl, wheels/project/*.whl."""
    docker_spec(project_dir, name)
    with tempfile.TemporaryDirectory(prefix=f"locaria-build-{name}-") as tmp:
        context = Path(tmp)
        shutil.copy2(dockerfile(project_dir, name), context / "Dockerfile")
        own = project_dir / "docker" / name
        if own.is_dir():
            shutil.copytree(own, context / "job", ignore=shutil.ignore_patterns("Dockerfile", "__pycache__"))
        else:
            (context / "job").mkdir()
        modules = project_dir / "docker" / "modules"
        if modules.is_dir():
            shutil.copytree(modules, context / "modules")
        else:
            (context / "modules").mkdir()
        (context / "requirements.txt").write_text("\n".join(requirements(project_dir)) + "\n")
        deps = context / "wheels" / "deps"
        deps.mkdir(parents=True)
        for wheel in dependency_wheels(project_dir, wheel_cache).glob("*.whl"):
            shutil.copy2(wheel, deps / wheel.name)
        project_wheel(project_dir, context / "wheels" / "project")
        yield context


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str


def build(client: DockerClient, project_dir: Path, name: str, *, wheel_cache: Path,
          base_image: str = DEFAULT_BASE_IMAGE, progress: Progress = _quiet) -> BuiltImage:
    """Build docker NAME's image as `local_image(NAME)`, reporting each line of build output."""
    tag = local_image(name)
    progress("assembling the build context (project wheel + dependency wheels)", None, None)
    with build_context(project_dir, name, wheel_cache) as context:
        progress("building", None, None)
        image_id = None
        step = total = None
        try:
            stream = client.api.build(path=str(context), tag=tag, rm=True, forcerm=True, decode=True,
                                      buildargs={"BASE_IMAGE": base_image, "JOB": name})
            for chunk in stream:
                if "error" in chunk:
                    raise ImageError(f"building {name} failed: {chunk['error'].strip()}")
                for line in str(chunk.get("stream", "")).splitlines():
                    matched = STEP.match(line)
                    if matched:
                        step, total = int(matched.group(1)), int(matched.group(2))
                    if line.strip():
                        progress(line.strip(), step, total)
                if "aux" in chunk and isinstance(chunk["aux"], dict):
                    image_id = chunk["aux"].get("ID") or image_id
        except (APIError, BuildError) as exc:
            raise ImageError(f"building {name} failed: {exc}") from exc
        except DockerException as exc:
            raise ImageError(f"the container engine stopped answering while building {name}: {exc}") from exc
    try:
        image = client.images.get(tag)
    except DockerException as exc:
        raise ImageError(f"building {name} produced no image tagged {tag}: {exc}") from exc
    return BuiltImage(tag=tag, image_id=str(image_id or image.id))


# -- push ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryAuth:
    registry: str  # host name, e.g. 123456789012.dkr.ecr.eu-west-2.amazonaws.com
    username: str
    password: str

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password, "serveraddress": self.registry}


def ecr_auth(ecr_client: Any, repository_uri: str) -> RegistryAuth:
    """Log in to the registry holding `repository_uri` with a token from ECR (no AWS CLI needed)."""
    registry_id = repository_uri.split(".", 1)[0]
    data = ecr_client.get_authorization_token(registryIds=[registry_id])["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return RegistryAuth(registry=repository_uri.split("/", 1)[0], username=username, password=password)


def version_tag(project_version: str, image_id: str) -> str:
    """Immutable: the project version plus the image's content digest."""
    digest = image_id.split(":", 1)[-1]
    return f"{project_version}-{digest[:12]}"


@dataclass(frozen=True)
class PushedImage:
    repository_uri: str
    tags: tuple[str, ...]

    @property
    def image(self) -> str:
        return f"{self.repository_uri}:{self.tags[0]}"


def push(client: DockerClient, built: BuiltImage, repository_uri: str, auth: RegistryAuth,
         project_version: str, progress: Progress = _quiet) -> PushedImage:
    """Tag the image with the docker's own repository (version tag and latest) and push both."""
    tags = (version_tag(project_version, built.image_id), "latest")
    for tag in tags:
        if not client.api.tag(built.tag, repository_uri, tag, force=True):
            raise ImageError(f"could not tag {built.tag} as {repository_uri}:{tag}")
    for tag in tags:
        progress(f"pushing {repository_uri}:{tag}", None, None)
        try:
            for chunk in client.api.push(repository_uri, tag=tag, auth_config=auth.auth_config(), stream=True,
                                         decode=True):
                if "error" in chunk:
                    raise ImageError(f"pushing {repository_uri}:{tag} failed: {chunk['error']}")
                if chunk.get("status"):
                    progress(f"{chunk.get('id', '')} {chunk['status']} {chunk.get('progress', '')}".strip(),
                             None, None)
        except DockerException as exc:
            raise ImageError(f"pushing {repository_uri}:{tag} failed: {exc}") from exc
    return PushedImage(repository_uri=repository_uri, tags=tags)
