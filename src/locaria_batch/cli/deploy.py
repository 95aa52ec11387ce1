"""Deployment commands: `docker build|push|deploy|new`, `deploy render|apply`, `configure`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from locaria_batch.cli.output import fail
from locaria_batch.settings import settings

deploy_app = typer.Typer(help="The AWS stack: render serverless.yml / CloudFormation and apply it.",
                         no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Name = Annotated[str, typer.Argument(help="The docker's name (its folder under docker/ and key in dockers.json).")]
Stage = Annotated[str, typer.Option("--stage", "-s", help="Stage name in the configuration file.")]
Theme = Annotated[str | None, typer.Option(help="Theme (default: the stage's first).")]
Environment = Annotated[str | None, typer.Option("--environment", "-e",
                                                 help="Environment (default: the theme's first).")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="Stage configuration (default: "
                                                 "$LOCARIA_STAGE_CONFIG, else locaria.json in the project).")]
BaseImage = Annotated[str | None, typer.Option("--base", help="Base image with Python 3.11 (default: the local "
                                               "one scripts/container-base.sh makes).")]


def _errors() -> tuple[type[Exception], ...]:
    from locaria_batch.deploy.configure import STEP_ERRORS

    return STEP_ERRORS


def config_path(given: Path | None) -> Path:
    return given or settings().stage_config_file


def _target(stage: str, theme: str | None, environment: str | None, config: Path | None) -> Any:
    from locaria_batch.deploy.stages import StageConfigError, load_stages, target

    try:
        return target(load_stages(config_path(config)), stage, theme, environment, settings().project_dir)
    except StageConfigError as exc:
        fail(str(exc))


@contextmanager
def build_progress(what: str) -> Iterator[Any]:
    """A bar over the Dockerfile's steps, with the current output line underneath."""
    if not sys.stderr.isatty():
        def plain(line: str, step: int | None, total: int | None) -> None:
            if step is None or line.upper().startswith("STEP"):
                err.print(f"{what}: {line}", markup=False, highlight=False)
        yield plain
        return
    with Progress(SpinnerColumn(), TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[line]}"), console=err, transient=True) as progress:
        task = progress.add_task(what, total=None, line="")

        def update(line: str, step: int | None, total: int | None) -> None:
            progress.update(task, completed=step or 0, total=total, line=line[:70])
        yield update


def _report(line: str) -> None:
    err.print(f"  {line}", markup=False, highlight=False)


def _base(base: str | None) -> str:
    from locaria_batch.deploy.images import DEFAULT_BASE_IMAGE

    return base or settings().base_image or DEFAULT_BASE_IMAGE


# -- docker ------------------------------------------------------------------------------------
def docker_build(name: Name, base: BaseImage = None) -> None:
    """Build docker NAME's image through the Engine API of DOCKER_HOST (Docker or Podman's socket)."""
    from locaria_batch.deploy import workflow

    try:
        with build_progress(f"building {name}") as progress:
            built = workflow.build(settings().project_dir, name, base_image=_base(base), progress=progress)
    except _errors() as exc:
        fail(str(exc))
    console.print(f"[green]built[/green] {built.tag} ({built.image_id[:19]})")


def docker_push(name: Name, stage: Stage, theme: Theme = None, environment: Environment = None,
                config: ConfigFile = None) -> None:
    """Tag docker NAME's image with its own ECR repository (a version tag and latest) and push it."""
    from locaria_batch.deploy import workflow

    chosen = _target(stage, theme, environment, config)
    try:
        with build_progress(f"pushing {name}") as progress:
            pushed = workflow.push(chosen, name, progress=progress)
    except _errors() as exc:
        fail(str(exc))
    console.print(f"[green]pushed[/green] {pushed.repository_uri} tags {', '.join(pushed.tags)}")


def docker_deploy(name: Name, stage: Stage, theme: Theme = None, environment: Environment = None,
                  config: ConfigFile = None, base: BaseImage = None) -> None:
    """Build and push docker NAME, then record its fargate_config entry in the database."""
    import psycopg

    from locaria_batch.db import connect
    from locaria_batch.deploy import workflow

    chosen = _target(stage, theme, environment, config)
    try:
        with connect(autocommit=True) as conn, build_progress(f"deploying {name}") as progress:
            entry = workflow.deploy(chosen, name, conn, base_image=_base(base), progress=progress)
    except psycopg.OperationalError as exc:
        fail(f"cannot reach the database to record fargate_config: {str(exc).strip().splitlines()[0]}")
    except _errors() as exc:
        fail(str(exc))
    console.print(f"[green]deployed[/green] {name}: {entry['image']}; fargate_config.{name} recorded")


def docker_new(name: Name, description: Annotated[str | None, typer.Option(help="Shown in menus.")] = None) -> None:
    """Scaffold a runnable job: docker/NAME/NAME_job.py and its dockers.json entry (built from docker/Dockerfile)."""
    from locaria_batch.deploy.scaffold import new_docker

    try:
        spec = new_docker(settings().project_dir, name, description)
    except _errors() as exc:
        fail(str(exc))
    console.print(f"[green]created[/green] docker/{name}/ and its dockers.json entry; after "
                  f"`locaria-batch docker sync`, files set to {spec.trigger_statuses[0]} run it")


# -- deploy ------------------------------------------------------------------------------------
@deploy_app.command("render")
def deploy_render(stage: Stage, theme: Theme = None, environment: Environment = None, config: ConfigFile = None,
                  out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: "
                                                            ".locaria/stacks/STAGE-THEMEENV).")] = None) -> None:
    """Write serverless.yml and the equivalent cloudformation.json (plus the Lambda package)."""
    from locaria_batch.deploy import workflow

    chosen = _target(stage, theme, environment, config)
    try:
        written = workflow.render_stack(chosen, out or settings().project_dir / ".locaria" / "stacks" / chosen.suffix)
    except _errors() as exc:
        fail(str(exc))
    for path in written:
        console.print(f"wrote {path}")


@deploy_app.command("apply")
def deploy_apply(stage: Stage, theme: Theme = None, environment: Environment = None, config: ConfigFile = None,
                 poll: Annotated[float, typer.Option(help="Seconds between stack event reads.")] = 5.0) -> None:
    """Create or update the stack through CloudFormation until it settles; record its outputs."""
    from locaria_batch.deploy import workflow

    chosen = _target(stage, theme, environment, config)
    try:
        with err.status(f"deploying {chosen.stack_name}"):
            outputs = workflow.apply_stack(chosen, report=_report, poll=poll)
    except _errors() as exc:
        fail(str(exc))
    console.print(f"[green]stack {chosen.stack_name} ready[/green]: {len(outputs)} outputs in {chosen.outputs_file}")


# -- configure ---------------------------------------------------------------------------------
def configure(config: ConfigFile = None, base: BaseImage = None) -> None:
    """The interactive menu: e -> stage -> theme -> environment -> docker | stack."""
    from locaria_batch.db import connect
    from locaria_batch.deploy.configure import Menu

    menu = Menu(config_path(config), settings().project_dir, connect=lambda: connect(autocommit=True),
                base_image=_base(base))
    raise typer.Exit(menu.run())


def register(app: typer.Typer, docker_app: typer.Typer) -> None:
    docker_app.command("build")(docker_build)
    docker_app.command("push")(docker_push)
    docker_app.command("deploy")(docker_deploy)
    docker_app.command("new")(docker_new)
    app.add_typer(deploy_app, name="deploy")
    app.command("configure")(configure)
