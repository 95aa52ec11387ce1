"""S3 storage and the race-free upload flow, against moto's S3 in server mode."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import boto3
import pytest
import requests
from typer.testing import CliRunner

from locaria_batch.cli.main import app
from locaria_batch.errors import ApiError
from locaria_batch.files import get_file, request_download
from locaria_batch.files.uploads import UploadNotReady, complete_upload, request_upload
from locaria_batch.storage import ObjectNotFound, StorageError, open_storage
from locaria_batch.storage.local import LocalStorage
from locaria_batch.storage.s3 import MULTIPART_THRESHOLD, S3Storage
from tests.aws_fixtures import BUCKET, FargateStack

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def test_storage_url_selects_s3(s3_storage: str) -> None:
    storage = open_storage()
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == (BUCKET, "data")


def test_put_get_stream_list_delete(s3_storage: str, tmp_path: Path) -> None:
    storage = open_storage()
    big = tmp_path / "big.bin"
    with big.open("wb") as out:  # more than one part: the managed transfer goes multipart
        for block in range(3 * MULTIPART_THRESHOLD // (1 << 20) + 1):
            out.write(bytes([block % 251]) * (1 << 20))
    storage.put("incoming/7.bin", big)
    storage.put("loaderDownloads/a.csv", io.BytesIO(b"x,y\n1,2\n"), content_type="text/csv")
    head = boto3.client("s3").head_object(Bucket=BUCKET, Key="data/incoming/7.bin")
    assert head["ContentLength"] == big.stat().st_size
    assert "-" in head["ETag"]  # a multipart upload's ETag names its part count
    assert storage.exists("incoming/7.bin") and storage.size("incoming/7.bin") == big.stat().st_size
    with storage.open("loaderDownloads/a.csv") as stream:
        assert stream.read() == b"x,y\n1,2\n"
    with storage.local_copy("incoming/7.bin") as path:
        assert path.read_bytes() == big.read_bytes()
    assert not path.exists()
    assert sorted(storage.list("")) == ["incoming/7.bin", "loaderDownloads/a.csv"]
    assert list(storage.list("loaderDownloads/")) == ["loaderDownloads/a.csv"]
    storage.delete("incoming/7.bin")
    assert not storage.exists("incoming/7.bin")


def test_missing_objects_and_bad_urls_say_what_is_wrong(s3_storage: str) -> None:
    storage = open_storage()
    with pytest.raises(ObjectNotFound, match=re.escape("no object 'incoming/1.csv' in s3://locaria-test-bucket/data")):
        storage.open("incoming/1.csv")
    with pytest.raises(ObjectNotFound):
        storage.size("incoming/1.csv")
    with pytest.raises(ObjectNotFound), storage.local_copy("incoming/1.csv"):
        pass
    with pytest.raises(StorageError, match="needs a bucket"):
        S3Storage.from_url("s3:///prefix")
    with pytest.raises(StorageError, match="invalid storage key"):
        storage.exists("../secrets")


def test_presigned_get_fetches_the_object(s3_storage: str) -> None:
    storage = open_storage()
    storage.put("loaderDownloads/parks.csv", SAMPLES / "parks.csv")
    response = requests.get(storage.url("loaderDownloads/parks.csv", 60), timeout=10)
    assert response.status_code == 200
    assert response.content == (SAMPLES / "parks.csv").read_bytes()


def test_upload_url_put_complete_then_loaded(conn, fargate: FargateStack) -> None:
    cli = CliRunner()
    created = cli.invoke(app, ["files", "upload-url", "parks.geojson", "--json"])
    assert created.exit_code == 0, created.output
    ticket = json.loads(created.stdout)
    file_id = ticket["id"]
    assert ticket["key"] == f"incoming/{file_id}.geojson"
    row = get_file(conn, file_id)
    assert row["status"] == "UPLOADING" and row["attributes"]["upload"] is True
    # nothing is queued while the data is on its way
    assert conn.execute("SELECT count(*) AS n FROM locaria_core.jobs").fetchone()["n"] == 0

    early = cli.invoke(app, ["files", "complete", str(file_id)])
    assert early.exit_code == 1
    assert f"file {file_id} has no object at incoming/{file_id}.geojson yet" in early.output
    assert get_file(conn, file_id)["status"] == "UPLOADING"

    with (SAMPLES / "parks.geojson").open("rb") as data:  # a plain HTTP PUT, no AWS credentials
        assert requests.put(ticket["url"], data=data, timeout=30).status_code == 200

    done = cli.invoke(app, ["files", "complete", str(file_id)])
    assert done.exit_code == 0 and "registered: the loader is queued" in done.output
    row = fargate.run_file(file_id)
    assert row["status"] == "FARGATE_PROCESSED", row["attributes"]["log_messages"]
    assert row["attributes"]["record_count"] == 20
    assert row["attributes"]["size_bytes"] == (SAMPLES / "parks.geojson").stat().st_size
    assert conn.execute(f"SELECT count(*) AS n FROM locaria_uploads.upload_file_{file_id}").fetchone()["n"] == 20

    again = cli.invoke(app, ["files", "complete", str(file_id)])
    assert again.exit_code == 0 and "not waiting for an upload" in again.output


def test_upload_url_command_prints_a_curl_line(conn, s3_storage: str) -> None:
    result = CliRunner().invoke(app, ["files", "upload-url", "roads.csv", "--table", "roads"])
    assert result.exit_code == 0, result.output
    assert "curl --fail -T roads.csv 'http" in result.output and "files complete 1" in result.output
    assert get_file(conn, 1)["attributes"]["table_name"] == "roads"


def test_upload_url_needs_s3_storage(conn) -> None:
    with pytest.raises(ApiError, match="upload URLs need S3 storage"):
        request_upload(conn, open_storage(), "parks.geojson")
    result = CliRunner().invoke(app, ["files", "upload-url", "parks.geojson"])
    assert result.exit_code == 1 and "upload URLs need S3 storage" in result.output


def test_upload_name_without_extension_is_refused(conn, s3_storage: str) -> None:
    with pytest.raises(ApiError, match="has no extension"):
        request_upload(conn, open_storage(), "README")
    assert conn.execute("SELECT count(*) AS n FROM locaria_core.files").fetchone()["n"] == 0


def test_sql_api_guards_the_upload_transition(conn) -> None:
    bad = conn.execute("SELECT locaria_core.request_upload('{\"file_attributes\": {\"name\": \"x\"}}') AS r")
    assert bad.fetchone()["r"] == {"error": "file_attributes.name and file_attributes.ext are required"}
    made = conn.execute("SELECT locaria_core.request_upload(%s) AS r", [json.dumps(
        {"file_attributes": {"name": "Parks.GeoJSON", "ext": ".GeoJSON"}})]).fetchone()["r"]
    file_id = made["id"]
    assert made["status"] == "UPLOADING"
    assert get_file(conn, file_id)["attributes"]["ext"] == "geojson"
    first = conn.execute("SELECT locaria_core.complete_upload(%s) AS r", [file_id]).fetchone()["r"]
    assert first["completed"] is True and first["status"] == "REGISTERED"
    second = conn.execute("SELECT locaria_core.complete_upload(%s) AS r", [file_id]).fetchone()["r"]
    assert second == {"id": file_id, "status": "REGISTERED", "completed": False}
    assert conn.execute("SELECT count(*) AS n FROM locaria_core.jobs WHERE file_id = %s",
                        [file_id]).fetchone()["n"] == 1
    missing = conn.execute("SELECT locaria_core.complete_upload(999) AS r").fetchone()["r"]
    assert missing == {"error": "file 999 does not exist"}


def test_complete_upload_python_api(conn, s3_storage: str) -> None:
    storage = open_storage()
    ticket = request_upload(conn, storage, "parks.csv")
    with pytest.raises(UploadNotReady):
        complete_upload(conn, storage, ticket.file_id)
    storage.put(ticket.key, SAMPLES / "parks.csv")
    assert complete_upload(conn, storage, ticket.file_id)["completed"] is True
    assert complete_upload(conn, storage, ticket.file_id)["completed"] is False


def test_s3_download_link_fetches_the_export(conn, fargate: FargateStack) -> None:
    storage = open_storage()
    ticket = request_upload(conn, storage, "parks.geojson")
    storage.put(ticket.key, SAMPLES / "parks.geojson")
    complete_upload(conn, storage, ticket.file_id)
    assert fargate.run_file(ticket.file_id)["status"] == "FARGATE_PROCESSED"
    download_id = request_download(conn, {"format": "csv", "table": f"upload_file_{ticket.file_id}",
                                          "name": "parks"})
    done = fargate.run_file(download_id)
    assert done["status"] == "DOWNLOAD_COMPLETED", done["attributes"].get("log_messages")
    url = done["attributes"]["url"]
    assert url.startswith(os.environ["AWS_ENDPOINT_URL"]) and "Signature" in url
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 20 and rows[0]["name"] == "Hyde Park"


def test_local_storage_stays_the_default(locaria_env: Path) -> None:
    assert isinstance(open_storage(), LocalStorage)
