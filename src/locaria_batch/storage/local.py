"""Storage in a local directory (the default: .locaria/storage)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from locaria_batch.errors import StorageError
from locaria_batch.storage.base import ObjectNotFound


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or ".." in parts:
            raise StorageError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"no object {key!r} in {self.root}") from exc

    def put(self, key: str, source: Path | BinaryIO, content_type: str | None = None) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        # write aside then rename, so a reader never sees half an object
        if isinstance(source, Path):
            shutil.copyfile(source, partial)
        else:
            with partial.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
        partial.replace(target)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"no object {key!r} in {self.root}") from exc

    def url(self, key: str, expires_in: int | None = None) -> str:
        return str(self.path(key))

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = self.path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.root}")
        yield path

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield key
