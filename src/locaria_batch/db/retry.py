"""Riding out a database that goes away: which errors mean "the connection is gone", and the
backoff (exponential, with jitter, so that many clients do not reconnect in step) between tries."""

from __future__ import annotations

import random
import time

import psycopg


def connection_lost(exc: BaseException) -> bool:
    """A dropped or refused connection (a restart, pg_terminate_backend, a network cut), as
    opposed to an error of the statement itself."""
    if isinstance(exc, psycopg.InterfaceError):
        return True  # "the connection is closed"
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate or ""
    # no SQLSTATE: the socket broke; 08: connection exception; 57P0x: admin/crash shutdown, cannot connect now
    return not state or state.startswith("08") or state in {"57P01", "57P02", "57P03"}


def worth_retrying(exc: BaseException) -> bool:
    """An error the same statement may not meet again: a lost connection, or the server's answer to a
    moment's contention (a deadlock or serialization failure, too many clients, no memory, a lock or
    statement timeout)."""
    if connection_lost(exc):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.OperationalError) and (state[:2] in {"40", "53"} or state in {"55P03", "57014"})


class Backoff:
    """Delays of `first`, doubling up to `cap`, each drawn between half and all of it."""

    def __init__(self, first: float = 0.2, cap: float = 10.0) -> None:
        self.first = first
        self.cap = cap
        self.tries = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * 2.0 ** self.tries)
        self.tries += 1
        return float(delay * random.uniform(0.5, 1.0))

    def sleep(self) -> None:
        time.sleep(self.next_delay())

    def reset(self) -> None:
        self.tries = 0
