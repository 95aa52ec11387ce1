"""The console as a user meets it: `locaria-batch serve` and `locaria-batch worker` as real processes,
and Debian's Chromium driven by Playwright (its own browser download is not used)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "locaria_batch.cli.main", *args], cwd=REPO, text=True,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate(timeout=10)
    return output or ""


def wait_until_serving(process: subprocess.Popen[str], url: str, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the server stopped: {process.communicate()[0]}")
        try:
            if requests.get(url, timeout=2, headers=headers).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "the server did not answer within 60 s"
        time.sleep(0.1)


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]


@pytest.fixture
def console(db_url: str) -> Iterator[Served]:
    """`locaria-batch serve` on a free loopback port."""
    port = free_port()
    process = start("serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, url + "/metrics")
        yield Served(url, process)
    finally:
        stop(process)


@pytest.fixture
def worker(db_url: str) -> Iterator[subprocess.Popen[str]]:
    process = start("worker", "--poll", "0.5")
    yield process
    stop(process)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], errors  # no script error on any page


def drop_files(page: Any, selector: str, files: dict[str, bytes]) -> None:
    """Drag and drop files onto `selector`, as a user does from a file manager."""
    transfer = page.evaluate_handle(
        """(files) => {
             const transfer = new DataTransfer();
             for (const [name, bytes] of Object.entries(files)) {
               transfer.items.add(new File([new Uint8Array(bytes)], name));
             }
             return transfer;
           }""", {name: list(data) for name, data in files.items()})
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def file_in(conn: Any, name: str, status: str) -> int:
    """A file row in `status` (created UPLOADING, as rows are, then moved there)."""
    from locaria_batch.files import add_file, update_file

    file_id = int(add_file(conn, {"name": name, "upload": True}, status="UPLOADING")["id"])
    update_file(conn, file_id, status=status)
    return file_id
