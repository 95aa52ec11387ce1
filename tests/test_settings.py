"""Every LOCARIA_* variable is read in one place, typed, and documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from locaria_batch.errors import ConfigurationError
from locaria_batch.settings import KNOWN, VARIABLES, RunnerName, Settings

REPO = Path(__file__).resolve().parent.parent


def test_the_readme_table_is_the_settings_table() -> None:
    readme = (REPO / "README.md").read_text()
    documented = re.findall(r"^\| `(LOCARIA_[A-Z_]+)` \|", readme, re.M)
    assert documented == [variable.name for variable in VARIABLES]


def test_no_module_reads_the_environment_but_settings() -> None:
    readers = []
    for path in (REPO / "src" / "locaria_batch").rglob("*.py"):
        text = path.read_text()
        if path.name != "settings.py" and re.search(r"(os\.environ(\.get)?[(\[]|getenv\()\s*\"LOCARIA_", text):
            readers.append(path.name)
        for name in re.findall(r"\"(LOCARIA_[A-Z_]+)\"", text):
            assert name in KNOWN or name.startswith("LOCARIA_LOADER_"), (path, name)
    assert readers == []


def test_values_are_typed_and_checked(tmp_path: Path) -> None:
    read = Settings.from_environ({"LOCARIA_HOME": str(tmp_path), "LOCARIA_DOWNLOAD_SCHEMAS": " a, b ,,",
                                  "LOCARIA_LOADER_MAX_LAYERS": "7", "LOCARIA_RUNNER": "docker",
                                  "LOCARIA_JOB_ID": "12", "LOCARIA_JOB_TOKEN": "t"})
    assert read.home == tmp_path and read.storage_url == str(tmp_path / "storage")
    assert read.download_schemas == ("a", "b") and read.loader_limits.max_layers == 7
    assert read.runner is RunnerName.DOCKER and read.job is not None and read.job.job_id == 12
    with pytest.raises(ConfigurationError, match="LOCARIA_DOWNLOAD_MAX_ROWS must be a whole number, not 'lots'"):
        Settings.from_environ({"LOCARIA_DOWNLOAD_MAX_ROWS": "lots"})
    with pytest.raises(ConfigurationError, match="LOCARIA_RUNNER is 'k8s': choose one of local, docker, ecs"):
        Settings.from_environ({"LOCARIA_RUNNER": "k8s"})
