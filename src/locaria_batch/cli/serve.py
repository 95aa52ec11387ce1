"""`locaria-batch serve`: the operator console."""

from __future__ import annotations

from typing import Annotated

import typer

from locaria_batch.cli.common import database, say
from locaria_batch.settings import settings


def serve(
    host: Annotated[str, typer.Option(metavar="ADDRESS", help=(
        "Address to listen on; anything but loopback needs a token."))] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="Port to listen on.")] = 8080,
    token: Annotated[str | None, typer.Option(metavar="TOKEN", help=(
        "Required of every request (default: $LOCARIA_CONSOLE_TOKEN); open the console once with ?token=..."))
    ] = None,
) -> None:
    """The web console: files live, queue, uploads, downloads, retry and cancel, /metrics."""
    from locaria_batch.db.connect import console_database_url, database_url
    from locaria_batch.web.app import ConsoleConfig, create_app
    from locaria_batch.web.security import check_bind
    from locaria_batch.web.server import bind, run

    token = token or settings().console_token
    check_bind(host, token)
    with database():
        pass  # a clear message when there is no database, before the server starts
    sock = bind(host, port)  # before the address is announced: a port in use is refused first
    app = create_app(ConsoleConfig(db_url=database_url(), read_url=console_database_url(), host=host, port=port,
                                   token=token))
    shown = f"[{host}]" if ":" in host else host
    say(f"console on http://{shown}:{port}/" + ("  (open it once with ?token=<your token>)" if token else ""))
    if not run(app, sock, log_level="warning", timeout_graceful_shutdown=2, access_log=False):
        raise typer.Exit(3)  # the app did not start (uvicorn said why); uvicorn.run exits 3 too
