"""`locaria-batch downloads prune` and the download options of `locaria-batch download request`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from locaria_batch.cli.main import app
from locaria_batch.files import get_file
from tests.test_download import completed, seed

runner = CliRunner()


def test_prune_deletes_old_downloads_and_marks_their_rows(conn: Any) -> None:
    seed(conn)
    _, old_path = completed(conn, format="csv")
    _, new_path = completed(conn, format="gpkg")
    conn.execute("UPDATE locaria_core.files SET attributes = attributes || "
                 "jsonb_build_object('completed_at', (now() - interval '8 days')::text) WHERE id = 1")
    dry = runner.invoke(app, ["download", "prune", "--older-than", "7d", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output) == [{"id": 1, "key": "loaderDownloads/1.csv"}] and old_path.is_file()

    result = runner.invoke(app, ["download", "prune", "--older-than", "7d", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"id": 1, "key": "loaderDownloads/1.csv", "existed": True}]
    assert not old_path.exists() and new_path.is_file()
    row = get_file(conn, 1)
    assert row["status"] == "DOWNLOAD_COMPLETED"
    assert row["attributes"]["expired"] is True and row["attributes"]["url"] is None
    assert row["attributes"]["log_messages"][-1]["message"].startswith("Download expired: loaderDownloads/1.csv")
    assert get_file(conn, 2)["attributes"]["expired"] is False

    again = runner.invoke(app, ["download", "prune", "--older-than", "7d"])
    assert again.exit_code == 0 and "pruned 0 download(s)" in again.output
    everything = runner.invoke(app, ["download", "prune", "--older-than", "0s", "--json"])
    assert [p["id"] for p in json.loads(everything.output)] == [2] and not new_path.exists()

    # a pruned download that is made again is fresh: fetchable, and pruned again in its turn
    retried = runner.invoke(app, ["files", "retry", "1", "--wait"])
    assert retried.exit_code == 0, retried.output
    attributes = get_file(conn, 1)["attributes"]
    assert attributes["expired"] is False and attributes["url"] and old_path.is_file()
    later = runner.invoke(app, ["download", "prune", "--older-than", "0s", "--dry-run", "--json"])
    assert [p["id"] for p in json.loads(later.output)] == [1]


def test_prune_rejects_a_bad_age(db_url: str) -> None:
    result = runner.invoke(app, ["download", "prune", "--older-than", "a week"])
    assert result.exit_code == 2  # a usage error, as for any bad option value
    assert "age 'a week' is not understood" in result.output


def test_download_request_filters_and_srid(conn: Any) -> None:
    seed(conn)
    result = runner.invoke(app, ["download", "request", "--format", "geojson", "--category", "Parks",
                                 "--where", "kind=royal", "--where", "kind=municipal", "--limit", "1",
                                 "--srid", "3857", "--wait", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.strip().splitlines()[-1])
    assert row["status"] == "DOWNLOAD_COMPLETED" and row["attributes"]["record_count"] == 1
    exported = json.loads(Path(row["attributes"]["url"]).read_text())
    assert exported["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::3857"
    assert [f["properties"]["title"] for f in exported["features"]] == ["Hyde Park"]
    expected = conn.execute("SELECT ST_X(g) AS x, ST_Y(g) AS y FROM ST_Transform(ST_SetSRID("
                            "ST_MakePoint(-0.1657, 51.5073), 4326), 3857) g").fetchone()
    assert exported["features"][0]["geometry"]["coordinates"] == [expected["x"], expected["y"]]
    shown = runner.invoke(app, ["files", "show", str(row["id"])])
    assert f"link: {row['attributes']['url']}" in shown.output.replace("\n", "")
    missing = runner.invoke(app, ["download", "request", "--format", "csv", "--where", "colour=red", "--wait"])
    assert missing.exit_code == 1
    assert "cannot filter on 'colour'" in missing.output
