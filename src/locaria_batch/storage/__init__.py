"""Storage: a local directory or S3 behind one small interface."""

from __future__ import annotations

from pathlib import Path

from locaria_batch.errors import StorageError
from locaria_batch.settings import settings
from locaria_batch.storage.base import ObjectNotFound, Storage, download_key, incoming_key


def open_storage(url: str | None = None) -> Storage:
    """`s3://bucket/prefix` or a directory path (default: LOCARIA_STORAGE, else .locaria/storage)."""
    target = url or settings().storage_url
    if target.startswith("s3://"):
        from locaria_batch.storage.s3 import S3Storage

        return S3Storage.from_url(target)
    from locaria_batch.storage.local import LocalStorage

    return LocalStorage(Path(target.removeprefix("file://")))


__all__ = ["ObjectNotFound", "Storage", "StorageError", "download_key", "incoming_key", "open_storage"]
