"""`locaria-batch db`: the embedded development cluster and migrations."""

from __future__ import annotations

from locaria_batch.cli.common import JsonOption, command, database, group, print_json, say
from locaria_batch.errors import ConfigurationError, DatabaseNotConfigured
from locaria_batch.settings import settings

db_app = group("The database: the embedded development cluster and migrations.")


def migrate_and_sync(url: str | None = None) -> list[str]:
    """Apply pending migrations, then load docker/dockers.json into the database."""
    from locaria_batch.db import connect, dockers
    from locaria_batch.db.connect import owner_database_url
    from locaria_batch.db.migrate import migrate

    with connect(url or owner_database_url(), autocommit=True) as conn:
        applied = [f"{m.version:04d}_{m.name}" for m in migrate(conn)]
        dockers.sync(conn, dockers.load(settings().dockers_file))
    return applied


def start_embedded() -> tuple[str, list[str]]:
    """Start (and on first use create) the embedded cluster, then migrate it; returns the URL to
    show (the dispatcher's, its password in a private passfile) and the migrations applied."""
    from locaria_batch.db.cluster import EmbeddedCluster

    if settings().db_url:
        raise ConfigurationError("LOCARIA_DB_URL is set: the embedded cluster is not used. "
                                 "Run `locaria-batch db migrate` instead.")
    cluster = EmbeddedCluster(settings().home)
    try:
        url = cluster.up()
    except OSError as exc:  # LOCARIA_HOME under a file, or where this user cannot write
        raise ConfigurationError(f"cannot make the embedded cluster in LOCARIA_HOME ({settings().home}): "
                                 f"{exc.strerror or exc}: {exc.filename}; set LOCARIA_HOME to a folder you can "
                                 "write to") from None
    applied = migrate_and_sync(url)
    return cluster.url_without_password() or "", applied


@command(db_app, "up")
def db_up(as_json: JsonOption = False) -> None:
    """Start the embedded PostgreSQL + PostGIS cluster (initialising it the first time) and migrate it."""
    url, applied = start_embedded()
    if as_json:
        print_json({"url": url, "applied": applied})
    else:
        say(f"[green]database up[/green] {url}" + (f" (applied {', '.join(applied)})" if applied else ""))


@command(db_app, "down")
def db_down(as_json: JsonOption = False) -> None:
    """Stop the embedded cluster (its data and its port stay under .locaria/pg)."""
    from locaria_batch.db.cluster import EmbeddedCluster

    stopped = EmbeddedCluster(settings().home).down()
    if as_json:
        print_json({"stopped": stopped})
    else:
        say("stopped" if stopped else "not running")


@command(db_app, "status")
def db_status(as_json: JsonOption = False) -> None:
    """Show whether the database runs, and where (never its password); exit 1 when it is stopped."""
    import typer

    from locaria_batch.db.cluster import EmbeddedCluster
    from locaria_batch.db.connect import redacted

    if settings().db_url:
        url = redacted(settings().db_url or "")
        if as_json:
            print_json({"embedded": False, "url": url})
        else:
            say(f"using LOCARIA_DB_URL (embedded cluster not used): {url}")
        return
    status = EmbeddedCluster(settings().home).status()
    if as_json:
        print_json({"embedded": True, "running": status.running, "data_dir": str(status.data_dir),
                    "port": status.port, "url": status.url})
    else:
        state = "[green]running[/green]" if status.running else "[red]stopped[/red]"
        say(f"{state}  data: {status.data_dir}  port: {status.port or '-'}  url: {status.url or '-'}")
    if not status.running:
        raise typer.Exit(1)


@command(db_app, "url")
def db_url() -> None:
    """Print the database URL (for psql "$(locaria-batch db url)"; the embedded cluster's password stays
    in a private passfile, off command lines)."""
    from locaria_batch.db.cluster import EmbeddedCluster
    from locaria_batch.db.connect import database_url

    if settings().db_url or settings().db_secret:
        print(database_url())
        return
    url = EmbeddedCluster(settings().home).url_without_password()
    if url is None:
        raise DatabaseNotConfigured("the embedded database is not running: start it with `locaria-batch db up`, "
                                    "or set LOCARIA_DB_URL to an existing PostgreSQL+PostGIS database")
    print(url)


@command(db_app, "migrate")
def db_migrate(as_json: JsonOption = False) -> None:
    """Apply pending SQL migrations (idempotent, safe to run concurrently) and sync the dockers."""
    with database():
        pass  # a clear message when there is no database, before anything else
    applied = migrate_and_sync()
    if as_json:
        print_json({"applied": applied})
    else:
        say(f"applied {', '.join(applied)}" if applied else "schema up to date")
