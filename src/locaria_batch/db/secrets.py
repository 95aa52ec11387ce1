"""Database credentials kept in AWS Secrets Manager (never in plain environment variables)."""

from __future__ import annotations

import json


def database_url_from_secret(secret_id: str) -> str:
    """The secret holds either the URL itself or a JSON object with a `url` key, or the
    RDS-style keys username/password/host/port/dbname."""
    from urllib.parse import quote

    import boto3

    value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    if value.startswith("postgres"):
        return value
    data = json.loads(value)
    if "url" in data:
        return str(data["url"])
    return "postgresql://{user}:{password}@{host}:{port}/{db}".format(
        user=quote(data["username"], safe=""), password=quote(data["password"], safe=""),
        host=data["host"], port=data.get("port", 5432), db=data.get("dbname", "postgres"),
    )
