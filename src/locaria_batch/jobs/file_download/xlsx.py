"""XLSX: one sheet per category (or the table), rows streamed from a server-side cursor into
openpyxl's write-only workbook, geometry as WKT."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from psycopg import sql
from psycopg.rows import tuple_row

from locaria_batch.job import JobError
from locaria_batch.jobs.file_download.copyout import Progress
from locaria_batch.jobs.file_download.request import DownloadRequest
from locaria_batch.jobs.file_download.selection import Column, Selection, unique_name

SHEET_NAME_LIMIT = 31
SHEET_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")
CELL_LIMIT = 32767  # characters Excel keeps in one cell
FETCH_ROWS = 5000
PROGRESS_EVERY = 10_000
# Excel has no time zones: timestamps are written as UTC wall-clock times
XLSX_CASTS = {"timestamp": " AT TIME ZONE 'UTC'", "json": "::text"}


def sheet_names(names: list[str]) -> list[str]:
    """Legal, unique (case-insensitively) sheet names: ≤31 characters, none of []:*?/\\,
    no leading or trailing apostrophe, never empty, never Excel's reserved 'History'."""
    result: list[str] = []
    taken: set[str] = set()
    for name in names:
        base = SHEET_FORBIDDEN.sub("_", ILLEGAL_CHARACTERS_RE.sub("", name)).strip("'").strip() or "Sheet"
        if base.lower() == "history":
            base = "History_"
        base = base[:SHEET_NAME_LIMIT]
        candidate, n = base, 1
        while candidate.lower() in taken:
            n += 1
            suffix = f"~{n}"
            candidate = base[: SHEET_NAME_LIMIT - len(suffix)].rstrip("'") + suffix
        taken.add(candidate.lower())
        result.append(candidate)
    return result


def _select(columns: list[Column]) -> list[sql.Composable]:
    return [sql.SQL("({}){}").format(c.expression, sql.SQL(XLSX_CASTS.get(c.kind, ""))) for c in columns]


def write_xlsx(conn: psycopg.Connection[Any], selection: Selection, request: DownloadRequest, path: Path,
               progress: Progress) -> int:
    workbook = Workbook(write_only=True)
    select = _select(selection.columns)
    header = [c.name for c in selection.columns]
    text_columns = [n for n, c in enumerate(selection.columns) if c.kind in ("text", "json")]
    if selection.geometry is not None:
        select.append(sql.SQL("ST_AsText({})").format(selection.geometry))
        header.append(unique_name("wkt", set(header)))
        text_columns.append(len(header) - 1)
    layers = selection.output_layers(request.name)
    done = 0
    for layer, title in zip(layers, sheet_names([layer.name for layer in layers]), strict=True):
        sheet = workbook.create_sheet(title)
        sheet.append(header)
        query, params = selection.query(sql.SQL(", ").join(select), layer)
        with conn.cursor(name=f"xlsx_{done}", row_factory=tuple_row) as cur:
            cur.itersize = FETCH_ROWS
            cur.execute(query, params)
            for row in cur:
                if text_columns:
                    row = _safe_text(sheet, row, text_columns)
                sheet.append(row)
                done += 1
                if done % PROGRESS_EVERY == 0:
                    progress(done)
    workbook.save(path)
    progress(done)
    return done


def _safe_text(sheet: Any, row: tuple[Any, ...], text_columns: list[int]) -> list[Any]:
    """Strings as strings: control characters dropped, never taken for formulas, never cut."""
    values = list(row)
    for n in text_columns:
        value = values[n]
        if value is None:
            continue
        if len(value) > CELL_LIMIT:
            raise JobError(f"a value of {len(value):,} characters is longer than an Excel cell holds (32,767); "
                           "choose GeoPackage or CSV for this data")
        if ILLEGAL_CHARACTERS_RE.search(value):
            value = ILLEGAL_CHARACTERS_RE.sub("", value)
        if value.startswith("="):
            cell = WriteOnlyCell(sheet, value=value)
            cell.data_type = "s"
            value = cell
        values[n] = value
    return values
