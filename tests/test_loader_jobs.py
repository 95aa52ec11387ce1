"""The loader through the real job path: upload -> trigger -> dispatcher -> job process -> file row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from locaria_batch.dispatch.wait import wait_for_file
from locaria_batch.files import register_upload, retry_file
from locaria_batch.storage import open_storage
from tests import loader_fixtures as fx

RESULT_KEYS = {"imported_table_name", "record_count", "tables", "processing_time", "result", "bbox",
               "geometry_type", "source_crs", "columns", "warnings", "invalid_geometries", "preview"}


def upload(conn: psycopg.Connection[Any], path: Path, **attributes: Any) -> dict[str, Any]:
    file_id = register_upload(conn, open_storage(), path, attributes=attributes)
    return wait_for_file(file_id, timeout=90)


def test_csv_upload_loads_with_full_result(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    csv = fx.write_text(tmp_path / "parks.csv", "name,easting,northing\nHyde Park,527500,180500\n"
                        "Regent's Park,528000,182700\n")
    row = upload(conn, csv, source_crs="EPSG:27700")
    attributes = row["attributes"]
    assert row["status"] == "FARGATE_PROCESSED", attributes.get("log_messages")
    assert attributes.keys() >= RESULT_KEYS
    assert attributes["imported_table_name"] == f"locaria_uploads.upload_file_{row['id']}"
    assert attributes["record_count"] == 2 and attributes["source_crs"] == "EPSG:27700"
    assert attributes["result"] == {"schema": "locaria_uploads", "layers": ["parks"], "filename": "parks.csv",
                                    "message": "OGR SUCCESS"}
    assert attributes["preview"]["features"][0]["properties"]["name"] == "Hyde Park"
    assert attributes["log_messages"][-1]["result"] == "Loading complete"


def test_bad_file_ends_in_error_and_the_next_file_still_loads(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    broken = fx.write_text(tmp_path / "broken.geojson", '{"type": "FeatureCollection", "features": [{"type": ')
    good = fx.write_text(tmp_path / "good.csv", "a,lat,lon\n1,51.5,-0.1\n")
    bad_row = upload(conn, broken)
    assert bad_row["status"] == "ERROR"
    error = bad_row["attributes"]["error"]
    assert error.startswith("broken.geojson") and "\n" not in error
    assert upload(conn, good)["status"] == "FARGATE_PROCESSED"
    tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'locaria_uploads'").fetchall()
    assert [t["tablename"] for t in tables] == ["upload_file_2"]


def test_unsafe_attributes_are_refused(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    csv = fx.write_text(tmp_path / "a.csv", "a,lat,lon\n1,51.5,-0.1\n")
    row = upload(conn, csv, table_name="x; DROP TABLE locaria_core.files")
    assert row["status"] == "ERROR" and "table_name" in row["attributes"]["error"]
    row = upload(conn, csv, s_srs="EPSG:4326 -sql 'DROP TABLE x'")
    assert row["status"] == "ERROR" and "not a known EPSG code" in row["attributes"]["error"]
    row = upload(conn, csv, ogr_parameters=["-sql", "DELETE FROM locaria_core.files"], table_name="mine")
    assert row["status"] == "FARGATE_PROCESSED"
    assert any("ogr_parameters" in w for w in row["attributes"]["warnings"])
    assert row["attributes"]["tables"] == ["locaria_uploads.mine"]


def test_reload_replaces_the_tables(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    gpkg = tmp_path / "two.gpkg"
    fx.write_layer(gpkg, "GPKG", [fx.point(0, 0)], layer="a", name=["x"], geometry_type="Point")
    fx.write_layer(gpkg, "GPKG", [fx.point(1, 1)], layer="b", name=["y"], geometry_type="Point", append=True)
    first = upload(conn, gpkg)
    assert first["attributes"]["tables"] == ["locaria_uploads.upload_file_1_a", "locaria_uploads.upload_file_1_b"]
    retry_file(conn, first["id"])
    second = wait_for_file(first["id"], timeout=90)
    assert second["status"] == "FARGATE_PROCESSED"
    tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'locaria_uploads' "
                          "ORDER BY 1").fetchall()
    assert [t["tablename"] for t in tables] == ["upload_file_1_a", "upload_file_1_b"]
