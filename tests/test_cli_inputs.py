"""Bad input to the command line: one sentence and an exit code, never a traceback; values a job would
refuse later refused at once; and names that cannot break a table."""

from __future__ import annotations

import os
import shutil
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import REPO, as_json, cli

PARKS = str(REPO / "samples" / "parks.csv")


def refused(*args: str, code: int = 2, env: dict[str, str] | None = None) -> str:
    """Run a command that must fail with `code` and a message (no traceback); its stderr."""
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    try:
        result = cli(*args, check=False)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def nothing_registered(conn: Any) -> bool:
    return conn.execute("SELECT count(*) AS n FROM locaria_core.files").fetchone()["n"] == 0


# -- 1. tracebacks become one sentence --------------------------------------------------------------
def test_files_add_takes_only_a_regular_file_it_can_read(db_url: str, conn: Any, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    assert "/dev/null is not a regular file" in refused("files", "add", "/dev/null")
    assert "fifo.csv is not a regular file" in refused("files", "add", str(fifo))
    assert "cannot read /proc/self/mem: Input/output error" in refused("files", "add", "/proc/self/mem")
    assert "is a folder" in refused("files", "add", str(tmp_path))
    assert "is not a regular file" in refused("files", "inspect", "/dev/null")
    assert nothing_registered(conn)  # no ERROR row left behind either


def test_files_add_into_storage_that_cannot_be_written_leaves_no_row(db_url: str, conn: Any,
                                                                     tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    message = refused("files", "add", PARKS, code=1, env={"LOCARIA_STORAGE": str(tmp_path / "afile" / "storage")})
    assert "cannot copy" in message and "Not a directory" in message and "LOCARIA_STORAGE" in message
    assert nothing_registered(conn)


def test_db_up_with_a_home_that_is_a_file(tmp_path: Path) -> None:
    home = tmp_path / "afile"
    home.write_text("")
    message = refused("db", "up", code=1, env={"LOCARIA_HOME": str(home)})
    assert "LOCARIA_HOME" in message and "Not a directory" in message


def test_deploy_render_with_a_folder_as_config_or_a_file_as_out(tmp_path: Path) -> None:
    config = tmp_path / "locaria.json"
    shutil.copy(REPO / "locaria.example.json", config)
    assert "is a folder" in refused("deploy", "render", "--stage", "dev", "--config", str(tmp_path))
    out = tmp_path / "afile"
    out.write_text("")
    assert f"--out {out} is a file, not a folder" in refused("deploy", "render", "--stage", "dev", "--config",
                                                               str(config), "--out", str(out))
    assert "Not a directory" in refused("deploy", "render", "--stage", "dev", "--config", str(config), "--out",
                                        str(out / "sub"))


def test_worker_metrics_on_a_port_in_use(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = refused("worker", "--once", "--metrics-port", str(port))
    assert "'--metrics-port'" in message and "Address already in use" in message


@pytest.mark.parametrize("args", [
    ("jobs", "list", "--since", "99999999999d"),
    ("jobs", "list", "--since", "9999999d"),  # a timedelta, but now() - it is before PostgreSQL's first year
    ("jobs", "retry", "--since", "99999999999d", "--yes"),
    ("jobs", "prune", "--older-than", "99999999999w"),
    ("download", "prune", "--older-than", "99999999999d", "--dry-run"),
])
def test_ages_beyond_100_years_are_refused_naming_the_option(db_url: str, args: tuple[str, ...]) -> None:
    message = refused(*args)
    assert f"'{args[2]}'" in message and "more than 100 years" in message


def test_a_retention_beyond_100_years_names_the_variable(db_url: str) -> None:
    message = refused("worker", "--once", code=1, env={"LOCARIA_JOB_RETENTION": "99999999999d"})
    assert "LOCARIA_JOB_RETENTION" in message and "more than 100 years" in message


def test_parse_age_is_bounded() -> None:
    from locaria_batch.settings import parse_age

    assert parse_age("36525d") == parse_age("876600h") == timedelta(days=36525)
    for text in ("36526d", "5218w", "99999999999s"):
        with pytest.raises(ValueError, match="more than 100 years"):
            parse_age(text)


def test_any_other_os_error_is_one_line() -> None:
    from locaria_batch.cli.common import _as_message

    error = PermissionError(13, "Permission denied", "/srv/locked")
    assert _as_message(error) == ("cannot use /srv/locked: Permission denied", 1)


# -- 2. what the job would refuse is refused at once ---------------------------------------------
@pytest.mark.parametrize(("option", "value", "said"), [
    ("--bbox", "a,b,c,d", "four numbers"),
    ("--bbox", "1,2,3", "four numbers"),
    ("--bbox", "10,10,0,0", "greater than maxx"),
    ("--srid", "-4", "not an EPSG code"),
    ("--srid", "999999", "not a coordinate system PostGIS knows"),  # checked in spatial_ref_sys
    ("--created-after", "notadate", "not an ISO date"),
    ("--created-before", "soon", "not an ISO date"),
])
def test_download_request_refuses_what_the_job_would(db_url: str, conn: Any, option: str, value: str,
                                                     said: str) -> None:
    message = refused("download", "request", "--format", "csv", "--table", "t", option, value)
    assert f"'{option}'" in message and said in message
    assert nothing_registered(conn)


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--crs", "bogus", "not a known EPSG code"),
    ("--target-crs", "EPSG:999999", "not a known EPSG code"),  # checked in spatial_ref_sys
    ("--encoding", "no-such-encoding", "is not known"),
    ("--table", "bad name; drop", "is not allowed"),
    ("--table", "x" * 100, "is not allowed"),
])
def test_files_add_refuses_what_the_loader_would(db_url: str, conn: Any, option: str, value: str,
                                                 said: str) -> None:
    message = refused("files", "add", PARKS, option, value)
    assert f"'{option}'" in message and said in message
    assert nothing_registered(conn)


# -- 3. exit codes ---------------------------------------------------------------------------------
def test_job_ids_that_match_nothing_exit_1(db_url: str, conn: Any) -> None:
    assert "no job 999999" in refused("jobs", "retry", "999999", "--yes", code=1)
    assert "no job 999999" in refused("jobs", "cancel", "999999", "--yes", code=1)
    file_id = as_json(cli("files", "add", PARKS, "--json"))["id"]
    job_id = as_json(cli("jobs", "list", "--json"))[0]["id"]
    # one unknown id among known ones: nothing is done to any
    assert "no job 999999" in refused("jobs", "cancel", str(job_id), "999999", "--yes", code=1)
    assert as_json(cli("jobs", "list", "--json"))[0]["state"] == "queued"
    assert "no jobs match" in cli("jobs", "cancel", "--state", "failed", "--yes").stdout  # a filter: exit 0
    assert f"cancelled job(s) {job_id}" in cli("files", "cancel", str(file_id)).stdout
    assert f"file {file_id} has no active job" in refused("files", "cancel", str(file_id), code=1)
    again = cli("files", "cancel", str(file_id), "--json", check=False)
    assert again.returncode == 1 and as_json(again)["cancelled_jobs"] == []


def test_files_list_refuses_uploads_with_downloads(db_url: str) -> None:
    assert "not both" in refused("files", "list", "--uploads", "--downloads")


def test_download_out_under_a_file_says_it_is_a_file(db_url: str, conn: Any, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    for out in (f"{tmp_path}/afile/x.csv", f"{tmp_path}/afile/"):
        message = refused("download", "request", "--format", "csv", "--table", "t", "--out", out)
        assert f"{tmp_path}/afile is a file, not a folder" in message and "does not exist" not in message
    assert nothing_registered(conn)


# -- 4. control characters in names ----------------------------------------------------------------
def test_names_with_control_characters_keep_one_row_each(db_url: str, conn: Any) -> None:
    name = "two\nlines\x1b[31m.csv"
    cli("files", "add", PARKS, "--attr", f"name={name}")
    cli("files", "add", PARKS)
    listing = cli("files", "list").stdout
    assert "two\\nlines\\x1b[31m.csv" in listing and "\x1b" not in listing
    rows = [line for line in listing.splitlines() if line.startswith("│")]
    assert len(rows) == 2  # one line per file (the header's border is ┃)
    listed = {row["attributes"]["name"] for row in as_json(cli("files", "list", "--json"))}
    assert listed == {name, "parks.csv"}  # JSON keeps the name exact

    assert "control character" in refused("categories", "add", "a\nb")
    assert "control character" in refused("categories", "add", "tab\there")
    conn.execute("INSERT INTO locaria_core.categories (category) VALUES (%s)", ["made\r\nby SQL"])
    shown = cli("categories", "list").stdout
    assert "made\\r\\nby SQL" in shown and len([line for line in shown.splitlines() if line.startswith("│")]) == 1
    assert as_json(cli("categories", "list", "--json"))[0]["category"] == "made\r\nby SQL"
    assert "removed category made\\r\\nby SQL" in cli("categories", "remove", "made\r\nby SQL").stdout
