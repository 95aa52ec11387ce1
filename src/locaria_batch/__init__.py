"""Locaria Batch: rows in a PostgreSQL/PostGIS files table become batch jobs."""

__version__ = "0.1.0"
