"""`locaria-batch deploy` (the AWS stack) and `locaria-batch configure` (the interactive menu)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from locaria_batch.cli.common import JsonOption, command, consoles, group, print_json, say
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
    return given or settings().stage_config_file


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
    written = workflow.render_stack(chosen, out or settings().home / "stacks" / chosen.suffix)
    if as_json:
        print_json({"written": [str(path) for path in written]})
        return
    for path in written:
        consoles.out.print(f"wrote {path}", markup=False, highlight=False)


@command(deploy_app, "apply")
def deploy_apply(stage: Stage, theme: Theme = None, environment: Environment = None, config: ConfigFile = None,
                 poll: Annotated[float, typer.Option(metavar="SECONDS", min=0.05,
                                                     help="Seconds between stack event reads.")] = 5.0,
                 as_json: JsonOption = False) -> None:
    """Create or update the stack through CloudFormation until it settles; record its outputs."""
    from locaria_batch.deploy import workflow

    chosen = chosen_target(stage, theme, environment, config)
    err = consoles.err

    def report(line: str) -> None:
        err.print(f"  {line}", markup=False, highlight=False)

    with err.status(f"deploying {chosen.stack_name}"):
        outputs = workflow.apply_stack(chosen, report=report, poll=poll)
    if as_json:
        print_json({"stack": chosen.stack_name, "outputs": outputs})
    else:
        say(f"[green]stack {chosen.stack_name} ready[/green]: {len(outputs)} outputs in {chosen.outputs_file}")


def configure(config: ConfigFile = None, base: BaseImage = None) -> None:
    """The interactive menu: e -> stage -> theme -> environment -> docker | stack."""
    from locaria_batch.db import connect
    from locaria_batch.deploy.configure import Menu

    menu = Menu(config_path(config), settings().project_dir, connect=lambda: connect(autocommit=True),
                base_image=base_image(base))
    raise typer.Exit(menu.run())
