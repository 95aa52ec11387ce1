"""The SQL file API keeps the original's response shapes (reference §3, §8)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from psycopg.types.json import Jsonb

STAMP = re.compile(r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}$")


def call(conn: Any, function: str, payload: dict[str, Any]) -> Any:
    return conn.execute(f"SELECT locaria_core.{function}(%s) AS r", [Jsonb(payload)]).fetchone()["r"]


def gateway(conn: Any, payload: dict[str, Any], acl: dict[str, Any] | None = None) -> Any:
    return conn.execute("SELECT locaria_core.locaria_internal_gateway(%s, %s) AS r",
                        [Jsonb(payload), Jsonb(acl or {})]).fetchone()["r"]


def test_add_file_returns_id_and_status_and_replaces_log(conn) -> None:
    result = call(conn, "add_file", {"file_attributes": {"name": "x", "ext": "csv", "log_messages": ["forged"]}})
    assert result == {"id": 1, "status": "REGISTERED"}
    attributes = conn.execute("SELECT attributes FROM locaria_core.files WHERE id = 1").fetchone()["attributes"]
    assert attributes["name"] == "x"
    [entry] = attributes["log_messages"]
    assert entry["message"] == "File created"
    assert STAMP.match(entry["timestamp"])


def test_request_download_data_stores_the_status(conn) -> None:
    result = gateway(conn, {"method": "request_download_data", "status": "DOWNLOAD_REQUESTED",
                            "file_attributes": {"format": "csv", "download": True, "name": "n"}})
    assert result["response_code"] == 200 and result["status"] == "DOWNLOAD_REQUESTED"


def test_update_file_merges_shallowly_and_appends_log(conn) -> None:
    call(conn, "add_file", {"file_attributes": {"name": "x", "nested": {"a": 1, "b": 2}}})
    forged = {"k": "v", "nested": {"a": 9}, "log_messages": []}
    result = call(conn, "update_file", {"id": 1, "status": "S", "message": "m", "attributes": forged})
    assert result["id"] == 1 and result["status"] == "S"
    assert result["k"] == "v" and result["nested"] == {"a": 9}  # shallow: the whole key is replaced
    assert [e.get("message") for e in result["log_messages"]] == ["File created", "m"]  # append-only
    assert STAMP.match(result["log_messages"][1]["timestamp"])
    status_only = call(conn, "update_file", {"id": 1, "status": "T"})
    assert set(status_only["log_messages"][-1]) == {"timestamp"}
    assert call(conn, "update_file", {"id": 999, "status": "S"}) is None


def test_get_files_filters_and_hides_deleted(conn) -> None:
    for attrs, status in [({"upload": True}, "REGISTERED"), ({"download": True}, "DOWNLOAD_REQUESTED"),
                          ({"upload": True}, "UPLOADING")]:
        call(conn, "add_file", {"file_attributes": attrs, "status": status})
    call(conn, "delete_file", {"id": 3})
    assert [f["id"] for f in call(conn, "get_files", {})["files"]] == [1, 2]
    assert [f["id"] for f in call(conn, "get_files", {"status": "DELETED"})["files"]] == [3]
    assert [f["id"] for f in call(conn, "get_files", {"filter": {"download": True}})["files"]] == [2]
    assert [f["id"] for f in call(conn, "get_files", {"id": 1})["files"]] == [1]
    first = call(conn, "get_files", {"id": 1})["files"][0]
    assert set(first) == {"id", "status", "attributes", "created", "last_updated"}
    assert re.match(r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}$", first["last_updated"])


def test_delete_file_is_soft_and_reports_unknown_ids(conn) -> None:
    call(conn, "add_file", {"file_attributes": {}})
    assert call(conn, "delete_file", {"id": 1}) == {"id": 1, "message": "file marked as deleted"}
    row = conn.execute("SELECT status, attributes FROM locaria_core.files WHERE id = 1").fetchone()
    assert row["status"] == "DELETED" and row["attributes"]["log_messages"][-1]["message"] == "File deleted"
    assert call(conn, "delete_file", {"id": 1}) == {"error": "No rows deleted,", "id": 1}  # once only
    assert call(conn, "delete_file", {"id": 42}) == {"error": "No rows deleted,", "id": 42}


def test_file_cron_never_touches_deleted_or_in_flight_rows(conn) -> None:
    for cron, status in [("daily", "FARGATE_PROCESSED"), ("daily", "DELETED"), ("daily", "FARGATE_PROCESSING"),
                         ("daily", "ERROR"), ("hourly", "ERROR")]:
        file_id = call(conn, "add_file", {"file_attributes": {"cron": cron}, "status": "UPLOADING"})["id"]
        call(conn, "update_file", {"id": file_id, "status": status})
    ids = call(conn, "file_cron", {"filter": {"cron": "daily"}})
    assert ids == [1, 4]
    statuses = {r["id"]: r["status"] for r in conn.execute("SELECT id, status FROM locaria_core.files")}
    assert statuses == {1: "REGISTERED", 2: "DELETED", 3: "FARGATE_PROCESSING", 4: "REGISTERED", 5: "ERROR"}
    # a row with a job still queued is in flight too
    assert call(conn, "file_cron", {"filter": {"cron": "daily"}}) is None
    assert call(conn, "file_cron", {"filter": {"cron": "weekly"}}) is None


def test_a_deleted_file_is_never_retried(conn) -> None:
    """retry_file, and jobs_retry through it, leave a deleted file deleted (the console and CLI use them)."""
    file_id = call(conn, "add_file", {"file_attributes": {"upload": True}, "status": "UPLOADING"})["id"]
    call(conn, "update_file", {"id": file_id, "status": "ERROR"})
    call(conn, "delete_file", {"id": file_id})
    refused = conn.execute("SELECT locaria_core.retry_file(%s) AS r", [file_id]).fetchone()["r"]
    assert refused == {"error": f"file {file_id} is deleted; upload the file again to load it"}
    job = conn.execute("INSERT INTO locaria_core.jobs (file_id, docker, trigger_status, max_attempts, state) "
                       "VALUES (%s, 'file_loader', 'REGISTERED', 1, 'failed') RETURNING id", [file_id]).fetchone()["id"]
    bulk = conn.execute("SELECT locaria_core.jobs_retry(ARRAY[%s]::bigint[]) AS r", [job]).fetchone()["r"]
    assert bulk["retried"] == [] and bulk["skipped"][0]["file_id"] == file_id
    assert conn.execute("SELECT status FROM locaria_core.files WHERE id = %s", [file_id]).fetchone()["status"] \
        == "DELETED"


def test_parameters_honour_the_acl(conn) -> None:
    admins = {"_groups": ["Admins"]}
    assert gateway(conn, {"method": "set_parameters", "parameter_name": "fargate_config",
                          "parameters": {"file_loader": {"task": "t"}}}, admins)["response_code"] == 200
    got = gateway(conn, {"method": "get_parameters", "parameter_name": "fargate_config"}, admins)
    assert got["parameters"]["fargate_config"]["data"] == {"file_loader": {"task": "t"}}
    assert re.match(r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}$", got["parameters"]["fargate_config"]["last_updated"])
    nobody = gateway(conn, {"method": "get_parameters", "parameter_name": "fargate_config"}, {"_groups": ["Loader"]})
    assert nobody["error"] == "parameter not found"
    # a client cannot smuggle its own acl past the gateway
    smuggled = gateway(conn, {"method": "get_parameters", "parameter_name": "fargate_config", "acl": admins})
    assert smuggled["error"] == "parameter not found"
    denied = gateway(conn, {"method": "set_parameters", "parameter_name": "fargate_config", "parameters": {}},
                     {"_groups": ["Loader"]})
    assert "no update permission" in denied["error"]


def test_gateway_routes_and_reports_errors(conn) -> None:
    added = gateway(conn, {"method": "add_file", "file_attributes": {"name": "a"}})
    assert added == {"response_code": 200, "id": 1, "status": "REGISTERED"}
    assert gateway(conn, {"method": "get_files"})["files"][0]["id"] == 1
    assert gateway(conn, {"method": "delete_file", "id": 1})["message"] == "file marked as deleted"
    broken = gateway(conn, {"method": "update_file", "id": "not-a-number"})
    assert broken["response_code"] == 600 and broken["error"] == "request could not be completed"
    assert isinstance(broken["logid"], int)
    unknown = gateway(conn, {"method": "drop_everything"})
    assert unknown["response_code"] == 600


def test_files_can_be_deleted_outright_while_jobs_reference_them(conn) -> None:
    call(conn, "add_file", {"file_attributes": {"name": "a"}})
    assert conn.execute("SELECT count(*) AS n FROM locaria_core.jobs WHERE file_id = 1").fetchone()["n"] == 1
    conn.execute("DELETE FROM locaria_core.files WHERE id = 1")
    assert conn.execute("SELECT count(*) AS n FROM locaria_core.jobs WHERE file_id = 1").fetchone()["n"] == 1


@pytest.mark.parametrize("parameters", ["null", "[]", "[1, 2]", '"add_file"', "42", "true", None])
def test_the_gateway_answers_malformed_parameters_with_its_error(conn, parameters: str | None) -> None:
    answer = conn.execute("SELECT locaria_core.locaria_internal_gateway(%s::jsonb, %s::jsonb) AS r",
                          [parameters, "null"]).fetchone()["r"]
    assert answer["response_code"] == 600 and answer["error"] == "parameters must be a JSON object", answer
    assert answer["logid"] > 0


def test_the_gateway_refuses_to_create_rows_nothing_will_process(conn) -> None:
    answer = gateway(conn, {"method": "add_file", "status": "FARGATE_PROCESSING", "file_attributes": {"a": 1}})
    assert answer["response_code"] == 600 and "cannot be created in status FARGATE_PROCESSING" in answer["error"]
    odd = gateway(conn, {"method": "add_file", "file_attributes": "not an object"})
    assert odd["response_code"] == 600 and odd["error"] == "file_attributes must be a JSON object"
    assert conn.execute("SELECT count(*) AS n FROM locaria_core.files").fetchone()["n"] == 0
    assert gateway(conn, {"method": "add_file", "file_attributes": {"upload": True}})["response_code"] == 200


def test_file_cron_reruns_uploads_only(conn) -> None:
    upload = call(conn, "add_file", {"file_attributes": {"upload": True, "nightly": True}, "status": "UPLOADING"})
    download = call(conn, "add_file", {"file_attributes": {"download": True, "nightly": True},
                                       "status": "DOWNLOAD_REQUESTED"})
    for row in (upload, download):
        conn.execute("UPDATE locaria_core.jobs SET state = 'succeeded'")
        call(conn, "update_file", {"id": row["id"], "status": "DOWNLOAD_COMPLETED" if row is download else "ERROR"})
    conn.execute("UPDATE locaria_core.jobs SET state = 'succeeded'")
    assert gateway(conn, {"method": "file_cron", "filter": {"nightly": True}})["result"] == [upload["id"]]
    statuses = {r["id"]: r["status"] for r in conn.execute("SELECT id, status FROM locaria_core.files")}
    assert statuses == {upload["id"]: "REGISTERED", download["id"]: "DOWNLOAD_COMPLETED"}
    refused = gateway(conn, {"method": "file_cron", "filter": {"nightly": True}, "new_status": "DOWNLOAD_REQUESTED"})
    assert "re-runs uploads" in refused["error"]
