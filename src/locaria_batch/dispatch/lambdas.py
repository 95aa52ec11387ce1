"""AWS Lambda handlers: no always-on server needed.

- `launcher_handler`: one dispatch pass with the ecs runner (claim, launch, reconcile, retry, time
  out).  Invoked every minute by an EventBridge schedule and, on Aurora/RDS with aws_lambda, by the
  database as a job is queued (0031_aws_lambda_launcher.sql) — possibly before that transaction
  has committed, so it waits a short while for the job it was told about.
- `task_state_handler`: EventBridge "ECS Task State Change"; finalises a job whose container
  stopped without reporting, fenced by the attempt token the task carries.
- `upload_handler`: S3 ObjectCreated under incoming/; completes the upload (UPLOADING -> REGISTERED).

The database URL comes from the Secrets Manager secret named by LOCARIA_DB_SECRET.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import fields
from typing import Any
from urllib.parse import unquote_plus

from locaria_batch.db import connect
from locaria_batch.dispatch.dispatcher import Dispatcher, PassReport
from locaria_batch.dispatch.ecs import EcsRunner, task_identity, task_status
from locaria_batch.dispatch.store import JobStore
from locaria_batch.errors import ApiError, ConfigurationError
from locaria_batch.settings import settings

log = logging.getLogger("locaria_batch.lambdas")

LAUNCHER_OWNER = "aws-launcher"  # every invocation reconciles what earlier ones launched
LAUNCHER_LEASE_SECONDS = 180  # three schedule periods; then an `ecs` worker may adopt the jobs
LOST_LAUNCH_GRACE_SECONDS = 120  # longer than any invocation lives (the Lambda timeout is 60 s)
INCOMING = re.compile(r"^incoming/(\d+)(?:\.[^/]*)?$")


def _remaining_seconds(context: Any) -> float | None:
    getter = getattr(context, "get_remaining_time_in_millis", None)
    return getter() / 1000 if getter else None


def _merge(total: PassReport, one: PassReport) -> None:
    for item in fields(PassReport):
        value = getattr(one, item.name)
        if isinstance(value, list):
            getattr(total, item.name).extend(value)
    total.in_flight = one.in_flight


def launcher_handler(event: dict[str, Any] | None, context: Any = None, *, runner: EcsRunner | None = None,
                     poll: float = 0.5) -> dict[str, Any]:
    """One dispatch pass; when the event names a job not yet visible (its transaction has not
    committed), keep passing until it is or LOCARIA_LAUNCHER_SETTLE_SECONDS (20) run out."""
    event = event or {}
    wanted = int(event["job_id"]) if str(event.get("job_id", "")).isdigit() else None
    settle = settings().launcher_settle_seconds
    remaining = _remaining_seconds(context)
    if remaining is not None:
        settle = max(0.0, min(settle, remaining - 10))
    dispatcher = Dispatcher(runner or EcsRunner.from_database(), owner=LAUNCHER_OWNER,
                            lease_seconds=LAUNCHER_LEASE_SECONDS,
                            concurrency=settings().launcher_concurrency)
    report = PassReport()
    deadline = time.monotonic() + settle
    waited = 0
    try:
        lost = dispatcher.store.release_lost_launches(LAUNCHER_OWNER, LOST_LAUNCH_GRACE_SECONDS)
        if lost:
            log.warning("jobs %s: an invocation died before recording their tasks; adopting them", lost)
        while True:
            visible = wanted is None or dispatcher.store.job(wanted) is not None
            _merge(report, dispatcher.run_once())
            if visible or time.monotonic() >= deadline:
                break
            waited += 1
            time.sleep(poll)
    finally:
        dispatcher.close()
    summary = {"launched": report.launched, "finished": report.finished, "adopted": report.adopted,
               "timed_out": report.timed_out, "stopped": report.stopped, "in_flight": report.in_flight,
               "passes": waited + 1}
    if wanted is not None:
        summary["job_id"] = wanted
        summary["job_seen"] = visible
    log.info("launcher pass: %s", summary)
    return summary


def task_state_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """A stopped task whose job is still launching/running died without reporting: count the
    attempt as failed (retry or error) with the container's exit code and ECS's reasons."""
    if event.get("detail-type") != "ECS Task State Change":
        return {"ignored": "not an ECS Task State Change event"}
    task = event.get("detail") or {}
    if task.get("lastStatus") != "STOPPED":
        return {"ignored": f"task is {task.get('lastStatus')}"}
    identity = task_identity(task)
    if identity is None:
        return {"ignored": "not a locaria job task"}
    job_id, attempt, token = identity
    with connect(autocommit=True, application_name="locaria-batch task-state") as conn:
        store = JobStore(conn)
        job = store.job(job_id)
        if job is None or job.attempt != attempt or job.attempt_token is None \
                or (token is not None and job.attempt_token != token):
            return {"job_id": job_id, "attempt": attempt, "ignored": "a stale attempt"}
        status = task_status(task, (job.handle or {}).get("container"))
        new_state = store.attempt_failed(job, status.reason or "the task stopped", status.exit_code, status.details)
    if new_state is None:
        return {"job_id": job_id, "attempt": attempt, "ignored": f"the job had already ended ({job.state})"}
    log.warning("job %s attempt %s: %s -> %s", job_id, attempt, status.reason, new_state)
    return {"job_id": job_id, "attempt": attempt, "state": str(new_state), "reason": status.reason}


def _created_objects(event: dict[str, Any]) -> list[tuple[str, str]]:
    """(bucket, key) of each created object: S3 notification records or EventBridge "Object Created"."""
    if event.get("detail-type") == "Object Created":
        detail = event.get("detail") or {}
        return [(detail["bucket"]["name"], detail["object"]["key"])]
    return [(record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"]))
            for record in event.get("Records") or []
            if str(record.get("eventName", "")).startswith("ObjectCreated")]


def upload_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Complete the uploads whose objects were just created under incoming/."""
    from locaria_batch.files.uploads import complete_upload
    from locaria_batch.storage import open_storage
    from locaria_batch.storage.s3 import S3Storage

    storage = open_storage()
    if not isinstance(storage, S3Storage):
        raise ConfigurationError("the upload handler needs LOCARIA_STORAGE=s3://bucket/prefix")
    results: list[dict[str, Any]] = []
    with connect(autocommit=True, application_name="locaria-batch upload-event") as conn:
        for bucket, object_key in _created_objects(event):
            key = storage.key_of(object_key) if bucket == storage.bucket else None
            match = INCOMING.match(key or "")
            if match is None:
                results.append({"key": object_key, "ignored": "not an upload of this storage"})
                continue
            file_id = int(match.group(1))
            try:
                done = complete_upload(conn, storage, file_id)
            except ApiError as exc:
                results.append({"id": file_id, "key": object_key, "ignored": str(exc)})
                continue
            results.append({"id": file_id, "status": done["status"], "completed": done["completed"]})
    return {"uploads": results}
