"""The embedded development cluster: PostgreSQL + PostGIS under .locaria/pg on a free loopback port."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from locaria_batch.db.credentials import DISPATCHER, OWNER, ROLES, Credentials, write_private
from locaria_batch.errors import LocariaError
from locaria_batch.settings import settings

DATABASE = "locaria"


class ClusterError(LocariaError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether PostgreSQL could listen on the port now.  It binds with SO_REUSEADDR, so a port whose
    old connections linger in TIME_WAIT (after `db down`) is free to it, and is to us."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not port_is_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
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
        self.credentials_file = home / "credentials.json"
        self.passfile = home / "pgpass"  # the dispatcher role's, for `psql "$(locaria-batch db url)"`

    # -- state -----------------------------------------------------------------------
    def _state(self) -> dict[str, int]:
        if self.state_file.exists():
            return dict(json.loads(self.state_file.read_text()))
        return {}

    def credentials(self) -> Credentials:
        found = Credentials.load(self.credentials_file)
        if found is None:
            raise ClusterError(
                f"{self.credentials_file} is missing, so nothing can log in to the embedded cluster. Restore it, "
                f"or remove {self.root} to start a new cluster (its data is lost).")
        return found

    def url(self, role: str = DISPATCHER) -> str | None:
        """The URL of `role` on the cluster, None until `db up` has created it.  Also while it is
        stopped: its port is kept across `db down`/`db up`, so a worker that lost it reconnects
        to the same address once it is back."""
        port = self._state().get("port")
        if port and self.credentials_file.exists():
            return self.credentials().url(role, port, DATABASE)
        return None

    def url_without_password(self) -> str | None:
        """The dispatcher's URL with its password in a private passfile, for command lines."""
        port = self._state().get("port")
        if not (port and self.is_running()):
            return None
        return f"postgresql://{DISPATCHER}@127.0.0.1:{port}/{DATABASE}?passfile={quote(str(self.passfile))}"

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

    def status(self) -> ClusterStatus:
        running = self.is_running()
        port = self._state().get("port")
        return ClusterStatus(
            running=running, initialised=(self.data / "PG_VERSION").exists(), port=port,
            url=self.url_without_password() if running else None, data_dir=self.data,
        )

    # -- lifecycle -------------------------------------------------------------------
    def up(self) -> str:
        """Start the cluster (creating it the first time); returns the owner's URL, for migrations."""
        bindir = postgres_bindir()
        ensure_postgis(bindir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        if not (self.data / "PG_VERSION").exists():
            self._initdb(bindir)
        if not self.is_running():
            self._start(bindir, self._port())
        port = self._state()["port"]
        if not self.credentials_file.exists() and self._trusts_everyone():
            self._require_passwords(port)
        self._create_database(port)
        return self.credentials().url(OWNER, port, DATABASE)

    def _initdb(self, bindir: Path) -> None:
        self._check_reachable()
        credentials = Credentials.load(self.credentials_file) or Credentials.generate()
        credentials.save(self.credentials_file)
        pwfile = self.root / ".initdb-password"
        write_private(pwfile, credentials.passwords[OWNER])
        self._chown()
        try:
            result = subprocess.run(
                self._as_owner([str(bindir / "initdb"), "-D", str(self.data), "-U", OWNER, "--pwfile", str(pwfile),
                                "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
                capture_output=True, text=True,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ClusterError(f"initdb failed:\n{result.stderr.strip()}")

    def _trusts_everyone(self) -> bool:
        hba = self.data / "pg_hba.conf"
        return any(line.split()[-1] == "trust" for line in hba.read_text().splitlines()
                   if line.strip() and not line.lstrip().startswith("#"))

    def _require_passwords(self, port: int) -> None:
        """A cluster made before passwords were required: give every role one, then require them."""
        import psycopg
        from psycopg import sql

        credentials = Credentials.generate()
        with psycopg.connect(f"postgresql://{OWNER}@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(OWNER), sql.Literal(credentials.passwords[OWNER])))
            credentials.save(self.credentials_file)
            hba = self.data / "pg_hba.conf"
            hba.write_text("".join(
                line.rsplit("trust", 1)[0] + "scram-sha-256\n"
                if line.strip() and not line.lstrip().startswith("#") and line.split()[-1] == "trust" else line
                for line in hba.read_text().splitlines(keepends=True)))
            self._chown()
            conn.execute("SELECT pg_reload_conf()")

    def _port(self) -> int:
        """The stored port (waiting a little for it to free), else a new one the first time."""
        port = self._state().get("port")
        if port is None:
            port = free_port()
        elif not wait_for_port(port, 15):
            raise ClusterError(
                f"port {port} of the embedded cluster is taken by another program. Stop it, or remove "
                f"{self.state_file} to give the cluster a new port (saved database URLs then change).")
        self.state_file.write_text(json.dumps({"port": port}))
        return port

    def _start(self, bindir: Path, port: int) -> None:
        self._chown()
        options = " ".join([
            f"-p {port}", f"-k {self.run_dir}", "-c listen_addresses=127.0.0.1",
            "-c max_connections=200", "-c shared_buffers=256MB", "-c synchronous_commit=off",
            "-c wal_level=minimal", "-c max_wal_senders=0", "-c max_wal_size=4GB",
            "-c maintenance_work_mem=256MB", "-c jit=off", "-c password_encryption=scram-sha-256",
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

    def _create_database(self, port: int) -> None:
        """The database, and a login for each role (the migrations grant them what they may do)."""
        import psycopg
        from psycopg import sql

        credentials = self.credentials()
        with psycopg.connect(credentials.url(OWNER, port, "postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
            for role in ROLES:
                verb = "ALTER" if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() \
                    else "CREATE"
                conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(credentials.verifier(role))))
        write_private(self.passfile, f"127.0.0.1:{port}:{DATABASE}:{DISPATCHER}:{credentials.passwords[DISPATCHER]}\n")

    def down(self) -> bool:
        if not self.is_running():
            return False
        subprocess.run(
            self._as_owner([str(postgres_bindir() / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data)]),
            check=True, capture_output=True,
        )
        return True

    def restart(self) -> None:
        """Restart the server at once (`pg_ctl restart -m fast`): every connection drops."""
        subprocess.run(
            self._as_owner([str(postgres_bindir() / "pg_ctl"), "restart", "-w", "-m", "fast", "-D", str(self.data),
                            "-l", str(self.log_file)]),
            check=True, capture_output=True,
        )

    def destroy(self) -> None:
        self.down()
        shutil.rmtree(self.root, ignore_errors=True)
