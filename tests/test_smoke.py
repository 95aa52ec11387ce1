"""The whole path once: upload -> loader job -> table; download request -> export file."""

from __future__ import annotations

import csv
from pathlib import Path

from locaria_batch.dispatch.wait import wait_for_file
from locaria_batch.files import register_upload, request_download
from locaria_batch.storage import open_storage

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def test_upload_then_download(conn) -> None:
    file_id = register_upload(conn, open_storage(), SAMPLES / "parks.geojson")
    row = wait_for_file(file_id, timeout=60)
    assert row["status"] == "FARGATE_PROCESSED", row["attributes"].get("log_messages")
    assert row["attributes"]["record_count"] == 20
    count = conn.execute("SELECT count(*) AS n FROM locaria_uploads.upload_file_1").fetchone()["n"]
    assert count == 20

    download_id = request_download(conn, {"format": "csv", "table": "upload_file_1", "name": "parks"})
    done = wait_for_file(download_id, timeout=60)
    assert done["status"] == "DOWNLOAD_COMPLETED", done["attributes"].get("log_messages")
    with open(done["attributes"]["url"], newline="") as exported:
        rows = list(csv.DictReader(exported))
    assert len(rows) == 20
    assert rows[0]["name"] == "Hyde Park"
    assert rows[0]["wkt"] == "POINT(-0.1657 51.5073)"
