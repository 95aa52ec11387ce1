"""The console's answers to bad input: a 400 or 404 of one line, never a 500; the ?token= redirect
that stays on the console whatever the path."""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.console_fixtures import REPO, Served, file_in, free_port, start, stop, wait_until_serving

TOKEN = "a-long-enough-console-token-0123"
BEYOND_BIGINT = 99999999999999999999999


def csrf_of(html: str) -> str:
    return html.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def raw_get(base: str, target: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """GET with the request target sent exactly as written (requests would normalise `//x` and `[::1`)."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    connection.putrequest("GET", target, skip_host=headers is not None and "Host" in headers)
    for name, value in (headers or {}).items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def assert_refused(answer: requests.Response, status: int) -> None:
    """A refusal of one line that says what was wrong, not an internal error."""
    assert answer.status_code == status, (answer.request.url, answer.status_code, answer.text[:300])
    text = answer.json()["error"] if answer.headers["content-type"].startswith("application/json") else answer.text
    assert text.strip() and "\n" not in text.strip() and "Traceback" not in text, text


def test_the_token_redirect_goes_only_to_a_path_of_this_console(db_url: str) -> None:
    port = free_port()
    server = start("serve", "--port", str(port), "--token", TOKEN)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(server, url + "/metrics")
        expected = {
            "//evil.example": "/evil.example",  # protocol-relative: another site
            "///evil.example": "/evil.example",
            "/%5Cevil.example": "/%5Cevil.example",  # browsers read /\\ as //
            "/%E2%82%AC": "/%E2%82%AC",  # beyond latin-1: was a 500
            "/a%0D%0ASet-Cookie:%20x=1": "/a%0D%0ASet-Cookie%3A%20x%3D1",  # CR/LF: no header of the caller's
            "/files/7": "/files/7",
        }
        for path, location in expected.items():
            answer = raw_get(url, f"{path}?token={TOKEN}&status=ERROR")
            assert answer.status == 303, (path, answer.status)
            assert answer.getheader("location") == location + "?status=ERROR", path
            assert answer.getheader("set-cookie", "").startswith("locaria_console=")
            assert [name for name, _ in answer.getheaders()].count("set-cookie") == 1, path
    finally:
        output = stop(server)
    assert "Traceback" not in output, output


def test_bad_values_of_pages_are_400_and_unknown_ids_404(console: Served, conn: Any) -> None:
    file_in(conn, "x.csv", "ERROR")
    for path, status in [
        ("/files/999999/download", 404),  # an unknown file: was a 500
        (f"/files/{BEYOND_BIGINT}/download", 404),
        (f"/files/{BEYOND_BIGINT}", 404),
        ("/files/999999", 404),
        ("/?q=%00", 400),  # NUL: PostgreSQL text cannot hold it
        ("/?status=%00", 400),
        ("/?docker=%00", 400),
        ("/?status=" + "A" * 5000, 400),
        ("/?before=%C2%B2", 400),  # '²'.isdigit() is True, int('²') fails
        (f"/?before={BEYOND_BIGINT}", 400),
        ("/files/rows?ids=%C2%B2", 400),
        (f"/files/rows?ids=1,{BEYOND_BIGINT}", 400),
        (f"/files/rows?before={BEYOND_BIGINT}", 400),
    ]:
        answer = requests.get(console.url + path, timeout=10)
        if path.startswith("/files/") and answer.headers["content-type"].startswith("text/html"):
            assert answer.status_code == status and "There is no file" in answer.text, path  # the page of no file
        else:
            assert_refused(answer, status)
    # good values still work
    assert requests.get(console.url + "/?q=x.csv&status=ERROR&before=5", timeout=10).status_code == 200
    rows = requests.get(console.url + "/files/rows?ids=1", timeout=10)
    assert rows.status_code == 200 and 'data-id="1"' in rows.text


def test_a_malformed_host_header_is_400(console: Served) -> None:
    for host in ("[::1", "[::1:8080", "127.0.0.1:abc]"):
        answer = raw_get(console.url, "/", headers={"Host": host})
        assert answer.status == 400, host


def test_bad_values_of_actions_are_400(console: Served, conn: Any) -> None:
    file_id = file_in(conn, "x.csv", "ERROR")
    headers = {"X-CSRF-Token": csrf_of(requests.get(console.url + "/", timeout=10).text)}
    for path, body in [
        ("/api/files/retry", {"ids": 5}),
        ("/api/files/retry", {"ids": [BEYOND_BIGINT]}),
        ("/api/files/retry", {"ids": [True]}),  # JSON true is no file id 1
        ("/api/files/retry", {"ids": [file_id, 1.5]}),
        ("/api/files/retry", {"ids": list(range(1, 1002))}),
        ("/api/jobs/retry", {"states": 5}),
        ("/api/jobs/retry", {"states": "queued"}),
        ("/api/jobs/retry", {"states": [["failed"]]}),
        ("/api/jobs/retry", {"dockers": 5}),
        ("/api/jobs/retry", {"since": 5}),
        ("/api/jobs/retry", {"since": "99999999999d", "count_only": True}),  # beyond a timedelta
        ("/api/jobs/retry", {"since": "9999999d", "count_only": True}),  # beyond PostgreSQL's timestamps
        ("/api/jobs/cancel", {"dockers": ["a\u0000b"], "count_only": True}),
        ("/api/downloads", {"format": "csv", "table": "x\u0000y"}),
        ("/api/downloads", {"format": "csv", "table": ["a"]}),
        ("/api/downloads", {"format": "csv", "name": "n" * 100000}),
        ("/api/uploads", {"name": 5}),
        ("/api/uploads", {"name": ".."}),
    ]:
        assert_refused(requests.post(console.url + path, json=body, headers=headers, timeout=10), 400)
    for data in (b"\xff\xfe", b"[" * 100000, b"{" + b" " * (2 << 20) + b"}"):  # not UTF-8, too deep, too big
        assert_refused(requests.post(console.url + "/api/files/retry", data=data, headers=headers, timeout=10), 400)
    assert_refused(requests.post(f"{console.url}/api/uploads/{BEYOND_BIGINT}/complete", headers=headers,
                                 timeout=10), 404)
    row = conn.execute("SELECT status FROM locaria_core.files WHERE id = %s", [file_id]).fetchone()
    assert row["status"] == "ERROR"  # nothing was retried
    # good values still work
    count = requests.post(console.url + "/api/jobs/retry", json={"states": ["failed"], "dockers": ["file_loader"],
                                                                 "since": "1h", "count_only": True},
                          headers=headers, timeout=10)
    assert count.status_code == 200 and count.json() == {"count": 0}
    done = requests.post(console.url + "/api/files/retry", json={"ids": [file_id]}, headers=headers, timeout=10)
    assert done.status_code == 200 and done.json()["done"][0]["id"] == file_id


@pytest.mark.parametrize("name", ["nul\u0000byte.csv", ".", "..", "a/..", "L" * 3000 + ".csv", "line\nbreak.csv",
                                  ""])
def test_upload_names_that_are_no_file_name_are_refused(console: Served, conn: Any, name: str) -> None:
    headers = {"X-CSRF-Token": csrf_of(requests.get(console.url + "/", timeout=10).text)}
    answer = requests.post(console.url + "/api/uploads/local", params={"name": name}, headers=headers, timeout=10,
                           data=(REPO / "samples" / "parks.csv").read_bytes())
    assert_refused(answer, 400)
    assert conn.execute("SELECT count(*) AS n FROM locaria_core.files").fetchone()["n"] == 0


def test_an_upload_keeps_the_last_part_of_its_name(console: Served, conn: Any) -> None:
    headers = {"X-CSRF-Token": csrf_of(requests.get(console.url + "/", timeout=10).text)}
    answer = requests.post(console.url + "/api/uploads/local", params={"name": "../../公园 🌳.csv"}, headers=headers,
                           timeout=10, data=(REPO / "samples" / "parks.csv").read_bytes())
    assert answer.status_code == 200, answer.text
    row = conn.execute("SELECT attributes->>'name' AS name FROM locaria_core.files WHERE id = %s",
                       [answer.json()["id"]]).fetchone()
    assert row["name"] == "公园 🌳.csv"
