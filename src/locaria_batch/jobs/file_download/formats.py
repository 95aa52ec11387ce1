"""The formats a download can be written in: name and aliases, file extension, content type, writer."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from locaria_batch.jobs.file_download.copyout import Progress
from locaria_batch.jobs.file_download.request import DownloadRequest
from locaria_batch.jobs.file_download.selection import Selection

Writer = Callable[[psycopg.Connection[Any], Selection, DownloadRequest, Path, Progress], int]


@dataclass(frozen=True)
class Format:
    name: str
    extension: str
    content_type: str
    writer_name: str  # module:function in this package, imported on use (GDAL, openpyxl, pyproj load slowly)
    aliases: tuple[str, ...] = ()

    @property
    def writer(self) -> Writer:
        module, _, function = self.writer_name.partition(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), function)  # type: ignore[no-any-return]


FORMATS = [
    Format("csv", "csv", "text/csv", "textual:write_csv"),
    Format("xlsx", "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx:write_xlsx",
           ("excel",)),
    Format("geojson", "geojson", "application/geo+json", "textual:write_geojson", ("json",)),
    Format("geojsonseq", "geojsonl", "application/geo+json-seq", "textual:write_geojsonseq",
           ("geojsonl", "geojsons", "ndjson")),
    Format("gpkg", "gpkg", "application/geopackage+sqlite3", "ogr:write_gpkg", ("geopackage",)),
    Format("shapefile", "shp.zip", "application/zip", "ogr:write_shapefile_zip", ("shp", "esri shapefile")),
    Format("flatgeobuf", "fgb", "application/flatgeobuf", "ogr:write_flatgeobuf", ("fgb",)),
    Format("kml", "kml", "application/vnd.google-earth.kml+xml", "ogr:write_kml"),
    Format("geoparquet", "parquet", "application/vnd.apache.parquet", "parquet:write_geoparquet", ("parquet",)),
]
BY_NAME = {name: f for f in FORMATS for name in (f.name, *f.aliases)}


def find_format(name: str) -> Format | None:
    return BY_NAME.get(name.strip().lower())
