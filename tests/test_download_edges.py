"""file_download with tables that push each format to its edges: names a format uses itself, SRIDs that
vary by row, views, dates beyond Python's, curves and surfaces, numbers and texts a format cannot hold.
Every file is read back by GDAL (pyogrio) and by the reader its users would use."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow.parquet as pq
import pyogrio
import pytest
from psycopg import sql

from locaria_batch.jobs.file_download.request import LIMIT_MAX
from tests.test_download import completed, download, read_layers


def table(conn: Any, name: str, columns: str, *rows: str) -> None:
    """locaria_uploads.{name}, readable by the jobs' role, with `rows` as VALUES tuples."""
    ident = sql.Identifier("locaria_uploads", name)
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(ident, sql.SQL(columns)))
    if rows:
        conn.execute(sql.SQL("INSERT INTO {} VALUES {}").format(ident, sql.SQL(", ".join(rows))))
    conn.execute(sql.SQL("GRANT SELECT ON {} TO locaria_job").format(ident))


def rows_of(path: Path, layer: str | None = None) -> list[dict[str, Any]]:
    """The features GDAL reads, as dicts (geometry as WKB under '__wkb')."""
    meta, _, geometry, values = pyogrio.raw.read(path, layer=layer, datetime_as_string=True)
    columns = {name: list(v) for name, v in zip(meta["fields"], values, strict=True)}
    columns["__wkb"] = list(geometry) if geometry is not None else [None] * len(next(iter(columns.values()), []))
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def wkt(conn: Any, wkb: bytes | None) -> str | None:
    return None if wkb is None else conn.execute("SELECT ST_AsText(ST_GeomFromWKB(%s)) AS t", [wkb]).fetchone()["t"]


def unzipped(path: Path) -> Path:
    folder = path.parent / "unzipped"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
    return folder


def test_xlsx_numeric_values_are_number_cells(conn: Any) -> None:
    table(conn, "measures", "id int PRIMARY KEY, n numeric, f float8",
          "(1, 1.5, 2.25)", "(2, 12345678901234567890.125, 'NaN')", "(3, 'NaN', 'Infinity')")
    _, path = completed(conn, format="xlsx", table="measures")
    with zipfile.ZipFile(path) as archive:
        sheet = archive.read("xl/worksheets/sheet1.xml").decode()
    assert '<c r="B3"><v>12345678901234567890.125</v></c>' in sheet  # numeric's exact text
    assert "Decimal" not in sheet
    values = list(openpyxl.load_workbook(path, read_only=True).active.values)
    assert values[1] == (1, 1.5, 2.25)
    assert values[2][1] == pytest.approx(12345678901234567890.125) and values[2][2] == "nan"
    assert values[3][1:] == ("NaN", "inf")  # NaN and infinities as text, numeric's as float's
    by_id = {int(r["id"]): r for r in rows_of(path)}
    assert float(by_id[1]["n"]) == 1.5 and float(by_id[2]["n"]) == pytest.approx(1.2345678901234567e19)


def test_names_a_format_uses_itself_are_made_unique(conn: Any) -> None:
    table(conn, "clash", 'id int PRIMARY KEY, geometry text, "ID" text, fid text, geom geometry(Point, 4326)',
          "(1, 'text', 'upper', 'F-1', 'SRID=4326;POINT(1 2)')")
    for fmt in ("gpkg", "flatgeobuf", "kml", "shapefile"):
        attrs, path = completed(conn, format=fmt, table="clash")
        target = unzipped(path) / "export_points.shp" if fmt == "shapefile" else path
        [row] = rows_of(target)
        assert row["geometry_2"] == "text", (fmt, row)
        assert wkt(conn, row["__wkb"]) == "POINT(1 2)", fmt
        if fmt in ("gpkg", "flatgeobuf"):
            assert row["ID_2"] == "upper" and int(row["id"]) == 1
            assert "column 'ID' is named 'ID_2' in the" in " ".join(attrs["warnings"])
        if fmt == "gpkg":
            assert row["fid_2"] == "F-1"
            assert "column 'fid' is named 'fid_2'" in " ".join(attrs["warnings"])
    attrs, path = completed(conn, format="geoparquet", table="clash")  # (this GDAL lacks its Parquet driver)
    parquet = pq.read_table(path)
    assert parquet.column_names == ["id", "geometry_2", "ID", "fid", "geometry"]
    assert parquet.column("geometry_2").to_pylist() == ["text"]
    assert "column 'geometry' is named 'geometry_2'" in attrs["warnings"][0]
    assert [wkt(conn, g) for g in parquet.column("geometry").to_pylist()] == ["POINT(1 2)"]
    # a second geometry column, and an integer fid that repeats
    table(conn, "two_geometries", "id int PRIMARY KEY, fid int, geom geometry(Point, 4326), "
          "geometry geometry(Polygon, 27700)",
          "(1, 7, 'SRID=4326;POINT(1 2)', 'SRID=27700;POLYGON((0 0,1 0,1 1,0 0))')",
          "(2, 7, 'SRID=4326;POINT(3 4)', NULL)")
    _, path = completed(conn, format="gpkg", table="two_geometries")
    rows = rows_of(path)
    assert [(r["fid_2"], r["geometry_2"]) for r in rows] == [(7, "POLYGON((0 0,1 0,1 1,0 0))"), (7, None)]


def test_categories_differing_in_case_are_distinct_geopackage_layers(conn: Any) -> None:
    for category in ("CaseTest", "casetest"):
        conn.execute("INSERT INTO locaria_core.categories (category) VALUES (%s)", [category])
        conn.execute("INSERT INTO locaria_data.items (category_id, title, wkb_geometry) SELECT id, %s, "
                     "'SRID=4326;POINT(1 1)' FROM locaria_core.categories WHERE category = %s", [category, category])
    attrs, path = completed(conn, format="gpkg", categories=["CaseTest", "casetest"])
    layers = read_layers(path)
    assert sorted(layers) == ["CaseTest", "casetest_2"]
    assert layers["CaseTest"]["title"] == ["CaseTest"] and layers["casetest_2"]["title"] == ["casetest"]
    assert "layer 'casetest' is named 'casetest_2'" in attrs["warnings"][0]


def test_rows_of_several_srids_are_each_transformed_and_srid_0_is_refused(conn: Any) -> None:
    table(conn, "mixed", "id int PRIMARY KEY, geom geometry",
          "(1, 'SRID=4326;POINT(-0.1 51.5)')", "(2, 'SRID=27700;POINT(530000 180000)')", "(3, NULL)")
    expected = conn.execute("SELECT ST_AsText(ST_Transform('SRID=27700;POINT(530000 180000)'::geometry, 4326)) AS t"
                            ).fetchone()["t"]
    _, path = completed(conn, format="gpkg", table="mixed")
    assert [wkt(conn, r["__wkb"]) for r in rows_of(path)] == ["POINT(-0.1 51.5)", expected, None]
    _, path = completed(conn, format="geojson", table="mixed", filters={"bbox": [-0.2, 51.4, 0, 51.6]})
    features = json.loads(path.read_text())["features"]
    assert [f["properties"]["id"] for f in features] == [1, 2]
    assert features[1]["geometry"]["coordinates"] == pytest.approx([-0.12835394, 51.50399083])
    assert [int(r["id"]) for r in rows_of(path)] == [1, 2]
    table(conn, "no_srid", "id int PRIMARY KEY, geom geometry", "(1, 'POINT(530000 180000)')")
    for filters in ({}, {"bbox": [-1, 50, 1, 52]}):
        row = download(conn, format="gpkg", table="no_srid", filters=filters)
        assert row["status"] == "DOWNLOAD_ERROR"
        error = row["attributes"]["error"]
        assert error.startswith("table locaria_uploads.no_srid has geometries in column geom without a coordinate "
                                "system (SRID 0)"), error
        assert "UpdateGeometrySRID('locaria_uploads', 'no_srid', 'geom'" in error and "ST_SetSRID" in error


def test_views_export(conn: Any) -> None:
    table(conn, "base", "id int, name text, geom geometry(Point, 4326)",
          "(1, 'a', 'SRID=4326;POINT(1 1)')", "(2, 'b', NULL)", "(3, 'c', 'SRID=4326;POINT(3 3)')")
    conn.execute("CREATE VIEW locaria_uploads.base_view AS SELECT * FROM locaria_uploads.base")
    conn.execute("GRANT SELECT ON locaria_uploads.base_view TO locaria_job")
    attrs, path = completed(conn, format="csv", table="base_view")
    assert attrs["record_count"] == 3 and len(path.read_text().splitlines()) == 4
    _, path = completed(conn, format="gpkg", table="base_view")
    assert sorted(r["name"] for r in rows_of(path)) == ["a", "b", "c"]
    attrs, path = completed(conn, format="shapefile", table="base_view", filters={"limit": 2})
    folder = unzipped(path)
    assert attrs["record_count"] == 2
    shapes = rows_of(folder / "export_points.shp")
    table_rows = rows_of(folder / "export_table.dbf") if (folder / "export_table.dbf").exists() else []
    assert len(shapes) + len(table_rows) == 2


def test_dates_beyond_python_are_text_or_null_never_garbage(conn: Any) -> None:
    table(conn, "eras", "id int PRIMARY KEY, valid_to timestamptz, d date, geom geometry(Point, 4326)",
          "(1, 'infinity', '0044-03-15 BC', 'SRID=4326;POINT(0 0)')",
          "(2, '2024-01-01 00:00+00', '2024-01-01', 'SRID=4326;POINT(1 1)')",
          "(3, '12000-01-01 00:00+00', 'infinity', 'SRID=4326;POINT(2 2)')")
    _, path = completed(conn, format="xlsx", table="eras")
    values = list(openpyxl.load_workbook(path, read_only=True).active.values)
    assert values[1][1:3] == ("infinity", "0044-03-15 BC")
    assert values[2][1].year == 2024 and values[3][1:3] == ("12000-01-01 00:00:00", "infinity")
    assert rows_of(path)[0]["valid_to"] == "infinity"
    for fmt in ("gpkg", "flatgeobuf", "shapefile", "geoparquet"):
        attrs, path = completed(conn, format=fmt, table="eras")
        target = unzipped(path) / "export_points.shp" if fmt == "shapefile" else path
        found = pq.read_table(path).to_pylist() if fmt == "geoparquet" else rows_of(target)  # to_pylist: Python's
        by_id = {int(r["id"]): r for r in found}
        assert by_id[1]["valid_to"] is None and by_id[1]["d"] is None and by_id[3]["d"] is None, (fmt, by_id)
        assert by_id[3]["valid_to"] is None and str(by_id[2]["d"]).replace("/", "-").startswith("2024-01-01"), fmt
        warnings = " ".join(attrs["warnings"])
        assert "column 'valid_to': 2 date(s) outside years 1 to 9999" in warnings, (fmt, warnings)
        assert "column 'd': 2 date(s) outside years 1 to 9999" in warnings, (fmt, warnings)


def test_a_limit_beyond_bigint_is_refused(conn: Any) -> None:
    table(conn, "small", "id int PRIMARY KEY", "(1)")
    row = download(conn, format="csv", table="small", filters={"limit": str(LIMIT_MAX + 1)})
    assert row["status"] == "DOWNLOAD_ERROR"
    assert row["attributes"]["error"].startswith(f"limit {LIMIT_MAX + 1} is larger than the most a download can take")
    attrs, _ = completed(conn, format="csv", table="small", filters={"limit": LIMIT_MAX})
    assert attrs["record_count"] == 1


def test_curves_and_surfaces_become_lines_and_polygons_where_a_format_lacks_them(conn: Any) -> None:
    table(conn, "curves", "id int PRIMARY KEY, geom geometry",
          "(1, 'SRID=4326;CIRCULARSTRING(0 0,1 1,2 0)')", "(2, 'SRID=4326;POINT(5 5)')")
    for fmt in ("geojson", "geojsonseq"):
        attrs, path = completed(conn, format=fmt, table="curves")
        text = path.read_text()
        features = json.loads(text)["features"] if fmt == "geojson" else [json.loads(x) for x in text.splitlines()]
        assert [f["geometry"]["type"] for f in features] == ["LineString", "Point"]
        assert len(features[0]["geometry"]["coordinates"]) > 3
        assert attrs["warnings"] == [f"1 CIRCULARSTRING geometry was written as LINESTRING: "
                                     f"{'GeoJSON' if fmt == 'geojson' else 'GeoJSONSeq'} cannot hold CIRCULARSTRING "
                                     "(GeoPackage and FlatGeobuf can)"]
        assert [wkt(conn, r["__wkb"])[:10] for r in rows_of(path)] == ["LINESTRING", "POINT(5 5)"]
    table(conn, "surfaces", "id int PRIMARY KEY, geom geometry",
          "(1, 'SRID=4326;TRIANGLE((0 0,1 0,0 1,0 0))')",
          "(2, 'SRID=4326;POLYHEDRALSURFACE Z (((0 0 0,0 1 0,1 1 0,0 0 0)))')",
          "(3, 'SRID=4326;TIN Z (((0 0 0,0 1 0,1 1 0,0 0 0)),((0 0 0,1 0 0,1 1 0,0 0 0)))')")
    attrs, path = completed(conn, format="kml", table="surfaces")
    assert "3 POLYHEDRALSURFACE, TIN, TRIANGLE geometries were written as MULTIPOLYGON and POLYGON" \
        in attrs["warnings"][0]
    shapes = [wkt(conn, r["__wkb"]) for r in rows_of(path)]
    assert shapes == ["POLYGON((0 0,1 0,0 1,0 0))", "MULTIPOLYGON Z (((0 0 0,0 1 0,1 1 0,0 0 0)))",
                      "MULTIPOLYGON Z (((0 0 0,0 1 0,1 1 0,0 0 0)),((0 0 0,1 0 0,1 1 0,0 0 0)))"]
    assert path.read_text().count("<Polygon>") == 4


def test_xlsx_continues_on_further_sheets(conn: Any, db_url: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from locaria_batch.db import connect
    from locaria_batch.jobs.file_download import export, xlsx
    from locaria_batch.jobs.file_download.request import parse_request

    table(conn, "long", "id int PRIMARY KEY, name text", *(f"({n}, 'row {n}')" for n in range(1, 6)))
    monkeypatch.setattr(xlsx, "SHEET_ROWS", 2)  # Excel's 1,048,575 would take a minute to fill
    with connect(db_url) as exporting:
        result = export(exporting, parse_request({"format": "xlsx", "table": "long"}, 1), tmp_path, "long",
                        lambda done, total: None)
    assert result.record_count == 5
    assert result.notes == ["the 5 rows of 'long' are on 3 sheets (long, long~2, long~3): an Excel sheet holds "
                            "2 rows"]
    workbook = openpyxl.load_workbook(result.path, read_only=True)
    assert workbook.sheetnames == ["long", "long~2", "long~3"]
    sheets = [list(workbook[name].values) for name in workbook.sheetnames]
    assert [s[0] for s in sheets] == [("id", "name")] * 3
    assert [row for s in sheets for row in s[1:]] == [(n, f"row {n}") for n in range(1, 6)]
    assert [len(rows_of(result.path, name)) for name in workbook.sheetnames] == [2, 2, 1]


def test_shapefile_reports_what_dbase_cannot_hold(conn: Any) -> None:
    table(conn, "wide", "id int PRIMARY KEY, f8 float8, n numeric, long text, geom geometry(Point, 4326)",
          f"(1, 1e300, 1234567890123456789012345678.5, '{'é' * 200}', 'SRID=4326;POINT(0 0)')",
          "(2, 1e-20, 0.000000000000000000123, 'short', 'SRID=4326;POINT(1 1)')",
          "(3, 12345678901.125, 5e10, NULL, 'SRID=4326;POINT(2 2)')")
    attrs, path = completed(conn, format="shapefile", table="wide")
    assert attrs["warnings"] == [
        f"column {name!r}: 2 number(s) beyond what a dBASE field holds (magnitude 1e+22 or more, NaN or infinite, "
        "or non-zero below 1e-15) were written wrong or as 0 in the shapefile; GeoPackage or CSV keep them"
        for name in ("f8", "n")] + [
        "column 'long': 1 text(s) longer than 254 bytes were cut to 254 bytes, the most a dBASE field holds; "
        "GeoPackage or CSV keep them whole"]
    by_id = {int(r["id"]): r for r in rows_of(unzipped(path) / "export_points.shp")}
    assert by_id[3]["f8"] == pytest.approx(12345678901.125) and by_id[3]["n"] == 5e10  # those that fit, kept


def test_flatgeobuf_dimensions_and_empty_geometries(conn: Any) -> None:
    table(conn, "dims", "id int PRIMARY KEY, geom geometry",
          "(1, 'SRID=4326;POINT(1 2)')", "(2, 'SRID=4326;POINT Z (1 2 3)')", "(3, 'SRID=4326;POINT M (1 2 4)')")
    attrs, path = completed(conn, format="flatgeobuf", table="dims")
    meta, arrow = pyogrio.raw.read_arrow(path)  # pyogrio.raw.read would drop the M values
    assert [wkt(conn, g) for g in arrow.column(meta["geometry_name"] or "wkb_geometry").to_pylist()] == [
        "POINT ZM (1 2 0 0)", "POINT ZM (1 2 3 0)", "POINT ZM (1 2 0 4)"]
    assert "were given 0 for them" in attrs["warnings"][0]
    table(conn, "types_z", "id int PRIMARY KEY, geom geometry(GeometryZ, 4326)",
          "(1, 'SRID=4326;POINT Z (1 2 3)')", "(2, 'SRID=4326;LINESTRING Z (1 2 3, 5 6 7)')")
    attrs, path = completed(conn, format="flatgeobuf", table="types_z")
    assert sorted(wkt(conn, r["__wkb"]) for r in rows_of(path)) == ["LINESTRING(1 2,5 6)", "POINT(1 2)"]
    assert attrs["warnings"][0].startswith("Z values were dropped: FlatGeobuf with mixed geometry types cannot")
    table(conn, "empties", "id int PRIMARY KEY, geom geometry(Point, 4326)",
          "(1, 'SRID=4326;POINT(-0.1 51.5)')", "(2, 'SRID=4326;POINT EMPTY')", "(3, 'SRID=4326;POINT(10 10)')")
    attrs, path = completed(conn, format="flatgeobuf", table="empties")
    assert pyogrio.read_info(path)["total_bounds"] == pytest.approx((-0.1, 10, 10, 51.5))
    assert [wkt(conn, r["__wkb"]) for r in rows_of(path)] == ["POINT(-0.1 51.5)", None, "POINT(10 10)"]
    assert "1 empty geometries (such as POINT EMPTY) were written as no geometry (NULL)" in " ".join(attrs["warnings"])


def test_geojson_writes_nan_and_infinity_as_null(conn: Any) -> None:
    table(conn, "odd_numbers", "id int PRIMARY KEY, v float8, n numeric, geom geometry(Point, 4326)",
          "(1, 1.5, 2.5, 'SRID=4326;POINT(0 0)')", "(2, 'NaN', 'NaN', 'SRID=4326;POINT(1 1)')",
          "(3, 'Infinity', 1, 'SRID=4326;POINT(2 2)')")
    for fmt in ("geojson", "geojsonseq"):
        attrs, path = completed(conn, format=fmt, table="odd_numbers")
        text = path.read_text()
        features = json.loads(text)["features"] if fmt == "geojson" else [json.loads(x) for x in text.splitlines()]
        assert [(f["properties"]["v"], f["properties"]["n"]) for f in features] == [(1.5, 2.5), (None, None),
                                                                                    (None, 1)]
        assert attrs["warnings"] == ["2 feature(s) had NaN or Infinity in a number property, written as null: "
                                     "JSON has no such numbers"]
        assert pyogrio.read_info(path)["dtypes"].tolist()[1] == "float64"  # GDAL reads v as Real, not String


def test_messages_for_unreadable_tables_empty_tables_and_reversed_boxes(conn: Any) -> None:
    conn.execute("CREATE TABLE locaria_uploads.not_granted (id int PRIMARY KEY)")
    conn.execute("REVOKE ALL ON locaria_uploads.not_granted FROM locaria_job")
    table(conn, "no_columns", "")
    table(conn, "boxed", "id int PRIMARY KEY, geom geometry(Point, 4326)", "(1, 'SRID=4326;POINT(0 0)')")
    cases = [
        ({"table": "not_granted"}, "the download job's database role locaria_job cannot read table "
                                   "locaria_uploads.not_granted; let it, as the table's owner: GRANT SELECT ON "
                                   '"locaria_uploads"."not_granted" TO locaria_job'),
        ({"table": "no_columns"}, "table locaria_uploads.no_columns has no columns, so there is nothing to download"),
        ({"table": "boxed", "filters": {"bbox": "1,0,-1,2"}},
         "bbox 1,0,-1,2 has minx 1 greater than maxx -1: give minx, miny, maxx, maxy, in that order"),
        ({"table": "boxed", "filters": {"bbox": [0, 5, 1, 2]}},
         "bbox 0,5,1,2 has miny 5 greater than maxy 2: give minx, miny, maxx, maxy, in that order"),
    ]
    for attributes, message in cases:
        row = download(conn, format="csv", **attributes)
        assert row["status"] == "DOWNLOAD_ERROR", attributes
        assert row["attributes"]["error"] == message
