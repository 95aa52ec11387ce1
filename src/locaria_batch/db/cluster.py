"""The embedded development cluster: PostgreSQL + PostGIS under .locaria/pg on a free loopback port."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from locaria_batch.errors import LocariaError
from locaria_batch.settings import settings

DATABASE = "locaria"
SUPERUSER = "locaria"


class ClusterError(LocariaError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def postgres_bindir() -> Path:
    """The bin folder of the newest PostgreSQL server found (PATH first, then Debian's layout)."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    raise ClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found. Install PostgreSQL 15 or newer "
        "(Debian: apt-get install postgresql-15 postgresql-15-postgis-3), or set LOCARIA_DB_URL."
    )


def _pg_config(bindir: Path, flag: str) -> str:
    pg_config = bindir / "pg_config"
    if pg_config.exists():
        return subprocess.run([str(pg_config), flag], check=True, capture_output=True, text=True).stdout.strip()
    # Debian's server package ships pg_config elsewhere; derive from the layout
    major = bindir.parent.name
    return {"--sharedir": f"/usr/share/postgresql/{major}", "--version": f"PostgreSQL {major}"}[flag]


def server_major(bindir: Path) -> str:
    out = subprocess.run([str(bindir / "postgres"), "--version"], check=True, capture_output=True, text=True).stdout
    return out.split()[-1].split(".")[0]


def ensure_postgis(bindir: Path) -> None:
    """Install PostGIS through apt when run as root on Debian; otherwise say what to install."""
    sharedir = Path(_pg_config(bindir, "--sharedir"))
    if (sharedir / "extension" / "postgis.control").exists():
        return
    package = f"postgresql-{server_major(bindir)}-postgis-3"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", package]
        if subprocess.run(install, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
            subprocess.run(install, env=env, check=False)
        if (sharedir / "extension" / "postgis.control").exists():
            return
    raise ClusterError(
        f"PostGIS is not installed for this PostgreSQL server ({sharedir}). "
        f"Install it (Debian/Ubuntu: sudo apt-get install {package}) and run the command again."
    )


@dataclass
class ClusterStatus:
    running: bool
    initialised: bool
    port: int | None
    url: str | None
    data_dir: Path


class EmbeddedCluster:
    def __init__(self, home: Path) -> None:
        self.root = home / "pg"
        self.data = self.root / "data"
        self.run_dir = self.root / "run"
        self.state_file = self.root / "cluster.json"
        self.log_file = self.root / "postgres.log"

    # -- state -----------------------------------------------------------------------
    def _state(self) -> dict[str, int]:
        if self.state_file.exists():
            return dict(json.loads(self.state_file.read_text()))
        return {}

    def _url(self, port: int) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
        if os.geteuid() != 0:
            return argv
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ClusterError(
                "Running as root, but there is no `postgres` user to own the embedded cluster. "
                "Create one (useradd --system postgres) or run as an ordinary user."
            ) from exc
        return ["runuser", "-u", "postgres", "--", *argv]

    def _check_reachable(self) -> None:
        """As root the server runs as `postgres`, which must be able to reach the data folder."""
        if os.geteuid() != 0:
            return
        for folder in self.root.resolve().parents:
            if not os.stat(folder).st_mode & 0o001:
                raise ClusterError(
                    f"{folder} is not searchable by other users, so the `postgres` user cannot reach "
                    f"{self.root}. Run `chmod o+x {folder}` or set LOCARIA_HOME to a folder outside it."
                )

    def _chown(self) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:", str(self.root)], check=True)

    def is_running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        result = subprocess.run(
            self._as_owner([str(postgres_bindir() / "pg_ctl"), "status", "-D", str(self.data)]),
            capture_output=True, text=True,
        )
        return result.returncode == 0

    def url_if_running(self) -> str | None:
        port = self._state().get("port")
        if port and self.is_running():
            return self._url(port)
        return None

    def status(self) -> ClusterStatus:
        running = self.is_running()
        port = self._state().get("port")
        return ClusterStatus(
            running=running, initialised=(self.data / "PG_VERSION").exists(), port=port,
            url=self._url(port) if running and port else None, data_dir=self.data,
        )

    # -- lifecycle -------------------------------------------------------------------
    def up(self) -> str:
        bindir = postgres_bindir()
        ensure_postgis(bindir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        if not (self.data / "PG_VERSION").exists():
            self._check_reachable()
            self._chown()
            result = subprocess.run(
                self._as_owner([str(bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                                "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
                capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise ClusterError(f"initdb failed:\n{result.stderr.strip()}")
        if self.is_running():
            return self._url(self._state()["port"])
        port = self._state().get("port")
        if not port or not port_is_free(port):
            port = free_port()
        self.state_file.write_text(json.dumps({"port": port}))
        self._chown()
        options = " ".join([
            f"-p {port}", f"-k {self.run_dir}", "-c listen_addresses=127.0.0.1",
            "-c max_connections=200", "-c shared_buffers=256MB", "-c synchronous_commit=off",
            "-c wal_level=minimal", "-c max_wal_senders=0", "-c max_wal_size=4GB",
            "-c maintenance_work_mem=256MB", "-c jit=off",
            *settings().pg_options,
        ])
        result = subprocess.run(
            self._as_owner([str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data),
                            "-l", str(self.log_file), "-o", options]),
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise ClusterError(f"PostgreSQL did not start:\n{result.stderr.strip()}\n{tail}")
        self._create_database(port)
        return self._url(port)

    def _create_database(self, port: int) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def down(self) -> bool:
        if not self.is_running():
            return False
        subprocess.run(
            self._as_owner([str(postgres_bindir() / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data)]),
            check=True, capture_output=True,
        )
        return True

    def destroy(self) -> None:
        self.down()
        shutil.rmtree(self.root, ignore_errors=True)
