"""How the CLI prints rows: Rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

ERROR_STATUSES = {"ERROR", "FARGATE_ERROR", "DOWNLOAD_ERROR"}
DONE_STATUSES = {"FARGATE_PROCESSED", "IMPORTED", "DOWNLOAD_COMPLETED"}


def fail(message: str, code: int = 1) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def styled_status(status: str) -> str:
    if status in ERROR_STATUSES:
        return f"[red]{status}[/red]"
    if status in DONE_STATUSES:
        return f"[green]{status}[/green]"
    return f"[yellow]{status}[/yellow]"


def print_file_list(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table("id", "status", "name", "kind", "created", "last updated")
    for row in rows:
        attrs = row.get("attributes") or {}
        kind = "download" if attrs.get("download") else "upload" if attrs.get("upload") else ""
        table.add_row(str(row["id"]), styled_status(row["status"]), str(attrs.get("name", "")), kind,
                      str(row.get("created", "")), str(row.get("last_updated", "")))
    console.print(table)


def print_file(console: Console, row: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
    attrs = dict(row.get("attributes") or {})
    log = attrs.pop("log_messages", [])
    console.print(f"[bold]file {row['id']}[/bold]  {styled_status(row['status'])}  {attrs.get('name', '')}")
    if attrs.get("url"):
        expiry = f"  (expires {attrs['expires_at']})" if attrs.get("expires_at") else ""
        console.print(f"link: {attrs['url']}{expiry}")
    if attrs.get("error"):
        console.print(f"[red]error:[/red] {attrs['error']}", highlight=False)
    columns = attrs.pop("columns", None)
    attrs.pop("preview", None)  # GeoJSON of the first rows: in --json, too long for a terminal
    if len(attrs.get("layer_details") or []) == 1:
        attrs.pop("layer_details")  # one layer: the same facts as the top-level keys
    facts = Table("attribute", "value", title="attributes", show_header=False)
    for key, value in sorted(attrs.items()):
        facts.add_row(key, value if isinstance(value, str) else json.dumps(value, default=str))
    console.print(facts)
    if isinstance(columns, list) and columns:
        loaded = Table("source column", "loaded as", "type", title="columns")
        for column in columns:
            loaded.add_row(str(column.get("source", "")), str(column.get("column", "")), str(column.get("type", "")))
        console.print(loaded)
    if log:
        table = Table("time", "entry", title="log")
        for entry in log:
            entry = dict(entry)
            stamp = entry.pop("timestamp", "")
            text = entry.get("message") if list(entry) == ["message"] else json.dumps(entry, default=str)
            table.add_row(stamp, str(text))
        console.print(table)
    if jobs:
        table = Table("job", "docker", "state", "attempt", "exit", "error", "where", title="jobs")
        for job in jobs:
            handle = job.get("handle") or {}
            where = handle.get("log") or handle.get("log_stream") or handle.get("task_arn") or \
                handle.get("container_id") or ""
            table.add_row(str(job["id"]), job["docker"], job["state"], f"{job['attempt']}/{job['max_attempts']}",
                          "" if job.get("exit_code") is None else str(job["exit_code"]), job.get("error") or "",
                          str(where))
        console.print(table)
