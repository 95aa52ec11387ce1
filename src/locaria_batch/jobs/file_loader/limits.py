"""Safety limits of the loader, configurable through the environment (LOCARIA_LOADER_*), and how
many row numbers a warning lists."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

MAX_REPORTED_ROWS = 20  # a warning names the first rows with a problem, not every one


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 10 * 1024**3  # the uploaded object
    max_unpacked_bytes: int = 20 * 1024**3  # everything a zip or .gz expands to
    max_expansion_ratio: int = 200  # unpacked size / packed size, per archive entry and overall
    max_archive_entries: int = 10_000
    max_nesting: int = 2  # archives inside archives
    max_features: int = 50_000_000  # per layer
    max_columns: int = 10_000  # attribute columns per layer
    max_layers: int = 200
    max_bad_rows: int = 10_000  # rows with a value the database rejects, reported and emptied

    @classmethod
    def from_environment(cls) -> Limits:
        """LOCARIA_LOADER_MAX_FILE_BYTES=... and so on, one variable per field."""
        values = {}
        for item in fields(cls):
            raw = os.environ.get(f"LOCARIA_LOADER_{item.name.upper()}")
            if raw:
                values[item.name] = int(raw)
        return cls(**values)
