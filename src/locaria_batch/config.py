"""Configuration, read from the environment once per process.

Everything the layers need to find the database, the storage and the docker registry
comes from here; there is no other global state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _project_dir() -> Path:
    """The folder holding docker/dockers.json: $LOCARIA_PROJECT_DIR, else the nearest parent
    of the working directory that has one, else the source checkout this package lives in."""
    explicit = os.environ.get("LOCARIA_PROJECT_DIR")
    if explicit:
        return Path(explicit).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "docker" / "dockers.json").is_file():
            return folder
    checkout = PACKAGE_DIR.parent.parent
    if (checkout / "docker" / "dockers.json").is_file():
        return checkout
    return here


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    home: Path  # .locaria: the embedded cluster, local storage, job logs
    db_url: str | None  # LOCARIA_DB_URL; None means the embedded cluster
    db_secret: str | None  # LOCARIA_DB_SECRET: a Secrets Manager id holding the database URL
    storage_url: str  # a directory path or s3://bucket/prefix
    runner: str  # default runner for dockers that do not name one
    download_url_expiry: int = 7 * 24 * 3600

    @property
    def dockers_file(self) -> Path:
        return self.project_dir / "docker" / "dockers.json"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"


@cache
def settings() -> Settings:
    project = _project_dir()
    home = Path(os.environ.get("LOCARIA_HOME") or project / ".locaria").resolve()
    return Settings(
        project_dir=project,
        home=home,
        db_url=os.environ.get("LOCARIA_DB_URL") or None,
        db_secret=os.environ.get("LOCARIA_DB_SECRET") or None,
        storage_url=os.environ.get("LOCARIA_STORAGE") or str(home / "storage"),
        runner=os.environ.get("LOCARIA_RUNNER", "local"),
        download_url_expiry=int(os.environ.get("LOCARIA_DOWNLOAD_URL_EXPIRY", str(7 * 24 * 3600))),
    )


def reset() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    settings.cache_clear()
