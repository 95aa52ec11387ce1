"""file_download end to end: real PostGIS, real job processes, every file opened again by GDAL
(pyogrio), openpyxl or Arrow."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow.parquet as pq
import pyogrio
import pytest
from psycopg.types.json import Jsonb

from locaria_batch.dispatch.wait import wait_for_file
from locaria_batch.files import request_download

HOSTILE = "Robert'); DROP TABLE locaria_data.items;--"
LONG_CATEGORY = "Trees/Shrubs: [survey] * 2024? a\\b long"  # 40 characters, every forbidden sheet character
HOSTILE_KEY = "it's \"quoted\"; DROP TABLE x;--"
LONG_KEY = "a_forty_character_attribute_key_for_dbf_"
PARKS = [  # title, category, lon, lat, attributes
    ("Hyde Park", "Parks", -0.1657, 51.5073, {"kind": "royal", "area": 142, "ratio": 1.5, "open": True,
                                              "address": {"street": "Park Lane", "no": 1}}),
    ("Victoria Park", "Parks", -0.0406, 51.5362, {"kind": "municipal", "area": 86, "ratio": 0.25, "open": False,
                                                  "address": {"street": "Grove Rd", "no": 2}}),
    ("Old Oak", HOSTILE, -0.2440, 51.5170, {HOSTILE_KEY: "x'y", LONG_KEY: "long one", "kind": "tree"}),
    ("Plane", LONG_CATEGORY, -0.1000, 51.5000, {"kind": "=1+2", "note": "line\nbreak"}),
]
POLYGON = "POLYGON((-0.2 51.4,-0.1 51.4,-0.1 51.45,-0.2 51.45,-0.2 51.4))"


def seed(conn: Any) -> None:
    for title, category, lon, lat, attributes in PARKS:
        conn.execute("INSERT INTO locaria_core.categories (category) VALUES (%s) ON CONFLICT DO NOTHING", [category])
        conn.execute(
            "INSERT INTO locaria_data.items (category_id, title, attributes, wkb_geometry, created) "
            "SELECT id, %s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326), '2024-03-01T00:00:00Z' "
            "FROM locaria_core.categories WHERE category = %s",
            [title, Jsonb(attributes), lon, lat, category])
    conn.execute("INSERT INTO locaria_core.categories (category) VALUES ('Areas'), ('Empty')")
    conn.execute(
        "INSERT INTO locaria_data.items (category_id, title, attributes, wkb_geometry, created) "
        "SELECT id, 'Common', %s, ST_GeomFromText(%s, 4326), '2024-06-01T00:00:00Z' "
        "FROM locaria_core.categories WHERE category = 'Areas'", [Jsonb({"kind": "common", "area": 7}), POLYGON])


def download(conn: Any, **attributes: Any) -> dict[str, Any]:
    file_id = request_download(conn, {"name": "export", **attributes})
    return wait_for_file(file_id, timeout=90)


def completed(conn: Any, **attributes: Any) -> tuple[dict[str, Any], Path]:
    row = download(conn, **attributes)
    assert row["status"] == "DOWNLOAD_COMPLETED", row["attributes"].get("log_messages")
    attrs = row["attributes"]
    path = Path(attrs["url"])
    assert path.is_file()
    assert attrs["fileName"] == path.name == f"{row['id']}.{EXTENSIONS[attrs['format']]}"
    assert attrs["size_bytes"] == path.stat().st_size
    assert attrs["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert attrs["expires_at"] > attrs["completed_at"]
    return attrs, path


EXTENSIONS = {"csv": "csv", "xlsx": "xlsx", "geojson": "geojson", "geojsonseq": "geojsonl", "gpkg": "gpkg",
              "shapefile": "shp.zip", "flatgeobuf": "fgb", "kml": "kml", "geoparquet": "parquet"}


def read_layers(path: Path) -> dict[str, dict[str, list[Any]]]:
    """Every layer GDAL finds, as column -> values (geometry as WKB under 'geometry')."""
    layers = {}
    for name, _ in pyogrio.list_layers(path):
        meta, _, geometry, values = pyogrio.raw.read(path, layer=name)
        columns = {f: list(v) for f, v in zip(meta["fields"], values, strict=True)}
        columns["geometry"] = list(geometry) if geometry is not None else []
        layers[name] = columns
    return layers


@pytest.mark.parametrize("fmt", ["geojson", "geojsonseq", "gpkg", "flatgeobuf", "kml", "shapefile"])
def test_vector_formats_read_back(conn: Any, fmt: str) -> None:
    seed(conn)
    attrs, path = completed(conn, format=fmt, categories=["Parks", "Areas"])
    assert attrs["record_count"] == 3
    target = path
    if fmt == "shapefile":
        with zipfile.ZipFile(path) as archive:
            members = sorted(archive.namelist())
            archive.extractall(path.parent / "unzipped")
        assert "export_points.shp" in members and "export_polygons.shp" in members
        with (path.parent / "unzipped" / "export_fields.csv").open() as mapping:
            fields = dict(csv.reader(mapping))
        assert fields["address_st"] == "address.street" and fields["shapefile_field"] == "column"
        target = path.parent / "unzipped"
    layers = read_layers(target)
    if fmt == "gpkg":
        assert sorted(layers) == ["Areas", "Parks"]
    rows = [dict(zip(cols, values, strict=True)) for cols in layers.values()
            for values in zip(*cols.values(), strict=True)]
    assert len(rows) == 3
    by_title = {r.get("title", r.get("Name")): r for r in rows}
    hyde, common = by_title["Hyde Park"], by_title["Common"]
    if fmt == "kml":  # KML keeps text only
        assert hyde["kind"] == "royal" and common["kind"] == "common"
        return
    street = "address_st" if fmt == "shapefile" else "address.street"
    assert hyde["kind"] == "royal" and int(hyde["area"]) == 142 and float(hyde["ratio"]) == 1.5
    assert hyde[street] == "Park Lane"
    assert by_title["Victoria Park"][street] == "Grove Rd" and float(by_title["Victoria Park"]["ratio"]) == 0.25
    assert common["category"] == "Areas" and int(common["area"]) == 7
    assert int(hyde["id"]) == 1


def test_csv_wkt_and_lonlat(conn: Any) -> None:
    seed(conn)
    attrs, path = completed(conn, format="csv", categories=["Parks"])
    with path.open(newline="") as exported:
        rows = list(csv.DictReader(exported))
    assert attrs["record_count"] == len(rows) == 2
    assert rows[0]["title"] == "Hyde Park" and rows[0]["wkt"] == "POINT(-0.1657 51.5073)"
    assert rows[0]["address.street"] == "Park Lane" and rows[0]["open"] == "true" and rows[1]["open"] == "false"
    attrs, path = completed(conn, format="csv", categories=["Parks"], csv_geometry="lonlat")
    with path.open(newline="") as exported:
        rows = list(csv.DictReader(exported))
    assert (rows[1]["lon"], rows[1]["lat"]) == ("-0.0406", "51.5362")
    failed = download(conn, format="csv", categories=["Areas"], csv_geometry="lonlat")
    assert failed["status"] == "DOWNLOAD_ERROR"
    assert "point geometries" in failed["attributes"]["error"]


def test_xlsx_sheets_and_flattened_attributes(conn: Any) -> None:
    seed(conn)
    attrs, path = completed(conn, format="xlsx")
    assert attrs["record_count"] == 5
    workbook = openpyxl.load_workbook(path, read_only=True)
    names = workbook.sheetnames
    assert len(names) == 4 and len(set(n.lower() for n in names)) == 4  # 'Empty' has no data: no sheet
    for name in names:
        assert len(name) <= 31 and not set(name) & set("[]:*?/\\")
    assert "Parks" in names and "Areas" in names
    parks = list(workbook["Parks"].values)
    header = list(parks[0])
    assert header[:4] == ["id", "title", "category", "created"] and header[-1] == "wkt"
    hyde = dict(zip(header, parks[1], strict=True))
    assert hyde["address.street"] == "Park Lane" and hyde["address.no"] == 1 and hyde["open"] is True
    assert hyde["wkt"] == "POINT(-0.1657 51.5073)" and len(parks) == 3
    hostile_sheet = next(n for n in names if n.startswith("Robert"))
    hostile = list(workbook[hostile_sheet].values)
    row = dict(zip(hostile[0], hostile[1], strict=True))
    assert row[HOSTILE_KEY] == "x'y" and row[LONG_KEY] == "long one" and row["category"] == HOSTILE
    long_sheet = next(n for n in names if n.startswith("Trees"))
    plane = dict(zip(*list(workbook[long_sheet].values), strict=True))
    assert plane["kind"] == "=1+2" and plane["note"] == "line\nbreak"  # text, never a formula


def test_geoparquet(conn: Any) -> None:
    seed(conn)
    attrs, path = completed(conn, format="parquet", categories=["Parks"], srid=27700)
    table = pq.read_table(path)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert geo["columns"]["geometry"]["crs"]["id"] == {"authority": "EPSG", "code": 27700}
    assert table.num_rows == attrs["record_count"] == 2
    assert table.column("title").to_pylist() == ["Hyde Park", "Victoria Park"]
    assert table.column("area").type == "int64" and table.column("open").to_pylist() == [True, False]
    wkb = table.column("geometry").to_pylist()[0]
    # PostGIS reads the geometry back: it is Hyde Park in British National Grid metres
    same = conn.execute("SELECT ST_DWithin(ST_GeomFromWKB(%s, 27700), "
                        "ST_Transform(ST_SetSRID(ST_MakePoint(-0.1657, 51.5073), 4326), 27700), 0.001) AS ok",
                        [wkb]).fetchone()
    assert same["ok"]


def test_filters(conn: Any) -> None:
    seed(conn)
    attrs, path = completed(conn, format="geojson", filters={"attributes": {"kind": ["royal", "tree"]}})
    titles = [f["properties"]["title"] for f in json.loads(path.read_text())["features"]]
    assert titles == ["Hyde Park", "Old Oak"] and attrs["record_count"] == 2
    attrs, path = completed(conn, format="geojson", filters={"attributes": {"open": False, "area": 86}})
    assert [f["properties"]["title"] for f in json.loads(path.read_text())["features"]] == ["Victoria Park"]
    attrs, path = completed(conn, format="geojson", filters={"bbox": [-0.2, 51.501, -0.11, 51.52]})
    assert [f["properties"]["title"] for f in json.loads(path.read_text())["features"]] == ["Hyde Park"]
    attrs, path = completed(conn, format="geojson", filters={"created_after": "2024-05-01"})
    assert [f["properties"]["title"] for f in json.loads(path.read_text())["features"]] == ["Common"]
    attrs, path = completed(conn, format="gpkg", filters={"created_before": "2024-05-01", "limit": 3})
    layers = read_layers(path)  # ordered by category then id: Parks' two rows, then one of the rest
    assert attrs["record_count"] == 3 and sum(len(c["title"]) for c in layers.values()) == 3
    attrs, path = completed(conn, format="shapefile", filters={"limit": 2})
    assert attrs["record_count"] == 2
    failed = download(conn, format="csv", filters={"attributes": {"colour": "red"}})
    assert failed["status"] == "DOWNLOAD_ERROR"
    assert failed["attributes"]["error"].startswith("cannot filter on 'colour': the selection has no such column")
    failed = download(conn, format="csv", filters={"bbox": "1,2,3"})
    assert "bbox must be four numbers" in failed["attributes"]["error"]


def test_srid_reprojects(conn: Any) -> None:
    seed(conn)
    _, path = completed(conn, format="gpkg", categories=["Parks"], srid=27700)
    assert pyogrio.read_info(path, layer="Parks")["crs"] == "EPSG:27700"
    _, _, geometry, _ = pyogrio.raw.read(path, layer="Parks")
    point = conn.execute("SELECT ST_X(g) AS x, ST_Y(g) AS y FROM ST_GeomFromWKB(%s) g", [geometry[0]]).fetchone()
    assert 527000 < point["x"] < 528500 and 180000 < point["y"] < 180500


def test_errors_are_one_plain_sentence(conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(conn)
    cases = [
        ({"format": "dwg"}, "unknown download format 'dwg': choose one of csv, xlsx"),
        ({"format": "csv", "categories": ["Nope"]}, "category 'Nope' does not exist"),
        ({"format": "csv", "table": "no_such_table"}, "table locaria_uploads.no_such_table does not exist"),
        ({"format": "csv", "table": "pg_catalog.pg_class"}, "tables in schema 'pg_catalog' may not be downloaded"),
        ({"format": "kml", "srid": 27700}, "KML is always WGS 84"),
        ({"format": "csv", "srid": 99999}, "srid 99999 is not a coordinate system"),
        ({"format": "csv", "filters": {"top": 5}}, "unknown filter 'top'"),
    ]
    for n, (attributes, message) in enumerate([*cases, ({"format": "csv"}, "the selection holds more than 4 rows")]):
        if n == len(cases):
            monkeypatch.setenv("LOCARIA_DOWNLOAD_MAX_ROWS", "4")
        row = download(conn, **attributes)
        assert row["status"] == "DOWNLOAD_ERROR", attributes
        error = row["attributes"]["error"]
        assert error.startswith(message), error
        assert "\n" not in error and "Traceback" not in error
    stored = Path(os.environ["LOCARIA_STORAGE"]) / "loaderDownloads"
    assert not stored.exists() or not list(stored.iterdir())  # a failed download leaves nothing behind


def test_empty_selection_gives_an_empty_file(conn: Any) -> None:
    seed(conn)
    attrs, path = completed(conn, format="gpkg", filters={"attributes": {"kind": "none of these"}})
    assert attrs["record_count"] == 0
    assert [name for name, _ in pyogrio.list_layers(path)] == ["export"]
    assert pyogrio.read_info(path, layer="export")["features"] == 0
    attrs, path = completed(conn, format="geojson", categories=["Empty"])
    assert json.loads(path.read_text())["features"] == []


def test_two_downloads_of_the_same_data_at_once(conn: Any) -> None:
    seed(conn)
    first = request_download(conn, {"format": "gpkg", "name": "one"})
    second = request_download(conn, {"format": "gpkg", "name": "two"})
    rows = [wait_for_file(first, timeout=90), wait_for_file(second, timeout=90)]
    assert [r["status"] for r in rows] == ["DOWNLOAD_COMPLETED"] * 2
    paths = [Path(r["attributes"]["url"]) for r in rows]
    assert paths[0] != paths[1]
    assert [r["attributes"]["record_count"] for r in rows] == [5, 5]
    first, second = read_layers(paths[0]), read_layers(paths[1])
    assert sorted(first) == sorted(second) == sorted(["Parks", "Areas", HOSTILE, LONG_CATEGORY])  # GPKG keeps names
    assert first[HOSTILE][HOSTILE_KEY] == ["x'y"] and first[HOSTILE][LONG_KEY] == ["long one"]


def test_rows_without_geometry(conn: Any) -> None:
    seed(conn)
    conn.execute("INSERT INTO locaria_data.items (category_id, title, attributes) "
                 "SELECT id, 'Somewhere', '{\"kind\": \"unknown\"}' FROM locaria_core.categories "
                 "WHERE category = 'Parks'")
    attrs, path = completed(conn, format="shapefile", categories=["Parks"])
    assert attrs["record_count"] == 3
    with zipfile.ZipFile(path) as archive:
        assert {"export_points.shp", "export_table.dbf"} <= set(archive.namelist())
        archive.extractall(path.parent / "unzipped")
    assert pyogrio.read_info(path.parent / "unzipped" / "export_table.dbf")["features"] == 1
    assert pyogrio.read_info(path.parent / "unzipped" / "export_points.shp")["features"] == 2
    _, path = completed(conn, format="geojson", categories=["Parks"])
    features = json.loads(path.read_text())["features"]
    assert [f["geometry"] for f in features if f["properties"]["title"] == "Somewhere"] == [None]


@pytest.mark.parametrize("fmt", ["gpkg", "geoparquet"])
def test_rows_committed_after_counting_are_not_exported(conn: Any, db_url: str, tmp_path: Path, fmt: str) -> None:
    """Rows are read on a second connection that imports the export's snapshot: a row committed
    between the count and the read is in neither, so record_count is the rows in the file."""
    from locaria_batch.db import connect
    from locaria_batch.jobs.file_download import export
    from locaria_batch.jobs.file_download.request import parse_request

    seed(conn)

    def insert_meanwhile(done: int, total: int) -> None:
        if done == 0:
            conn.execute("INSERT INTO locaria_data.items (category_id, title, wkb_geometry) "
                         "SELECT id, 'Late', ST_SetSRID(ST_MakePoint(0, 51), 4326) FROM locaria_core.categories "
                         "WHERE category = 'Parks'")

    with connect(db_url) as exporting:
        result = export(exporting, parse_request({"format": fmt, "categories": ["Parks"]}, 1), tmp_path, "late",
                        insert_meanwhile)
    assert result.record_count == 2
    titles = pq.read_table(result.path)["title"].to_pylist() if fmt == "geoparquet" else \
        read_layers(result.path)["Parks"]["title"]
    assert sorted(titles) == ["Hyde Park", "Victoria Park"]
    assert conn.execute("SELECT count(*) AS n FROM locaria_data.items WHERE title = 'Late'").fetchone()["n"] == 1


def test_server_time_zone_and_date_style_do_not_change_the_file(conn: Any) -> None:
    """Values written as text (KML has no date type) are UTC and ISO whatever the server's defaults:
    the reading connection takes the export's session settings too."""
    seed(conn)
    conn.execute("ALTER ROLE CURRENT_USER SET TimeZone = 'America/New_York'")
    conn.execute("ALTER ROLE CURRENT_USER SET DateStyle = 'SQL, DMY'")
    try:
        _, path = completed(conn, format="kml", categories=["Parks"])
    finally:
        conn.execute("ALTER ROLE CURRENT_USER RESET TimeZone")
        conn.execute("ALTER ROLE CURRENT_USER RESET DateStyle")
    created = read_layers(path)["export"]["created"]
    assert created == ["2024-03-01 00:00:00+00", "2024-03-01 00:00:00+00"], created
