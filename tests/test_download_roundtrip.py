"""Round trip: a loaded table, downloaded in each format the loader reads, uploads again
through file_loader with the same rows, attributes and geometries."""

from __future__ import annotations

import csv
import shutil
import zipfile
from pathlib import Path
from typing import Any

from psycopg import sql

from locaria_batch.dispatch.wait import wait_for_file
from locaria_batch.files import register_upload, request_download
from locaria_batch.storage import open_storage

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
COLUMNS = ["name", "area_ha", "opened", "royal_park", "borough_note"]
# download attributes, and the name the file is uploaded under (its extension picks the reader)
CASES = {
    "csv": ({"format": "csv", "csv_geometry": "lonlat"}, "parks.csv"),
    "geojson": ({"format": "geojson"}, "parks.geojson"),
    "geojsonseq": ({"format": "geojsonseq"}, "parks.geojsonl"),
    "gpkg": ({"format": "gpkg"}, "parks.gpkg"),
    "flatgeobuf": ({"format": "flatgeobuf"}, "parks.fgb"),
    "shapefile": ({"format": "shapefile"}, "parks.shp.zip"),
    "kml": ({"format": "kml"}, "parks.kml"),
    "geoparquet": ({"format": "geoparquet"}, "parks.parquet"),
    "csv_wkt": ({"format": "csv"}, "parks.csv"),
    "xlsx": ({"format": "xlsx"}, "parks.xlsx"),
}
TRUTHY = {"true": "true", "1": "true", "t": "true", "false": "false", "0": "false", "f": "false"}


def rows_of(conn: Any, table: str, renamed: dict[str, str]) -> dict[str, dict[str, Any]]:
    """name -> {column: value as text, geometry as hex WKB}, for comparison across column types."""
    query = sql.SQL("SELECT to_jsonb(t) - 'ogc_fid' - 'wkb_geometry' AS a, ST_AsText(t.wkb_geometry) AS g "
                    "FROM locaria_uploads.{} t").format(sql.Identifier(table))
    result = {}
    for row in conn.execute(query).fetchall():
        values = {renamed.get(k, k).lower(): v for k, v in row["a"].items()}
        clean = {c: normal(values.get(c)) for c in COLUMNS}
        result[clean["name"]] = {**clean, "geometry": row["g"]}
    return result


def normal(value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value).lower().removesuffix("t00:00:00")  # FlatGeobuf has no date type, only date-times
    return TRUTHY.get(text, text)


def test_every_loader_format_round_trips(conn: Any, tmp_path: Path) -> None:
    source = register_upload(conn, open_storage(), SAMPLES / "parks.geojson")
    assert wait_for_file(source, timeout=90)["status"] == "FARGATE_PROCESSED"
    original = rows_of(conn, "upload_file_1", {})
    assert len(original) == 20
    downloads = {fmt: request_download(conn, {"table": "upload_file_1", "name": "parks", **attrs})
                 for fmt, (attrs, _) in CASES.items()}
    uploads = {}
    for fmt, file_id in downloads.items():
        row = wait_for_file(file_id, timeout=90)
        assert row["status"] == "DOWNLOAD_COMPLETED", (fmt, row["attributes"].get("error"))
        assert row["attributes"]["record_count"] == 20
        copy = tmp_path / CASES[fmt][1]
        shutil.copyfile(row["attributes"]["url"], copy)
        uploads[fmt] = register_upload(conn, open_storage(), copy, attributes={"table_name": f"back_{fmt}"})
    for fmt, file_id in uploads.items():
        row = wait_for_file(file_id, timeout=90)
        assert row["status"] == "FARGATE_PROCESSED", (fmt, row["attributes"].get("error"))
        renamed = {}
        if fmt == "shapefile":
            with zipfile.ZipFile(tmp_path / CASES[fmt][1]) as archive:
                mapping = archive.read("parks_fields.csv").decode().splitlines()
            renamed = {short.lower(): long for short, long in csv.reader(mapping[1:])}
        back = rows_of(conn, f"back_{fmt}", renamed)
        assert back.keys() == original.keys(), fmt
        for name, values in original.items():
            assert back[name] == values, (fmt, name)
