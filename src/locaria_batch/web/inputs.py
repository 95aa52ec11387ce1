"""What a request carries, checked at the edge before it reaches the file API or the job store: ids
and whole numbers within PostgreSQL's bigint, text without NUL and of bounded length, lists of
either, choices, ages and upload names.  A value that fails is a `BadInput` (400, one line)."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Collection
from datetime import timedelta

from locaria_batch.db import BIGINT_MAX
from locaria_batch.errors import LocariaError
from locaria_batch.files import FileNotFound
from locaria_batch.settings import parse_age

# ASCII digits only: str.isdigit() also takes '²' and other digits that int() refuses
DIGITS = re.compile(r"[0-9]{1,19}")
TEXT_LIMIT = 200  # a filter, a status, a docker, a table
NAME_LIMIT = 255  # a file name (what file systems allow)
PATH_LIMIT = 4096  # a name as the browser sends it, folders included
LIST_LIMIT = 1000


class BadInput(LocariaError):
    """A value of a request the console refuses: answered 400 with this message."""


def id_text(text: str, what: str) -> int:
    """An id given as text (a query parameter): ASCII digits, from 1 to bigint's maximum."""
    if not DIGITS.fullmatch(text) or not 0 < int(text) <= BIGINT_MAX:
        raise BadInput(f"{what} must be a whole number from 1 to {BIGINT_MAX}, not {text[:40]!r}")
    return int(text)


def id_value(value: object, what: str) -> int:
    """An id given as JSON: a number, not a boolean (JSON true is no file 1), within bigint."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= BIGINT_MAX:
        raise BadInput(f"{what} must be whole numbers from 1 to {BIGINT_MAX}")
    return value


def file_id_in_path(value: int) -> int:
    """A file id of a path (the route already took its digits): beyond bigint no such file exists."""
    if value > BIGINT_MAX:
        raise FileNotFound(f"file {value} does not exist")
    return value


def text(value: object, what: str, limit: int = TEXT_LIMIT) -> str:
    if not isinstance(value, str):
        raise BadInput(f"{what} must be text")
    if "\x00" in value:  # PostgreSQL text cannot hold it
        raise BadInput(f"{what} must not contain a NUL character")
    if len(value) > limit:
        raise BadInput(f"{what} is longer than {limit} characters")
    return value


def optional_text(value: object, what: str, limit: int = TEXT_LIMIT) -> str | None:
    """Text, or None for a missing or empty value."""
    return None if value is None or value == "" else text(value, what, limit)


def items(value: object, what: str, limit: int = LIST_LIMIT) -> list[object]:
    """A JSON list (a missing one is empty) of at most `limit` items."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadInput(f"{what} must be a list")
    if len(value) > limit:
        raise BadInput(f"{what} may hold at most {limit} items")
    return value


def id_list(value: object, what: str, limit: int = LIST_LIMIT) -> list[int]:
    return [id_value(item, what) for item in items(value, what, limit)]


def text_list(value: object, what: str, limit: int = LIST_LIMIT) -> list[str]:
    return [text(item, what) for item in items(value, what, limit)]


def choice(value: object, what: str, allowed: Collection[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise BadInput(f"{what} must be one of: {', '.join(allowed)}")
    return value


def age(value: object, what: str) -> timedelta:
    """'7d', '12h', ...: what `parse_age` reads (it refuses ages beyond its bound)."""
    spec = text(value, what, limit=40)
    try:
        return parse_age(spec)
    except ValueError as exc:
        raise BadInput(f"{what}: {exc}") from None


def upload_name(value: object) -> str:
    """The name a file is uploaded under: its last path part, printable, not `.` or `..`."""
    name = os.path.basename(text(value if value is not None else "", "the file name", limit=PATH_LIMIT)).strip()
    if name in {"", ".", ".."}:
        raise BadInput("the file has no name")
    if len(name) > NAME_LIMIT:
        raise BadInput(f"the file name is longer than {NAME_LIMIT} characters")
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise BadInput("the file name must not contain control characters (line breaks, tabs, ...)")
    return name
