"""How the CLI shows file rows and jobs to people (JSON for scripts is `print_json`).

Every value that came from a user (names, attributes, errors, log entries) goes into a `Text`, never
into markup, so `[bold]` or `[/oops]` in a file name prints as it is.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from locaria_batch.dispatch.handles import where_of
from locaria_batch.dispatch.store import Job
from locaria_batch.files import statuses


def styled_status(status: str) -> Text:
    style = "red" if status in statuses.FAILED else "green" if status in statuses.DONE else "yellow"
    return Text(status, style=style)


def _text(value: Any) -> Text:
    return Text(value if isinstance(value, str) else json.dumps(value, default=str))


# C0 controls, DEL, C1 controls and Unicode's line and paragraph separators: each would break a table row
# or move the terminal's cursor
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_control(text: str) -> bool:
    return CONTROL.search(text) is not None


def one_line(value: Any) -> Text:
    """A name for a table cell: control characters shown escaped as Python writes them (\\n, \\x1b), so
    that one row stays one line; JSON output keeps the name exact."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return Text(CONTROL.sub(lambda match: repr(match.group())[1:-1], text))


def print_file_list(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table("id", "status", "name", "kind", "created", "last updated")
    for row in rows:
        attrs = row.get("attributes") or {}
        kind = "download" if attrs.get("download") else "upload" if attrs.get("upload") else ""
        table.add_row(str(row["id"]), styled_status(row["status"]), one_line(attrs.get("name", "")), kind,
                      str(row.get("created", "")), str(row.get("last_updated", "")))
    console.print(table)


def print_file(console: Console, row: dict[str, Any], jobs: list[Job]) -> None:
    attrs = dict(row.get("attributes") or {})
    log = attrs.pop("log_messages", [])
    console.print(Text.assemble(Text(f"file {row['id']}", style="bold"), "  ", styled_status(row["status"]), "  ",
                                _text(attrs.get("name", ""))))
    if attrs.get("url"):
        expiry = f"  (expires {attrs['expires_at']})" if attrs.get("expires_at") else ""
        console.print(Text(f"link: {attrs['url']}{expiry}"))
    if attrs.get("error"):
        console.print(Text.assemble(Text("error: ", style="red"), _text(attrs["error"])))
    columns = attrs.pop("columns", None)
    attrs.pop("preview", None)  # GeoJSON of the first rows: in --json, too long for a terminal
    if len(attrs.get("layer_details") or []) == 1:
        attrs.pop("layer_details")  # one layer: the same facts as the top-level keys
    facts = Table("attribute", "value", title="attributes", show_header=False)
    for key, value in sorted(attrs.items()):
        facts.add_row(Text(key), _text(value))
    console.print(facts)
    if isinstance(columns, list) and columns:
        loaded = Table("source column", "loaded as", "type", title="columns")
        for column in columns:
            loaded.add_row(_text(column.get("source", "")), _text(column.get("column", "")),
                           _text(column.get("type", "")))
        console.print(loaded)
    if log:
        table = Table("time", "entry", title="log")
        for entry in log:
            entry = dict(entry)
            stamp = entry.pop("timestamp", "")
            text = entry.get("message") if list(entry) == ["message"] else entry
            table.add_row(_text(stamp), _text(text))
        console.print(table)
    if jobs:
        print_jobs(console, jobs)


def print_jobs(console: Console, jobs: list[Job]) -> None:
    table = Table("job", "docker", "state", "attempt", "exit", "error", "where", title="jobs")
    for job in jobs:
        table.add_row(str(job.id), job.docker, str(job.state), f"{job.attempt}/{job.max_attempts}",
                      "" if job.exit_code is None else str(job.exit_code), _text(job.error or ""),
                      _text(where_of(job.handle, job.runner)))
    console.print(table)


def print_inspection(console: Console, report: dict[str, Any]) -> None:
    """`files inspect`: each layer as ogrinfo -so shows it, then its columns, notes and problems."""
    console.print(Text(f"{report['file']} ({report['size_bytes']:,} bytes)", style="bold"))
    for problem in report["problems"]:
        console.print(Text(f"problem: {problem}", style="red"))
    for layer in report["layers"]:
        crs = f"{layer['crs']} (assumed)" if layer["crs_assumed"] else layer["crs"] or "-"
        console.print(Text(f"\nlayer {layer['layer']}", style="bold"))
        features = "-" if layer["features"] is None else f"{layer['features']:,}"
        for key, value in (("features", features), ("geometry", layer["geometry_type"] or "none"),
                           ("coordinate system", crs if layer["geometry_type"] else "-"),
                           ("extent", ", ".join(f"{v:.6g}" for v in layer["extent"]) if layer["extent"] else "-"),
                           ("encoding", f"{layer['encoding']}{' (guessed)' if layer['encoding_guessed'] else ''}"
                            if layer["encoding"] else "-")):
            console.print(Text(f"  {key}: {value}"))
        table = Table("column", "loaded as", "type")
        for column in layer["columns"]:
            table.add_row(Text(column["source"]), Text(column["column"]), column["type"])
        console.print(table)
        for note in layer["notes"]:
            console.print(Text(f"  note: {note}"))
        for problem in layer["problems"]:
            console.print(Text(f"  problem: {problem}", style="red"))
