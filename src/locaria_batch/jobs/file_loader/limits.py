"""How many row numbers a loader warning lists, and how it counts them.  The loader's safety limits are settings
(LOCARIA_LOADER_*: `settings.LoaderLimits`)."""

from __future__ import annotations

MAX_REPORTED_ROWS = 20  # a warning names the first rows with a problem, not every one


def counted(count: int, one: str, many: str) -> str:
    """`1 row has` or `3 rows have`: a count with the words that agree with it."""
    return f"{count:,} {one if count == 1 else many}"
