"""Database layer: migrations, connections and the embedded development cluster."""

from locaria_batch.db.connect import BIGINT_MAX, connect, database_url, one, scalar

__all__ = ["BIGINT_MAX", "connect", "database_url", "one", "scalar"]
