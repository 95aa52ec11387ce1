"""The command line, run as a user runs it (a real subprocess against the test database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from locaria_batch.cli.main import app
from tests import loader_fixtures as fx

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
    nothing = cli("files", "cancel", "1", check=False)
    assert nothing.returncode == 1 and "no active job" in nothing.stderr


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


def help_of(path: list[str]) -> str:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, (path, result.output)
    return result.output


def test_help_reads_in_words() -> None:
    for path in walk(app, []):
        shown = help_of(path)
        for typer_type in ("<str>", "<int>", "<float>", "<bool>", "<list[", "<path>", "<file>", "{"):
            assert typer_type not in shown, (path, typer_type, shown)


# a URL, services, a menu, a walk-through, a log as it is written
REPORTS_NOTHING = [["db", "url"], ["worker"], ["serve"], ["configure"], ["demo"], ["files", "logs"]]


def test_every_command_that_reports_takes_json() -> None:
    commands = [path for path in walk(app, []) if path and path not in REPORTS_NOTHING]
    assert ["files", "cancel"] in commands and ["db", "status"] in commands
    for path in commands:
        if "Commands:" not in help_of(path):  # a group has no output of its own
            assert "--json" in help_of(path), path


def test_verbose_is_taken_after_the_subcommand_too(db_url: str) -> None:
    assert cli("files", "list", "-v").returncode == 0
    assert cli("-v", "files", "list").returncode == 0


def test_fixed_value_sets_are_refused_at_once(db_url: str) -> None:
    bad_format = cli("download", "request", "--table", "t", "--format", "dwg", check=False)
    assert bad_format.returncode == 2 and "geojson" in bad_format.stderr and "geoparquet" in bad_format.stderr
    bad_status = cli("files", "list", "--status", "DONE", check=False)
    assert bad_status.returncode == 2 and "FARGATE_PROCESSED" in bad_status.stderr
    bad_runner = cli("files", "add", str(REPO / "samples" / "parks.csv"), "--runner", "k8s", check=False)
    assert bad_runner.returncode == 2 and "local" in bad_runner.stderr
    assert cli("files", "list", "--json").stdout.strip() == "[]"  # nothing was registered by the refused add


def test_download_format_takes_the_exporters_names_and_aliases(db_url: str, tmp_path: Path) -> None:
    from locaria_batch.jobs.file_download.formats import FORMATS

    help_text = cli("download", "request", "--help").stdout
    assert "[" + "|".join(f.name for f in FORMATS) + "]" in help_text.replace(" ", "").replace("\n", "")
    for alias, name in (("fgb", "flatgeobuf"), ("SHP", "shapefile"), ("parquet", "geoparquet"), ("KML", "kml")):
        file_id = cli("download", "request", "--format", alias, "--table", "upload_file_1").stdout.split()[-1]
        shown = json.loads(cli("files", "show", file_id, "--json").stdout)
        assert shown["attributes"]["format"] == name, (alias, shown)
    refused = cli("download", "request", "--format", "dwg", "--table", "upload_file_1", check=False)
    assert refused.returncode == 2 and all(f.name in refused.stderr for f in FORMATS), refused.stderr


def test_piped_output_is_whole_and_unwrapped(db_url: str, tmp_path: Path) -> None:
    name = "a file with a long name " * 8 + "[/oops] [bold]not markup[/bold].csv"
    cli("files", "add", str(REPO / "samples" / "parks.csv"), "--attr", f"name={name}")
    listing = cli("files", "list").stdout
    assert any(name in line for line in listing.splitlines()), listing
    shown = cli("files", "show", "1").stdout
    assert name in shown and "…" not in shown


def test_replies_as_json(db_url: str) -> None:
    cli("files", "add", str(REPO / "samples" / "parks.csv"), "--json")
    assert as_json(cli("files", "cancel", "1", "--json"))["cancelled_jobs"] == [1]
    assert as_json(cli("files", "delete", "1", "--json")) == {"id": 1, "status": "DELETED"}
    assert as_json(cli("db", "status", "--json"))["embedded"] is False


def test_a_database_without_the_schema_says_to_migrate(db_url: str, conn, monkeypatch: pytest.MonkeyPatch) -> None:
    conn.execute("DROP DATABASE IF EXISTS locaria_unmigrated")
    conn.execute("CREATE DATABASE locaria_unmigrated")
    monkeypatch.setenv("LOCARIA_DB_URL", db_url.rsplit("/", 1)[0] + "/locaria_unmigrated")
    result = cli("files", "list", check=False)
    assert result.returncode == 1
    assert "run `locaria-batch db migrate`" in result.stderr and "Traceback" not in result.stderr


def test_an_unreachable_database_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCARIA_DB_URL", "postgresql://nobody:secret@127.0.0.1:1/none")
    result = cli("files", "list", check=False)
    assert result.returncode == 1 and "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr and "secret" not in result.stderr


def test_the_cli_load_modes_are_the_loaders() -> None:
    from locaria_batch.cli.files import LoadMode as CliMode
    from locaria_batch.jobs.file_loader.publish import LoadMode

    assert [m.value for m in CliMode] == [m.value for m in LoadMode]


def test_files_add_options_become_the_loaders_attributes(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "towns.csv"
    path.write_bytes("name,x,y\nМосква,4187000,7508000\nТверь,3990000,7700000\n".encode("cp1251"))  # noqa: RUF001
    loaded = as_json(cli("files", "add", str(path), "--crs", "EPSG:3857", "--target-crs", "EPSG:4326",
                         "--encoding", "cp1251", "--layer", "towns", "--mode", "overwrite", "--wait", "--json"))
    attributes = loaded["attributes"]
    assert loaded["status"] == "FARGATE_PROCESSED", attributes["log_messages"]
    assert (attributes["source_crs"], attributes["target_crs"], attributes["encoding"], attributes["layers"],
            attributes["mode"]) == ("EPSG:3857", "EPSG:4326", "cp1251", ["towns"], "overwrite")
    assert attributes["preview"]["features"][0]["properties"]["name"] == "Москва"
    refused = cli("files", "add", str(path), "--mode", "merge", check=False)
    assert refused.returncode == 2 and "append" in refused.stderr


def test_files_inspect(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "towns.csv"
    towns = "Москва,37.6,55.7,1\nТверь,35.9,56.8,2\nКазань,49.1,55.8,3\n"  # noqa: RUF001
    path.write_bytes(f"name,lon,lat,count\n{towns}".encode("cp1251"))
    report = as_json(cli("files", "inspect", str(path), "--json"))
    layer = report["layers"][0]
    assert (layer["features"], layer["geometry_type"], layer["crs"], layer["crs_assumed"]) == (3, "Point",
                                                                                              "EPSG:4326", True)
    assert (layer["encoding"], layer["encoding_guessed"]) == ("cp1251", True)
    assert {c["source"]: c["type"] for c in layer["columns"]}["count"] == "bigint"
    assert layer["extent"] == [35.9, 55.7, 49.1, 56.8] and layer["problems"] == []
    shown = cli("files", "inspect", str(path)).stdout
    assert "layer towns" in shown and "EPSG:4326 (assumed)" in shown and "cp1251 (guessed)" in shown
    assert as_json(cli("files", "list", "--json")) == []  # nothing was loaded or registered
    bad = tmp_path / "far.csv"
    bad.write_text("name,x,y\na,5000000,9000000\n")
    result = cli("files", "inspect", str(bad), check=False)
    assert result.returncode == 1 and "--crs" in result.stdout
    drawing = fx.write_layer(tmp_path / "plan.dxf", "DXF", [fx.linestring([(530000, 180000), (530100, 180100)])])
    layer = as_json(cli("files", "inspect", str(drawing), "--json", check=False))["layers"][0]
    assert (layer["layer"], layer["crs"], layer["crs_assumed"], layer["notes"]) == ("plan", None, False, [])
    assert "is not longitude/latitude; give its coordinate system with --crs" in layer["problems"][0]
    area = as_json(cli("files", "inspect", str(fx.osm_xml(tmp_path / "area.osm")), "--json"))  # exit code 0
    empty = {item["layer"]: item["notes"] for item in area["layers"] if not item["features"]}
    assert empty == {name: [f"area.osm, layer {name} has no features; it would be left out"]
                     for name in ("multilinestrings", "other_relations")}
    assert area["problems"] == [] and all(item["problems"] == [] for item in area["layers"])
    hollow = tmp_path / "hollow.gpkg"
    for index, name in enumerate(("roads", "parks")):
        fx.write_layer(hollow, "GPKG", [], layer=name, append=index > 0, n=pa.array([], pa.int64()))
    result = cli("files", "inspect", str(hollow), "--json", check=False)
    assert result.returncode == 1
    assert as_json(result)["problems"] == ["hollow.gpkg: every layer is empty; nothing would be loaded"]


def test_categories_and_a_download_copied_out(db_url: str, tmp_path: Path) -> None:
    assert as_json(cli("categories", "add", "Parks", "--json"))["created"] is True
    assert as_json(cli("categories", "add", "Parks", "--json"))["created"] is False
    assert [c["category"] for c in as_json(cli("categories", "list", "--json"))] == ["Parks"]
    cli("files", "add", str(REPO / "samples" / "parks.csv"), "--attr", "auto_mapped=true", "--attr",
        "category=Parks", "--attr", "title_field=name", "--wait")
    assert as_json(cli("categories", "list", "--json"))[0]["items"] == 20
    kept = cli("categories", "remove", "Parks", check=False)
    assert kept.returncode == 1 and "holds 20 items" in kept.stderr and "--with-items" in kept.stderr
    out = tmp_path / "parks.csv"
    copied = cli("download", "request", "--category", "Parks", "--format", "csv", "--out", str(out))
    assert f"saved to {out}" in copied.stdout and "DOWNLOAD_COMPLETED" in copied.stdout
    assert len(out.read_text().splitlines()) == 21
    folder = tmp_path / "exports"
    folder.mkdir()
    cli("download", "request", "--category", "Parks", "--format", "geojson", "--out", str(folder))
    assert [p.suffix for p in folder.iterdir()] == [".geojson"]
    missing = cli("download", "request", "--category", "Parks", "--format", "kml", "--out", f"{tmp_path}/new/",
                  check=False)
    assert missing.returncode == 2 and "the folder" in missing.stderr and "create it first" in missing.stderr
    assert not (tmp_path / "new").exists()
    (tmp_path / "new").mkdir()
    cli("download", "request", "--category", "Parks", "--format", "kml", "--out", f"{tmp_path}/new/")
    assert [p.suffix for p in (tmp_path / "new").iterdir()] == [".kml"]
    assert "removed category Parks and its 20 items" in cli("categories", "remove", "Parks", "--with-items").stdout


def test_download_out_that_cannot_be_written_and_a_limit_too_large(db_url: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cli("categories", "add", "Parks")
    unwritable = cli("download", "request", "--category", "Parks", "--format", "csv", "--out", "/proc/x.csv",
                     check=False)
    assert unwritable.returncode == 2 and "Traceback" not in unwritable.stderr
    assert "--out /proc/x.csv: cannot write /proc/x.csv: No such file or directory" in unwritable.stderr
    too_many = cli("download", "request", "--category", "Parks", "--format", "csv", "--limit",
                   "99999999999999999999", check=False)
    assert too_many.returncode == 2 and "--limit" in too_many.stderr and "9223372036854775807" in too_many.stderr
    assert cli("files", "list", "--json").stdout.strip() == "[]"  # both refused before anything was requested
    # a place that stops being writable while the job runs: still one sentence, after the download
    from typer.testing import CliRunner

    monkeypatch.setattr("locaria_batch.cli.download._check_writable", lambda *_: None)
    result = CliRunner().invoke(app, ["download", "request", "--category", "Parks", "--format", "csv", "--out",
                                      "/proc/x.csv"])
    assert result.exit_code == 2, result.output
    assert "cannot write /proc/x.csv" in result.output and "is kept in storage" in result.output
    assert "Traceback" not in result.output
