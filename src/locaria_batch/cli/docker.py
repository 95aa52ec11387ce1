"""`locaria-batch docker`: the job containers listed in docker/dockers.json."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from locaria_batch.cli.common import JsonOption, command, consoles, database, group, print_json, say
from locaria_batch.cli.deploy import (
    BaseImage,
    ConfigFile,
    Environment,
    Stage,
    Theme,
    base_image,
    chosen_target,
    report_line,
)
from locaria_batch.settings import settings

docker_app = group("The job containers listed in docker/dockers.json: sync, build, push, deploy, new.")

Name = Annotated[str, typer.Argument(metavar="NAME", help="The docker's name (its folder under docker/ and key "
                                     "in dockers.json).")]


@contextmanager
def build_progress(what: str) -> Iterator[Any]:
    """A bar over the Dockerfile's steps, with the current output line underneath."""
    err = consoles.err
    if not sys.stderr.isatty():
        def plain(line: str, step: int | None, total: int | None) -> None:
            if step is None or line.upper().startswith("STEP"):
                err.print(f"{what}: {line}", markup=False, highlight=False)
        yield plain
        return
    with Progress(SpinnerColumn(), TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[line]}", markup=False), console=err,
                  transient=True) as progress:
        task = progress.add_task(what, total=None, line="")

        def update(line: str, step: int | None, total: int | None) -> None:
            progress.update(task, completed=step or 0, total=total, line=line[:70])
        yield update


@command(docker_app, "sync")
def docker_sync(as_json: JsonOption = False) -> None:
    """Load docker/dockers.json into the database (which statuses launch which job)."""
    from locaria_batch.db import dockers

    specs = dockers.load(settings().dockers_file)
    with database(owner=True) as conn:
        names = dockers.sync(conn, specs)
    if as_json:
        print_json({"synced": names})
    else:
        say(f"synced {len(names)} docker(s): {', '.join(names)}")


@command(docker_app, "build")
def docker_build(name: Name, base: BaseImage = None, as_json: JsonOption = False) -> None:
    """Build docker NAME's image through the Engine API of DOCKER_HOST (Docker or Podman's socket)."""
    from locaria_batch.deploy import workflow

    with build_progress(f"building {name}") as progress:
        built = workflow.build(settings().project_dir, name, base_image=base_image(base), progress=progress)
    if as_json:
        print_json({"tag": built.tag, "image_id": built.image_id})
    else:
        say(f"[green]built[/green] {built.tag} ({built.image_id[:19]})")


@command(docker_app, "push")
def docker_push(name: Name, stage: Stage, theme: Theme = None, environment: Environment = None,
                config: ConfigFile = None, as_json: JsonOption = False) -> None:
    """Tag docker NAME's image with its own ECR repository (a version tag and latest) and push it."""
    from locaria_batch.deploy import workflow

    chosen = chosen_target(stage, theme, environment, config)
    with build_progress(f"pushing {name}") as progress:
        pushed = workflow.push(chosen, name, progress=progress)
    if as_json:
        print_json({"repository": pushed.repository_uri, "tags": pushed.tags})
    else:
        say(f"[green]pushed[/green] {pushed.repository_uri} tags {', '.join(pushed.tags)}")


@command(docker_app, "deploy")
def docker_deploy(name: Name, stage: Stage, theme: Theme = None, environment: Environment = None,
                  config: ConfigFile = None, base: BaseImage = None, as_json: JsonOption = False) -> None:
    """Build and push docker NAME, then record its fargate_config entry in the stage's own database."""
    from locaria_batch.deploy import workflow

    chosen = chosen_target(stage, theme, environment, config)
    with build_progress(f"deploying {name}") as progress:
        entry = workflow.deploy(chosen, name, base_image=base_image(base), progress=progress, report=report_line)
    if as_json:
        print_json({"docker": name, "fargate_config": entry})
    else:
        say(f"[green]deployed[/green] {name}: {entry['image']}; fargate_config.{name} recorded")


@command(docker_app, "new")
def docker_new(name: Name, description: Annotated[str | None, typer.Option(metavar="TEXT",
                                                                           help="Shown in menus.")] = None,
               as_json: JsonOption = False) -> None:
    """Scaffold a runnable job: docker/NAME/NAME_job.py and its dockers.json entry (built from docker/Dockerfile)."""
    from locaria_batch.deploy.scaffold import new_docker

    spec = new_docker(settings().project_dir, name, description)
    if as_json:
        print_json({"docker": name, "trigger_statuses": spec.trigger_statuses})
    else:
        say(f"[green]created[/green] docker/{name}/ and its dockers.json entry; after "
            f"`locaria-batch docker sync`, files set to {spec.trigger_statuses[0]} run it")
