"""Least privilege, proven with a job's real credentials: a hostile job, run by a dispatcher that was
itself given the owner's (superuser) URL, tries to reach beyond its own file and is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from locaria_batch.dispatch.local import LocalRunner
from locaria_batch.files import add_file, get_file
from tests.jobs_for_tests import ATTACKS


def test_a_job_can_reach_nothing_but_its_own_file(conn, db_url: str, add_docker, dispatchers,
                                                  locaria_env: Path) -> None:
    add_docker("intruder", trigger_statuses=["INTRUDE"], success_status="INTRUDED",
               handler="tests.jobs_for_tests:intruder")
    add_docker("sleeper", trigger_statuses=["SLEEP"], handler="tests.jobs_for_tests:noop")
    victim = add_file(conn, {"name": "victim.csv"}, status="SLEEP")["id"]
    conn.execute(f"CREATE TABLE locaria_uploads.upload_file_{victim} AS SELECT 1 AS ogc_fid")  # a published table
    victim_job = conn.execute("SELECT id, attempt_token FROM locaria_core.jobs WHERE file_id = %s",
                              [victim]).fetchone()
    conn.execute("SELECT locaria_core.set_parameters(%s)", [
        '{"parameter_name": "fargate_config", "parameters": {"secret": 1}, "acl": {"_groups": ["Admins"]}}'])
    before: dict[str, Any] = dict(get_file(conn, victim))
    intruder = add_file(conn, {"name": "intruder.csv", "victim_file": victim, "victim_job": victim_job["id"]},
                        status="INTRUDE")["id"]

    dispatcher = dispatchers(LocalRunner(locaria_env / "logs"), db_url=db_url)  # the owner's URL
    conn.execute("UPDATE locaria_core.dockers SET enabled = false WHERE name = 'sleeper'")
    dispatcher.drain(timeout=60)

    done = get_file(conn, intruder)
    assert done["status"] == "INTRUDED", done["attributes"].get("log_messages")
    report = done["attributes"]
    assert report["connected_as"] == "locaria_job"
    assert report["credential_variables"] == ["LOCARIA_DB_URL"]  # its own; nothing of the dispatcher's
    allowed = {attack: outcome for attack, outcome in report["outcomes"].items() if not outcome.startswith("refused")}
    assert allowed == {}
    assert set(report["outcomes"]) == set(ATTACKS)
    # and nothing changed
    after = get_file(conn, victim)
    assert (after["status"], after["attributes"]) == (before["status"], before["attributes"])
    assert conn.execute(f"SELECT count(*) AS n FROM locaria_uploads.upload_file_{victim}").fetchone()["n"] == 1
    token = conn.execute("SELECT attempt_token FROM locaria_core.jobs WHERE id = %s", [victim_job["id"]]).fetchone()
    assert token["attempt_token"] == victim_job["attempt_token"]
    assert not Path("/tmp/locaria-intruder").exists()
    assert conn.execute("SELECT count(*) AS n FROM locaria_core.job_events WHERE event = 'forged'").fetchone()["n"] == 0


def test_every_function_has_a_role(conn) -> None:
    """A function added later is either named in grant_roles() or callable by its owner alone."""
    rows = conn.execute("""
        SELECT p.proname AS name, p.prosecdef AS definer,
               has_function_privilege('locaria_job', p.oid, 'EXECUTE') AS job,
               has_function_privilege('locaria_dispatcher', p.oid, 'EXECUTE') AS dispatcher,
               has_function_privilege('locaria_console', p.oid, 'EXECUTE') AS console,
               array_to_string(p.proconfig, ',') AS config
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'locaria_core' AND p.prokind = 'f'""").fetchall()
    for row in rows:
        if row["definer"]:
            assert "search_path=locaria_core, public, pg_temp" in (row["config"] or ""), row
            assert row["job"] != row["dispatcher"] or not row["job"], row  # no function serves both sides
    job = sorted(row["name"] for row in rows if row["job"] and row["definer"])
    assert job == ["job_finish", "job_heartbeat", "job_import_items", "job_import_prune", "job_log",
                   "job_publish_tables", "job_start"]


def test_every_function_of_ours_is_classified() -> None:
    """Each function our migrations define is named in exactly one of grant_roles()'s lists, so a new one
    cannot silently end up callable by nobody (or by everyone)."""
    import re

    migrations = sorted((Path(__file__).resolve().parent.parent / "src/locaria_batch/db/migrations").glob("*.sql"))
    defined = {name for path in migrations
               for name in re.findall(r"FUNCTION\s+locaria_core\.([a-z_]+)\s*\(", path.read_text())}
    grants = next(path for path in migrations if path.name.endswith("_grants.sql")).read_text()
    body = grants[grants.index("FUNCTION locaria_core.grant_roles()"):]
    lists = re.findall(r"(\w+)_functions TEXT\[\] := ARRAY\[(.*?)\];", body, re.S)
    named = [name for _, items in lists for name in re.findall(r"'([a-z_]+)'", items)]
    doubled = {name for name in named if named.count(name) > 1} - {"get_files"}  # the console reads it too
    assert doubled == set()
    assert sorted(defined - set(named)) == []


def test_the_dispatcher_role_runs_the_whole_path(db_url: str, dispatcher_url: str) -> None:
    """An upload, a download, a retry and a cancel through the CLI and a worker that hold only the
    dispatcher's login, as on the embedded cluster and on AWS."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    env = {**__import__("os").environ, "LOCARIA_DB_URL": dispatcher_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "locaria_batch.cli.main", *args], env=env, cwd=repo,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode in (0, 1), done.stderr
        return done

    loaded = json.loads(cli("files", "add", str(repo / "samples" / "parks.csv"), "--wait", "--json").stdout
                        .splitlines()[-1])
    assert loaded["status"] == "FARGATE_PROCESSED", loaded["attributes"].get("log_messages")
    exported = json.loads(cli("download", "request", "--table", "upload_file_1", "--format", "gpkg", "--wait",
                              "--json").stdout.splitlines()[-1])
    assert exported["status"] == "DOWNLOAD_COMPLETED", exported["attributes"].get("log_messages")
    assert json.loads(cli("files", "retry", "1", "--wait", "--json").stdout.splitlines()[-1])["status"] \
        == "FARGATE_PROCESSED"
    assert "marked as deleted" in cli("files", "delete", "2").stdout
    listing = cli("jobs", "list").stdout
    assert "file_loader" in listing and "file_download" in listing
