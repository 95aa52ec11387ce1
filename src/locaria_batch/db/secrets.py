"""Database credentials kept in AWS Secrets Manager (never in plain environment variables)."""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import quote

from locaria_batch.errors import ConfigurationError

CACHE_SECONDS = 300.0  # a warm Lambda re-reads the secret this often (rotation is picked up)
_cache: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


def secret_to_url(value: str) -> str:
    """The secret holds either the URL itself, a JSON object with a `url` key, or the RDS-style keys
    username/password/host/port/dbname."""
    if value.startswith(("postgres://", "postgresql://")):
        return value
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigurationError("the database secret is neither a postgresql:// URL nor JSON") from exc
    if "url" in data:
        return str(data["url"])
    try:
        return "postgresql://{user}:{password}@{host}:{port}/{db}".format(
            user=quote(data["username"], safe=""), password=quote(data["password"], safe=""),
            host=data["host"], port=data.get("port", 5432), db=data.get("dbname", "postgres"),
        )
    except KeyError as exc:
        raise ConfigurationError(
            f"the database secret lacks {exc.args[0]!r}: give url, or username, password and host") from exc


def database_url_from_secret(secret_id: str) -> str:
    with _lock:
        cached = _cache.get(secret_id)
        if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
    import boto3

    url = secret_to_url(boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])
    with _lock:
        _cache[secret_id] = (time.monotonic(), url)
    return url
