"""The loader called directly against a real PostGIS: every format, every coordinate-column convention,
and hostile files.  The job path (upload -> status) is in test_loader_jobs.py."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import subprocess
import sys
import zipfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from pyogrio import write_arrow

from locaria_batch.db import connect
from locaria_batch.job import JobError
from locaria_batch.jobs.file_loader import describe, readers
from locaria_batch.jobs.file_loader.loader import LoadOptions, load_file
from locaria_batch.settings import LoaderLimits
from tests import loader_fixtures as fx

TABLE = "upload_file_9"


def load(db_url: str, path: Path, name: str | None = None, **options: Any) -> dict[str, Any]:
    with connect(db_url, autocommit=True) as setup:
        fence = fx.loader_fence(setup, 9, name or path.name)
    with connect(db_url) as conn:
        loaded = load_file(conn, path, name or path.name, LoadOptions(base_table=TABLE, **options), fence)
        conn.commit()
    return describe(loaded, name or path.name, 0.0)


def upload_tables(conn: psycopg.Connection[Any]) -> list[str]:
    return [r["tablename"] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'locaria_uploads' ORDER BY 1").fetchall()]


def load_fails(db_url: str, conn: psycopg.Connection[Any], path: Path, match: str, **options: Any) -> str:
    with pytest.raises(JobError, match=match) as failure:
        load(db_url, path, **options)
    assert upload_tables(conn) == [], "a failed load must leave nothing behind"
    message = str(failure.value)
    assert "\n" not in message
    return message


def rows(conn: psycopg.Connection[Any], query: str, table: str = TABLE) -> list[dict[str, Any]]:
    return conn.execute(query.replace("{t}", f"locaria_uploads.{table}")).fetchall()


def column_types(conn: psycopg.Connection[Any], table: str = TABLE) -> dict[str, str]:
    return {r["column_name"]: r["data_type"] for r in conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'locaria_uploads' "
        "AND table_name = %s", [table]).fetchall()}


def geometry_column(conn: psycopg.Connection[Any], table: str = TABLE) -> tuple[str, int]:
    row = conn.execute("SELECT type, srid FROM geometry_columns WHERE f_table_schema = 'locaria_uploads' "
                       "AND f_table_name = %s", [table]).fetchone()
    return row["type"], row["srid"]


# -- delimited text -----------------------------------------------------------------------------

def test_csv_lon_lat_with_types(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    csv = fx.write_text(tmp_path / "sites.csv", "Site Name,Longitude,Latitude,visitors,opened,open,code,seen,seen_utc\n"
                        "Hyde Park,-0.1657,51.5073,12,2020-01-02,true,007,2024-01-02 10:30:00,2024-01-02T10:30:00Z\n"
                        "Regent's Park,-0.1527,51.5313,,2021-03-04,false,010,2024-01-03 11:00:00,"
                        "2024-01-03T11:00:00+01:00\n")
    result = load(db_url, csv)
    assert result["record_count"] == 2
    assert result["geometry_type"] == "Point" and result["source_crs"] == "EPSG:4326"
    assert result["bbox"] == pytest.approx([-0.1657, 51.5073, -0.1527, 51.5313])
    assert {c["source"]: c["column"] for c in result["columns"]}["Site Name"] == "site_name"
    types = column_types(conn)
    assert types["visitors"] == "bigint" and types["opened"] == "date" and types["open"] == "boolean"
    assert types["code"] == "text"  # leading zeros are kept
    assert types["seen"] == "timestamp without time zone" and types["seen_utc"] == "timestamp with time zone"
    times = rows(conn, "SELECT seen::text AS a, (seen_utc AT TIME ZONE 'UTC')::text AS b FROM {t} ORDER BY ogc_fid")
    assert times == [{"a": "2024-01-02 10:30:00", "b": "2024-01-02 10:30:00"},
                     {"a": "2024-01-03 11:00:00", "b": "2024-01-03 10:00:00"}]
    got = rows(conn, "SELECT site_name, code, visitors, ST_AsText(wkb_geometry) AS g FROM {t} ORDER BY ogc_fid")
    assert got[0] == {"site_name": "Hyde Park", "code": "007", "visitors": 12, "g": "POINT(-0.1657 51.5073)"}
    assert got[1]["visitors"] is None
    assert geometry_column(conn) == ("POINT", 4326)
    assert rows(conn, "SELECT count(*) AS n FROM pg_indexes WHERE tablename = 'upload_file_9' "
                      "AND indexdef ILIKE '%gist%'")[0]["n"] == 1
    assert result["preview"]["features"][0]["properties"]["site_name"] == "Hyde Park"


def test_csv_times_of_day(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    shifts = "name,start\na,10:30:00\nb,09:05:00\nc,\nd,23:59:59\n"
    result = load(db_url, fx.write_text(tmp_path / "shifts.csv", shifts))
    assert result["warnings"] == []
    assert column_types(conn)["start"] == "time without time zone"
    assert [r["start"] for r in rows(conn, "SELECT start::text FROM {t} ORDER BY ogc_fid")] == [
        "10:30:00", "09:05:00", None, "23:59:59"]


def test_csv_x_y_in_a_national_grid_needs_crs(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    csv = fx.write_text(tmp_path / "grid.csv", "id,X,Y\n1,530000,180000\n2,531000,181000\n")
    with pytest.raises(JobError, match=r"grid.csv: cannot tell the coordinate system of X/Y .* --crs"):
        load(db_url, csv)
    assert "upload_file_9" not in upload_tables(conn)
    result = load(db_url, csv, source_srid=27700)
    assert result["source_crs"] == "EPSG:27700" and result["source_crs_assumed"] is False
    x0, y0, x1, y1 = result["bbox"]
    assert -0.2 < x0 < x1 < -0.05 and 51.4 < y0 < y1 < 51.6
    assert geometry_column(conn) == ("POINT", 4326)


def test_csv_easting_northing_with_given_crs(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    csv = fx.write_text(tmp_path / "nyc.csv", "name|Easting|Northing\nA|988000|200000\nB|990000|210000\n")
    result = load(db_url, csv, source_srid=2263)
    assert result["source_crs"] == "EPSG:2263"
    x0, y0, _x1, _y1 = result["bbox"]
    assert -74.1 < x0 < -73.9 and 40.6 < y0 < 40.9


def test_cp1252_semicolon_decimal_comma(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    csv = fx.write_text(tmp_path / "cafes.csv", "nom;lon;lat;note\nCafé Noir;2,3522;48,8566;4,5\n"
                        "Crème \u2013 brûlée;2,35;48,85;3,25\n", encoding="cp1252")
    result = load(db_url, csv)
    got = rows(conn, "SELECT nom, note, ST_X(wkb_geometry) AS x FROM {t} ORDER BY ogc_fid")
    assert got[0] == {"nom": "Café Noir", "note": 4.5, "x": pytest.approx(2.3522)}
    assert got[1]["nom"] == "Crème \u2013 brûlée"
    assert result["geometry_type"] == "Point"


def test_tsv_txt_with_wkt_hex_wkb_and_geojson_columns(db_url: str, conn: psycopg.Connection[Any],
                                                      tmp_path: Path) -> None:
    txt = fx.write_text(tmp_path / "shapes.txt", "name\twkt\nsquare\tPOLYGON((0 0,1 0,1 1,0 1,0 0))\n"
                        "line\tLINESTRING(0 0,2 2)\n")
    result = load(db_url, txt)
    assert result["geometry_type"] == "Geometry"
    assert rows(conn, "SELECT GeometryType(wkb_geometry) AS g FROM {t} ORDER BY ogc_fid")[1]["g"] == "LINESTRING"
    hexed = fx.point(1, 2).hex()
    load(db_url, fx.write_text(tmp_path / "hex.csv", f"name,geom\na,{hexed}\n"))
    assert rows(conn, "SELECT ST_AsText(wkb_geometry) AS g FROM {t}")[0]["g"] == "POINT(1 2)"
    load(db_url, fx.write_text(tmp_path / "gj.csv", 'name,shape\na,"{""type"":""Point"",""coordinates"":[3,4]}"\n'))
    assert rows(conn, "SELECT ST_AsText(wkb_geometry) AS g FROM {t}")[0]["g"] == "POINT(3 4)"


def test_wkt_column_with_null_text_and_curves(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    csv = fx.write_text(tmp_path / "dump.csv", 'id,wkt\n1,POINT(1 2)\n2,NULL\n3,\n4,"CIRCULARSTRING(0 0,1 1,2 0)"\n')
    result = load(db_url, csv)
    assert result["warnings"] == [] and result["geometry_type"] == "Geometry"
    got = rows(conn, "SELECT id, GeometryType(wkb_geometry) AS g FROM {t} ORDER BY id")
    assert [r["g"] for r in got] == ["POINT", None, None, "LINESTRING"]  # the arc straightened


def test_excels_separator_line_names_the_delimiter(db_url: str, conn: psycopg.Connection[Any],
                                                   tmp_path: Path) -> None:
    """Excel writes (and reads) a first line sep=; naming the delimiter, before the column names."""
    path = tmp_path / "export.csv"
    path.write_bytes(b"sep=;\r\nname;lat;lon;value\r\nMill;51,5;-0,12;3,5\r\nFord;51,6;-0,13\r\nWeir;51,7;-0,14;4\r\n")
    result = load(db_url, path)
    assert result["record_count"] == 2
    assert result["warnings"] == ["1 row has the wrong number of fields; left out (rows 'Ford;51,6;-0,13')"]
    assert rows(conn, "SELECT name, value, ST_X(wkb_geometry) AS x FROM {t} ORDER BY ogc_fid") == [
        {"name": "Mill", "value": 3.5, "x": -0.12}, {"name": "Weir", "value": 4.0, "x": -0.14}]


def test_csv_without_coordinates_is_a_plain_table(db_url: str, conn: psycopg.Connection[Any],
                                                  tmp_path: Path) -> None:
    result = load(db_url, fx.write_text(tmp_path / "plain.csv", "a,b\n1,x\n2,y\n"))
    assert result["geometry_type"] is None and result["bbox"] is None
    assert "wkb_geometry" not in column_types(conn)
    assert rows(conn, "SELECT count(*) AS n FROM {t}")[0]["n"] == 2


def test_csv_coordinates_in_unknown_crs_ask_for_one(db_url: str, conn: psycopg.Connection[Any],
                                                    tmp_path: Path) -> None:
    csv = fx.write_text(tmp_path / "far.csv", "x,y\n5000000,9000000\n5000100,9000100\n")
    message = load_fails(db_url, conn, csv, "cannot tell the coordinate system")
    assert "far.csv" in message and "source_crs" in message


def test_csv_a_stray_coordinate_does_not_stop_the_load(db_url: str, conn: psycopg.Connection[Any],
                                                       tmp_path: Path) -> None:
    """Most values are longitude/latitude: the odd one out (a typo) loses its geometry, with a warning
    naming its row, and does not make the file's coordinate system a question."""
    from locaria_batch.jobs.file_loader.inspect import inspect_file

    csv = fx.write_text(tmp_path / "sites.csv", "name,lat,lon\nA,51.5,-0.1\nB,,\nC,n/a,n/a\nD,95,200\nE,51.6,-0.2\n")
    inspected = inspect_file(conn, csv, "sites.csv")
    assert inspected["layers"][0]["problems"] == [] and inspected["layers"][0]["crs"] == "EPSG:4326"
    result = load(db_url, csv)
    assert result["record_count"] == 5 and result["source_crs"] == "EPSG:4326"
    assert any("out of range" in w and "(rows 4)" in w for w in result["warnings"]), result["warnings"]
    assert any("not a finite number" in w and "(rows 3)" in w for w in result["warnings"]), result["warnings"]
    assert result["bbox"] == [-0.2, 51.5, -0.1, 51.6]


def test_coordinates_that_start_after_the_first_block(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows without coordinates first: the first rows that have them tell the coordinate system."""
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 4096)
    blank = "".join(f"n{i},,\n" for i in range(2000))
    grid = fx.write_text(tmp_path / "grid.csv", "name,northing,easting\n" + blank + "a,180000,530000\n")
    load_fails(db_url, conn, grid, r"grid.csv: cannot tell the coordinate system of easting/northing .* --crs",
               batch_rows=500)
    result = load(db_url, grid, batch_rows=500, source_srid=27700)
    assert rows(conn, "SELECT ST_SRID(wkb_geometry) AS s FROM {t} WHERE name = 'a'")[0]["s"] == 4326
    result = load(db_url, fx.write_text(tmp_path / "late.csv", "name,lat,lon\n" + blank + "a,51.5,-0.1\n"),
                  batch_rows=500)
    assert result["source_crs"] == "EPSG:4326" and result["bbox"] == [-0.1, 51.5, -0.1, 51.5]
    assert rows(conn, "SELECT count(wkb_geometry) AS n FROM {t}")[0]["n"] == 1


def test_out_of_range_coordinates(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    load_fails(db_url, conn, fx.write_text(tmp_path / "bad.csv", "lon,lat\n200,100\n201,100\n"),
               "cannot tell the coordinate system")
    projected = fx.write_layer(tmp_path / "projected.geojson", "GeoJSON", [fx.point(530000, 180000)], name=["a"])
    message = load_fails(db_url, conn, projected, "out of range for longitude/latitude")
    assert "source_crs" in message
    # one stray row among good ones: reported by its row number, geometry left empty
    lines = "".join(f"{i},-0.1,51.5\n" for i in range(1, 50)) + "50,-0.1,951.5\n"
    result = load(db_url, fx.write_text(tmp_path / "stray.csv", "id,lon,lat\n" + lines))
    assert result["record_count"] == 50
    assert any("rows 50" in w for w in result["warnings"]), result["warnings"]
    assert rows(conn, "SELECT wkb_geometry IS NULL AS empty FROM {t} WHERE id = 50")[0]["empty"]


def test_bad_value_reported_by_row_without_aborting(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 4096)  # types come from the first block only
    body = "".join(f"{i},{i * 10},n{i},-0.1,51.5\n" for i in range(1, 3001))
    body = body.replace("\n2500,25000,", "\n2500,lots,")  # caught while typing the column
    body = body.replace(",n2700,", ",n\x002700,")  # a NUL the database itself refuses in text
    result = load(db_url, fx.write_text(tmp_path / "counts.csv", "id,count,name,lon,lat\n" + body),
                  batch_rows=1000)
    assert result["record_count"] == 3000
    assert any(w.startswith("row 2500, column 'count'") for w in result["warnings"]), result["warnings"]
    assert any(w.startswith("row 2700, column 'name'") for w in result["warnings"]), result["warnings"]
    assert rows(conn, "SELECT count FROM {t} WHERE id = 2500")[0]["count"] is None
    assert rows(conn, "SELECT count FROM {t} WHERE id = 2501")[0]["count"] == 25010
    assert rows(conn, "SELECT name FROM {t} WHERE id IN (2700, 2701) ORDER BY id") == [{"name": None},
                                                                                      {"name": "n2701"}]


def test_csv_codes_that_look_like_numbers_stay_text(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    csv = fx.write_text(tmp_path / "ids.csv", "id,big,neg0,hex,amount\n"
                        "1,12345678901234567890,-0123,0x1F,1E5\n2,12345678901234567891,-0456,0x20,2.5\n")
    load(db_url, csv)
    assert {k: v for k, v in column_types(conn).items() if k != "ogc_fid"} == {
        "id": "bigint", "big": "text", "neg0": "text", "hex": "text", "amount": "double precision"}
    assert rows(conn, "SELECT big, neg0, hex, amount FROM {t} ORDER BY id")[0] == {
        "big": "12345678901234567890", "neg0": "-0123", "hex": "0x1F", "amount": 100000.0}


def test_values_after_the_first_block_widen_their_column(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Types come from the first block; a later value that a wider type holds widens the column instead of
    being lost: a code with leading zeros makes text, a fraction among whole numbers double precision, a
    whole number beyond bigint text (an identifier kept exact).  Text among numbers is still a bad value."""
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 4096)
    body = "".join(f"{i},{10000 + i},{i},{9007199254740993 + i},{i}\n" for i in range(1, 3001))
    body = body.replace("\n2500,12500,", "\n2500,01234,")
    body = body.replace(",2600,9007199254743593,", ",2600.5,9007199254743593,")
    body = body.replace(",9007199254743693,", ",123456789012345678901234,")
    body = body.replace(",2800\n", ",lots\n")
    result = load(db_url, fx.write_text(tmp_path / "codes.csv", "id,postcode,amount,ref,count\n" + body),
                  batch_rows=1000)
    assert result["record_count"] == 3000
    assert [w.split(":")[0] for w in result["warnings"]] == ["row 2800, column 'count'"]
    assert {k: v for k, v in column_types(conn).items() if k != "ogc_fid"} == {
        "id": "bigint", "postcode": "text", "amount": "double precision", "ref": "text", "count": "bigint"}
    got = {r["id"]: r for r in rows(conn, "SELECT * FROM {t} WHERE id IN (1, 2500, 2600, 2700, 2800)")}
    assert [got[i]["postcode"] for i in (1, 2500)] == ["10001", "01234"]
    assert [got[i]["amount"] for i in (1, 2600)] == [1.0, 2600.5]
    assert [got[i]["ref"] for i in (1, 2700)] == ["9007199254740994", "123456789012345678901234"]
    assert got[2800]["count"] is None


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)])
def test_compressed_csv(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path, suffix: str,
                        compress: Callable[[bytes], bytes]) -> None:
    path = tmp_path / f"points.csv{suffix}"
    path.write_bytes(compress(b"name,lat,lng\na,51.5,-0.1\n"))
    assert load(db_url, path)["record_count"] == 1


# -- Excel --------------------------------------------------------------------------------------

def test_xlsx_headers_dates_and_coordinates(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    book = fx.xlsx(tmp_path / "sites.xlsx", ["Name", "Visited", "lon", "lat", "Count"],
                   [["A", fx.TODAY, -0.12, 51.5, 3], ["B", fx.TODAY, -0.13, 51.6, 4]])
    result = load(db_url, book)
    assert result["geometry_type"] == "Point" and result["record_count"] == 2
    assert result["result"]["layers"] == ["sites"] and result["tables"] == ["locaria_uploads.upload_file_9"]
    assert column_types(conn)["visited"] == "date"
    assert rows(conn, "SELECT visited, count FROM {t} ORDER BY ogc_fid")[0] == {"visited": fx.TODAY, "count": 3}


def test_xlsx_dates_before_1900_written_as_text_load_as_dates(db_url: str, conn: psycopg.Connection[Any],
                                                              tmp_path: Path) -> None:
    """Excel has no dates before 1900, so such cells are text; GDAL then reads the whole column as
    text, with its own 2024/05/17 for the real date cells.  The column still loads as dates."""
    book = fx.xlsx(tmp_path / "parks.xlsx", ["Name", "Opened", "Note", "lon", "lat"],
                   [["Hyde Park", "1637-01-01", "royal", -0.16, 51.5],
                    ["Olympic Park", fx.TODAY, "1900s", -0.01, 51.54],
                    ["Unknown", None, "2024-13-45 not a date", -0.1, 51.5]])
    load(db_url, book)
    types = column_types(conn)
    assert types["opened"] == "date" and types["note"] == "text"
    assert [r["opened"] for r in rows(conn, "SELECT opened FROM {t} ORDER BY ogc_fid")] == [
        date(1637, 1, 1), fx.TODAY, None]


# -- GeoJSON and friends ------------------------------------------------------------------------

def test_xlsx_every_sheet_and_empty_sheets_skipped(db_url: str, conn: psycopg.Connection[Any],
                                                    tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    first = book.active
    first.title = "Parks & Gardens"
    first.append(["name", "x", "y"])
    first.append(["a", 530000, 180000])
    second = book.create_sheet("Schools")
    second.append(["name", "pupils"])
    second.append(["b", 300])
    book.create_sheet("Notes")
    book.save(tmp_path / "council.xlsx")
    result = load(db_url, tmp_path / "council.xlsx", source_srid=27700)
    assert result["tables"] == ["locaria_uploads.upload_file_9_parks_gardens", "locaria_uploads.upload_file_9_schools"]
    assert "council.xlsx, layer Notes has no features and was not loaded" in result["warnings"], result["warnings"]
    assert result["layer_details"][0]["source_crs"] == "EPSG:27700"
    assert result["layer_details"][0]["bbox"][0] < 0  # the grid's eastings came out as longitudes near London


def test_geojson_nested_properties_flattened_arrays_as_json(db_url: str, conn: psycopg.Connection[Any],
                                                            tmp_path: Path) -> None:
    path = fx.write_text(tmp_path / "nested.geojson", """{"type": "FeatureCollection", "features": [
      {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]},
       "properties": {"name": "a", "address": {"street": "High St", "number": 5}, "tags": ["x", "y"]}}]}""")
    load(db_url, path)
    got = rows(conn, "SELECT name, address_street, address_number, tags FROM {t}")[0]
    assert got == {"name": "a", "address_street": "High St", "address_number": 5, "tags": ["x", "y"]}
    assert column_types(conn)["tags"] == "jsonb"


def test_geojsonseq_detected_by_content(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    features = "".join(f'{{"type": "Feature", "geometry": {{"type": "Point", "coordinates": [{i}, 1]}}, '
                       f'"properties": {{"n": {i}}}}}\n' for i in range(5))
    result = load(db_url, fx.write_text(tmp_path / "seq.json", features))
    assert result["record_count"] == 5 and result["geometry_type"] == "Point"


def test_mixed_polygon_multipolygon_promoted(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = fx.write_layer(tmp_path / "mixed.geojson", "GeoJSON",
                          [fx.polygon(fx.square(0, 0)), fx.multipolygon(fx.square(2, 2), fx.square(4, 4)), None],
                          name=["one", "two", "none"])
    result = load(db_url, path)
    assert result["geometry_type"] == "MultiPolygon"
    assert geometry_column(conn) == ("MULTIPOLYGON", 4326)
    got = rows(conn, "SELECT name, ST_NumGeometries(wkb_geometry) AS parts FROM {t} ORDER BY ogc_fid")
    assert [(r["name"], r["parts"]) for r in got] == [("one", 1), ("two", 2), ("none", None)]


def test_mixed_geometry_types_make_a_generic_column(db_url: str, conn: psycopg.Connection[Any],
                                                    tmp_path: Path) -> None:
    path = fx.write_layer(tmp_path / "any.geojson", "GeoJSON", [fx.point(0, 0), fx.polygon(fx.square(0, 0))],
                          name=["p", "q"])
    assert load(db_url, path)["geometry_type"] == "Geometry"


def test_invalid_polygons_repaired_or_reported(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = fx.write_layer(tmp_path / "bowtie.gpkg", "GPKG", [fx.polygon(fx.square(5, 5)), fx.polygon(fx.BOWTIE)],
                          name=["ok", "bowtie"], geometry_type="Polygon")
    kept = load(db_url, path, repair=False)
    assert kept["invalid_geometries"] == {"count": 1, "repaired": False, "rows": [2]}
    assert rows(conn, "SELECT count(*) AS n FROM {t} WHERE NOT ST_IsValid(wkb_geometry)")[0]["n"] == 1
    repaired = load(db_url, path)
    assert repaired["invalid_geometries"]["repaired"] is True
    assert repaired["geometry_type"] == "MultiPolygon"  # a bow tie repairs into two triangles
    assert rows(conn, "SELECT bool_and(ST_IsValid(wkb_geometry)) AS ok FROM {t}")[0]["ok"] is True


def test_null_and_empty_geometries_are_kept(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = fx.write_text(tmp_path / "holes.geojson", """{"type": "FeatureCollection", "features": [
      {"type": "Feature", "geometry": null, "properties": {"n": 1}},
      {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {"n": 2}}]}""")
    assert load(db_url, path)["record_count"] == 2
    assert rows(conn, "SELECT count(*) AS n FROM {t} WHERE wkb_geometry IS NULL")[0]["n"] == 1


# -- shapefile, GeoPackage, KML, GPX, FlatGeobuf, GeoParquet ----------------------------------

def _shapefile(folder: Path, stem: str = "places", cpg: bool = True, crs: str = "EPSG:27700") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shp = fx.write_layer(folder / f"{stem}.shp", "ESRI Shapefile", [fx.point(530000, 180000), fx.point(531000, 181000)],
                         crs=crs, geometry_type="Point", encoding="cp1252", name=["Café", "Crème"],
                         big=[123456789012345678, 2], ratio=[1.25e20, 0.5])
    if not cpg:
        (folder / f"{stem}.cpg").unlink()
    return shp


@pytest.mark.parametrize("cpg", [True, False], ids=["with-cpg", "without-cpg"])
def test_zipped_shapefile_encoding_prj_and_wide_numbers(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path,
                                                        cpg: bool) -> None:
    shp = _shapefile(tmp_path / "shp", cpg=cpg)
    archive = fx.zip_files(tmp_path / "places.zip", fx.shapefile_members(shp))
    result = load(db_url, archive)
    assert result["source_crs"] == "EPSG:27700" and geometry_column(conn) == ("POINT", 4326)
    got = rows(conn, "SELECT name, big, ratio FROM {t} ORDER BY ogc_fid")
    assert got[0] == {"name": "Café", "big": 123456789012345678, "ratio": 1.25e20}
    assert not any("numeric" in t for t in column_types(conn).values())


def test_zip_with_two_shapefiles_loads_two_tables(db_url: str, conn: psycopg.Connection[Any],
                                                  tmp_path: Path) -> None:
    one, two = _shapefile(tmp_path / "a", "roads"), _shapefile(tmp_path / "b", "rivers")
    archive = fx.zip_files(tmp_path / "both.zip", {**fx.shapefile_members(one), **{
        f"data/{k}": v for k, v in fx.shapefile_members(two).items()}, "README.txt": b"not data",
        "fields.csv": b"field,meaning\nNAME,the road's name\n"})  # describes the data: not a layer
    result = load(db_url, archive)
    assert sorted(result["tables"]) == ["locaria_uploads.upload_file_9_rivers", "locaria_uploads.upload_file_9_roads"]
    assert upload_tables(conn) == ["upload_file_9_rivers", "upload_file_9_roads"]
    # delimited text with coordinates of its own beside a shapefile is a layer of its own
    sites = fx.zip_files(tmp_path / "with_sites.zip", {**fx.shapefile_members(one),
                                                       "sites.csv": b"name,lat,lon\nschool,51.5,-0.1\n"})
    assert sorted(load(db_url, sites)["tables"]) == ["locaria_uploads.upload_file_9_roads",
                                                     "locaria_uploads.upload_file_9_sites"]


def test_geopackage_every_layer_and_projected_crs(db_url: str, conn: psycopg.Connection[Any],
                                                  tmp_path: Path) -> None:
    gpkg = tmp_path / "council.gpkg"
    fx.write_layer(gpkg, "GPKG", [fx.point(-0.1, 51.5)], layer="Bus Stops", name=["s"], geometry_type="Point")
    fx.write_layer(gpkg, "GPKG", [fx.polygon(fx.square(530000, 180000, 100))], layer="wards", crs="EPSG:27700",
                   name=["w"], append=True, geometry_type="Polygon")
    fx.write_layer(gpkg, "GPKG", [], layer="empty", name=pa.array([], pa.string()),
                   append=True, geometry_type="Point")
    only = load(db_url, gpkg, layers=["wards"])
    assert only["tables"] == ["locaria_uploads.upload_file_9"] and only["result"]["layers"] == ["wards"]
    with pytest.raises(JobError, match="has no layer named roads; its layers are Bus Stops, empty, wards"):
        load(db_url, gpkg, layers=["roads"])
    conn.execute("DROP TABLE locaria_uploads.upload_file_9")
    result = load(db_url, gpkg)
    assert result["tables"] == ["locaria_uploads.upload_file_9_bus_stops", "locaria_uploads.upload_file_9_wards"]
    assert result["result"]["layers"] == ["bus stops", "wards"]
    # about the file, not prefixed with a loaded layer's name as that layer's own warnings are
    assert "council.gpkg, layer empty has no features and was not loaded" in result["warnings"], result["warnings"]
    assert geometry_column(conn, "upload_file_9_wards") == ("POLYGON", 4326)
    wards = result["layer_details"][1]
    assert wards["source_crs"] == "EPSG:27700" and -0.2 < wards["bbox"][0] < -0.1


def test_kmz(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    kmz = fx.zip_files(tmp_path / "places.kmz", {"doc.kml": fx.KML.encode(), "files/icon.png": b"\x89PNG"})
    result = load(db_url, kmz)
    assert result["record_count"] == 2
    assert rows(conn, "SELECT name FROM {t} ORDER BY ogc_fid")[0]["name"] == "Big Ben"


def test_gpx_waypoints_routes_tracks(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    result = load(db_url, fx.gpx(tmp_path / "walk.gpx"))
    assert result["result"]["layers"] == ["waypoints", "routes", "tracks"]
    details = {d["layer"]: d for d in result["layer_details"]}
    assert details["waypoints"]["record_count"] == 2
    assert details["routes"]["geometry_type"] == "LineString"
    assert details["tracks"]["geometry_type"] == "MultiLineString"


def test_times_keep_their_utc_offsets(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """GDAL's Arrow stream drops each time's own offset; 12:00+02:00 and 10:00Z are the same instant."""
    gpx = fx.write_text(tmp_path / "meet.gpx", '<?xml version="1.0"?><gpx version="1.1" creator="t" '
                        'xmlns="http://www.topografix.com/GPX/1/1">'
                        '<wpt lat="51.5" lon="-0.1"><time>2024-05-01T12:00:00+02:00</time><name>a</name></wpt>'
                        '<wpt lat="51.6" lon="-0.2"><time>2024-05-01T10:00:00Z</time><name>b</name></wpt>'
                        '<wpt lat="51.7" lon="-0.3"><name>c</name></wpt></gpx>')
    load(db_url, gpx, layers=["waypoints"])
    assert column_types(conn)["time"] == "timestamp with time zone"
    got = rows(conn, "SELECT name, (time AT TIME ZONE 'UTC')::text AS t FROM {t} ORDER BY ogc_fid")
    assert got == [{"name": "a", "t": "2024-05-01 10:00:00"}, {"name": "b", "t": "2024-05-01 10:00:00"},
                   {"name": "c", "t": None}]
    kml = fx.write_text(tmp_path / "local.kml", '<?xml version="1.0"?><kml xmlns="http://www.opengis.net/kml/2.2">'
                        '<Document><Placemark><name>a</name><TimeStamp><when>2024-05-01T12:00:00</when></TimeStamp>'
                        '<Point><coordinates>1,2</coordinates></Point></Placemark></Document></kml>')
    load(db_url, kml)  # times without an offset stay as written
    assert column_types(conn)["timestamp"] == "timestamp without time zone"
    assert rows(conn, "SELECT timestamp::text AS t FROM {t}")[0]["t"] == "2024-05-01 12:00:00"


def test_flatgeobuf_and_geoparquet(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    fgb = fx.write_layer(tmp_path / "roads.fgb", "FlatGeobuf", [fx.linestring([(0, 0), (1, 1)])], name=["r"],
                         geometry_type="LineString")
    assert load(db_url, fgb)["geometry_type"] == "LineString"
    parquet = fx.geoparquet(tmp_path / "sites.parquet", [fx.point(530000, 180000)], crs_code=27700, name=["p"])
    result = load(db_url, parquet)
    assert result["source_crs"] == "EPSG:27700" and result["geometry_type"] == "Point"
    assert rows(conn, "SELECT name FROM {t}")[0]["name"] == "p"


def test_parquet_unsigned_ids_beyond_bigint_stay_exact(db_url: str, conn: psycopg.Connection[Any],
                                                       tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    ids = pa.array([1, 2, 2**64 - 1], pa.uint64())
    pq.write_table(pa.table({"id": ids, "n": pa.array([1, 2, 3], pa.uint32())}), tmp_path / "ids.parquet",
                   row_group_size=2)  # the big one in a later batch
    load(db_url, tmp_path / "ids.parquet", batch_rows=2)
    assert column_types(conn)["id"] == "text" and column_types(conn)["n"] == "bigint"
    assert [r["id"] for r in rows(conn, "SELECT id FROM {t} ORDER BY ogc_fid")] == ["1", "2", str(2**64 - 1)]


# -- names --------------------------------------------------------------------------------------

def test_sql_and_duplicate_column_names_made_safe(db_url: str, conn: psycopg.Connection[Any],
                                                  tmp_path: Path) -> None:
    long_name = "a very long column name that goes on and on well past the sixty-three byte limit"
    header = ['"x""; DROP TABLE locaria_core.files; --"', "select", "Name", "name", "NAME!", "ogc_fid",
              "wkb_geometry", f'"{long_name} 1"', f'"{long_name} 2"', "Straße"]
    csv = fx.write_text(tmp_path / "names.csv", ",".join(header) + "\n" + ",".join(["1"] * len(header)) + "\n")
    result = load(db_url, csv)
    loaded = [c["column"] for c in result["columns"]]
    assert loaded[:7] == ["x_drop_table_locaria_core_files", "select", "name", "name_2", "name_3", "ogc_fid_2",
                          "wkb_geometry_2"]
    assert all(len(n.encode()) <= 63 for n in loaded) and len(set(loaded)) == len(loaded)
    assert loaded[9] == "strasse"
    assert result["columns"][0]["source"] == 'x"; DROP TABLE locaria_core.files; --'
    assert conn.execute("SELECT to_regclass('locaria_core.files') AS t").fetchone()["t"] is not None


def test_5000_columns_spill_into_jsonb(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(5000))
    csv = fx.write_text(tmp_path / "wide.csv", f"{header},lon,lat\n" + ",".join(str(i) for i in range(5000))
                        + ",-0.1,51.5\n")
    result = load(db_url, csv)
    types = column_types(conn)
    assert len(types) <= 1600 and types["extra_attributes"] == "jsonb"
    assert any("extra_attributes" in w for w in result["warnings"])
    spilled = rows(conn, "SELECT extra_attributes->>'c4999' AS v, wkb_geometry IS NOT NULL AS g FROM {t}")[0]
    assert spilled == {"v": "4999", "g": True}


# -- hostile files ------------------------------------------------------------------------------

def test_truncated_geojson(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    whole = fx.write_layer(tmp_path / "whole.geojson", "GeoJSON", [fx.point(i, 1) for i in range(50)],
                           name=[str(i) for i in range(50)]).read_bytes()
    cut = fx.write_text(tmp_path / "cut.geojson", whole[: len(whole) // 2].decode())
    message = load_fails(db_url, conn, cut, "cut.geojson")
    assert "upload" in message or "export" in message


def test_zip_path_traversal_refused(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    archive = fx.zip_files(tmp_path / "evil.zip", {"../../etc/evil.csv": b"a,b\n1,2\n"})
    load_fails(db_url, conn, archive, "outside the archive")
    assert not (tmp_path.parent / "etc").exists()


def test_zip_bomb_refused(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.csv", b"a\n" + b"0" * (60 << 20))
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(buffer.getvalue())
    load_fails(db_url, conn, bomb, "zip bomb")


def test_archives_nested_too_deep_refused(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    inner = fx.zip_files(tmp_path / "inner.zip", {"a.csv": b"a,lat,lon\n1,51.5,-0.1\n"})
    middle = fx.zip_files(tmp_path / "middle.zip", {"inner.zip": inner})
    outer = fx.zip_files(tmp_path / "outer.zip", {"middle.zip": middle})
    load_fails(db_url, conn, outer, "nests archives more than 2 deep")
    assert load(db_url, middle)["record_count"] == 1


def test_text_geometry_that_is_not_geometry_is_reported(db_url: str, conn: psycopg.Connection[Any],
                                                        tmp_path: Path) -> None:
    csv = fx.write_text(tmp_path / "wkt.csv", "name,wkt\na,POINT(1 2)\nb,POINT(1 2\nc,POINT(3 4)\n")
    result = load(db_url, csv)
    assert result["geometry_type"] == "Point"
    assert any("rows 2)" in w and "'wkt'" in w for w in result["warnings"]), result["warnings"]
    assert [r["g"] for r in rows(conn, "SELECT ST_AsText(wkb_geometry) AS g FROM {t} ORDER BY ogc_fid")] == [
        "POINT(1 2)", None, "POINT(3 4)"]


def test_limits_are_enforced(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    csv = fx.write_text(tmp_path / "many.csv", "a,b,c\n" + "1,2,3\n" * 20)
    load_fails(db_url, conn, csv, "more than 10 features", limits=LoaderLimits(max_features=10))
    load_fails(db_url, conn, csv, "3 columns, over the limit of 2", limits=LoaderLimits(max_columns=2))
    load_fails(db_url, conn, csv, "over the 10-byte limit", limits=LoaderLimits(max_file_bytes=10))


def test_empty_file_and_empty_layer(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    load_fails(db_url, conn, fx.write_text(tmp_path / "nothing.csv", ""), "nothing.csv is empty")
    empty = fx.write_text(tmp_path / "none.geojson", '{"type": "FeatureCollection", "features": []}')
    load_fails(db_url, conn, empty, "no rows or features")
    load_fails(db_url, conn, fx.write_text(tmp_path / "header.csv", "a,b\n"), "no rows or features")


def test_unknown_format(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    blob = tmp_path / "picture.bin"
    blob.write_bytes(b"\x00\x01\x02\x03" * 100)
    load_fails(db_url, conn, blob, "not in a format we read")


def test_opendocument_spreadsheet(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    sheet = tmp_path / "sites.ods"
    write_arrow(pa.table({"name": ["a", "b"], "lon": [-0.1, -0.2], "lat": [51.5, 51.6]}), sheet, driver="ODS",
                layer="Sites")
    result = load(db_url, sheet)
    assert result["geometry_type"] == "Point" and result["record_count"] == 2
    assert result["result"]["layers"] == ["sites"]


def test_old_excel_gets_a_clear_answer(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    xls = tmp_path / "sites.xls"
    xls.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    load_fails(db_url, conn, xls, "save it as .xlsx")


def test_reload_replaces_the_table_atomically(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    load(db_url, fx.write_text(tmp_path / "v1.csv", "a,lon,lat\n1,0,0\n2,1,1\n"))
    conn.execute("CREATE TABLE public.keep_reading AS SELECT 1")  # an unrelated table stays untouched
    load(db_url, fx.write_text(tmp_path / "v2.csv", "b,lon,lat\nx,0,0\n"))
    assert column_types(conn)["b"] == "text" and "a" not in column_types(conn)
    assert upload_tables(conn) == [TABLE]  # no staging table left behind
    conn.execute("DROP TABLE public.keep_reading")


# -- GeoJSON's own reader (GDAL's only for what it alone reads as users expect) ---------------------

def _no_gdal(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read through GDAL")
    monkeypatch.setattr(readers, "open_gdal", refuse)


def test_geojson_without_gdal(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    _no_gdal(monkeypatch)
    features = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [530000, 180000, 12.5]},
         "properties": {"Straße": "Hauptstraße", "address": {"street": "High St", "number": 5}, "tags": ["a", "b"],
                        "huge": "x" * 200_000, "big": 123456789012345678901234567890, "count": 2**40,
                        "opened": "2020-05-06"}},
        {"type": "Feature", "geometry": None, "properties": {"Straße": None, "count": None}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [531000, 181000]}},
    ]
    text = json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {
        "name": "urn:ogc:def:crs:EPSG::27700"}}, "features": features}, ensure_ascii=False)
    path = tmp_path / "sites.geojson"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    result = load(db_url, path)
    assert result["record_count"] == 3 and result["source_crs"] == "EPSG:27700"
    assert result["geometry_type"] == "PointZ"
    assert [c["source"] for c in result["columns"]] == ["Straße", "address_street", "address_number", "tags",
                                                        "huge", "big", "count", "opened"]
    types = column_types(conn)
    assert types["big"] == "double precision" and types["count"] == "bigint" and types["opened"] == "date"
    assert types["tags"] == "jsonb"
    got = rows(conn, "SELECT strasse, address_street, tags, length(huge) AS huge, big, count, opened, "
                     "ST_Z(wkb_geometry) AS z FROM {t} ORDER BY ogc_fid")
    assert got[0] == {"strasse": "Hauptstraße", "address_street": "High St", "tags": ["a", "b"], "huge": 200_000,
                      "big": 1.2345678901234568e29, "count": 2**40, "opened": date(2020, 5, 6),
                      "z": pytest.approx(12.5, abs=1e-3)}
    assert got[1]["strasse"] is None and got[1]["z"] is None
    seq = tmp_path / "sites.geojsonl"
    seq.write_text("".join(json.dumps(f) + "\n" for f in features[:1] + features[2:]))
    assert load(db_url, seq, source_srid=27700)["record_count"] == 2


def test_geojson_mixed_geometries_and_empty_collection_without_gdal(db_url: str, conn: psycopg.Connection[Any],
                                                                    tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _no_gdal(monkeypatch)
    square = [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]
    path = fx.write_text(tmp_path / "any.geojson", json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [0.5, 0.5]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": square}}]}))
    assert load(db_url, path)["geometry_type"] == "Geometry"
    assert rows(conn, "SELECT GeometryType(wkb_geometry) AS g FROM {t} ORDER BY ogc_fid") == [
        {"g": "POINT"}, {"g": "POLYGON"}]
    conn.execute("DROP TABLE locaria_uploads.upload_file_9")
    empty = fx.write_text(tmp_path / "none.geojson", '{"type": "FeatureCollection", "features": []}')
    load_fails(db_url, conn, empty, "no rows or features")


def test_geojson_that_is_not_json_names_the_file(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    broken = fx.write_text(tmp_path / "broken.geojson", '{"type": "FeatureCollection", "features": [{"a": tru}]}')
    message = load_fails(db_url, conn, broken, "broken.geojson")
    assert "export" in message or "upload" in message


def test_text_and_geojson_loads_do_not_import_gdal(db_url: str, tmp_path: Path) -> None:
    """GDAL costs a job ~70 MB and a tenth of a second to import: only files that need it pay."""
    csv_path = tmp_path / "sites.csv"
    csv_path.write_text("name,lon,lat\nA,-1.5,53.2\n")
    geojson_path = tmp_path / "sites.geojson"
    geojson_path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "B"}, "geometry": {"type": "Point", "coordinates": [0.1, 51.5]}}]}))
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from locaria_batch.db import connect\n"
        "from locaria_batch.jobs.file_loader.loader import LoadOptions, load_file\n"
        "from tests.loader_fixtures import loader_fence\n"
        f"for path in ({str(csv_path)!r}, {str(geojson_path)!r}):\n"
        f"    with connect({db_url!r}, autocommit=True) as setup:\n"
        "        fence = loader_fence(setup, 9, Path(path).name)\n"
        f"    with connect({db_url!r}) as conn:\n"
        f"        loaded = load_file(conn, Path(path), Path(path).name, LoadOptions(base_table={TABLE!r}), fence)\n"
        "        conn.commit()\n"
        "    assert loaded.layers[0].result.record_count == 1, loaded\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyogrio', 'pyproj')))\n")
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"


def test_a_rejected_value_is_found_where_it_is_and_costs_little(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """jsonb's parser adds a context line of its own ("JSON data, line 1") before COPY's: the row and column
    must come from COPY's, and the rows are sent again from the bad value on, in pieces, not all over."""
    from psycopg import sql

    from locaria_batch.jobs.file_loader import copyin, pgbinary

    monkeypatch.setattr(copyin, "RETRY_ROWS", 64)
    rows = 1024
    bad = [3, 70, 71, 300, 301, 302, 700, rows]  # row numbers, first and last of pieces among them
    docs = ["[1, 2" if i + 1 in bad else '{"a": 1}' for i in range(rows)]
    batch = pa.record_batch([pa.array(range(1, rows + 1), pa.int32()), pa.array(docs), pa.array(range(rows),
                            pa.int32())], names=["ogc_fid", "doc", "n"])
    sent: list[int] = []

    def encode(part: pa.RecordBatch, column_types: list[str]) -> bytes:
        sent.append(part.num_rows)
        return pgbinary.encode(part.columns, column_types)

    with connect(db_url) as conn:
        conn.execute("CREATE TEMP TABLE rejected (ogc_fid integer, doc jsonb, n integer)")
        copied = copyin.copy_prepared(conn, sql.Identifier("rejected"), ["ogc_fid", "doc", "n"],
                                      iter([copyin.Prepared(batch, ["integer", "jsonb", "integer"], 1)]), encode,
                                      "f.geojson", 10)
        assert copied.rows == rows
        assert [(b.row, b.column) for b in copied.rejected] == [(row, "doc") for row in bad]
        empty = conn.execute("SELECT array_agg(ogc_fid ORDER BY ogc_fid) AS fids FROM rejected WHERE doc IS NULL")
        assert empty.fetchone()["fids"] == bad
        assert conn.execute("SELECT count(DISTINCT n) AS n FROM rejected").fetchone()["n"] == rows
    assert sum(sent) < 3 * rows  # the whole batch again for each bad value: 9 times over


def test_a_property_that_mixes_numbers_and_text_loads_as_json(db_url: str, conn: psycopg.Connection[Any],
                                                              tmp_path: Path) -> None:
    """GDAL types such a property JSON but leaves its text bare; both readers (ours, and GDAL's for a file
    with string ids) load every value, the text as a JSON string, and the geometry beside an attribute of
    its own column's name."""
    for name, ids in (("ours.geojson", False), ("gdal.geojson", True)):
        features = [{"type": "Feature", **({"id": f"s{i}"} if ids else {}),
                     "properties": {"v": v, "wkb_geometry": "a property", "ogc_fid": 7},
                     "geometry": {"type": "Point", "coordinates": [i, i]}} for i, v in enumerate([1, 1.5, "text"])]
        path = fx.write_text(tmp_path / name, json.dumps({"type": "FeatureCollection", "features": features}))
        result = load(db_url, path)
        assert result["record_count"] == 3 and result["warnings"] == [], result
        got = rows(conn, "SELECT v, jsonb_typeof(v) AS kind, wkb_geometry_2, ogc_fid_2, ST_X(wkb_geometry) AS x "
                         "FROM locaria_uploads.upload_file_9 ORDER BY ogc_fid")
        assert [(r["v"], r["kind"]) for r in got] == [(1, "number"), (1.5, "number"), ("text", "string")], name
        assert {(r["wkb_geometry_2"], r["ogc_fid_2"]) for r in got} == {("a property", 7)}
        assert [r["x"] for r in got] == [0, 1, 2]


def test_close_rings_reads_every_linear_wkb_flavour() -> None:
    import struct

    from locaria_batch.jobs.file_loader.columns import close_rings

    def ring(points: list[tuple[float, ...]], order: str = "<") -> bytes:
        return struct.pack(order + "I", len(points)) + b"".join(struct.pack(order + f"{len(p)}d", *p) for p in points)

    open_ring, closed_ring = [(0, 0), (1, 0), (1, 1)], [(0, 0), (1, 0), (1, 1), (0, 0)]
    polygon = b"\x01" + struct.pack("<II", 3, 1) + ring(open_ring)
    assert close_rings(polygon) == b"\x01" + struct.pack("<II", 3, 1) + ring(closed_ring)
    assert close_rings(b"\x01" + struct.pack("<II", 3, 1) + ring(closed_ring)) is None  # nothing to do
    big_endian = b"\x00" + struct.pack(">II", 3, 1) + ring(open_ring, ">")
    assert close_rings(big_endian) == b"\x00" + struct.pack(">II", 3, 1) + ring(closed_ring, ">")
    iso_z = b"\x01" + struct.pack("<II", 1003, 1) + ring([(0, 0, 5), (1, 0, 5), (1, 1, 5)])
    assert close_rings(iso_z) == b"\x01" + struct.pack("<II", 1003, 1) + ring(
        [(0, 0, 5), (1, 0, 5), (1, 1, 5), (0, 0, 5)])
    ewkb_srid = b"\x01" + struct.pack("<II", 0x20000003, 4326) + struct.pack("<I", 1) + ring(open_ring)
    assert close_rings(ewkb_srid) == b"\x01" + struct.pack("<II", 0x20000003, 4326) + struct.pack("<I", 1) + ring(
        closed_ring)
    multi = b"\x01" + struct.pack("<II", 6, 2) + polygon + b"\x01" + struct.pack("<II", 3, 1) + ring(closed_ring)
    fixed = close_rings(multi)
    assert fixed is not None and fixed.endswith(ring(closed_ring) + b"\x01" + struct.pack("<II", 3, 1)
                                                + ring(closed_ring))
    curve = b"\x01" + struct.pack("<II", 10, 1) + b"\x01" + struct.pack("<II", 8, 3) + b"\x00" * 48
    assert close_rings(curve) is None
    assert close_rings(polygon[:-3]) is None  # truncated: left to the database to refuse


def test_open_polygon_rings_are_closed_as_gdal_does(db_url: str, conn: psycopg.Connection[Any],
                                                    tmp_path: Path) -> None:
    square = [[0, 0], [1, 0], [1, 1], [0, 1]]
    features = [{"type": "Feature", "properties": {"n": i},
                 "geometry": {"type": "Polygon", "coordinates": [square if i != 2 else [*square, square[0]]]}}
                for i in range(1, 4)]
    geojson = fx.write_text(tmp_path / "open.geojson", json.dumps({"type": "FeatureCollection", "features": features}))
    kml = fx.write_text(tmp_path / "open.kml", '<?xml version="1.0"?><kml xmlns="http://www.opengis.net/kml/2.2">'
                        "<Document><Placemark><name>a</name><Polygon><outerBoundaryIs><LinearRing>"
                        "<coordinates>0,0 1,0 1,1</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark>"
                        "</Document></kml>")
    for path, count, rows_closed in ((geojson, 3, "rows 1, 3"), (kml, 1, "rows 1")):
        result = load(db_url, path)
        assert result["record_count"] == count
        assert [w for w in result["warnings"] if "did not end where it started" in w and rows_closed in w], result
        checks = rows(conn, "SELECT ST_IsClosed(ST_ExteriorRing(wkb_geometry)) AND ST_IsValid(wkb_geometry) AS ok "
                            "FROM locaria_uploads.upload_file_9")
        assert {r["ok"] for r in checks} == {True}


def test_rows_of_the_wrong_width_are_named_once(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """The reader cannot number rows when values may hold line breaks: a row left out is named by its text,
    counted once (the type probe reads the same rows), and a file of nothing else says so."""
    ragged = fx.write_text(tmp_path / "ragged.csv", 'name;lon;lat;note\r\n"A;x";1;2;"say ""hi"""\r\nB;3;4\r\n'
                                                    'C;5;6;"two\r\nlines"\r\n')
    result = load(db_url, ragged)
    assert result["record_count"] == 2
    assert result["warnings"] == ["1 row has the wrong number of fields; left out (rows 'B;3;4')"]
    conn.execute("DROP TABLE locaria_uploads.upload_file_9")
    unclosed = fx.write_text(tmp_path / "unclosed.csv", 'name,lon,lat\n"never closed,1,2\nB,3,4\n')
    message = load_fails(db_url, conn, unclosed, "has no rows that could be loaded")
    assert "1 row has the wrong number of fields" in message and "'\"never closed,1,2 B,3,4'" in message
    assert "quotes" in message
