"""`locaria adopt` and `locaria rollback` on a database holding Locaria's own schema and rows
(tests/locaria_original.sql): nothing lost, the trigger replaced, fargate_config mapped, stuck rows
taken over, then real loads and downloads through it; a dry run that changes nothing; a rollback
that restores Locaria's functions, trigger and parameters exactly; and adoption again."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from locaria_batch.cli.main import app
from locaria_batch.db import connect
from locaria_batch.db.adoption import TAKEN_OVER, AdoptionError, AdoptionState, adoption_state, file_triggers
from locaria_batch.db.migrate import Migration, available_migrations, migrate
from locaria_batch.dispatch.dispatcher import Dispatcher
from locaria_batch.dispatch.local import LocalRunner
from locaria_batch.files import get_file
from locaria_batch.settings import reset as reset_settings
from locaria_batch.storage import open_storage
from tests.aws import REPO, fargate_config

pytest_plugins = ["tests.aws"]
ORIGINAL_SQL = Path(__file__).resolve().parent / "locaria_original.sql"
SAMPLES = REPO / "samples"
ECS_RUNNER = "arn:aws:lambda:eu-west-2:123456789012:function:locaria-fargate-maindev-dev-ecsRunner:1"
WS_BROADCAST = "arn:aws:lambda:eu-west-2:123456789012:function:locaria-ae-maindev-dev-eventWS"


@pytest.fixture
def locaria_db(pg_url: str, job_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database holding Locaria's schema and rows, with LOCARIA_DB_URL (its owner) and
    LOCARIA_JOB_DB_URL (the locaria_job login) pointing at it."""
    name = f"locaria_original_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ORIGINAL_SQL.read_text().encode())
    monkeypatch.setenv("LOCARIA_DB_URL", url)
    monkeypatch.setenv("LOCARIA_JOB_DB_URL", job_url.rsplit("/", 1)[0] + "/" + name)
    reset_settings()
    yield url
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def db(locaria_db: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with connect(locaria_db, autocommit=True) as conn:
        yield conn


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return " ".join(result.output.split())


def replied(*args: str) -> Any:
    """A command's JSON reply."""
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def snapshot(conn: Any) -> dict[str, Any]:
    """Everything of Locaria's that adopting touches."""
    functions = conn.execute(
        "SELECT p.oid::regprocedure::text AS signature, md5(pg_get_functiondef(p.oid) || COALESCE(p.proacl::text, "
        "'default privileges')) AS body FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'locaria_core' ORDER BY 1").fetchall()
    return {
        "functions": {row["signature"]: row["body"] for row in functions},
        "triggers": file_triggers(conn),
        "parameters": conn.execute("SELECT * FROM locaria_core.parameters ORDER BY id").fetchall(),
        "files": conn.execute("SELECT * FROM locaria_core.files ORDER BY id").fetchall(),
        "schemas": [r["nspname"] for r in conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall()],
    }


def statuses(conn: Any) -> dict[int, str]:
    return {row["id"]: row["status"] for row in conn.execute("SELECT id, status FROM locaria_core.files").fetchall()}


def active_jobs(conn: Any) -> dict[int, str]:
    rows = conn.execute("SELECT file_id, docker FROM locaria_core.jobs WHERE state IN ('queued', 'launching', "
                        "'running') ORDER BY file_id").fetchall()
    return {row["file_id"]: row["docker"] for row in rows}


def invocations(conn: Any) -> list[dict[str, Any]]:
    return conn.execute("SELECT function_name, payload FROM aws_lambda.invocations ORDER BY id").fetchall()


def last_message(conn: Any, file_id: int) -> str:
    return str(get_file(conn, file_id)["attributes"]["log_messages"][-1]["message"])


@pytest.fixture
def drain(tmp_path: Path, dispatchers: Callable[..., Dispatcher]) -> Callable[[Any], None]:
    """Dispatch with the local runner until no job is left in flight."""
    def until_done(conn: Any) -> None:
        dispatcher = dispatchers(LocalRunner(tmp_path / "logs", stop_grace=2))
        deadline = time.monotonic() + 120
        while active_jobs(conn):
            assert time.monotonic() < deadline, f"jobs still active: {active_jobs(conn)}"
            dispatcher.run_once()
            time.sleep(0.1)
    return until_done


def test_a_dry_run_reports_everything_and_changes_nothing(db: Any) -> None:
    before = snapshot(db)
    out = run("locaria", "adopt", "--dry-run")
    assert "migration(s) applied beside Locaria's tables; Locaria's add_file(parameters jsonb)" in out
    assert ("removed files_trigger (Locaria's: aws_lambda_interface → the ecsRunner Lambda); installed "
            "files_broadcast, files_trigger") in out
    assert "dockers file_download, file_import, file_loader registered" in out
    assert "fargate_config.file_loader taken out (kept for rollback)" in out
    assert "fargate_config.openactive kept as it was: no docker of that name here" in out
    assert "lambda_config.ws_broadcast kept" in out and "file_upload kept: neither system reads it" in out
    assert ("files stuck 2 queued again (FARGATE_PROCESSING → REGISTERED: 2; DOWNLOAD_PROCESSING → "
            "DOWNLOAD_REQUESTED: 5)") in out
    assert "files waiting 2 queued (REGISTERED: 3; DOWNLOAD_REQUESTED: 4)" in out
    assert "dry run: nothing was changed" in out
    assert snapshot(db) == before
    assert adoption_state(db) is AdoptionState.LOCARIA
    as_json = json.loads(CliRunner().invoke(app, ["locaria", "adopt", "--dry-run", "--json"]).stdout)
    assert as_json["dry_run"] is True and as_json["details"]["files"]["queued"] == [
        {"id": 3, "status": "REGISTERED"}, {"id": 4, "status": "DOWNLOAD_REQUESTED"}]


def test_adopt_takes_over_in_place_then_loads_and_downloads(db: Any, locaria_db: str,
                                                             drain: Callable[[Any], None]) -> None:
    before = snapshot(db)
    open_storage().put("incoming/3.csv", SAMPLES / "parks.csv")  # the upload file 3 waits with
    out = run("locaria", "adopt")
    assert f"taken over: {locaria_db.rsplit('@', 1)[-1].split('/')[0]}" in out
    assert adoption_state(db) is AdoptionState.ADOPTED

    # not a row lost; the finished ones untouched
    rows = {row["id"]: row for row in db.execute("SELECT * FROM locaria_core.files ORDER BY id").fetchall()}
    assert list(rows) == list(range(1, 9))
    for unchanged in (1, 6, 7, 8):
        assert rows[unchanged] == next(r for r in before["files"] if r["id"] == unchanged)
    assert statuses(db) == {1: "FARGATE_PROCESSED", 2: "REGISTERED", 3: "REGISTERED", 4: "DOWNLOAD_REQUESTED",
                            5: "DOWNLOAD_REQUESTED", 6: "DOWNLOAD_COMPLETED", 7: "DELETED", 8: "ERROR"}
    assert last_message(db, 2) == ("was stuck in FARGATE_PROCESSING since 02/06/2025 09:15: queued again by "
                                   "Locaria Batch")
    assert last_message(db, 3) == "queued by Locaria Batch, which took over from Locaria"
    assert active_jobs(db) == {2: "file_loader", 3: "file_loader", 4: "file_download", 5: "file_download"}

    # Locaria's file functions wait aside; every other function of the CMS (its gateway, parameters
    # API, log, ...) is exactly as it was, privileges included
    after = snapshot(db)
    kept = {s: body for s, body in before["functions"].items() if s.split("(")[0].split(".")[1] not in TAKEN_OVER}
    assert "locaria_core.locaria_internal_gateway(jsonb,jsonb)" in kept
    assert {s: after["functions"][s] for s in kept} == kept
    moved = db.execute("SELECT p.oid::regprocedure::text AS s, md5(pg_get_functiondef(p.oid)) AS body FROM pg_proc p "
                       "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'locaria_original'"
                       ).fetchall()
    assert {r["s"].split("(")[0] for r in moved} == {
        "locaria_original.add_file", "locaria_original.update_file", "locaria_original.get_files",
        "locaria_original.delete_file", "locaria_original.file_cron", "locaria_original.files_trigger",
        "locaria_original.aws_lambda_interface"}
    gateway = db.execute("SELECT locaria_core.locaria_internal_gateway('{\"method\": \"list_categories\"}') AS r"
                         ).fetchone()["r"]
    assert gateway == {"response_code": 200, "categories": ["Parks", "Events"]}
    # fargate_config: the dockers' entries out (no stack: the local runner), kept for a rollback
    assert list(fargate_config(db)) == ["openactive"]
    saved = db.execute("SELECT detail FROM locaria_original.adoption_log").fetchone()["detail"]
    assert saved["original_fargate_config"] == next(p for p in before["parameters"]
                                           if p["parameter_name"] == "fargate_config")["parameter"]

    # the old trigger is gone: a file added through the CMS's gateway invokes no ecsRunner, queues a job
    # and is broadcast to the admin pages as Locaria did, now with its id
    db.execute("TRUNCATE aws_lambda.invocations")
    added = db.execute("SELECT locaria_core.locaria_internal_gateway(%s, '{\"_groups\": [\"Loader\"]}') AS r",
                       [json.dumps({"method": "add_file", "file_attributes": {"name": "parks.geojson",
                                                                              "ext": "geojson", "upload": True}})]
                       ).fetchone()["r"]
    assert added["response_code"] == 200 and added["status"] == "REGISTERED"
    open_storage().put(f"incoming/{added['id']}.geojson", SAMPLES / "parks.geojson")
    assert [call["function_name"] for call in invocations(db)] == [WS_BROADCAST]
    assert invocations(db)[0]["payload"] == {"group": "Admins", "packet": {"queue": "fileStatus", "packet": {
        "message": "statusChange", "status": "REGISTERED", "id": added["id"]}}}

    # everything taken over runs to an end
    drain(db)
    done = statuses(db)
    assert done[2] == "ERROR" and "roads.geojson" in json.dumps(get_file(db, 2)["attributes"]["log_messages"])
    assert done[3] == "FARGATE_PROCESSED" and done[added["id"]] == "FARGATE_PROCESSED"
    assert db.execute("SELECT count(*) AS n FROM locaria_uploads.upload_file_3").fetchone()["n"] == 20
    assert done[4] == "DOWNLOAD_COMPLETED" and done[5] == "DOWNLOAD_COMPLETED"
    exported = json.loads(Path(get_file(db, 4)["attributes"]["url"]).read_text())
    assert sorted(f["properties"]["name"] for f in exported["features"]) == ["Hyde Park", "Richmond Park"]

    # and the commands work as on any database of ours
    loaded = replied("files", "add", str(SAMPLES / "parks.csv"), "--wait")
    assert loaded["status"] == "FARGATE_PROCESSED"
    exported = replied("download", "request", "--table", loaded["attributes"]["imported_table_name"], "--format",
                       "csv", "--wait")
    assert exported["status"] == "DOWNLOAD_COMPLETED"
    assert "nothing to adopt" in run("locaria", "adopt", code=1)
    assert "taken over by Locaria Batch since" in run("locaria", "status")


def test_stuck_rows_can_be_failed_instead(db: Any) -> None:
    out = run("locaria", "adopt", "--fail-stuck")
    assert ("files stuck 2 failed with a message (FARGATE_PROCESSING → ERROR: 2; DOWNLOAD_PROCESSING → "
            "DOWNLOAD_ERROR: 5)") in out
    assert statuses(db)[2] == "ERROR" and statuses(db)[5] == "DOWNLOAD_ERROR"
    assert last_message(db, 2) == ("was stuck in FARGATE_PROCESSING since 02/06/2025 09:15 when Locaria Batch took "
                                   "over; `locaria-batch files retry 2` runs it again")
    assert active_jobs(db) == {3: "file_loader", 4: "file_download"}
    run("files", "retry", "2")
    assert active_jobs(db)[2] == "file_loader"


def test_rollback_restores_locaria_exactly_and_adopt_takes_it_again(db: Any) -> None:
    before = snapshot(db)
    run("locaria", "adopt")
    db.execute("UPDATE locaria_core.jobs SET state = 'running' WHERE file_id = 3")
    refused = run("locaria", "rollback", code=1)
    assert "jobs are running for files 3: wait for them to end" in refused
    db.execute("UPDATE locaria_core.jobs SET state = 'queued' WHERE file_id = 3")
    queued = active_jobs(db)

    dry = snapshot(db)
    assert "dry run: nothing was changed" in run("locaria", "rollback", "--dry-run")
    assert snapshot(db) == dry

    out = run("locaria", "rollback")
    assert "removed files_broadcast, files_trigger; Locaria's files_trigger restored" in out
    assert "4 queued job(s) ended; their files wait for Locaria's next task (REGISTERED: 2, 3; DOWNLOAD_REQUESTED: " \
           "4, 5)" in out
    assert adoption_state(db) is AdoptionState.ROLLED_BACK and active_jobs(db) == {}
    after = snapshot(db)
    for signature, body in before["functions"].items():  # Locaria's functions as they were, ours parked
        assert after["functions"][signature] == body, signature
    assert after["triggers"] == before["triggers"]
    assert fargate_config(db) == fargate_config_of(before)

    # Locaria's trigger launches as it always did: the whole fargate_config entry to the ecsRunner
    db.execute("TRUNCATE aws_lambda.invocations")
    db.execute("SELECT locaria_core.add_file('{\"file_attributes\": {\"name\": \"late.csv\", \"ext\": \"csv\"}}')")
    calls = invocations(db)
    assert [c["function_name"] for c in calls] == [ECS_RUNNER, ECS_RUNNER, WS_BROADCAST]
    assert calls[0]["payload"] == fargate_config_of(before)["file_loader"]

    # a rolled-back database is not migrated behind Locaria's back
    with pytest.raises(AdoptionError, match="handed back to Locaria's batch system"):
        with_extra_migration(db, "SELECT 1")
    out = run("locaria", "adopt")
    assert "our schema was there already" in out and "installed files_broadcast, files_trigger" in out
    assert set(active_jobs(db)) == set(queued) | {9}
    assert adoption_state(db) is AdoptionState.ADOPTED


def fargate_config_of(state: dict[str, Any]) -> dict[str, Any]:
    return dict(next(p for p in state["parameters"] if p["parameter_name"] == "fargate_config")["parameter"])


def with_extra_migration(conn: Any, body: str) -> list[Migration]:
    import locaria_batch.db.migrate as migrations

    extra = Migration(9999, "later", body)
    original = migrations.available_migrations
    migrations.available_migrations = lambda: [*original(), extra]  # type: ignore[assignment]
    try:
        return migrate(conn)
    finally:
        migrations.available_migrations = original  # type: ignore[assignment]


def test_later_migrations_keep_the_cms_functions(db: Any) -> None:
    before = snapshot(db)
    run("locaria", "adopt")
    applied = with_extra_migration(db, """
        CREATE OR REPLACE FUNCTION locaria_core.locaria_internal_gateway(parameters JSONB, acl JSONB DEFAULT '{}')
        RETURNS JSONB LANGUAGE sql AS $$ SELECT '{"ours": true}'::jsonb $$;
        CREATE OR REPLACE FUNCTION locaria_core.get_files(parameters JSONB) RETURNS JSONB
        LANGUAGE sql AS $$ SELECT '{"files": [], "later": true}'::jsonb $$;""")
    assert [m.version for m in applied] == [9999]
    after = snapshot(db)
    for theirs in ("locaria_core.locaria_internal_gateway(jsonb,jsonb)", "locaria_core.get_parameters(jsonb)"):
        assert after["functions"][theirs] == before["functions"][theirs], theirs
    assert db.execute("SELECT locaria_core.get_files('{}') AS r").fetchone()["r"]["later"] is True
    assert len(available_migrations()) == len(db.execute("SELECT 1 FROM locaria_core.schema_migrations").fetchall()) - 1


def test_adopt_refuses_what_is_not_locaria(db_url: str) -> None:
    assert "is a Locaria Batch database from the start, not Locaria's: nothing to adopt" in run(
        "locaria", "adopt", code=1)
    assert "Locaria Batch from the start" in run("locaria", "status")
    assert "nothing to roll back" in run("locaria", "rollback", code=1)


def test_adopt_maps_fargate_config_to_the_stage_stack(stage_config: Path, aws: str, locaria_db: str, db: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from locaria_batch.deploy import workflow
    from locaria_batch.deploy.stages import load_stages, target
    from locaria_batch.errors import DeployError

    monkeypatch.setenv("LOCARIA_DEV_DB_URL", locaria_db)
    monkeypatch.setenv("LOCARIA_DEV_JOB_DB_URL", locaria_db)
    monkeypatch.setenv("LOCARIA_DEV_DISPATCHER_DB_URL", locaria_db)
    monkeypatch.setenv("LOCARIA_DB_URL", "postgresql://elsewhere.invalid/other")  # the stage's is used
    original = fargate_config(db)
    out = run("deploy", "apply", "--stage", "dev", "--poll", "0.2")
    assert "fargate_config not recorded:" in out and "still runs Locaria's own batch system: `locaria-batch " \
           "locaria adopt --stage dev --theme main --environment dev` records fargate_config" in out
    assert fargate_config(db) == original
    dev = target(load_stages(stage_config), "dev", None, None, REPO)
    with pytest.raises(DeployError, match="`locaria-batch docker push file_loader` pushes the image without "
                                          "touching the database"):
        workflow.deploy(dev, "file_loader", report=lambda line: None)

    outputs = json.loads(dev.outputs_file.read_text())["outputs"]
    out = run("locaria", "adopt", "--stage", "dev")
    loader = original["file_loader"]
    assert (f"fargate_config.file_loader task {loader['task']} → {outputs['FileLoaderTaskDefinitionArn']}; "
            "ecsName locaria-cluster-fileloader-maindev → locaria-batch-dev-maindev; "
            "ServerlessSecurityGroup sg-0feedfacecafe0001 → sg-0a1b2c3d4e5f60003; "
            f"arn {ECS_RUNNER} → {outputs['LauncherFunctionArn']}; "
            f"ecrRepositoryUri {loader['ecrRepositoryUri']} → {outputs['FileLoaderRepositoryUri']}; "
            "added containerName, logGroup, streamPrefix, assignPublicIp") in out
    config = fargate_config(db)
    assert config["file_loader"] == workflow.fargate_target(dev, "file_loader", outputs).to_entry()
    assert config["openactive"] == original["openactive"]

    # as a job is queued, the database wakes our launcher (Aurora's aws_lambda), never the ecsRunner
    db.execute("TRUNCATE aws_lambda.invocations")
    added = db.execute("SELECT locaria_core.add_file('{\"file_attributes\": {\"name\": \"a.csv\", \"ext\": \"csv\"}}')"
                       " AS r").fetchone()["r"]
    job = db.execute("SELECT id FROM locaria_core.jobs WHERE file_id = %s", [added["id"]]).fetchone()["id"]
    calls = invocations(db)
    assert ECS_RUNNER not in [c["function_name"] for c in calls]
    assert {"function_name": outputs["LauncherFunctionArn"], "payload": {
        "source": "locaria_core.jobs", "job_id": job, "file_id": added["id"], "docker": "file_loader"}} in calls
