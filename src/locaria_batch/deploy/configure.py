"""`locaria-batch configure`: the interactive deployment menu.

    Command [h for help]?  e -> stage -> theme -> environment
    Deploy command for {stage}:{theme};{environment} [h for help]?  docker | stack | q

It drives the same workflow functions as the `docker` and `deploy` commands (so what they write
goes to the chosen stage's own database, named before anything is written); a failing step prints
one sentence and returns to the menu.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from locaria_batch.deploy import workflow
from locaria_batch.deploy.images import DEFAULT_BASE_IMAGE
from locaria_batch.deploy.stages import StageConfigError, Target, load_stages, target, themes
from locaria_batch.errors import LocariaError, first_line

TOP_HELP = """\
  e  deploy: choose a stage, theme and environment, then build/push dockers or deploy the stack
  h  this help
  q  quit"""
DEPLOY_HELP = """\
  docker  build a docker from docker/dockers.json, push it to its ECR repository and record its fargate_config
  stack   render serverless.yml + cloudformation.json and create/update the stack through CloudFormation
  h       this help
  q       back to the main menu"""


@dataclass
class Menu:
    config_path: Path
    project_dir: Path
    ask: Callable[[str], str] = input
    say: Callable[[str], None] = print
    engine: Any = None  # a Docker SDK client; default: DOCKER_HOST
    aws: Any = None  # a boto3 session; default: the stage's profile or the environment
    base_image: str = DEFAULT_BASE_IMAGE
    poll: float = 5.0
    stages: dict[str, Any] = field(default_factory=dict)

    def prompt(self, question: str, default: str | None = None) -> str:
        try:
            answer = self.ask(f"{question} [{default}]? " if default else f"{question}? ").strip()
        except EOFError:
            return "q"
        return answer or (default or "")

    def run(self) -> int:
        try:
            self.stages = load_stages(self.config_path)
        except StageConfigError as exc:
            self.say(f"error: {exc}")
            return 1
        self.say("Stages configured: " + " ".join(f"[{name}]" for name in self.stages))
        while True:
            command = self.prompt("Command [h for help]")
            if command == "q":
                return 0
            if command == "h":
                self.say(TOP_HELP)
            elif command == "e":
                chosen = self.choose_target()
                if chosen is not None:
                    self.deploy_menu(chosen)
            else:
                self.say(f"unknown command {command!r}: type h for help")

    def choose_from(self, label: str, options: list[str], default: str) -> str:
        while True:
            answer = self.prompt(label, default)
            if answer in options or answer == "q":
                return answer
            self.say(f"{answer!r} is not one of {', '.join(options)} (q to go back)")

    def choose_target(self) -> Target | None:
        names = list(self.stages)
        stage = self.choose_from("Stage to deploy", names, names[0])
        if stage == "q":
            return None
        available = themes(self.stages, stage)
        if not available:
            self.say(f"error: stage {stage!r} has no themes in {self.config_path}")
            return None
        self.say("Themes configured: " + " ".join(f"[{name}]" for name in available))
        theme = self.choose_from("Theme to use", list(available), next(iter(available)))
        if theme == "q":
            return None
        environments = list(available[theme] or {})
        if not environments:
            self.say(f"error: theme {theme!r} has no environments in {self.config_path}")
            return None
        environment = self.choose_from("environment to use", environments, environments[0])
        if environment == "q":
            return None
        try:
            return target(self.stages, stage, theme, environment, self.project_dir)
        except StageConfigError as exc:
            self.say(f"error: {exc}")
            return None

    def deploy_menu(self, chosen: Target) -> None:
        while True:
            command = self.prompt(f"Deploy command for {chosen.stage}:{chosen.theme};{chosen.environment} "
                                  "[h for help]")
            if command == "q":
                return
            if command == "h":
                self.say(DEPLOY_HELP)
            elif command == "docker":
                self.step(lambda: self.deploy_docker(chosen))
            elif command == "stack":
                self.step(lambda: self.deploy_stack(chosen))
            else:
                self.say(f"unknown command {command!r}: type h for help")

    def step(self, action: Callable[[], None]) -> None:
        try:
            action()
        except LocariaError as exc:
            self.say(f"error: {exc}")
        except psycopg.Error as exc:
            from locaria_batch.db.connect import explain_database_error

            explained = explain_database_error(exc)
            self.say(f"error: {explained or first_line(exc)}")

    def deploy_docker(self, chosen: Target) -> None:
        specs = workflow.specs(self.project_dir)
        for name, spec in specs.items():
            self.say(f"[{name}] - {spec.description}")
        names = list(specs)
        name = self.choose_from(f"deploy docker image stage {chosen.stage}, theme {chosen.theme}, environment "
                                f"{chosen.environment}", names, names[0])
        if name == "q":
            return
        self.say(f"building {name}")
        entry = workflow.deploy(chosen, name, base_image=self.base_image, progress=self.build_progress(),
                                engine=self.engine, aws=self.aws, report=self.say)
        self.say(f"{name} deployed: {entry['ecrRepositoryUri']} (fargate_config.{name} recorded)")

    def build_progress(self) -> workflow.Progress:
        def show(line: str, step: int | None, total: int | None) -> None:
            if step is None or line.upper().startswith("STEP"):
                self.say(f"  {line}" if step is None else f"  [{step}/{total}] {line}")
        return show

    def deploy_stack(self, chosen: Target) -> None:
        out_dir = self.project_dir / ".locaria" / "stacks" / chosen.suffix
        for path in workflow.render_stack(chosen, out_dir):
            self.say(f"wrote {path}")
        outputs = workflow.apply_stack(chosen, report=lambda line: self.say(f"  {line}"), poll=self.poll,
                                       aws=self.aws)
        self.say(f"stack {chosen.stack_name} ready: {len(outputs)} outputs in {chosen.outputs_file}")
