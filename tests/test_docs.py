"""The documentation against the code: the diagrams are rendered from their sources and name every
status and job state; the by-hand appendix of docs/aws.md names every resource as the stack does."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from locaria_batch.deploy import render
from locaria_batch.deploy.bucket import cors_rule, notification_id
from locaria_batch.deploy.secrets import SECRETS
from locaria_batch.deploy.stages import load_stages, target
from locaria_batch.dispatch.store import JobState
from locaria_batch.files import statuses
from tests.test_deploy_render import load

REPO = Path(__file__).resolve().parent.parent
DIAGRAMS = sorted((REPO / "docs" / "diagrams").glob("*.dot"))


def dot() -> str:
    found = shutil.which("dot")
    if found is None:
        pytest.fail("Graphviz is not installed: run scripts/bootstrap.sh --test (apt-get install graphviz)")
    return found


@pytest.mark.parametrize("source", DIAGRAMS, ids=[d.stem for d in DIAGRAMS])
def test_the_checked_in_pictures_are_rendered_from_their_sources(source: Path, tmp_path: Path) -> None:
    rendered = tmp_path / f"{source.stem}.png"
    done = subprocess.run([dot(), "-Tpng", "-Gdpi=110", str(source), "-o", str(rendered)], capture_output=True,
                          text=True)
    assert done.returncode == 0 and not done.stderr, done.stderr
    image = REPO / "docs" / "images" / f"{source.stem}.png"
    assert image.exists(), f"{image} is missing: run `make docs`"
    assert image.read_bytes() == rendered.read_bytes(), f"{image} is older than {source}: run `make docs`"


def test_the_pictures_are_shown() -> None:
    readme = (REPO / "README.md").read_text()
    assert [d.stem for d in DIAGRAMS] == ["aws", "states"]
    assert "![The AWS stack of one stage](docs/images/aws.png)" in readme
    assert "![A file's status and its job's state](docs/images/states.png)" in readme
    assert "![The AWS stack of one stage](images/aws.png)" in (REPO / "docs" / "aws.md").read_text()


def test_the_state_diagram_names_every_status_and_job_state() -> None:
    source = (REPO / "docs" / "diagrams" / "states.dot").read_text()
    nodes = set(re.findall(r"^\s*(\w+) \[", source, re.MULTILINE))
    assert set(statuses.ALL) <= nodes, set(statuses.ALL) - nodes
    assert {f"job_{state}" for state in JobState} <= nodes


def appendix() -> str:
    """The by-hand appendix of docs/aws.md with its variables set as for the example's dev stage."""
    text = (REPO / "docs" / "aws.md").read_text().split("## Appendix: the same by hand", 1)[1]
    for variable, value in (("SUFFIX", "dev-maindev"), ("BUCKET", "locaria-dev-maindev"), ("AWS_REGION", "eu-west-2")):
        text = text.replace(f"${{{variable}}}", value).replace(f"${variable}", value)
    return text


def test_the_by_hand_appendix_names_everything_as_the_stack_does() -> None:
    dev = target(load_stages(REPO / "locaria.example.json"), "dev", None, None, REPO)
    dockers = load(REPO / "docker" / "dockers.json")
    template = render.cloudformation(dev, dockers)
    text = appendix()
    # the per-docker steps loop over every docker, with the docker as $d
    assert f"for d in {' '.join(dockers)}; do" in text
    per_docker = re.compile("|".join(dockers))
    names = {dev.bucket, dev.upload_prefix, notification_id(dev), cors_rule(dev)["ID"], "s3:ObjectCreated:*"}
    names |= {dev.secret_name(secret.key) for secret in SECRETS}
    for resource in template["Resources"].values():
        properties = resource["Properties"]
        if resource["Type"] == "AWS::Lambda::Function":
            names |= {properties["FunctionName"], properties["Runtime"], properties["Handler"].rsplit(".", 1)[1],
                      *properties["Environment"]["Variables"]}
        if resource["Type"] == "AWS::Logs::LogGroup" and not properties["LogGroupName"].startswith("/aws/lambda/"):
            names.add(per_docker.sub("$d", properties["LogGroupName"]))
        if resource["Type"] == "AWS::ECR::Repository":
            names.add(per_docker.sub("$d", properties["RepositoryName"]))
        if resource["Type"] == "AWS::ECS::Cluster":
            names.add(properties["ClusterName"])
        if resource["Type"] == "AWS::Events::Rule" and "ScheduleExpression" in properties:
            names.add(properties["ScheduleExpression"])
        if resource["Type"] == "AWS::ECS::TaskDefinition" and properties["Family"].endswith("file_loader"):
            container = properties["ContainerDefinitions"][0]
            names |= {properties["Family"], *(secret["ValueFrom"] for secret in container["Secrets"]),
                      f'"cpu": "{properties["Cpu"]}"', f'"memory": "{properties["Memory"]}"'}
    pattern = template["Resources"]["TaskStateRule"]["Properties"]["EventPattern"]
    names |= {f'\\"lastStatus\\": [\\"{pattern["detail"]["lastStatus"][0]}\\"]', '\\"prefix\\": \\"locaria/\\"'}
    missing = sorted(name for name in names if name not in text)
    assert missing == [], f"docs/aws.md's appendix does not name {missing} as the stack does"
