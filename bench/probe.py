"""How a benchmark job says "my code is running now": a datagram with its tag and the wall clock
(one clock for every process on the machine) to the socket named by BENCH_PROBE."""

from __future__ import annotations

import os
import socket
import time

# what a subprocess handler's Python child runs: the same report, with nothing imported but the basics
CHILD_CODE = ("import os, socket, sys, time; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
              "s.sendto(f'{sys.argv[1]} {time.time()}'.encode(), os.environ['BENCH_PROBE'])")

_socket: socket.socket | None = None


def report(tag: str) -> None:
    global _socket
    path = os.environ.get("BENCH_PROBE")
    if not path:
        return
    if _socket is None:
        _socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    _socket.sendto(f"{tag} {time.time()}".encode(), path)
