"""The console in a real browser (Chromium through Playwright) against a real server, worker and
database: uploads by drag-and-drop, live statuses, the file page, downloads, retries."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import psycopg

from locaria_batch.dispatch.store import JobStore
from locaria_batch.files import update_file
from tests.console_fixtures import REPO, Served

SAMPLE = (REPO / "samples" / "parks.csv").read_bytes()
LIVE = 90_000  # ms a job may take on a busy machine


def row(page: Any, file_id: int, status: str | None = None) -> Any:
    selector = f'#files tr[data-id="{file_id}"]' + (f'[data-status="{status}"]' if status else "")
    return page.wait_for_selector(selector, timeout=LIVE)


def test_a_dropped_file_moves_to_processed_live_and_shows_its_attempts(page: Any, console: Served, worker: Any,
                                                                       conn: psycopg.Connection[Any]) -> None:
    from tests.console_fixtures import drop_files

    page.goto(console.url)
    page.wait_for_selector('#live[data-state="live"]')
    page.evaluate("window.stillTheSamePage = true")
    drop_files(page, "#dropzone", {"parks.csv": SAMPLE})
    loaded = row(page, 1, "FARGATE_PROCESSED")
    assert page.evaluate("window.stillTheSamePage") is True  # no reload: the stream brought it
    assert "20" in loaded.inner_text() and "parks.csv" in loaded.inner_text()
    seen = [event["status"] for event in page.evaluate("window.locariaStatusEvents") if event["id"] == 1]
    assert seen[-1] == "FARGATE_PROCESSED" and "FARGATE_PROCESSING" in seen

    page.click('#files tr[data-id="1"] td.name a')
    page.wait_for_selector("#detail-status")
    text = page.inner_text("main")
    assert "FARGATE_PROCESSED" in text and "Loaded 20 rows into locaria_uploads.upload_file_1" in text
    attempt = page.inner_text("table.attempts tbody tr:first-child")
    assert "file_loader" in attempt and "succeeded" in attempt and "pid" in attempt
    assert "job 1: succeeded" in page.inner_text("pre.tail")  # the tail of the attempt's own log
    assert "area_ha" in page.inner_text("main")  # the loaded columns


def test_a_download_is_requested_and_its_link_fetched(page: Any, console: Served, worker: Any, conn: Any,
                                                      tmp_path: Path) -> None:
    from locaria_batch.dispatch.wait import wait_for_file
    from locaria_batch.files import register_upload
    from locaria_batch.storage import open_storage

    wait_for_file(register_upload(conn, open_storage(), REPO / "samples" / "parks.csv"), timeout=60)
    page.goto(console.url)
    page.wait_for_selector('#live[data-state="live"]')
    page.click("#open-download")
    page.select_option('#download-form select[name="source"]', "table:locaria_uploads.upload_file_1")
    page.select_option('#download-form select[name="format"]', "csv")
    page.fill('#download-form input[name="name"]', "parks export")
    page.click("#download-submit")
    done = row(page, 2, "DOWNLOAD_COMPLETED")
    with page.expect_download() as started:
        done.query_selector("a.button").click()
    saved = tmp_path / "export.csv"
    started.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0].startswith("name,") and len(lines) == 21


def test_a_failed_file_is_retried_from_the_table_after_a_confirmation(page: Any, console: Served, worker: Any,
                                                                      conn: Any) -> None:
    from tests.console_fixtures import drop_files

    page.goto(console.url)
    page.wait_for_selector('#live[data-state="live"]')
    drop_files(page, "#dropzone", {"broken.geojson": b'{"type": "FeatureCollection", "features": ['})
    failed = row(page, 1, "ERROR")
    failed.evaluate("row => { row.dataset.beforeRetry = '1'; }")  # the row the retry must replace
    failed.query_selector(".check input").check()
    page.click('#bulk [data-bulk="retry"]')
    page.wait_for_selector("#confirm[open]")
    assert "Retry 1 file?" in page.inner_text("#confirm .question")
    page.click('#confirm button[value="ok"]')
    deadline = time.monotonic() + LIVE / 1000

    def statuses() -> list[str]:
        return [event["status"] for event in page.evaluate("window.locariaStatusEvents") if event["id"] == 1]

    while len(JobStore(conn).jobs_of_file(1)) < 2 or statuses().count("ERROR") < 2:
        assert time.monotonic() < deadline, f"the retry did not run: the page saw {statuses()}"
        time.sleep(0.2)
    events = statuses()
    assert events.count("REGISTERED") == 2  # back through the loader, live
    # the page fetches the row after the event: wait for the fresh row in place of the old one
    page.wait_for_selector('#files tr[data-id="1"][data-status="ERROR"]:not([data-before-retry])', timeout=LIVE)


def test_status_commit_to_browser_delay(page: Any, console: Served, conn: Any) -> None:
    """Printed, not asserted on: the time from a status change's commit to the page receiving it."""
    from tests.console_fixtures import file_in

    file_id = file_in(conn, "probe.csv", "FARGATE_PROCESSED")
    page.goto(console.url)
    page.wait_for_selector('#live[data-state="live"]')
    delays = []
    for index in range(20):
        status = "IMPORTED" if index % 2 == 0 else "FARGATE_PROCESSED"
        seen = len(page.evaluate("window.locariaStatusEvents"))
        with conn.transaction():
            update_file(conn, file_id, status=status, message="latency probe")
        committed = time.time() * 1000
        deadline = time.monotonic() + 10
        while page.evaluate("window.locariaStatusEvents.length") <= seen:  # the page stamps its arrival itself
            assert time.monotonic() < deadline, "the status change did not arrive"
            time.sleep(0.01)
        received = page.evaluate("window.locariaStatusEvents")[-1]
        assert received == {"id": file_id, "status": status, "receivedAt": received["receivedAt"]}
        delays.append(received["receivedAt"] - committed)
        time.sleep(0.05)
    print(f"\nstatus commit -> browser: p50 {statistics.median(delays):.1f} ms, "
          f"max {max(delays):.1f} ms over {len(delays)} changes")
