"""The `ecs` runner: each attempt is an AWS ECS Fargate task.

Where and how to run a docker comes from `parameters.fargate_config.<docker>` (the original's keys:
task, ecsName, vpcPrivateSubnetA, vpcPrivateSubnetB, ServerlessSecurityGroup, region, arn,
ecrRepositoryUri; plus containerName, logGroup, streamPrefix, assignPublicIp).  The container's
database URL and storage come from task-definition secrets; the overrides carry only who the job is.
Every task is started with startedBy `locaria/<job>/<attempt>`, tags naming the job, and the attempt
token as clientToken, so a retried RunTask never starts a second task and a dispatcher that died
after RunTask is followed by one that finds the task instead of starting another.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from locaria_batch.dispatch.handles import TaskHandle
from locaria_batch.dispatch.runner import LaunchError, LaunchRequest, RunStatus, exit_reason
from locaria_batch.fargate import FargateConfigError, FargateTarget, load_fargate_config

log = logging.getLogger("locaria_batch.dispatch.ecs")

# The only variables a task's overrides carry: the job's identity and fencing token.
JOB_IDENTITY = ("LOCARIA_JOB_ID", "LOCARIA_JOB_TOKEN", "LOCARIA_JOB_ATTEMPT", "LOCARIA_FILE_ID", "LOCARIA_DOCKER")
STARTED_BY_PREFIX = "locaria/"
TAG_JOB, TAG_ATTEMPT, TAG_FILE, TAG_DOCKER = "locaria:job-id", "locaria:attempt", "locaria:file-id", "locaria:docker"
DESCRIBE_BATCH = 100  # DescribeTasks takes at most 100 tasks
RUN_TASK_RATE = 20.0  # Fargate's sustained RunTask rate per second
THROTTLING_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
TRANSIENT_CODES = {"ServerException", "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure",
                   "LimitExceededException"}
CAPACITY_RETRY_SECONDS = 15.0


class TokenBucket:
    """A client-side limit on how fast we call an API: `rate` calls a second, bursts of `capacity`."""

    def __init__(self, rate: float = RUN_TASK_RATE, capacity: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self.capacity = capacity if capacity is not None else rate
        self.tokens = self.capacity
        self.clock = clock
        self.sleep = sleep
        self.updated = clock()
        self.lock = threading.Lock()

    def acquire(self) -> float:
        """Take a token, waiting for one if needed; returns the seconds waited."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            self.tokens -= 1
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            self.sleep(wait)
        return wait


def backoff_delay(attempt: int, base: float = 0.2, cap: float = 10.0) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^attempt (capped)."""
    ceiling = min(cap, base * 2**attempt)
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))


def started_by(job_id: int, attempt: int) -> str:
    return f"{STARTED_BY_PREFIX}{job_id}/{attempt}"


def task_identity(task: dict[str, Any]) -> tuple[int, int, str | None] | None:
    """(job id, attempt, attempt token) of a task we started, from its overrides, startedBy or tags;
    None for a task that is not ours.  Works on DescribeTasks output and on EventBridge task events."""
    env: dict[str, str] = {}
    for override in (task.get("overrides") or {}).get("containerOverrides") or []:
        env.update({e["name"]: e["value"] for e in override.get("environment") or []})
    tags = {t.get("key"): t.get("value") for t in task.get("tags") or []}
    job = env.get("LOCARIA_JOB_ID") or tags.get(TAG_JOB)
    attempt = env.get("LOCARIA_JOB_ATTEMPT") or tags.get(TAG_ATTEMPT)
    marker = str(task.get("startedBy") or "")
    if marker.startswith(STARTED_BY_PREFIX):
        parts = marker.removeprefix(STARTED_BY_PREFIX).split("/")
        if len(parts) == 2:
            job, attempt = job or parts[0], attempt or parts[1]
    if not job or not attempt:
        return None
    try:
        return int(job), int(attempt), env.get("LOCARIA_JOB_TOKEN")
    except ValueError:
        return None


def task_status(task: dict[str, Any], container: str | None = None) -> RunStatus:
    """What a described task means for its job: still running, or ended with what and why."""
    last = task.get("lastStatus")
    if last != "STOPPED":
        return RunStatus("running", details={"lastStatus": last})
    containers = task.get("containers") or [{}]
    main = next((c for c in containers if c.get("name") == container), containers[0])
    code = main.get("exitCode")
    details = {key: value for key, value in {
        "task_arn": task.get("taskArn"), "exitCode": code, "stopCode": task.get("stopCode"),
        "stoppedReason": task.get("stoppedReason"), "containerReason": main.get("reason"),
    }.items() if value not in (None, "")}
    reason = f"the job's container {exit_reason(code)}"
    ecs_said = ": ".join(str(details[k]) for k in ("stopCode", "stoppedReason") if k in details)
    if ecs_said:
        reason += f"; ECS stopped the task: {ecs_said}"
    if "containerReason" in details:
        reason += f" ({details['containerReason']})"
    return RunStatus("exited", code, reason, details)


class EcsRunner:
    name = "ecs"
    needs_job_credentials = False  # a task's database URL is a secret of its task definition

    def __init__(self, config_source: Callable[[], dict[str, dict[str, Any]]], *, config_ttl: float = 60.0,
                 bucket: TokenBucket | None = None, sleep: Callable[[float], None] = time.sleep,
                 max_retries: int = 6, session: Any = None) -> None:
        self.config_source = config_source
        self.config_ttl = config_ttl
        self.bucket = bucket or TokenBucket(RUN_TASK_RATE, sleep=sleep)
        self.sleep = sleep
        self.max_retries = max_retries
        self._session = session
        self._clients: dict[str | None, Any] = {}
        self._config: dict[str, dict[str, Any]] | None = None
        self._config_read_at = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_database(cls, db_url: str | None = None) -> EcsRunner:
        """Read parameters.fargate_config from the database (again once a minute)."""
        from locaria_batch.db import connect

        def read() -> dict[str, dict[str, Any]]:
            with connect(db_url, autocommit=True, application_name="locaria-batch ecs runner") as conn:
                return load_fargate_config(conn)

        runner = cls(read)
        if not runner.config():
            log.warning("parameters.fargate_config is empty: ecs jobs fail until `locaria-batch docker deploy` "
                        "has written it")
        return runner

    # -- configuration and clients -----------------------------------------------------
    def config(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            if self._config is None or time.monotonic() - self._config_read_at > self.config_ttl:
                self._config = self.config_source()
                self._config_read_at = time.monotonic()
            return self._config

    def target(self, docker: str) -> FargateTarget:
        entry = self.config().get(docker)
        if not entry:
            raise FargateConfigError(
                f"parameters.fargate_config has no entry for docker {docker!r}: deploy it with "
                f"`locaria-batch docker deploy {docker}` (or write the entry) before running it on ECS")
        return FargateTarget.from_entry(docker, entry)

    def client(self, region: str | None) -> Any:
        with self._lock:
            if region not in self._clients:
                import boto3
                from botocore.config import Config

                session = self._session or boto3.session.Session()
                # retries are ours (backoff with jitter, behind the token bucket)
                self._clients[region] = session.client("ecs", region_name=region or None, config=Config(
                    retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=10, read_timeout=30))
            return self._clients[region]

    def _clusters(self) -> Iterator[tuple[str | None, str]]:
        seen: set[tuple[str | None, str]] = set()
        for docker, entry in self.config().items():
            try:
                target = FargateTarget.from_entry(docker, entry)
            except FargateConfigError:
                continue
            key = (target.region, target.cluster)
            if key not in seen:
                seen.add(key)
                yield key

    def _call(self, region: str | None, operation: str, **params: Any) -> dict[str, Any]:
        """One ECS call; throttling and transient errors back off with jitter and try again."""
        from botocore.exceptions import ClientError

        client = self.client(region)
        for attempt in range(self.max_retries + 1):
            if operation == "run_task":
                self.bucket.acquire()
            try:
                return dict(getattr(client, operation)(**params))
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in THROTTLING_CODES | TRANSIENT_CODES or attempt == self.max_retries:
                    raise
                delay = backoff_delay(attempt)
                log.info("ECS %s: %s, retrying in %.2f s", operation, code, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")

    # -- Runner protocol --------------------------------------------------------------
    def handle(self, stored: dict[str, Any]) -> TaskHandle:
        return TaskHandle.from_json(stored)

    def launch(self, request: LaunchRequest) -> TaskHandle:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            target = self.target(request.docker_name)
        except FargateConfigError as exc:
            raise LaunchError(str(exc)) from exc
        env = [{"name": key, "value": request.env[key]} for key in JOB_IDENTITY if key in request.env]
        params = {
            "cluster": target.cluster, "taskDefinition": target.task_definition, "launchType": "FARGATE",
            "count": 1, "clientToken": request.token, "startedBy": started_by(request.job_id, request.attempt),
            "networkConfiguration": {"awsvpcConfiguration": {
                "subnets": list(target.subnets), "securityGroups": list(target.security_groups),
                "assignPublicIp": target.assign_public_ip}},
            "overrides": {"containerOverrides": [{"name": target.container, "environment": env}]},
            "tags": [{"key": key, "value": str(value)} for key, value in (
                (TAG_JOB, request.job_id), (TAG_ATTEMPT, request.attempt), (TAG_FILE, request.file_id),
                (TAG_DOCKER, target.docker))],
        }
        try:
            response = self._call(target.region, "run_task", **params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "error"), error.get("Message", str(exc))
            if code in THROTTLING_CODES | TRANSIENT_CODES:
                raise LaunchError(f"ECS is busy ({code}: {message}); the job waits its turn", requeue=True,
                                  delay=backoff_delay(3, cap=60)) from exc
            raise LaunchError(f"ECS refused to run {target.task_definition} on cluster {target.cluster}: "
                              f"{code}: {message}") from exc
        except BotoCoreError as exc:
            # the task may or may not have started: look before anything is retried
            found = self.find(request.job_id, request.attempt)
            if found is not None:
                return found
            raise LaunchError(f"could not reach ECS: {exc}", requeue=True, delay=CAPACITY_RETRY_SECONDS) from exc
        tasks = response.get("tasks") or []
        if not tasks:
            reasons = "; ".join(f"{f.get('reason')}" + (f" ({f['detail']})" if f.get("detail") else "")
                                for f in response.get("failures") or []) or "no task and no reason given"
            raise LaunchError(f"ECS could not place the task: {reasons}", requeue=True,
                              delay=CAPACITY_RETRY_SECONDS * random.uniform(1, 2))
        return self._handle(tasks[0], target)

    @staticmethod
    def _handle(task: dict[str, Any], target: FargateTarget, adopted: bool = False) -> TaskHandle:
        arn = str(task["taskArn"])
        task_id = arn.rsplit("/", 1)[-1]
        job_id, attempt, _ = task_identity(task) or (None, None, None)
        return TaskHandle(task_arn=arn, task_id=task_id, cluster=target.cluster, region=target.region,
                          docker=target.docker, container=target.container, job_id=job_id, attempt=attempt,
                          log_group=target.log_group,
                          log_stream=target.log_stream(task_id) if target.log_group else None, adopted=adopted)

    def describe(self, region: str | None, cluster: str, arns: list[str]) -> dict[str, dict[str, Any]]:
        """Tasks by ARN, looked up 100 at a time."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(arns), DESCRIBE_BATCH):
            batch = arns[start:start + DESCRIBE_BATCH]
            response = self._call(region, "describe_tasks", cluster=cluster, tasks=batch, include=["TAGS"])
            found.update({task["taskArn"]: task for task in response.get("tasks") or []})
        return found

    def status(self, handles: list[TaskHandle]) -> list[RunStatus]:
        from botocore.exceptions import BotoCoreError, ClientError

        groups: dict[tuple[str | None, str], list[str]] = {}
        for handle in handles:
            groups.setdefault((handle.region, handle.cluster), []).append(handle.task_arn)
        tasks: dict[str, dict[str, Any]] = {}
        unanswered: set[str] = set()
        for (region, cluster), arns in groups.items():
            try:
                tasks.update(self.describe(region, cluster, arns))
            except (ClientError, BotoCoreError) as exc:
                # without an answer nothing is decided: the next pass asks again
                log.warning("DescribeTasks on %s failed: %s", cluster, exc)
                unanswered.update(arns)
        result = []
        for handle in handles:
            arn = handle.task_arn
            if arn in unanswered:
                result.append(RunStatus("running", details={"unknown": True}))
            elif arn in tasks:
                result.append(task_status(tasks[arn], handle.container))
            else:
                result.append(RunStatus("missing", None, f"ECS no longer knows task {arn} (stopped tasks are "
                                        "forgotten after about an hour)", {"task_arn": arn}))
        return result

    def find(self, job_id: int, attempt: int) -> TaskHandle | None:
        marker = started_by(job_id, attempt)
        for region, cluster in self._clusters():
            arns: list[str] = []
            for desired in ("RUNNING", "STOPPED"):
                listed = self._call(region, "list_tasks", cluster=cluster, startedBy=marker, desiredStatus=desired)
                arns += [arn for arn in listed.get("taskArns") or [] if arn not in arns]
            if not arns:
                continue
            tasks = [t for t in self.describe(region, cluster, arns).values()
                     if (task_identity(t) or (None, None, None))[:2] == (job_id, attempt)]
            if not tasks:
                continue
            # a live task first, then the newest
            task = max(tasks, key=lambda t: (t.get("lastStatus") != "STOPPED", str(t.get("createdAt") or "")))
            docker = self._docker_of(task)
            if docker is not None:
                return self._handle(task, self.target(docker), adopted=True)
        return None

    def _docker_of(self, task: dict[str, Any]) -> str | None:
        """The docker a task runs: its tag, else the docker whose container its overrides name."""
        tags = {t.get("key"): t.get("value") for t in task.get("tags") or []}
        if tags.get(TAG_DOCKER):
            return str(tags[TAG_DOCKER])
        overridden = {o.get("name") for o in (task.get("overrides") or {}).get("containerOverrides") or []}
        for name, entry in self.config().items():
            if (entry.get("containerName") or name) in overridden:
                return name
        return None

    def stop(self, handle: TaskHandle, reason: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._call(handle.region, "stop_task", cluster=handle.cluster, task=handle.task_arn,
                       reason=reason[:255])
        except (ClientError, BotoCoreError) as exc:
            # already stopped or gone: the attempt's writes are fenced either way
            log.warning("StopTask %s failed: %s", handle.task_arn, exc)

    def cleanup(self, handle: TaskHandle) -> None:
        """Fargate removes stopped tasks itself."""
