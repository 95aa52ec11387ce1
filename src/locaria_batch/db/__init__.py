"""Database layer: migrations, connections and the embedded development cluster."""

from locaria_batch.db.connect import connect, database_url, one, scalar

__all__ = ["connect", "database_url", "one", "scalar"]
