"""How values look on the console's pages (Jinja filters); user values are escaped by Jinja."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment

from locaria_batch.dispatch.handles import where_of
from locaria_batch.files import statuses

# user:password@ in any URL-like text (an error message quoting a connection string, say)
CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@\s]+@", re.IGNORECASE)
# AWS signatures and session tokens of a presigned URL are the link itself: kept; secrets never reach rows
BUSY = {"UPLOADING", "REGISTERED", "FARGATE_PROCESSING", "IMPORT_REQUESTED", "IMPORTING", "DOWNLOAD_REQUESTED",
        "DOWNLOAD_PROCESSING", "RETRY_REQUESTED"}


def redact(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)


def pretty(value: Any) -> str:
    if isinstance(value, str):
        return redact(value)
    return redact(json.dumps(value, default=str, ensure_ascii=False, indent=1 if isinstance(value, dict | list)
                             and len(json.dumps(value, default=str)) > 80 else None))


def human_bytes(value: Any) -> str:
    if not isinstance(value, int | float):
        return ""
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "\N{EN DASH}"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def when(value: Any) -> str:
    if isinstance(value, datetime):
        value = value.astimezone(UTC) if value.tzinfo else value
        return str(value.strftime("%Y-%m-%d %H:%M:%S")) + (" UTC" if value.tzinfo else "")
    return "" if value is None else str(value)


def tone(status: Any) -> str:
    """The badge colour of a file status or job state."""
    text = str(status or "")
    if text in statuses.FAILED or text in {"failed", "CANCELLED", "cancelled"}:
        return "bad" if "CANCEL" not in text.upper() else "muted"
    if text in statuses.DONE or text == "succeeded":
        return "good"
    if text in BUSY or text in {"queued", "launching", "running", "retried"}:
        return "busy"
    return "muted"


def percent(progress: Any) -> int | None:
    if not isinstance(progress, dict):
        return None
    done, total = progress.get("done"), progress.get("total")
    if isinstance(done, int | float) and isinstance(total, int | float) and total > 0:
        return max(0, min(100, round(100 * done / total)))
    return None


def number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else ("" if value is None else str(value))


def install(env: Environment) -> None:
    env.filters.update(redact=redact, pretty=pretty, human_bytes=human_bytes, duration=duration, when=when,
                       tone=tone, percent=percent, number=number)
    env.globals["busy_statuses"] = sorted(BUSY)
    env.globals["where_of"] = where_of
