"""Every LOCARIA_* environment variable, read in this one typed place.

`VARIABLES` documents each one (the README's configuration table is checked against it by the
tests); `settings()` reads them once per process into a frozen `Settings`.  A malformed value is a
`ConfigurationError` naming the variable, never a traceback deep inside a job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path

from locaria_batch.errors import ConfigurationError

PACKAGE_DIR = Path(__file__).resolve().parent


class RunnerName(StrEnum):
    """Where job attempts run: processes on this machine, containers, or ECS Fargate tasks."""

    LOCAL = "local"
    DOCKER = "docker"
    ECS = "ecs"


RUNNERS = tuple(RunnerName)


@dataclass(frozen=True)
class Variable:
    name: str
    default: str  # as the README shows it
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable("LOCARIA_DB_URL", "the embedded cluster", "the database (a `postgresql://` URL)"),
    Variable("LOCARIA_DB_SECRET", "", "a Secrets Manager secret holding the database URL (AWS)"),
    Variable("LOCARIA_HOME", "`./.locaria`", "embedded cluster, local storage, job logs"),
    Variable("LOCARIA_PROJECT_DIR", "the folder holding `docker/dockers.json`", "the project"),
    Variable("LOCARIA_STORAGE", "`$LOCARIA_HOME/storage`", "a folder, or `s3://bucket/prefix`"),
    Variable("LOCARIA_RUNNER", "`local`", "the runner `worker` and `--wait` use: `local`, `docker` or `ecs`"),
    Variable("LOCARIA_PG_OPTIONS", "", "extra server options for the embedded cluster (`-c name=value …`)"),
    Variable("LOCARIA_DOWNLOAD_URL_EXPIRY", "`604800`", "seconds a download link stays valid"),
    Variable("LOCARIA_UPLOAD_URL_EXPIRY", "`3600`", "seconds a presigned upload URL stays valid"),
    Variable("LOCARIA_DOWNLOAD_SCHEMAS", "", "comma-separated schemas whose tables may be downloaded "
             "(besides `locaria_uploads`)"),
    Variable("LOCARIA_DOWNLOAD_MAX_ROWS", "`10000000`", "the most rows one download may hold"),
    Variable("LOCARIA_LOADER_MAX_FILE_BYTES", "`10737418240`", "the largest upload the loader reads"),
    Variable("LOCARIA_LOADER_MAX_UNPACKED_BYTES", "`21474836480`", "what a zip or `.gz` may expand to in all"),
    Variable("LOCARIA_LOADER_MAX_EXPANSION_RATIO", "`200`", "unpacked / packed size, per entry and overall"),
    Variable("LOCARIA_LOADER_MAX_ARCHIVE_ENTRIES", "`10000`", "entries in one archive"),
    Variable("LOCARIA_LOADER_MAX_NESTING", "`2`", "archives inside archives"),
    Variable("LOCARIA_LOADER_MAX_FEATURES", "`50000000`", "features per layer"),
    Variable("LOCARIA_LOADER_MAX_COLUMNS", "`10000`", "attribute columns per layer"),
    Variable("LOCARIA_LOADER_MAX_LAYERS", "`200`", "layers per file"),
    Variable("LOCARIA_LOADER_MAX_BAD_ROWS", "`10000`", "values the database refuses (emptied and reported) "
             "before the load fails"),
    Variable("LOCARIA_LOADER_MAX_LINE_BYTES", "`134217728`", "the longest line (row) of a CSV/TSV/TXT file, "
             "its cells included"),
    Variable("LOCARIA_HEARTBEAT_SECONDS", "`5`", "how often a running job reports it is alive"),
    Variable("LOCARIA_LEASE_SECONDS", "`30`", "a worker's lease on the jobs it runs: renewed every third of "
             "it; another worker adopts them once it lapses (`worker --lease-seconds`)"),
    Variable("LOCARIA_DOCKER_NETWORK", "`host`", "network of job containers under the `docker` runner"),
    Variable("LOCARIA_JOB_DB_URL", "the embedded cluster's `locaria_job` login",
             "the database URL jobs get: a login of the `locaria_job` role (required with LOCARIA_DB_URL and the "
             "`local` or `docker` runner)"),
    Variable("LOCARIA_CONSOLE_DB_URL", "the embedded cluster's `locaria_console` login",
             "a read-only login (`locaria_console` role) the console reads with"),
    Variable("LOCARIA_LAUNCHER_CONCURRENCY", "`100`", "jobs the AWS launcher Lambda keeps in flight"),
    Variable("LOCARIA_LAUNCHER_SETTLE_SECONDS", "`20`", "how long the launcher waits for the job it was "
             "told about to commit"),
    Variable("LOCARIA_STAGE_CONFIG", "`locaria.json` in the project", "the deployment stages file"),
    Variable("LOCARIA_BASE_IMAGE", "the image `scripts/container-base.sh` builds", "the base of job images"),
    Variable("LOCARIA_CACHE", "`~/.cache/locaria-batch`", "where image builds keep the project's wheels"),
    Variable("LOCARIA_CONSOLE_TOKEN", "", "the token `serve` requires (needed to listen on any address but "
             "loopback)"),
    Variable("LOCARIA_JOB_RETENTION", "`30d`", "finished jobs older than this (`12h`, `30d`, `2w`) are pruned "
             "by `worker`; `off` keeps them"),
    # set by the dispatcher for each job process; not for users
    Variable("LOCARIA_JOB_ID", "set by the dispatcher", "the job a job process runs"),
    Variable("LOCARIA_JOB_TOKEN", "set by the dispatcher", "the attempt's fencing token"),
    Variable("LOCARIA_JOB_ATTEMPT", "set by the dispatcher", "the attempt number"),
    Variable("LOCARIA_FILE_ID", "set by the dispatcher", "the file row the job works on"),
    Variable("LOCARIA_DOCKER", "set by the dispatcher", "the docker (job type) of the job"),
    Variable("LOCARIA_WORK_DIR", "set by the `local` runner", "the attempt's own work directory (temporary "
             "files, unpacked archives), removed when the attempt ends"),
)
KNOWN = {variable.name for variable in VARIABLES}


@dataclass(frozen=True)
class LoaderLimits:
    """Safety limits of the loader: LOCARIA_LOADER_<FIELD> overrides each."""

    max_file_bytes: int = 10 * 1024**3  # the uploaded object
    max_unpacked_bytes: int = 20 * 1024**3  # everything a zip or .gz expands to
    max_expansion_ratio: int = 200  # unpacked size / packed size, per archive entry and overall
    max_archive_entries: int = 10_000
    max_nesting: int = 2  # archives inside archives
    max_features: int = 50_000_000  # per layer
    max_columns: int = 10_000  # attribute columns per layer
    max_layers: int = 200
    max_bad_rows: int = 10_000  # rows with a value the database rejects, reported and emptied
    max_line_bytes: int = 128 * 1024**2  # one line (row) of delimited text, its longest cell included


@dataclass(frozen=True)
class JobIdentity:
    """Who a job process is: set by the dispatcher in the process's environment."""

    job_id: int
    token: str
    attempt: int | None
    file_id: int | None
    docker: str


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    home: Path  # .locaria: the embedded cluster, local storage, job logs
    db_url: str | None  # None means the secret, else the embedded cluster
    db_secret: str | None
    storage_url: str  # a directory path or s3://bucket/prefix
    runner: RunnerName
    pg_options: tuple[str, ...] = ()
    download_url_expiry: int = 7 * 24 * 3600
    upload_url_expiry: int = 3600
    download_schemas: tuple[str, ...] = ()
    download_max_rows: int = 10_000_000
    loader_limits: LoaderLimits = field(default_factory=LoaderLimits)
    heartbeat_seconds: float = 5.0
    lease_seconds: int = 30
    work_dir: Path | None = None
    docker_network: str = "host"
    job_db_url: str | None = None
    console_db_url: str | None = None
    launcher_concurrency: int = 100
    launcher_settle_seconds: float = 20.0
    stage_config: Path | None = None
    base_image: str | None = None
    cache_dir: Path = Path.home() / ".cache" / "locaria-batch"
    console_token: str | None = None
    job_retention: timedelta | None = timedelta(days=30)  # None: never pruned by the worker
    job: JobIdentity | None = None

    @property
    def dockers_file(self) -> Path:
        return self.project_dir / "docker" / "dockers.json"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def stage_config_file(self) -> Path:
        return self.stage_config or self.project_dir / "locaria.json"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        read = _Reader(environ)
        project = _project_dir(read.path("LOCARIA_PROJECT_DIR"))
        home = (read.path("LOCARIA_HOME") or project / ".locaria").resolve()
        runner = read.text("LOCARIA_RUNNER") or "local"
        if runner not in RUNNERS:
            raise ConfigurationError(f"LOCARIA_RUNNER is {runner!r}: choose one of {', '.join(RUNNERS)}")
        runner_name = RunnerName(runner)
        limits = LoaderLimits(**{
            item.name: read.integer(f"LOCARIA_LOADER_{item.name.upper()}", getattr(LoaderLimits, item.name))
            for item in fields(LoaderLimits)})
        defaults = cls(project_dir=project, home=home, db_url=None, db_secret=None, storage_url="",
                       runner=RunnerName.LOCAL)
        return cls(
            project_dir=project,
            home=home,
            db_url=read.text("LOCARIA_DB_URL"),
            db_secret=read.text("LOCARIA_DB_SECRET"),
            storage_url=read.text("LOCARIA_STORAGE") or str(home / "storage"),
            runner=runner_name,
            pg_options=tuple((read.text("LOCARIA_PG_OPTIONS") or "").split()),
            download_url_expiry=read.integer("LOCARIA_DOWNLOAD_URL_EXPIRY", defaults.download_url_expiry),
            upload_url_expiry=read.integer("LOCARIA_UPLOAD_URL_EXPIRY", defaults.upload_url_expiry),
            download_schemas=read.words("LOCARIA_DOWNLOAD_SCHEMAS"),
            download_max_rows=read.integer("LOCARIA_DOWNLOAD_MAX_ROWS", defaults.download_max_rows),
            loader_limits=limits,
            heartbeat_seconds=read.number("LOCARIA_HEARTBEAT_SECONDS", defaults.heartbeat_seconds),
            lease_seconds=read.positive("LOCARIA_LEASE_SECONDS", defaults.lease_seconds),
            work_dir=read.path("LOCARIA_WORK_DIR"),
            docker_network=read.text("LOCARIA_DOCKER_NETWORK") or defaults.docker_network,
            job_db_url=read.text("LOCARIA_JOB_DB_URL"),
            console_db_url=read.text("LOCARIA_CONSOLE_DB_URL"),
            launcher_concurrency=read.integer("LOCARIA_LAUNCHER_CONCURRENCY", defaults.launcher_concurrency),
            launcher_settle_seconds=read.number("LOCARIA_LAUNCHER_SETTLE_SECONDS", defaults.launcher_settle_seconds),
            stage_config=read.path("LOCARIA_STAGE_CONFIG"),
            base_image=read.text("LOCARIA_BASE_IMAGE"),
            cache_dir=read.path("LOCARIA_CACHE") or defaults.cache_dir,
            console_token=read.text("LOCARIA_CONSOLE_TOKEN"),
            job_retention=read.age("LOCARIA_JOB_RETENTION", defaults.job_retention),
            job=_job_identity(read),
        )


class _Reader:
    """Typed reads of documented variables; an empty value counts as unset."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str) -> str | None:
        if name not in KNOWN:
            raise AssertionError(f"{name} is not documented in settings.VARIABLES")
        value = self.environ.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        try:
            return int(value.replace("_", ""))
        except ValueError:
            raise ConfigurationError(f"{name} must be a whole number, not {value!r}") from None

    def positive(self, name: str, default: int) -> int:
        value = self.integer(name, default)
        if value <= 0:
            raise ConfigurationError(f"{name} must be a whole number of seconds above 0, not {value}")
        return value

    def number(self, name: str, default: float) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}") from None

    def age(self, name: str, default: timedelta | None) -> timedelta | None:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() == "off":
            return None
        try:
            return parse_age(value)
        except ValueError as exc:
            raise ConfigurationError(f"{name}: {exc}, or off") from None

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value).expanduser() if value else None

    def words(self, name: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in (self.text(name) or "").split(",") if part.strip())


AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


AGE_MAX = timedelta(days=36525)  # 100 years: beyond it a timedelta overflows, or PostgreSQL's now() - age does


def parse_age(text: str) -> timedelta:
    """'7d', '12h', '30m', '2w' or '90s', at most 100 years."""
    match = AGE.match(text)
    if not match:
        raise ValueError(f"age {text!r} is not understood: give a number and a unit, e.g. 7d, 12h, 30m, 2w")
    unit, amount = AGE_UNITS[match.group(2)], int(match.group(1))
    # compared before the timedelta is made: a huge amount overflows it
    if amount > AGE_MAX / timedelta(**{unit: 1}):
        raise ValueError(f"age {text.strip()!r} is more than 100 years: give a shorter one, e.g. 30d or 52w")
    return timedelta(**{unit: amount})


def _job_identity(read: _Reader) -> JobIdentity | None:
    job_id, token = read.text("LOCARIA_JOB_ID"), read.text("LOCARIA_JOB_TOKEN")
    if job_id is None or token is None:
        return None
    attempt, file_id = read.text("LOCARIA_JOB_ATTEMPT"), read.text("LOCARIA_FILE_ID")
    try:
        return JobIdentity(int(job_id), token, int(attempt) if attempt else None, int(file_id) if file_id else None,
                           read.text("LOCARIA_DOCKER") or "")
    except ValueError:
        raise ConfigurationError("LOCARIA_JOB_ID, LOCARIA_JOB_ATTEMPT and LOCARIA_FILE_ID must be whole numbers"
                                 ) from None


def _project_dir(explicit: Path | None) -> Path:
    """$LOCARIA_PROJECT_DIR, else the nearest parent of the working directory that holds
    docker/dockers.json, else the source checkout this package lives in."""
    if explicit:
        return explicit.resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "docker" / "dockers.json").is_file():
            return folder
    checkout = PACKAGE_DIR.parent.parent
    if (checkout / "docker" / "dockers.json").is_file():
        return checkout
    return here


@cache
def settings() -> Settings:
    return Settings.from_environ(os.environ)


def reset() -> None:
    """Forget the cached settings (tests, and a forked job whose environment was replaced)."""
    settings.cache_clear()


def environment_value(name: str) -> str | None:
    """A variable whose name the user chose (a stage's `databaseUrlEnv`, `jobDatabaseUrlEnv`, ...), read
    here like the rest."""
    return os.environ.get(name) or None
