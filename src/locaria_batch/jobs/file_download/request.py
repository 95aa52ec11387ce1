"""A download request as the job reads it from the file row's attributes, checked up front.

    {"format": "gpkg", "name": "parks", "srid": 27700,
     "categories": ["Parks"]            (or "table": "upload_file_12" / "myschema.mytable"),
     "csv_geometry": "wkt" | "lonlat",
     "csv_keep_formulas": false         (true: text that looks like a spreadsheet formula is not neutralised),
     "filters": {"bbox": [minx, miny, maxx, maxy],          (WGS 84 longitude/latitude)
                 "attributes": {"kind": "oak", "ward": ["A", "B"]},
                 "created_after": "2024-01-01", "created_before": "2024-02-01T12:00:00Z",
                 "limit": 1000}}

Every problem becomes a JobError holding one plain sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from locaria_batch.db import BIGINT_MAX
from locaria_batch.job import JobError

FILTER_KEYS = ("bbox", "attributes", "created_after", "created_before", "limit")
LIMIT_MAX = BIGINT_MAX  # PostgreSQL's LIMIT is a bigint


@dataclass(frozen=True)
class Filters:
    bbox: tuple[float, float, float, float] | None = None
    attributes: dict[str, list[Any]] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int | None = None


@dataclass(frozen=True)
class DownloadRequest:
    format: str
    name: str
    srid: int
    categories: tuple[str, ...] | None  # None: the source is a table
    table: str | None
    filters: Filters
    csv_geometry: str = "wkt"
    csv_keep_formulas: bool = False  # CSV text starting with = + - @ tab or CR is written as is, not neutralised


def parse_request(attributes: dict[str, Any], file_id: int) -> DownloadRequest:
    fmt = str(attributes.get("format") or "").strip().lower()
    table = attributes.get("table")
    categories = attributes.get("categories")
    if table not in (None, "") and categories:
        raise JobError("name either a table or categories to download, not both")
    if table not in (None, "") and not isinstance(table, str):
        raise JobError("table must be a table name such as upload_file_12")
    if categories is None or categories == "":
        categories = []
    if isinstance(categories, str):
        categories = [categories]
    if not isinstance(categories, list) or not all(isinstance(c, str) and c for c in categories):
        raise JobError("categories must be a list of category names")
    csv_geometry = str(attributes.get("csv_geometry") or "wkt").lower()
    if csv_geometry not in ("wkt", "lonlat"):
        raise JobError(f"csv_geometry {csv_geometry!r} is not known: use wkt or lonlat")
    return DownloadRequest(
        format=fmt,
        name=str(attributes.get("name") or f"download-{file_id}"),
        srid=_srid(attributes.get("srid")),
        categories=None if table else tuple(dict.fromkeys(categories)),
        table=table or None,
        filters=parse_filters(attributes.get("filters")),
        csv_geometry=csv_geometry,
        csv_keep_formulas=_flag(attributes.get("csv_keep_formulas"), "csv_keep_formulas"),
    )


def _flag(value: Any, key: str) -> bool:
    if value in (None, "", False):
        return False
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise JobError(f"{key} {value!r} must be true or false")


def _srid(value: Any) -> int:
    if value in (None, ""):
        return 4326
    text = str(value).strip().upper().removeprefix("EPSG:")
    if not text.isdigit() or int(text) <= 0:
        raise JobError(f"srid {value!r} is not an EPSG code such as 4326 or 27700")
    return int(text)


def parse_filters(raw: Any) -> Filters:
    if raw in (None, {}):
        return Filters()
    if not isinstance(raw, dict):
        raise JobError("filters must be an object such as {\"bbox\": [...], \"attributes\": {...}, \"limit\": 100}")
    unknown = sorted(set(raw) - set(FILTER_KEYS))
    if unknown:
        raise JobError(f"unknown filter {unknown[0]!r}: use {', '.join(FILTER_KEYS)}")
    return Filters(
        bbox=_bbox(raw.get("bbox")),
        attributes=_attribute_filters(raw.get("attributes")),
        created_after=_timestamp(raw.get("created_after"), "created_after"),
        created_before=_timestamp(raw.get("created_before"), "created_before"),
        limit=_limit(raw.get("limit")),
    )


def _bbox(value: Any) -> tuple[float, float, float, float] | None:
    if value in (None, ""):
        return None
    given = value if isinstance(value, str) else ",".join(map(str, value)) if isinstance(value, list) else value
    if isinstance(value, str):
        value = value.split(",")
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 4 or not all(math.isfinite(n) for n in numbers):
        raise JobError("bbox must be four numbers minx, miny, maxx, maxy in longitude/latitude (WGS 84)")
    for axis, low, high in (("x", numbers[0], numbers[2]), ("y", numbers[1], numbers[3])):
        if low > high:
            raise JobError(f"bbox {given} has min{axis} {low:g} greater than max{axis} {high:g}: give minx, miny, "
                           "maxx, maxy, in that order")
    return numbers[0], numbers[1], numbers[2], numbers[3]


def _attribute_filters(value: Any) -> dict[str, list[Any]]:
    if value in (None, {}):
        return {}
    if not isinstance(value, dict):
        raise JobError("filters.attributes must map column names to a value or a list of values")
    result: dict[str, list[Any]] = {}
    for name, wanted in value.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if not values:
            raise JobError(f"the filter on {name!r} lists no values")
        if any(isinstance(v, dict | list) for v in values):
            raise JobError(f"the filter on {name!r} must compare with plain values, not objects or lists of lists")
        result[str(name)] = values
    return result


def _timestamp(value: Any, key: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise JobError(f"{key} {value!r} is not an ISO date or timestamp such as 2024-05-01T12:00:00Z") from exc
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _limit(value: Any) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not str(value).isdigit() or int(value) <= 0:
        raise JobError(f"limit {value!r} must be a positive whole number")
    if int(value) > LIMIT_MAX:
        raise JobError(f"limit {value} is larger than the most a download can take ({LIMIT_MAX:,}); "
                       "give a smaller limit, or none for every row")
    return int(value)
