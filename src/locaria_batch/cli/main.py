"""locaria-batch: the command line, assembled from one module per command group."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from locaria_batch import __version__
from locaria_batch.cli import demo, deploy, serve, worker
from locaria_batch.cli.common import command, set_verbose
from locaria_batch.cli.db import db_app
from locaria_batch.cli.docker import docker_app
from locaria_batch.cli.download import download_app
from locaria_batch.cli.files import files_app
from locaria_batch.cli.jobs import jobs_app
from locaria_batch.cli.locaria import locaria_app

app = typer.Typer(help="Turn rows of a PostGIS files table into batch jobs that load and export data.",
                  no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)


def print_version(value: bool) -> None:
    if value:
        print(f"locaria-batch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False,
) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    set_verbose(verbose)


app.add_typer(db_app, name="db")
app.add_typer(files_app, name="files")
app.add_typer(download_app, name="download")
app.add_typer(jobs_app, name="jobs")
app.add_typer(docker_app, name="docker")
app.add_typer(deploy.deploy_app, name="deploy")
app.add_typer(locaria_app, name="locaria")
command(app, "worker")(worker.worker)
command(app, "serve")(serve.serve)
command(app, "configure")(deploy.configure)
command(app, "demo")(demo.demo)

if __name__ == "__main__":
    app()
