"""The console's server without a browser: who may use it, what it refuses, what it reads with,
what it shows, and /metrics."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
import requests

from locaria_batch.files import add_file, update_file
from tests.conftest import postgres_stopped, restart_postgres
from tests.console_fixtures import Served, file_in, free_port, start, stop, wait_until_serving

TOKEN = "a-long-enough-console-token-0123"


def csrf_of(html: str) -> str:
    return html.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def test_beyond_loopback_without_a_token_it_refuses_to_start(db_url: str) -> None:
    refused = start("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    output = refused.communicate(timeout=60)[0]
    assert refused.returncode == 1
    assert "without a token" in output and "LOCARIA_CONSOLE_TOKEN" in output and "Traceback" not in output
    short = start("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--token", "short")
    assert "too short" in short.communicate(timeout=60)[0] and short.returncode == 1


def test_with_a_token_every_request_needs_it(db_url: str) -> None:
    port = free_port()
    server = start("serve", "--host", "0.0.0.0", "--port", str(port), env={"LOCARIA_CONSOLE_TOKEN": TOKEN})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(server, url + "/metrics")
        assert requests.get(url + "/", timeout=10).status_code == 401
        assert requests.get(url + "/metrics", timeout=10, headers={"Authorization": "Bearer wrong-token-x"}
                            ).status_code == 401
        assert requests.get(url + "/metrics", timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}
                            ).status_code == 200
        session = requests.Session()
        first = session.get(f"{url}/?token={TOKEN}&status=ERROR", timeout=10, allow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/?status=ERROR"  # the token leaves the URL
        assert "HttpOnly" in first.headers["set-cookie"] and "SameSite=Strict" in first.headers["set-cookie"]
        assert session.get(url + "/", timeout=10).status_code == 200  # the cookie carries it from now on
    finally:
        stop(server)


def test_state_changes_need_a_post_with_the_pages_csrf_token(console: Served, conn: Any) -> None:
    file_id = file_in(conn, "x.csv", "ERROR")
    page = requests.get(console.url + "/", timeout=10)
    csrf = csrf_of(page.text)
    assert "default-src 'self'" in page.headers["content-security-policy"]
    retry = f"{console.url}/api/files/retry"
    assert requests.post(retry, json={"ids": [file_id]}, timeout=10).status_code == 403
    assert requests.post(retry, json={"ids": [file_id]}, timeout=10,
                         headers={"X-CSRF-Token": "guessed"}).status_code == 403
    assert requests.post(retry, json={"ids": [file_id]}, timeout=10, headers={
        "X-CSRF-Token": csrf, "Origin": "http://evil.example"}).status_code == 403
    assert requests.get(retry, timeout=10).status_code == 405  # never through a GET
    done = requests.post(retry, json={"ids": [file_id]}, timeout=10, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200 and done.json()["done"][0]["status"] == "REGISTERED"


def test_unknown_host_names_are_refused(console: Served) -> None:
    """A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) gets nothing."""
    answer = requests.get(console.url + "/", timeout=10, headers={"Host": "attacker.example:8080"})
    assert answer.status_code == 400
    assert requests.get(console.url + "/", timeout=10, headers={"Host": "localhost"}).status_code == 200


def test_while_the_database_is_away_pages_and_calls_say_so_and_it_recovers(console: Served, db_url: str) -> None:
    page = requests.get(console.url + "/", timeout=10)
    csrf = csrf_of(page.text)
    with postgres_stopped(db_url):
        started = time.monotonic()
        away = requests.get(console.url + "/", timeout=30)
        assert away.status_code == 503 and "database cannot be reached" in away.text, away.text
        assert away.headers["retry-after"] == "5"
        assert time.monotonic() - started < 10  # at once, not after a long wait for a connection
        call = requests.post(console.url + "/api/files/retry", json={"ids": [1]}, timeout=30,
                             headers={"X-CSRF-Token": csrf})
        assert call.status_code == 503 and "database cannot be reached" in call.json()["error"]
    deadline = time.monotonic() + 30
    while requests.get(console.url + "/", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the console did not recover"
        time.sleep(0.5)
    assert console.process.poll() is None


def test_reads_go_through_read_only_connections(db_url: str) -> None:
    from locaria_batch.web.database import Pools

    pools = Pools(db_url)
    pools.open()
    try:
        with pools.read() as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("SELECT locaria_core.add_file('{\"file_attributes\": {\"name\": \"x\"}}')")
        with pools.read() as conn:
            assert conn.execute("SHOW default_transaction_read_only").fetchone() == {
                "default_transaction_read_only": "on"}
    finally:
        pools.close()


def test_no_credentials_reach_a_page(console: Served, conn: Any, db_url: str) -> None:
    file_id = int(add_file(conn, {"name": "x.csv", "upload": True})["id"])
    update_file(conn, file_id, status="ERROR", attributes={"error": "cannot reach postgresql://loader:s3cr3t@db/x"},
                message="failed at postgresql://loader:s3cr3t@db/x")
    for path in ("/", f"/files/{file_id}", "/queue", "/metrics"):
        shown = requests.get(console.url + path, timeout=10).text
        assert "s3cr3t" not in shown and db_url not in shown, path
    assert "postgresql://loader:***@db/x" in requests.get(f"{console.url}/files/{file_id}", timeout=10).text


def test_files_page_filters_and_pages_by_keyset(console: Served, conn: Any) -> None:
    for index in range(120):
        file_in(conn, f"file-{index}.csv", "ERROR" if index % 3 == 0 else "FARGATE_PROCESSED")
    first = requests.get(console.url + "/", timeout=10).text
    assert first.count("<tr data-id=") == 50 and 'data-id="120"' in first and 'data-id="71"' in first
    after = requests.get(console.url + "/files/rows?before=71", timeout=10)
    assert after.text.count("<tr data-id=") == 50 and 'data-id="70"' in after.text and after.headers["x-more"] == "1"
    errors = requests.get(console.url + "/?status=ERROR", timeout=10).text
    assert errors.count("<tr data-id=") == 40 and "FARGATE_PROCESSED</span>" not in errors
    found = requests.get(console.url + "/?q=file-77.csv", timeout=10).text
    assert found.count("<tr data-id=") == 1 and "file-77.csv" in found


def test_metrics_follow_prometheus_conventions(console: Served, conn: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from locaria_batch.dispatch.wait import wait_for_file
    from locaria_batch.files import register_upload
    from locaria_batch.storage import open_storage
    from tests.console_fixtures import REPO

    wait_for_file(register_upload(conn, open_storage(), REPO / "samples" / "parks.csv"), timeout=60)
    text = requests.get(console.url + "/metrics", timeout=10).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["locaria_jobs_finished"].type == "counter"
    assert families["locaria_job_run_duration_seconds"].type == "histogram"
    assert families["locaria_job_queue_wait_seconds"].type == "histogram"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in families.values() for s in family.samples}
    assert samples[("locaria_jobs", (("docker", "file_loader"), ("state", "succeeded")))] == 1
    assert samples[("locaria_jobs_finished_total", (("docker", "file_loader"), ("outcome", "succeeded")))] == 1
    assert samples[("locaria_job_run_duration_seconds_count", (("docker", "file_loader"),))] == 1
    assert samples[("locaria_job_run_duration_seconds_bucket", (("docker", "file_loader"), ("le", "+Inf")))] == 1
    assert samples[("locaria_dispatchers_alive", ())] == 0
    assert ("locaria_queue_oldest_due_age_seconds", (("docker", "file_loader"),)) in samples


def test_an_upload_to_s3_goes_through_the_presigned_put(s3_storage: str, console: Served, conn: Any) -> None:
    from tests.console_fixtures import REPO

    page = requests.get(console.url + "/", timeout=10)
    headers = {"X-CSRF-Token": csrf_of(page.text)}
    assert "connect-src 'self' http://127.0.0.1:" in page.headers["content-security-policy"]  # the S3 endpoint
    ticket = requests.post(console.url + "/api/uploads", json={"name": "parks.csv"}, headers=headers, timeout=10).json()
    assert ticket["mode"] == "presigned" and "X-Amz-Signature" in ticket["url"]
    early = requests.post(f"{console.url}/api/uploads/{ticket['id']}/complete", headers=headers, timeout=10)
    assert early.status_code == 400 and "PUT the data" in early.json()["error"]
    requests.put(ticket["url"], data=(REPO / "samples" / "parks.csv").read_bytes(), timeout=10).raise_for_status()
    done = requests.post(f"{console.url}/api/uploads/{ticket['id']}/complete", headers=headers, timeout=10).json()
    assert done["completed"] is True and done["status"] == "REGISTERED"
    assert ticket["url"] not in requests.get(f"{console.url}/files/{ticket['id']}", timeout=10).text


def test_connections_that_died_with_the_server_are_replaced_at_once(db_url: str) -> None:
    """Every pooled connection dies with a restart nobody noticed: the first use after it must not
    wait (psycopg_pool's own check slept 1 s, 2 s, ... between dead ones, and timed out)."""
    from locaria_batch.web.database import Pools

    pools = Pools(db_url)
    pools.open()
    try:
        with pools.read(), pools.read(), pools.read(), pools.read(), pools.write(), pools.write():
            pass  # four read and two write connections, idle in their pools from now on
        restart_postgres(db_url)
        for borrow in (pools.read, pools.write):
            started = time.monotonic()
            with borrow() as conn:
                assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
            assert time.monotonic() - started < 1.0
    finally:
        pools.close()


def test_requests_during_an_outage_leave_no_reconnection_to_wait_for(db_url: str) -> None:
    """A request while the database is away starts the pool reconnecting; once the database is back,
    the next request connects at once instead of waiting for a retry scheduled during the outage."""
    from psycopg_pool import PoolTimeout

    from locaria_batch.web.database import Pools

    pools = Pools(db_url)
    pools.open()
    try:
        with postgres_stopped(db_url):
            with pytest.raises(PoolTimeout), pools.read():
                pass
            time.sleep(5)  # psycopg_pool's retries back off: 1 s, 2 s, 4 s, 8 s, ... after the first
        started = time.monotonic()
        with pools.read() as conn:
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
        assert time.monotonic() - started < 1.0
    finally:
        pools.close()


def test_after_a_restart_the_consoles_first_request_is_served(console: Served, db_url: str) -> None:
    with ThreadPoolExecutor(8) as pool:  # several requests at once: several pooled connections
        assert set(pool.map(lambda _: requests.get(console.url + "/", timeout=30).status_code, range(8))) == {200}
    restart_postgres(db_url)
    time.sleep(1)
    started = time.monotonic()
    assert requests.get(console.url + "/", timeout=30).status_code == 200
    assert time.monotonic() - started < 1.0


def test_a_port_in_use_is_refused_before_it_is_announced(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = start("serve", "--port", str(port))
        output = refused.communicate(timeout=60)[0]
    assert refused.returncode == 1, output
    assert f"port {port} is already in use" in output and "--port" in output, output
    assert "console on" not in output and "Traceback" not in output and "Errno" not in output, output
