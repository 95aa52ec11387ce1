"""The project's JSON configuration files (docker/dockers.json, locaria.json): one object each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_object(path: Path, error: type[Exception], missing: str, keyed_by: str) -> dict[str, Any]:
    """The file's top-level object; `error` with a sentence saying what to do when it is missing,
    not JSON, or not an object (`missing` is what to do about a missing file)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise error(f"{path} not found: {missing}") from exc
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise error(f"{path} must hold a JSON object keyed by {keyed_by}")
    return raw
