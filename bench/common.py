"""What every benchmark needs: a database (LOCARIA_DB_URL, or a throw-away embedded cluster)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from locaria_batch.db import connect
from locaria_batch.db.cluster import EmbeddedCluster
from locaria_batch.db.migrate import migrate
from locaria_batch.deploy import dockers

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def benchmark_database(extra_dockers: dict[str, dict[str, object]] | None = None) -> Iterator[str]:
    """Yield a migrated database URL with the repo's dockers (plus extra ones) synced."""
    home = None
    url = os.environ.get("LOCARIA_DB_URL")
    cluster = None
    if not url:
        home = Path(tempfile.mkdtemp(prefix="locaria-bench-"))
        home.chmod(0o755)  # as root the cluster runs as the postgres user, who must reach it
        os.environ.setdefault("LOCARIA_PG_OPTIONS", "-c fsync=off -c full_page_writes=off")
        cluster = EmbeddedCluster(home)
        url = cluster.up()
    try:
        with connect(url, autocommit=True) as conn:
            migrate(conn)
            specs = dockers.load(REPO / "docker" / "dockers.json")
            for name, entry in (extra_dockers or {}).items():
                specs[name] = dockers.DockerSpec.from_entry(name, dict(entry))
            dockers.sync(conn, specs)
        os.environ["LOCARIA_DB_URL"] = url
        yield url
    finally:
        if cluster is not None and home is not None:
            cluster.destroy()
            shutil.rmtree(home, ignore_errors=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
