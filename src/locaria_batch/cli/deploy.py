"""`locaria-batch deploy` (the AWS stack) and `locaria-batch configure` (the interactive menu)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from locaria_batch.cli.common import JsonOption, UsageError, command, consoles, group, print_json, say
from locaria_batch.settings import settings

deploy_app = group("The AWS stack: render serverless.yml / CloudFormation and apply it.")

Stage = Annotated[str, typer.Option("--stage", "-s", metavar="STAGE", help="Stage name in the configuration file.")]
Theme = Annotated[str | None, typer.Option(metavar="THEME", help="Theme (default: the stage's first).")]
Environment = Annotated[str | None, typer.Option("--environment", "-e", metavar="ENV",
                                                 help="Environment (default: the theme's first).")]
ConfigFile = Annotated[Path | None, typer.Option("--config", metavar="PATH", help=(
    "Stage configuration (default: $LOCARIA_STAGE_CONFIG, else locaria.json in the project)."))]
BaseImage = Annotated[str | None, typer.Option("--base", metavar="IMAGE", help=(
    "Base image with Python 3.11 (default: $LOCARIA_BASE_IMAGE, else the local one "
    "scripts/container-base.sh makes)."))]


def config_path(given: Path | None) -> Path:
    path = given or settings().stage_config_file
    if path.is_dir():  # a folder would end in IsADirectoryError deep in the JSON reading
        named = "--config" if given else "the stage configuration (LOCARIA_STAGE_CONFIG, else locaria.json)"
        raise UsageError(f"{named} {path} is a folder; give the stage configuration file, such as locaria.json")
    return path


def base_image(given: str | None) -> str:
    from locaria_batch.deploy.images import DEFAULT_BASE_IMAGE

    return given or settings().base_image or DEFAULT_BASE_IMAGE


def chosen_target(stage: str, theme: str | None, environment: str | None, config: Path | None) -> Any:
    from locaria_batch.deploy.stages import load_stages, target

    return target(load_stages(config_path(config)), stage, theme, environment, settings().project_dir)


@command(deploy_app, "render")
def deploy_render(stage: Stage, theme: Theme = None, environment: Environment = None, config: ConfigFile = None,
                  out: Annotated[Path | None, typer.Option("--out", metavar="DIR", help=(
                      "Output folder (default: .locaria/stacks/STAGE-THEMEENV)."))] = None,
                  as_json: JsonOption = False) -> None:
    """Write serverless.yml and the equivalent cloudformation.json (plus the Lambda package)."""
    from locaria_batch.deploy import workflow

    chosen = chosen_target(stage, theme, environment, config)
    folder = out or settings().home / "stacks" / chosen.suffix
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{'--out ' if out else ''}{folder} is a file, not a folder; give a folder (it is made "
                         "when missing)")
    try:
        written = workflow.render_stack(chosen, folder)
    except (FileExistsError, NotADirectoryError, PermissionError) as exc:
        # checked as it happens rather than before: the folder, or one above it, is made by the rendering
        raise UsageError(f"{'--out ' if out else ''}{folder}: cannot write {exc.filename or folder}: "
                         f"{exc.strerror or exc}; give a folder you can write to (it is made when missing)") from None
    if as_json:
        print_json({"written": [str(path) for path in written]})
        return
    for path in written:
        consoles.out.print(f"wrote {path}", markup=False, highlight=False)


Poll = Annotated[float, typer.Option(metavar="SECONDS", min=0.05, help="Seconds between stack event reads.")]


def report_line(line: str) -> None:
    """Progress of a deployment, on stderr (stdout keeps the result)."""
    consoles.err.print(f"  {line}", markup=False, highlight=False)


@command(deploy_app, "apply")
def deploy_apply(stage: Stage, theme: Theme = None, environment: Environment = None, config: ConfigFile = None,
                 poll: Poll = 5.0, as_json: JsonOption = False) -> None:
    """Make or check everything the stage needs (bucket, secrets, the stack, the upload notification,
    fargate_config in the stage's database), then print the stack's outputs."""
    from rich.table import Table

    from locaria_batch.deploy import workflow

    chosen = chosen_target(stage, theme, environment, config)
    with consoles.err.status(f"deploying {chosen.stack_name}"):
        outputs = workflow.apply_stack(chosen, report=report_line, poll=poll)
    if as_json:
        print_json({"stack": chosen.stack_name, "outputs": outputs})
        return
    table = Table("output", "value", title=f"stack {chosen.stack_name}", title_justify="left")
    for key, value in sorted(outputs.items()):
        table.add_row(key, Text(value))
    consoles.out.print(table)
    say(f"[green]stack {chosen.stack_name} ready[/green]: outputs kept in {escape(str(chosen.outputs_file))}")


@command(deploy_app, "destroy")
def deploy_destroy(stage: Stage, theme: Theme = None, environment: Environment = None, config: ConfigFile = None,
                   delete_bucket: Annotated[bool, typer.Option(
                       "--delete-bucket", help="Also empty and delete the bucket (every upload and download).")
                   ] = False,
                   delete_secrets: Annotated[bool, typer.Option(
                       "--delete-secrets", help="Also delete the three secrets (at once, without a recovery window).")
                   ] = False,
                   forget_fargate_config: Annotated[bool, typer.Option(
                       "--forget-fargate-config", help="Also remove this stack's fargate_config entries from the "
                       "stage's database.")] = False,
                   yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
                   poll: Poll = 5.0, as_json: JsonOption = False) -> None:
    """Delete the stage's stack (cluster, task definitions, repositories, Lambdas, roles); the bucket,
    the secrets and the database stay unless asked."""
    from locaria_batch.deploy import workflow

    chosen = chosen_target(stage, theme, environment, config)
    extra = [what for asked, what in ((delete_bucket, f"the bucket {chosen.bucket} and everything in it"),
                                      (delete_secrets, "the secrets"),
                                      (forget_fargate_config, "its fargate_config entries")) if asked]
    question = f"delete stack {chosen.stack_name} in {chosen.region}" + (f" and {', '.join(extra)}" if extra else "")
    if not yes and not typer.confirm(question + "?", err=True):
        raise typer.Exit(1)
    with consoles.err.status(f"deleting {chosen.stack_name}"):
        workflow.destroy_stack(chosen, delete_bucket=delete_bucket, delete_secrets=delete_secrets,
                               forget_fargate_config=forget_fargate_config, report=report_line, poll=poll)
    kept = [what for asked, what in ((delete_bucket, f"bucket {chosen.bucket}"), (delete_secrets, "secrets"),
                                     (forget_fargate_config, "fargate_config")) if not asked]
    if as_json:
        print_json({"stack": chosen.stack_name, "deleted": True, "kept": kept})
    else:
        say(f"stack {escape(chosen.stack_name)} deleted" + (f"; kept: {escape(', '.join(kept))}" if kept else ""))


def configure(config: ConfigFile = None, base: BaseImage = None) -> None:
    """The interactive menu: e -> stage -> theme -> environment -> docker | stack."""
    from locaria_batch.deploy.configure import Menu

    menu = Menu(config_path(config), settings().project_dir, base_image=base_image(base))
    raise typer.Exit(menu.run())
