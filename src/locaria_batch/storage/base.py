"""The storage interface every job and command uses: a local folder or an S3 prefix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol

from locaria_batch.errors import StorageError


class ObjectNotFound(StorageError):
    pass


def incoming_key(file_id: int, ext: str) -> str:
    """Where an upload's object lives (Locaria's layout): from the file id and its extension only, the
    extension cut to letters, digits and inner dots (an attribute can never point elsewhere)."""
    clean = ".".join(part for part in re.sub(r"[^a-z0-9.]", "", ext.lower()).split(".") if part)[:20]
    return f"incoming/{file_id}.{clean}" if clean else f"incoming/{file_id}"


def download_key(file_name: str) -> str:
    return f"loaderDownloads/{file_name}"


class Storage(Protocol):
    """Keys are relative, '/'-separated paths such as incoming/12.csv."""

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream; raises ObjectNotFound."""

    def put(self, key: str, source: Path | BinaryIO, content_type: str | None = None) -> None:
        """Store a local file or a stream under key (streamed, never read whole into memory)."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def url(self, key: str, expires_in: int | None = None) -> str:
        """A link a user can fetch: a local path, or a presigned GET."""

    def delete(self, key: str) -> None: ...

    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        """A local file holding the object for as long as the context lasts (GDAL needs paths)."""

    def list(self, prefix: str) -> Iterator[str]: ...
