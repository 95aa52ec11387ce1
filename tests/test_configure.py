"""The `configure` menu driven through its prompts, against moto's AWS and the Podman engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from typer.testing import CliRunner

from locaria_batch.cli.main import app
from locaria_batch.db.connect import describe
from locaria_batch.deploy.configure import Menu
from tests.aws import REPO, RecordedPush, fargate_config

pytest_plugins = ["tests.aws", "tests.containers"]


def scripted(answers: list[str]) -> tuple[Callable[[str], str], list[str]]:
    """An `input` that answers in turn and keeps the transcript (prompts and answers)."""
    transcript: list[str] = []
    pending: Iterator[str] = iter(answers)

    def ask(prompt: str) -> str:
        answer = next(pending)  # StopIteration: the menu asked more than the script holds
        transcript.append(f"{prompt}{answer}")
        return answer
    return ask, transcript


def menu(config: Path, answers: list[str], **options: Any) -> tuple[Menu, list[str]]:
    ask, transcript = scripted(answers)
    made = Menu(config, REPO, ask=ask, say=transcript.append, poll=0.2, **options)
    return made, transcript


@pytest.mark.container
def test_deploy_a_docker_through_the_menu(stage_config: Path, dev: Any, db_url: str, conn: Any,
                                          engine: docker.DockerClient, base_image: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = RecordedPush()
    monkeypatch.setattr(engine.api, "push", recorder)
    answers = [
        "h", "x",                     # help, then a bad command re-prompts
        "e", "staging", "dev", "", "",  # a bad stage re-prompts; theme and environment take their defaults
        "h", "docker", "nosuch", "file_loader",  # a bad docker re-prompts; the stack is not deployed yet
        "stack",                      # render + apply
        "docker", "file_loader",      # build + push + fargate_config
        "bogus", "q", "q",
    ]
    configure, transcript = menu(stage_config, answers, engine=engine, base_image=base_image)
    assert configure.run() == 0
    text = "\n".join(transcript)
    assert "Stages configured: [dev] [prod]" in text
    assert "e  deploy: choose a stage" in text  # top help
    assert "unknown command 'x': type h for help" in text
    assert "'staging' is not one of dev, prod (q to go back)" in text
    assert "Themes configured: [main]" in text
    assert "Deploy command for dev:main;dev [h for help]? h" in text
    assert "docker  build a docker from docker/dockers.json" in text  # deploy help
    assert "[file_loader] - File loader" in text and "[file_download] - File download" in text
    assert "'nosuch' is not one of file_loader, file_download" in text
    assert "error: the stack for dev/main/dev is not deployed yet" in text
    assert "stack locaria-batch-dev-maindev ready" in text
    # what it writes goes to the stage's database, and it says so first
    assert f"database: {describe(db_url)} (from $LOCARIA_DEV_DB_URL)" in text
    assert f"fargate_config.file_loader will be recorded in {describe(db_url)} (from $LOCARIA_DEV_DB_URL)" in text
    assert "file_loader deployed: 123456789012.dkr.ecr.eu-west-2.amazonaws.com/locaria-batch-dev-maindev/file_loader" \
        in text
    assert "unknown command 'bogus'" in text
    assert transcript[-1].endswith("q") and transcript[-2].endswith("q")
    # the same code as `docker deploy`: the parameter and the push it made
    assert fargate_config(conn)["file_loader"]["containerName"] == "file_loader"
    assert [call["tag"] for call in recorder.calls][1] == "latest"
    assert dev.outputs_file.exists()
    for call in recorder.calls:
        engine.images.remove(f"{call['repository']}:{call['tag']}", noprune=True)


def test_menu_reports_a_missing_daemon(stage_config: Path, dev: Any, db_url: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from locaria_batch.deploy import workflow

    workflow.apply_stack(dev, report=lambda line: None, poll=0.2)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    configure, transcript = menu(stage_config, ["e", "dev", "main", "dev", "docker", "", "q", "q"])
    assert configure.run() == 0
    assert any(line.startswith("error: no Docker daemon answers at unix:///nonexistent/docker.sock")
               for line in transcript)


def test_menu_without_a_stage_configuration(tmp_path: Path) -> None:
    configure, transcript = menu(tmp_path / "locaria.json", [])
    assert configure.run() == 1
    assert transcript == [f"error: {tmp_path / 'locaria.json'} not found: copy locaria.example.json to locaria.json "
                          "and fill it in"]


def test_configure_command_quits(stage_config: Path) -> None:
    result = CliRunner().invoke(app, ["configure"], input="h\nq\n")
    assert result.exit_code == 0, result.output
    assert "Stages configured: [dev] [prod]" in result.output and "q  quit" in result.output


def test_menu_without_the_stage_database(stage_config: Path, dev: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from locaria_batch.deploy import workflow

    workflow.apply_stack(dev, report=lambda line: None, poll=0.2)
    monkeypatch.delenv("LOCARIA_DEV_DB_URL")
    monkeypatch.setenv("LOCARIA_DB_URL", "postgresql://somewhere.invalid/else")  # not the stage's: never used
    configure, transcript = menu(stage_config, ["e", "dev", "", "", "docker", "file_loader", "q", "q"])
    assert configure.run() == 0
    assert "error: set LOCARIA_DEV_DB_URL to the owner's postgresql:// URL (the role that runs `locaria-batch db " \
           "migrate`) of the dev/main/dev database" in transcript
