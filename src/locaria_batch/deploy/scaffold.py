"""`docker new NAME`: a job that runs as written (locally and in its image), to be edited."""

from __future__ import annotations

from pathlib import Path

from locaria_batch.deploy.dockers import NAME_PATTERN, DockerRegistryError, DockerSpec, load, save

DOCKERFILE = """\
# The {name} job.  Built by `locaria-batch docker build {name}`: the context holds this folder,
# docker/modules/ (as modules/), the project's wheel and its dependencies' wheels (no network needed).
ARG BASE_IMAGE=localhost/locaria-python-base:bookworm
FROM ${{BASE_IMAGE}}

RUN python3 -m venv /opt/locaria
COPY requirements.txt /build/requirements.txt
COPY wheels/deps/ /build/deps/
RUN /opt/locaria/bin/pip install --no-cache-dir --no-index --find-links /build/deps -r /build/requirements.txt \\
    && rm -rf /build/deps
COPY wheels/project/ /build/project/
RUN /opt/locaria/bin/pip install --no-cache-dir --no-index --no-deps /build/project/*.whl && rm -rf /build/project
COPY modules/ /app/modules/
# the same relative path as in the project, so dockers.json's command works here and locally
COPY {name}_job.py /app/docker/{name}/{name}_job.py

ENV PATH=/opt/locaria/bin:$PATH PYTHONPATH=/app/docker/{name}:/app/modules PYTHONUNBUFFERED=1 LANG=C.UTF-8
WORKDIR /app
CMD ["python", "docker/{name}/{name}_job.py"]
"""

JOB = '''\
"""{description}

Runs for every file row whose status becomes {trigger}: it counts the lines of the file's
uploaded object and records them as `line_count`.  Replace `run` with the job's own work;
`locaria_batch.job` has the whole SDK (progress, log, storage, the database connection).
"""

from __future__ import annotations

import sys

from locaria_batch.job import JobContext, JobError, JobResult, main
from locaria_batch.storage import incoming_key


def run(ctx: JobContext) -> JobResult:
    ext = ctx.attributes.get("ext")
    if not ext:
        raise JobError("This file has no `ext` attribute, so its uploaded object cannot be found: upload it again.")
    key = incoming_key(ctx.file_id, str(ext))
    if not ctx.storage.exists(key):
        raise JobError(f"The uploaded object {{key}} is missing: upload the file again.")
    total = ctx.storage.size(key)
    lines = done = 0
    with ctx.storage.open(key) as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            lines += chunk.count(b"\\n")
            done += len(chunk)
            ctx.progress(done, total)
    ctx.log(f"counted {{lines}} lines")
    return JobResult(attributes={{"line_count": lines}})


if __name__ == "__main__":
    sys.exit(main(["{name}"]))
'''


def new_docker(project_dir: Path, name: str, description: str | None = None) -> DockerSpec:
    """Write docker/NAME/ (Dockerfile + NAME_job.py) and add NAME to docker/dockers.json."""
    if not NAME_PATTERN.match(name):
        raise DockerRegistryError(
            f"docker name {name!r} must be lower-case letters, digits and underscores, starting with a letter")
    registry = project_dir / "docker" / "dockers.json"
    specs = load(registry)
    folder = project_dir / "docker" / name
    if name in specs or folder.exists():
        raise DockerRegistryError(f"docker {name!r} already exists (docker/{name}/ or its dockers.json entry): "
                                  "choose another name")
    upper = name.upper()
    spec = DockerSpec(
        name=name, description=description or f"{name}: counts the lines of an uploaded file",
        trigger_statuses=[f"{upper}_REQUESTED"], running_status=f"{upper}_PROCESSING",
        success_status=f"{upper}_COMPLETED", error_status=f"{upper}_ERROR", handler=f"{name}_job:run",
        command=["{python}", f"docker/{name}/{name}_job.py"], cpu=256, memory=512, timeout_seconds=900,
    )
    folder.mkdir(parents=True)
    (folder / "Dockerfile").write_text(DOCKERFILE.format(name=name))
    (folder / f"{name}_job.py").write_text(JOB.format(name=name, description=spec.description,
                                                      trigger=spec.trigger_statuses[0]))
    specs[name] = spec
    save(registry, specs)
    return spec
