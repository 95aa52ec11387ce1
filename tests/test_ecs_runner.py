"""The ecs runner against moto's ECS in server mode, with a real PostGIS and S3 storage in moto."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from typer.testing import CliRunner

from locaria_batch.cli.main import app
from locaria_batch.dispatch.dispatcher import Dispatcher
from locaria_batch.dispatch.ecs import (
    JOB_IDENTITY,
    EcsRunner,
    TokenBucket,
    backoff_delay,
)
from locaria_batch.dispatch.handles import TaskHandle
from locaria_batch.dispatch.runner import LaunchRequest
from locaria_batch.fargate import FargateConfigError, load_fargate_config
from locaria_batch.files import cancel_file, get_file, register_upload
from locaria_batch.storage import open_storage
from tests.aws_fixtures import CLUSTER, REGION, FargateStack, FaultInjector

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CAPACITY = "Capacity is unavailable at this time. Please try again later or in a different availability zone"


@pytest.fixture
def dispatch(dispatchers: Callable[..., Dispatcher]) -> Callable[..., Dispatcher]:
    """Dispatchers with the ecs runner (or the one given), closed after the test."""

    def make(runner: Any = None, **options: Any) -> Dispatcher:
        return dispatchers(runner or EcsRunner.from_database(), **options)

    return make


def _jobs(conn: Any, file_id: int) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM locaria_core.jobs WHERE file_id = %s ORDER BY id", [file_id]).fetchall()


def _upload(conn: Any) -> int:
    return register_upload(conn, open_storage(), SAMPLES / "parks.geojson")


def _fast_retries(conn: Any, max_attempts: int = 2) -> None:
    conn.execute("UPDATE locaria_core.dockers SET max_attempts = %s, retry_base_seconds = 0", [max_attempts])


def test_file_runs_as_a_fargate_task_to_completion(dispatch, conn, fargate: FargateStack) -> None:
    file_id = _upload(conn)
    dispatcher = dispatch(concurrency=2)
    report = dispatcher.run_once()
    [job] = _jobs(conn, file_id)
    assert report.launched == [job["id"]] and job["state"] == "launching"
    handle = job["handle"]
    task = fargate.task(handle["task_arn"])
    assert task["launchType"] == "FARGATE"
    assert task["startedBy"] == f"locaria/{job['id']}/1"
    tags = {t["key"]: t["value"] for t in task["tags"]}
    assert tags["locaria:job-id"] == str(job["id"]) and tags["locaria:attempt"] == "1"
    assert tags["locaria:file-id"] == str(file_id) and tags["locaria:docker"] == "file_loader"
    [override] = task["overrides"]["containerOverrides"]
    env = {e["name"]: e["value"] for e in override["environment"]}
    # only who the job is: database and storage come from the task definition's secrets
    assert set(env) == set(JOB_IDENTITY)
    assert env["LOCARIA_JOB_TOKEN"] == str(job["attempt_token"]) and env["LOCARIA_FILE_ID"] == str(file_id)
    assert handle["log_group"] == "/locaria/test/file_loader"
    assert handle["log_stream"] == f"locaria/file_loader/{handle['task_arn'].rsplit('/', 1)[1]}"

    shown = CliRunner().invoke(app, ["files", "show", str(file_id)], env={"COLUMNS": "250"})
    assert handle["log_stream"] in shown.output

    # while the task runs, passes (ours or another dispatcher's) launch nothing more
    assert dispatcher.run_once().in_flight == 1
    dispatch().run_once()
    assert fargate.task_arns() == [handle["task_arn"]]

    done = fargate.run_container(handle["task_arn"])
    assert done.returncode == 0, done.stdout + done.stderr
    report = dispatcher.run_once()
    assert report.finished == [] and report.launched == []
    row = get_file(conn, file_id)
    assert row["status"] == "FARGATE_PROCESSED", row["attributes"]["log_messages"]
    assert row["attributes"]["record_count"] == 20
    [job] = _jobs(conn, file_id)
    assert job["state"] == "succeeded"
    events = [e["event"] for e in conn.execute(
        "SELECT event FROM locaria_core.job_events WHERE job_id = %s ORDER BY id", [job["id"]]).fetchall()]
    assert events == ["queued", "launching", "launched", "running", "succeeded"]
    assert conn.execute("SELECT count(*) AS n FROM locaria_uploads.upload_file_1").fetchone()["n"] == 20


def test_killed_container_is_retried_then_fails_with_the_reason(dispatch, conn, fargate: FargateStack) -> None:
    _fast_retries(conn)
    file_id = _upload(conn)
    dispatcher = dispatch()
    dispatcher.run_once()
    first = _jobs(conn, file_id)[0]["handle"]["task_arn"]
    fargate.container_exited(first, 137, container_reason="OutOfMemoryError: Container killed due to memory usage")
    report = dispatcher.run_once()  # reconciles attempt 1 (retry), then launches attempt 2
    [job] = _jobs(conn, file_id)
    assert report.finished == [job["id"]] and report.launched == [job["id"]]
    assert job["attempt"] == 2 and "OutOfMemoryError" in job["error"]
    second = job["handle"]["task_arn"]
    assert second != first and sorted(fargate.task_arns()) == sorted([first, second])
    assert fargate.task(second)["startedBy"] == f"locaria/{job['id']}/2"

    fargate.container_exited(second, 137, container_reason="OutOfMemoryError: Container killed due to memory usage")
    dispatcher.run_once()
    [job] = _jobs(conn, file_id)
    assert job["state"] == "failed" and job["exit_code"] == 137
    assert "EssentialContainerExited" in job["error"] and "OutOfMemoryError" in job["error"]
    row = get_file(conn, file_id)
    assert row["status"] == "ERROR"
    assert "was killed (SIGKILL" in row["attributes"]["error"] and "exit code 137" in row["attributes"]["error"]
    ecs_entries = [e for e in row["attributes"]["log_messages"] if "stopCode" in e]
    assert len(ecs_entries) == 2
    assert ecs_entries[-1]["exitCode"] == 137 and ecs_entries[-1]["stopCode"] == "EssentialContainerExited"
    assert ecs_entries[-1]["stoppedReason"] == "Essential container in task exited"
    assert ecs_entries[-1]["task_arn"] == second


def test_capacity_failure_relaunches_without_spending_an_attempt(dispatch, conn, fargate: FargateStack) -> None:
    file_id = _upload(conn)
    runner = EcsRunner.from_database()
    # moto always places Fargate tasks: the failures[] answer is canned, the relaunch is real
    faults = FaultInjector(runner.client(REGION), "RunTask").respond(
        {"tasks": [], "failures": [{"arn": "arn:aws:ecs:eu-west-2:123456789012:container-instance/x",
                                    "reason": CAPACITY}]})
    dispatcher = dispatch(runner)
    assert dispatcher.run_once().launched == []
    [job] = _jobs(conn, file_id)
    assert job["state"] == "queued" and job["attempt"] == 0 and CAPACITY in job["error"]
    assert conn.execute("SELECT run_after > clock_timestamp() + interval '10 seconds' AS later "
                        "FROM locaria_core.jobs WHERE id = %s", [job["id"]]).fetchone()["later"]
    assert fargate.task_arns() == []

    conn.execute("UPDATE locaria_core.jobs SET run_after = clock_timestamp() WHERE id = %s", [job["id"]])
    assert dispatcher.run_once().launched == [job["id"]]
    [job] = _jobs(conn, file_id)
    assert job["attempt"] == 1 and job["state"] == "launching"
    assert [call["startedBy"] for call in faults.calls] == [f"locaria/{job['id']}/1"] * 2
    # each claim has its own token: a replayed clientToken would replay the failed answer
    assert faults.calls[1]["clientToken"] == str(job["attempt_token"]) != faults.calls[0]["clientToken"]
    assert fargate.task_arns() == [job["handle"]["task_arn"]]


def test_throttling_backs_off_with_jitter_then_launches(dispatch, conn, fargate: FargateStack) -> None:
    file_id = _upload(conn)
    pauses: list[float] = []
    runner = EcsRunner(lambda: load_fargate_config(conn), sleep=pauses.append)
    faults = FaultInjector(runner.client(REGION), "RunTask").error("ThrottlingException", "Rate exceeded", times=3)
    report = dispatch(runner).run_once()
    [job] = _jobs(conn, file_id)
    assert report.launched == [job["id"]] and job["attempt"] == 1
    assert len(faults.calls) == 4 and fargate.task_arns() == [job["handle"]["task_arn"]]
    assert len(pauses) == 3
    for attempt, pause in enumerate(pauses):
        ceiling = min(10.0, 0.2 * 2**attempt)
        assert ceiling / 2 <= pause <= ceiling


def test_throttling_that_does_not_end_requeues_without_spending_an_attempt(dispatch, conn,
                                                                            fargate: FargateStack) -> None:
    file_id = _upload(conn)
    runner = EcsRunner(lambda: load_fargate_config(conn), sleep=lambda _: None, max_retries=2)
    FaultInjector(runner.client(REGION), "RunTask").error("ThrottlingException", "Rate exceeded", times=3)
    assert dispatch(runner).run_once().launched == []
    [job] = _jobs(conn, file_id)
    assert job["state"] == "queued" and job["attempt"] == 0 and "ECS is busy (ThrottlingException" in job["error"]
    assert fargate.task_arns() == []


def test_token_bucket_holds_run_task_to_twenty_a_second() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = TokenBucket(20, clock=lambda: now[0], sleep=sleep)
    for _ in range(100):
        bucket.acquire()
    # a burst of 20 at once, then one every 50 ms
    assert now[0] == pytest.approx(80 / 20)
    assert all(0.1 <= backoff_delay(1) <= 0.4 for _ in range(50))


def test_dispatcher_killed_after_run_task_is_followed_by_adoption(dispatch, conn, fargate: FargateStack) -> None:
    file_id = _upload(conn)

    class DiesAfterRunTask:
        """The real runner; the dispatcher process dies right after RunTask returns."""
        name = "ecs"
        needs_job_credentials = False

        def __init__(self, inner: EcsRunner) -> None:
            self.inner = inner

        def launch(self, request: LaunchRequest) -> Any:
            self.inner.launch(request)
            raise KeyboardInterrupt("dispatcher killed")

    doomed = dispatch(DiesAfterRunTask(EcsRunner.from_database()))
    with pytest.raises(KeyboardInterrupt):
        doomed.run_once()
    doomed.close()
    [job] = _jobs(conn, file_id)
    assert job["state"] == "launching" and job["handle"] is None
    [task_arn] = fargate.task_arns()
    conn.execute("UPDATE locaria_core.jobs SET lease_expires = clock_timestamp() - interval '1 second'")

    successor = dispatch()
    report = successor.run_once()
    [job] = _jobs(conn, file_id)
    assert report.adopted == [job["id"]] and report.launched == []
    assert job["handle"]["task_arn"] == task_arn and job["handle"]["adopted"] is True
    assert job["attempt"] == 1 and job["lease_owner"] == successor.owner
    assert fargate.task_arns() == [task_arn]

    assert fargate.run_container(task_arn).returncode == 0
    successor.run_once()
    assert get_file(conn, file_id)["status"] == "FARGATE_PROCESSED"
    assert fargate.task_arns() == [task_arn]


def test_two_dispatchers_never_launch_a_job_twice(dispatch, conn, fargate: FargateStack) -> None:
    files = [_upload(conn) for _ in range(4)]
    dispatchers = [dispatch(concurrency=4) for _ in range(2)]
    start = threading.Barrier(2)

    def work(dispatcher: Dispatcher) -> None:
        start.wait()
        for _ in range(3):
            dispatcher.run_once()

    threads = [threading.Thread(target=work, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    jobs = [job for file_id in files for job in _jobs(conn, file_id)]
    assert len(jobs) == 4 and all(job["attempt"] == 1 for job in jobs)
    for job in jobs:
        assert fargate.task_arns(f"locaria/{job['id']}/1") == [job["handle"]["task_arn"]]
    assert len(fargate.task_arns()) == 4


def test_cancel_stops_the_task(dispatch, conn, fargate: FargateStack) -> None:
    file_id = _upload(conn)
    dispatcher = dispatch()
    dispatcher.run_once()
    arn = _jobs(conn, file_id)[0]["handle"]["task_arn"]
    cancel_file(conn, file_id)
    assert dispatcher.run_once().stopped == [_jobs(conn, file_id)[0]["id"]]
    task = fargate.task(arn)
    assert task["desiredStatus"] == "STOPPED" and task["stoppedReason"] == "cancelled"
    assert get_file(conn, file_id)["status"] == "CANCELLED"


def test_timeout_stops_the_task_and_fails_the_attempt(dispatch, conn, fargate: FargateStack) -> None:
    conn.execute("UPDATE locaria_core.dockers SET timeout_seconds = 1, max_attempts = 1")
    file_id = _upload(conn)
    dispatcher = dispatch()
    dispatcher.run_once()
    arn = _jobs(conn, file_id)[0]["handle"]["task_arn"]
    time.sleep(1.2)
    assert len(dispatcher.run_once().timed_out) == 1
    assert fargate.task(arn)["stoppedReason"] == "timed out after 1 s"
    row = get_file(conn, file_id)
    assert row["status"] == "ERROR" and "timed out after 1 s" in row["attributes"]["error"]


def test_docker_without_fargate_config_fails_with_a_clear_message(dispatch, conn, fargate: FargateStack) -> None:
    _fast_retries(conn, max_attempts=1)
    conn.execute("UPDATE locaria_core.parameters SET parameter = parameter - 'file_loader' "
                 "WHERE parameter_name = 'fargate_config'")
    file_id = _upload(conn)
    dispatch().run_once()
    row = get_file(conn, file_id)
    assert row["status"] == "ERROR"
    assert "fargate_config has no entry for docker 'file_loader'" in row["attributes"]["error"]
    assert fargate.task_arns() == []


def test_incomplete_fargate_entry_names_the_missing_keys() -> None:
    runner = EcsRunner(lambda: {"file_loader": {"task": "t", "ecsName": "c"}})
    with pytest.raises(FargateConfigError, match="lacks vpcPrivateSubnetA, ServerlessSecurityGroup"):
        runner.target("file_loader")


def test_refused_run_task_spends_the_attempt_with_ecs_words(dispatch, conn, fargate: FargateStack) -> None:
    _fast_retries(conn, max_attempts=1)
    conn.execute("UPDATE locaria_core.parameters SET parameter = jsonb_set(parameter, '{file_loader,task}', "
                 "'\"locaria-no-such-family\"') WHERE parameter_name = 'fargate_config'")
    file_id = _upload(conn)
    dispatch().run_once()
    row = get_file(conn, file_id)
    assert row["status"] == "ERROR"
    assert "ECS refused to run locaria-no-such-family" in row["attributes"]["error"]


def test_lost_run_task_answer_finds_the_task_instead_of_starting_another(dispatch, conn,
                                                                         fargate: FargateStack) -> None:
    file_id = _upload(conn)
    runner = EcsRunner.from_database()
    client = runner.client(REGION)

    def reached_ecs_but_answer_lost(params: dict[str, Any], **_: Any) -> None:
        # the request is carried out (by another client), then the connection drops
        boto3.client("ecs", region_name=REGION).run_task(**params)
        raise ReadTimeoutError(endpoint_url=os.environ["AWS_ENDPOINT_URL"])

    client.meta.events.register("before-parameter-build.ecs.RunTask", reached_ecs_but_answer_lost)
    report = dispatch(runner).run_once()
    [job] = _jobs(conn, file_id)
    assert report.launched == [job["id"]] and job["handle"]["adopted"] is True
    assert fargate.task_arns() == [job["handle"]["task_arn"]]


def test_reconciliation_describes_a_hundred_tasks_at_a_time(conn, fargate: FargateStack) -> None:
    runner = EcsRunner.from_database()
    described = FaultInjector(runner.client(REGION), "DescribeTasks")  # records, answers nothing itself
    real = fargate.ecs.run_task(
        cluster=CLUSTER, taskDefinition=fargate.config["file_loader"]["task"], launchType="FARGATE", count=3,
        networkConfiguration={"awsvpcConfiguration": {"subnets": fargate.subnets,
                                                      "securityGroups": [fargate.security_group]}})["tasks"]
    arns = [t["taskArn"] for t in real] + [f"arn:aws:ecs:{REGION}:123456789012:task/{CLUSTER}/gone-{n}"
                                           for n in range(147)]
    statuses = runner.status([TaskHandle(arn, arn.rsplit("/", 1)[1], CLUSTER, REGION) for arn in arns])
    assert [len(call["tasks"]) for call in described.calls] == [100, 50]
    assert [s.state for s in statuses[:3]] == ["running"] * 3
    assert {s.state for s in statuses[3:]} == {"missing"}
    assert "ECS no longer knows task" in statuses[-1].reason
