"""Retention: finished jobs, their events and their log files are deleted once old enough.

Each batch is one short transaction of `locaria_core.prune_jobs` (SKIP LOCKED, a lock timeout of a
second), so a prune never holds what a dispatcher needs for long; `jobs prune` runs it on demand
and `worker` on its own timer (LOCARIA_JOB_RETENTION).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from locaria_batch.db import connect
from locaria_batch.dispatch.store import JobStore, PrunedJob

log = logging.getLogger("locaria_batch.dispatch.retention")
BATCH = 500


@dataclass
class PruneSummary:
    jobs: int = 0
    log_files: int = 0
    job_ids: list[int] = field(default_factory=list)


def log_files_of(pruned: PrunedJob, logs_dir: Path) -> list[Path]:
    """The log files (and the local runner's pid files beside them) its attempts' handles name,
    kept to those inside `logs_dir`: a handle is data, never a licence to delete elsewhere."""
    root = logs_dir.resolve()
    found: list[Path] = []
    for handle in pruned.handles:
        logged = handle.get("log")
        if not isinstance(logged, str) or not logged:
            continue
        path = Path(logged).resolve()
        if path.parent != root or path.suffix != ".log":
            continue
        found += [path, path.with_suffix(".pid")]
    return found


def prune_jobs(conn: psycopg.Connection[dict[str, Any]], older_than: timedelta, logs_dir: Path, *,
               batch: int = BATCH, on_batch: Callable[[int], None] | None = None,
               stop: threading.Event | None = None) -> PruneSummary:
    """Delete finished jobs older than `older_than`, `batch` at a time, until none are left (or
    `stop` is set).  `conn` must be in autocommit: each batch commits on its own."""
    store = JobStore(conn)
    summary = PruneSummary()
    while stop is None or not stop.is_set():
        pruned = store.prune_batch(older_than, batch)
        for job in pruned:
            for path in log_files_of(job, logs_dir):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    summary.log_files += path.suffix == ".log"
        summary.jobs += len(pruned)
        summary.job_ids += [job.job_id for job in pruned]
        if on_batch is not None:
            on_batch(len(pruned))
        if len(pruned) < batch:
            break
    return summary


class RetentionTimer:
    """Prunes on its own thread and connection every `every` seconds while a worker serves."""

    def __init__(self, older_than: timedelta, logs_dir: Path, *, every: float = 3600.0,
                 db_url: str | None = None, on_pruned: Callable[[int], None] | None = None) -> None:
        self.older_than = older_than
        self.on_pruned = on_pruned
        self.logs_dir = logs_dir
        self.every = every
        self.db_url = db_url
        self.stop = threading.Event()
        self.passes = 0
        self._thread = threading.Thread(target=self._run, name="locaria-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> PruneSummary:
        with connect(self.db_url, autocommit=True, application_name="locaria-batch retention") as conn:
            summary = prune_jobs(conn, self.older_than, self.logs_dir, stop=self.stop, on_batch=self.on_pruned)
        self.passes += 1
        if summary.jobs:
            log.info("pruned %s finished job(s) and %s log file(s)", summary.jobs, summary.log_files)
        return summary

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.run_once()
            except psycopg.Error as exc:  # the next pass tries again; the worker carries on
                log.warning("pruning finished jobs failed, trying again later: %s", exc)
            self.stop.wait(self.every)
