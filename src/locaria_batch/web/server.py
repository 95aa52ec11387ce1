"""Where the console listens: the socket is bound before the address is announced, so a port in
use is one line and no announcement of a console that never answers."""

from __future__ import annotations

import errno
import socket
from typing import Any

from locaria_batch.web.security import ConsoleRefused


def bind(host: str, port: int) -> socket.socket:
    address = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: no wait after a restart
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConsoleRefused(f"port {port} is already in use on {host}: pick another with --port") from None
        raise ConsoleRefused(f"the console cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    return sock


def run(app: Any, sock: socket.socket, **options: Any) -> bool:
    """Serve `app` on the bound socket until stopped; False when the app did not start."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, **options))
    with sock:
        server.run(sockets=[sock])
    return server.started
