"""`docker new NAME`: a job that runs as written (locally and in its image), to be edited."""

from __future__ import annotations

from pathlib import Path

from locaria_batch.db.dockers import NAME_PATTERN, DockerRegistryError, DockerSpec, load, save

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
    """Write docker/NAME/NAME_job.py and add NAME to docker/dockers.json; its image is built from the
    shared docker/Dockerfile, which puts docker/NAME/ on the image's PYTHONPATH."""
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
    (folder / f"{name}_job.py").write_text(JOB.format(name=name, description=spec.description,
                                                      trigger=spec.trigger_statuses[0]))
    specs[name] = spec
    save(registry, specs)
    return spec
