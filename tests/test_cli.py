"""The command line, run as a user runs it (a real subprocess against the test database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from locaria_batch.cli.main import app

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "locaria_batch.cli.main", *args], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"}, cwd=REPO, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"locaria-batch {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_upload_then_download_through_the_cli(db_url: str, conn) -> None:
    loaded = as_json(cli("files", "add", str(REPO / "samples" / "parks.csv"), "--wait", "--json"))
    assert loaded["status"] == "FARGATE_PROCESSED", loaded["attributes"]["log_messages"]
    assert loaded["attributes"]["imported_table_name"] == "locaria_uploads.upload_file_1"
    assert conn.execute("SELECT count(*) AS n FROM locaria_uploads.upload_file_1").fetchone()["n"] == 20
    assert conn.execute("SELECT ST_SRID(wkb_geometry) AS s FROM locaria_uploads.upload_file_1 LIMIT 1"
                        ).fetchone()["s"] == 4326

    exported = as_json(cli("download", "request", "--table", "locaria_uploads.upload_file_1", "--format", "geojson",
                           "--wait", "--json"))
    assert exported["status"] == "DOWNLOAD_COMPLETED"
    collection = json.loads(Path(exported["attributes"]["url"]).read_text())
    assert len(collection["features"]) == 20
    assert exported["attributes"]["fileName"].endswith(".geojson")

    listing = cli("files", "list").stdout
    assert "parks.csv" in listing and "DOWNLOAD_COMPLETED" in listing
    shown = cli("files", "show", "1").stdout
    assert "FARGATE_PROCESSED" in shown and "file_loader" in shown and "Loading complete" in shown
    assert "File created" in cli("files", "show", "1").stdout

    assert "marked as deleted" in cli("files", "delete", "1").stdout
    assert "parks.csv" not in cli("files", "list").stdout
    assert "parks.csv" in cli("files", "list", "--status", "DELETED").stdout


def test_a_failed_file_is_shown_with_its_reason_and_can_be_retried(db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "broken.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [')
    result = cli("files", "add", str(bad), "--wait", check=False)
    assert result.returncode == 1
    assert "ERROR" in result.stdout and "broken.geojson" in result.stdout
    retried = cli("files", "retry", "1", "--wait", "--json", check=False)
    assert as_json(retried)["status"] == "ERROR"
    assert "no active job" in cli("files", "cancel", "1").stdout


def test_errors_are_plain_sentences(db_url: str) -> None:
    missing = cli("files", "show", "999", check=False)
    assert missing.returncode == 1 and "file 999 does not exist" in missing.stderr
    both = cli("download", "request", "--table", "t", "--category", "c", "--format", "csv", check=False)
    assert "either --table or --category" in both.stderr


def test_db_url_and_status_with_an_external_database(db_url: str) -> None:
    assert cli("db", "url").stdout.strip() == db_url
    assert "LOCARIA_DB_URL" in cli("db", "status").stdout
    assert "up to date" in cli("db", "migrate").stdout


def test_no_database_configured_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCARIA_DB_URL", raising=False)
    result = cli("files", "list", check=False)
    assert result.returncode == 1 and "locaria-batch db up" in result.stderr


def walk(group: Any, prefix: list[str]) -> list[list[str]]:
    import typer.main

    click_group = typer.main.get_command(group) if not hasattr(group, "commands") else group
    paths = [prefix]
    for name, command in getattr(click_group, "commands", {}).items():
        paths += walk(command, [*prefix, name]) if hasattr(command, "commands") else [[*prefix, name]]
    return paths


def test_every_command_has_help() -> None:
    from typer.testing import CliRunner

    runner = CliRunner()
    commands = walk(app, [])
    assert ["files", "add"] in commands and ["db", "up"] in commands and ["worker"] in commands
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output
