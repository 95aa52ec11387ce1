"""One attempt from start to finish: claim it, run the docker's handler while the heartbeat beats,
then finish the job and write the file's final status and result attributes in one transaction."""

from __future__ import annotations

import importlib
import json
import signal
import sys
import traceback
from types import FrameType
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from locaria_batch.db import connect
from locaria_batch.job.context import JobCancelled, JobContext, JobError, JobResult, RetryableJobError, Terminated
from locaria_batch.job.heartbeat import Heartbeat
from locaria_batch.settings import settings
from locaria_batch.storage import open_storage


def _resolve(reference: str) -> Any:
    module, _, name = reference.partition(":")
    try:
        return getattr(importlib.import_module(module), name or "run")
    except (ImportError, AttributeError) as exc:
        raise JobError(f"handler {reference!r} cannot be loaded: {exc}") from exc


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def user_message(exc: BaseException, docker: str) -> str:
    if isinstance(exc, JobError):
        return str(exc)
    return f"{docker} failed unexpectedly: {type(exc).__name__}: {exc}. The job's log has the details."


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    identity = settings().job
    if identity is None:
        print("locaria_batch.job runs a job started by a dispatcher: LOCARIA_JOB_ID and LOCARIA_JOB_TOKEN "
              "must be set (use `locaria-batch worker` to run jobs).", file=sys.stderr)
        return 2
    job_id, token = identity.job_id, identity.token
    docker_name = args[0] if args else identity.docker
    signal.signal(signal.SIGTERM, _on_sigterm)
    db_url = settings().db_url
    conn = connect(db_url, application_name=f"locaria-batch job {job_id}")
    claim = conn.execute("SELECT locaria_core.job_start(%s, %s) AS claim", [job_id, token]).fetchone()
    conn.commit()
    if not claim or claim["claim"] is None:
        print(f"job {job_id}: this attempt is stale, cancelled or its file is gone; nothing to do", flush=True)
        return 0
    job, docker, file_row = claim["claim"]["job"], claim["claim"]["docker"], claim["claim"]["file"]
    if docker_name and docker_name != docker["name"]:
        print(f"warning: started as {docker_name!r} but job {job_id} belongs to {docker['name']!r}", file=sys.stderr)
    print(f"job {job_id}: {docker['name']} attempt {job['attempt']} for file {file_row['id']}", flush=True)
    ctx = JobContext(job_id=job_id, attempt=job["attempt"], token=token, docker=docker, file=file_row,
                     storage=open_storage(), conn=conn)
    heartbeat = Heartbeat(ctx, db_url)
    heartbeat.start()
    outcome: dict[str, Any]
    try:
        handler = _resolve(docker["handler"]) if docker.get("handler") else None
        if handler is None:
            raise JobError(f"docker {docker['name']!r} declares no handler")
        result = handler(ctx)
        if not isinstance(result, JobResult):
            result = JobResult(attributes=dict(result or {}))
        outcome = {"state": "succeeded", "status": result.status, "attributes": result.attributes,
                   "log": result.log or {"message": f"{docker['name']} completed"}}
    except Terminated:
        print(f"job {job_id}: terminated by the dispatcher", flush=True)
        return 143
    except JobCancelled:
        print(f"job {job_id}: cancelled; stopping without writing a result", flush=True)
        return 0
    except RetryableJobError as exc:
        outcome = {"state": "retry", "error": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        message = user_message(exc, docker["name"])
        outcome = {"state": "failed", "error": message, "log": {"message": message},
                   "attributes": {"error": message}}
    finally:
        heartbeat.stop()
        heartbeat.join(timeout=10)
    if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    accepted = conn.execute("SELECT locaria_core.job_finish(%s, %s, %s) AS ok",
                            [job_id, token, Jsonb(outcome)]).fetchone()
    conn.commit()
    conn.close()
    if not accepted or not accepted["ok"]:
        print(f"job {job_id}: attempt superseded before it finished; result discarded", flush=True)
        return 0
    print(f"job {job_id}: {outcome['state']}: {json.dumps(outcome.get('log', {}), default=str)[:500]}", flush=True)
    return 0
