"""Live file statuses: one LISTEN on locaria_file_status, fanned out to every open event stream.

Each message is passed on as the trigger sent it, Locaria's `{"id": ..., "status": ...}`, so a
Locaria front end can subscribe to the same stream.  The connection may drop at any time: it is
made again, and every subscriber is told to `resync` (notifications sent meanwhile are lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import psycopg

log = logging.getLogger("locaria_batch.web.events")
CHANNEL = "locaria_file_status"
RESYNC = "resync"  # a subscriber that may have missed messages reloads what it shows
QUEUE_SIZE = 1000


@dataclass
class StatusBroadcaster:
    db_url: str
    subscribers: set[asyncio.Queue[str]] = field(default_factory=set)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="locaria-status-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self.subscribers.discard(queue)

    def publish(self, message: str) -> None:
        for queue in list(self.subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:  # a reader that stopped reading: it starts over from a resync
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(RESYNC)

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.db_url, autocommit=True, application_name="locaria-batch console listen") as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if self.connected.is_set():
                        self.publish(RESYNC)  # back after a drop: what was sent meanwhile is lost
                    self.connected.set()
                    delay = 0.5
                    async for notice in conn.notifies():
                        self.publish(notice.payload)
            except psycopg.Error as exc:
                log.warning("status stream: %s; listening again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
