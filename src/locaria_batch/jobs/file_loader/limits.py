"""How many row numbers a loader warning lists.  The loader's safety limits are settings
(LOCARIA_LOADER_*: `settings.LoaderLimits`)."""

from __future__ import annotations

MAX_REPORTED_ROWS = 20  # a warning names the first rows with a problem, not every one
