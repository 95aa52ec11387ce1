"""The one root of every error Locaria Batch raises on purpose.

A `LocariaError`'s message is a sentence a user can act on ("run `locaria-batch db migrate`"), so
the command line prints it as it is and exits with `exit_code`; anything else is a bug and keeps
its traceback.  Each layer defines its own subclasses next to its code; the cross-layer ones live
here.
"""

from __future__ import annotations


def first_line(exc: BaseException, fallback: str | None = None) -> str:
    """An error's first line, for a log line or a sentence; `fallback` (else the type's name) when it has
    no message."""
    return (str(exc).strip().splitlines() or [fallback or type(exc).__name__])[0]


class LocariaError(Exception):
    """An error whose message tells the user what to do."""

    exit_code = 1


class ConfigurationError(LocariaError):
    """A setting is missing or malformed (an environment variable, a configuration file)."""


class DatabaseNotConfigured(ConfigurationError):
    """No database to talk to: neither LOCARIA_DB_URL, a secret, nor a running embedded cluster."""


class DatabaseUnavailable(LocariaError):
    """The database refused or dropped the connection."""


class SchemaNotMigrated(LocariaError):
    """The database has no (or an older) Locaria schema."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("the database has no Locaria Batch schema" + (f" ({detail})" if detail else "")
                         + ": run `locaria-batch db migrate`")


class StorageError(LocariaError):
    """Storage (a folder or S3) refused an operation."""


class DeployError(LocariaError):
    """Building, pushing or deploying failed."""


class ApiError(LocariaError):
    """A SQL API function (add_file, retry_file, ...) answered with {"error": ...}."""


class NotFound(ApiError, LookupError):
    """The row a command names does not exist."""
