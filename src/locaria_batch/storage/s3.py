"""Storage under an S3 prefix (LOCARIA_STORAGE=s3://bucket/prefix).

Puts and gets stream through boto3's managed transfer (multipart above 8 MiB, parallel parts), so
no object is ever held whole in memory; users get presigned GET links and presigned PUT URLs.
boto3 honours AWS_ENDPOINT_URL, so any S3-compatible endpoint works.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from locaria_batch.errors import StorageError
from locaria_batch.settings import settings
from locaria_batch.storage.base import ObjectNotFound

MULTIPART_THRESHOLD = 8 * 1024 * 1024
NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}


def upload_url_expiry() -> int:
    """Seconds a presigned PUT stays valid (LOCARIA_UPLOAD_URL_EXPIRY, default an hour)."""
    return settings().upload_url_expiry


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD,
                          max_concurrency=4, use_threads=True)


class S3Storage:
    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        if not bucket:
            raise StorageError("an S3 storage URL needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    @classmethod
    def from_url(cls, url: str) -> S3Storage:
        """s3://bucket/prefix (the prefix is optional)."""
        if not url.startswith("s3://"):
            raise StorageError(f"{url!r} is not an S3 URL: write s3://bucket/prefix")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return cls(bucket, prefix)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client("s3", config=Config(signature_version="s3v4",
                                                            retries={"mode": "standard", "max_attempts": 5}))
        return self._client

    def object_key(self, key: str) -> str:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or ".." in parts:
            raise StorageError(f"invalid storage key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def key_of(self, object_key: str) -> str | None:
        """The storage key of a bucket object key, or None when it lies outside this prefix."""
        if not self.prefix:
            return object_key
        head = f"{self.prefix}/"
        return object_key[len(head):] if object_key.startswith(head) else None

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.bucket}/{self.prefix})"

    def _missing(self, exc: Exception, key: str) -> Exception:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in NOT_FOUND_CODES:
            return ObjectNotFound(f"no object {key!r} in s3://{self.bucket}/{self.prefix}")
        return StorageError(f"S3 request for {key!r} failed: {exc}")

    def open(self, key: str) -> BinaryIO:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"]
        except ClientError as exc:
            raise self._missing(exc, key) from exc
        return body  # type: ignore[no-any-return]  # a streaming, file-like body

    def put(self, key: str, source: Path | BinaryIO, content_type: str | None = None) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"ContentType": content_type} if content_type else None
        try:
            if isinstance(source, Path):
                self.client.upload_file(str(source), self.bucket, self.object_key(key), ExtraArgs=extra,
                                        Config=_transfer_config())
            else:
                self.client.upload_fileobj(source, self.bucket, self.object_key(key), ExtraArgs=extra,
                                           Config=_transfer_config())
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise StorageError(f"could not store {key!r} in s3://{self.bucket}/{self.prefix}: {exc}") from exc

    def head(self, key: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self.object_key(key)))
        except ClientError as exc:
            raise self._missing(exc, key) from exc

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self.head(key)["ContentLength"])

    def url(self, key: str, expires_in: int | None = None) -> str:
        """A presigned GET link."""
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.object_key(key)},
            ExpiresIn=expires_in or settings().download_url_expiry))

    def upload_url(self, key: str, expires_in: int | None = None, content_type: str | None = None) -> str:
        """A presigned PUT URL; a client that signs with a Content-Type must send the same header."""
        params = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if content_type:
            params["ContentType"] = content_type
        return str(self.client.generate_presigned_url("put_object", Params=params,
                                                      ExpiresIn=expires_in or upload_url_expiry()))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        from botocore.exceptions import ClientError

        suffix = "".join(PurePosixPath(key).suffixes[-2:])
        folder = Path(tempfile.mkdtemp(prefix="locaria-s3-"))
        path = folder / f"object{suffix}"
        try:
            try:
                self.client.download_file(self.bucket, self.object_key(key), str(path), Config=_transfer_config())
            except ClientError as exc:
                raise self._missing(exc, key) from exc
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def list(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.object_key(prefix) if prefix else
                                       (f"{self.prefix}/" if self.prefix else "")):
            for item in page.get("Contents", []):
                key = self.key_of(item["Key"])
                if key is not None:
                    yield key
