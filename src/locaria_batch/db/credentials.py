"""The embedded cluster's passwords: one per role, generated on first use and kept in
$LOCARIA_HOME/credentials.json (mode 0600).  The owner's is for migrations only; the CLI and the
worker connect as locaria_dispatcher, jobs as locaria_job, the console as locaria_console."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

OWNER = "locaria"
DISPATCHER = "locaria_dispatcher"
JOB = "locaria_job"
CONSOLE = "locaria_console"
ROLES = (DISPATCHER, JOB, CONSOLE)
SCRAM_ITERATIONS = 16


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read, never readable by others even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(staging, path)


@dataclass(frozen=True)
class Credentials:
    passwords: dict[str, str]

    @classmethod
    def generate(cls) -> Credentials:
        return cls({role: secrets.token_urlsafe(24) for role in (OWNER, *ROLES)})

    @classmethod
    def load(cls, path: Path) -> Credentials | None:
        try:
            return cls(dict(json.loads(path.read_text())))
        except FileNotFoundError:
            return None

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(self.passwords, indent=2) + "\n")

    def verifier(self, role: str) -> str:
        """The SCRAM-SHA-256 verifier the server keeps for ROLE's password.  Its key stretching
        (PBKDF2) protects guessable passwords against a stolen verifier; ours are 192 random bits,
        which no guessing reaches, so a few iterations do instead of PostgreSQL's 4096.  Every client
        runs that stretching on each connection, and a job connects once per attempt: 2.5 ms of CPU
        saved per job."""
        salt = secrets.token_bytes(16)
        salted = hashlib.pbkdf2_hmac("sha256", self.passwords[role].encode(), salt, SCRAM_ITERATIONS)
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        encode = base64.b64encode
        return (f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{encode(salt).decode()}$"
                f"{encode(hashlib.sha256(client_key).digest()).decode()}:{encode(server_key).decode()}")

    def url(self, role: str, port: int, database: str) -> str:
        return f"postgresql://{role}:{quote(self.passwords[role], safe='')}@127.0.0.1:{port}/{database}"
