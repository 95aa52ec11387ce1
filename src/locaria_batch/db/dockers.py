"""The job types: docker/dockers.json, one entry per job container keyed by its folder under docker/,
and its mirror locaria_core.dockers, which the files trigger and the dispatchers read.

Locaria's format ({"name": {"description": ...}}) extended with what dispatch needs.  `DockerSpec`
is the one shape of an entry on both sides; `sync` mirrors the file into the table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from locaria_batch.errors import ConfigurationError
from locaria_batch.jsonfile import read_json_object

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class DockerRegistryError(ConfigurationError):
    pass


@dataclass
class DockerSpec:
    name: str
    description: str = ""
    trigger_statuses: list[str] = field(default_factory=list)
    running_status: str | None = None
    success_status: str | None = None
    error_status: str = "ERROR"
    cancelled_status: str = "CANCELLED"
    runner: str | None = None
    command: list[str] | None = None
    handler: str | None = None
    image: str | None = None
    cpu: int = 256
    memory: int = 512
    timeout_seconds: int = 3600
    heartbeat_timeout: int = 20  # a running attempt silent this long is stopped and retried (hung)
    max_attempts: int = 3
    retry_base_seconds: float = 10.0
    concurrency: int = 4
    enabled: bool = True
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_entry(cls, name: str, entry: dict[str, Any]) -> DockerSpec:
        if not NAME_PATTERN.match(name):
            raise DockerRegistryError(
                f"docker name {name!r} must be lower-case letters, digits and underscores, starting with a letter"
            )
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = set(entry) - known
        if unknown:
            raise DockerRegistryError(f"docker {name!r}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        spec = cls(name=name, **entry)
        if not spec.handler and not spec.command:
            raise DockerRegistryError(f"docker {name!r} needs a `handler` (module:function) or a `command`")
        return spec

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DockerSpec:
        """A locaria_core.dockers row (its bookkeeping columns dropped)."""
        return cls(**{name: row[name] for name in COLUMNS if name in row})

    def to_entry(self) -> dict[str, Any]:
        defaults = DockerSpec(name=self.name)
        return {k: v for k, v in asdict(self).items()
                if k != "name" and (k == "description" or v != getattr(defaults, k))}


def load(path: Path) -> dict[str, DockerSpec]:
    raw = read_json_object(path, DockerRegistryError, "every project needs a docker/dockers.json", "docker name")
    return {name: DockerSpec.from_entry(name, entry) for name, entry in raw.items()}


def save(path: Path, specs: dict[str, DockerSpec]) -> None:
    path.write_text(json.dumps({name: spec.to_entry() for name, spec in specs.items()}, indent=2) + "\n")


def read(conn: psycopg.Connection[Any], names: Iterable[str]) -> dict[str, DockerSpec]:
    """The table's entries for these dockers."""
    rows = conn.execute("SELECT * FROM locaria_core.dockers WHERE name = ANY (%s)", [list(names)]).fetchall()
    return {row["name"]: DockerSpec.from_row(row) for row in rows}


COLUMNS = [f.name for f in fields(DockerSpec)]
UPSERT = sql.SQL(
    "INSERT INTO locaria_core.dockers ({cols}, updated) VALUES ({vals}, now()) "
    "ON CONFLICT (name) DO UPDATE SET {sets}, updated = now()"
).format(
    cols=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
    vals=sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)),
    sets=sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in COLUMNS if c != "name"
    ),
)


def sync(conn: psycopg.Connection[Any], specs: dict[str, DockerSpec]) -> list[str]:
    """Upsert every docker; dockers no longer in the file are disabled (their history stays)."""
    with conn.transaction():
        for spec in specs.values():
            values = [Jsonb(v) if isinstance(v, dict) else v for v in (getattr(spec, c) for c in COLUMNS)]
            conn.execute(UPSERT, values)
        conn.execute(
            "UPDATE locaria_core.dockers SET enabled = false WHERE NOT (name = ANY (%s))", [list(specs)]
        )
    return sorted(specs)
