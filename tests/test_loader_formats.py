"""Every geometry GDAL reads, every coordinate-system case, encodings, layers and modes, and every
export format writing what it can: files generated here, loaded through the loader's Python API
against the real PostGIS, exported through the exporter's, and read back by GDAL and by the reader
a user would use (pyarrow for Parquet, openpyxl in read-only mode for XLSX)."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg.types.json import Jsonb
from pyogrio.raw import open_arrow

from locaria_batch.db import connect
from locaria_batch.job import JobError
from locaria_batch.jobs.file_download import export
from locaria_batch.jobs.file_download.request import parse_request
from locaria_batch.jobs.file_loader.publish import LoadMode
from tests import loader_fixtures as fx

CURVES = {
    "circular": ("CIRCULARSTRING(0 0,1 1,2 0)", "LineString"),
    "compound": ("COMPOUNDCURVE(CIRCULARSTRING(0 0,1 1,2 0),(2 0,3 0))", "LineString"),
    "curvepolygon": ("CURVEPOLYGON(CIRCULARSTRING(0 0,4 0,4 4,0 4,0 0))", "Polygon"),
    "multicurve": ("MULTICURVE((0 0,5 5),CIRCULARSTRING(4 0,4 4,8 4))", "MultiLineString"),
    "multisurface": ("MULTISURFACE(CURVEPOLYGON(CIRCULARSTRING(0 0,4 0,4 4,0 4,0 0)),((10 10,14 12,11 10,10 10)))",
                     "MultiPolygon"),
    "triangle": ("TRIANGLE((0 0,0 1,1 0,0 0))", "Polygon"),
    "tin": ("TIN Z (((0 0 0,0 1 0,1 0 0,0 0 0)),((0 0 0,1 0 0,1 1 0,0 0 0)))", "MultiPolygonZ"),
    "polyhedral": ("POLYHEDRALSURFACE Z (((0 0 0,0 1 0,1 1 0,1 0 0,0 0 0)),((0 0 0,0 1 0,0 1 1,0 0 1,0 0 0)))",
                   "MultiPolygonZ"),
    "circular_zm": ("CIRCULARSTRING ZM (0 0 1 2,1 1 1 2,2 0 1 2)", "LineStringZM"),
}


def gpkg_layers(conn: psycopg.Connection[Any], path: Path, layers: dict[str, list[str]], crs: str = "EPSG:4326"
                ) -> Path:
    for index, (layer, wkts) in enumerate(layers.items()):
        fx.write_layer(path, "GPKG", [fx.wkb_of(conn, w) for w in wkts], crs=crs, layer=layer, append=index > 0,
                       name=[f"{layer}_{i}" for i in range(len(wkts))])
    return path


def column_type(conn: psycopg.Connection[Any], table: str) -> str:
    row = conn.execute("SELECT format_type(a.atttypid, a.atttypmod) AS t FROM pg_attribute a WHERE a.attrelid = "
                       "%s::regclass AND a.attname = 'wkb_geometry'", [f"locaria_uploads.{table}"]).fetchone()
    return str(row["t"])


def tables(conn: psycopg.Connection[Any]) -> list[str]:
    return [r["tablename"] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'locaria_uploads' ORDER BY 1").fetchall()]


# -- geometries ---------------------------------------------------------------------------------

def test_curves_of_every_kind_are_linearised(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = gpkg_layers(conn, tmp_path / "os_export.gpkg", {k: [w] for k, (w, _) in CURVES.items()})
    result = fx.load_as(db_url, 3, path)
    details = {d["layer"]: d for d in result["layer_details"]}
    for layer, (_wkt, straight) in CURVES.items():
        assert details[layer]["geometry_type"] == straight, layer
        assert details[layer]["linearised"], layer
        table = details[layer]["table"].split(".")[1]
        assert conn.execute(f"SELECT bool_and(NOT ST_HasArc(wkb_geometry)) AS ok FROM locaria_uploads.{table}"
                            ).fetchone()["ok"]
    assert result["linearised"]["CircularString"] == 2
    assert any("converted to straight segments" in n for n in result["notes"])
    for layer in ("tin", "polyhedral"):  # every face kept, a vertical wall too: no 2D repair merges them
        table = details[layer]["table"].split(".")[1]
        assert conn.execute(f"SELECT ST_NumGeometries(wkb_geometry) AS n, ST_ZMax(wkb_geometry) AS z "
                            f"FROM locaria_uploads.{table}").fetchone() == {"n": 2, "z": 1 if layer == "polyhedral"
                                                                            else 0}
        assert details[layer]["invalid_geometries"]["count"] == 0
    zm = conn.execute("SELECT ST_Zmflag(wkb_geometry) AS f, ST_Z(ST_StartPoint(wkb_geometry)) AS z, "
                      "ST_M(ST_StartPoint(wkb_geometry)) AS m FROM locaria_uploads.upload_file_3_circular_zm"
                      ).fetchone()
    assert zm == {"f": 3, "z": 1.0, "m": 2.0}


def test_curves_mixed_with_straight_lines_share_the_straight_type(db_url: str, conn: psycopg.Connection[Any],
                                                                  tmp_path: Path) -> None:
    path = gpkg_layers(conn, tmp_path / "roads.gpkg", {"roads": [
        "LINESTRING(0 0,1 1)", "CIRCULARSTRING(0 0,1 1,2 0)", "MULTILINESTRING((0 0,1 1),(2 2,3 3))"]})
    result = fx.load_as(db_url, 3, path)
    assert result["geometry_type"] == "MultiLineString"
    assert column_type(conn, "upload_file_3") == "geometry(MultiLineString,4326)"


def test_z_and_m_are_kept(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = gpkg_layers(conn, tmp_path / "survey.gpkg", {
        "points_z": ["POINT Z (1 2 3)", "POINT Z (2 3 4)"],
        "lines_m": ["LINESTRING M (0 0 1,1 1 2)"],
        "polygons_zm": ["POLYGON ZM ((0 0 1 5,1 0 1 5,1 1 1 5,0 0 1 5))"]})
    result = fx.load_as(db_url, 4, path)
    types = {d["layer"]: d["geometry_type"] for d in result["layer_details"]}
    assert types == {"points_z": "PointZ", "lines_m": "LineStringM", "polygons_zm": "PolygonZM"}
    assert column_type(conn, "upload_file_4_points_z") == "geometry(PointZ,4326)"
    assert conn.execute("SELECT ST_AsText(wkb_geometry) AS g FROM locaria_uploads.upload_file_4_lines_m"
                        ).fetchone()["g"] == "LINESTRING M (0 0 1,1 1 2)"


def test_2d_and_3d_values_in_one_layer_are_brought_to_3d(db_url: str, conn: psycopg.Connection[Any],
                                                          tmp_path: Path) -> None:
    wkts = ["POINT(1 2)"] * 3 + ["POINT Z (1 2 3)"]
    path = fx.write_layer(tmp_path / "mixed.gpkg", "GPKG", [fx.wkb_of(conn, w) for w in wkts],
                          name=["a", "b", "c", "d"])
    result = fx.load_as(db_url, 5, path, batch_rows=2)  # the Z value comes in a later batch
    assert result["geometry_type"] == "PointZ"
    assert any("given Z = 0" in w for w in result["warnings"])
    assert [r["z"] for r in conn.execute("SELECT ST_Z(wkb_geometry) AS z FROM locaria_uploads.upload_file_5 "
                                         "ORDER BY ogc_fid").fetchall()] == [0, 0, 0, 3]


def test_wkb_column_without_geo_metadata_loads_as_geometry(db_url: str, conn: psycopg.Connection[Any],
                                                           tmp_path: Path) -> None:
    table = pa.table({"name": ["a", "b"], "geom": pa.array([fx.point(-0.1, 51.5), fx.point(-0.2, 51.6)])})
    pq.write_table(table, tmp_path / "plain.parquet")
    result = fx.load_as(db_url, 6, tmp_path / "plain.parquet")
    assert result["geometry_type"] == "Point" and result["source_crs_assumed"] is True
    assert conn.execute("SELECT ST_AsText(wkb_geometry) AS g FROM locaria_uploads.upload_file_6 ORDER BY ogc_fid"
                        ).fetchone()["g"] == "POINT(-0.1 51.5)"
    assert "geom" not in [c["column"] for c in result["columns"]]


# -- coordinate systems --------------------------------------------------------------------------

def _shapefile_without_prj(folder: Path, geometries: list[bytes], stem: str = "sites") -> Path:
    folder.mkdir()
    shp = fx.write_layer(folder / f"{stem}.shp", "ESRI Shapefile", geometries, name=[str(i) for i in
                                                                                   range(len(geometries))])
    (folder / f"{stem}.prj").unlink()
    return fx.zip_files(folder.parent / f"{stem}.zip", fx.shapefile_members(shp))


def test_no_crs_but_lon_lat_extent_is_assumed_wgs84(db_url: str, conn: psycopg.Connection[Any],
                                                     tmp_path: Path) -> None:
    archive = _shapefile_without_prj(tmp_path / "shp", [fx.polygon(fx.square(-0.2, 51.4, 0.1))])
    result = fx.load_as(db_url, 7, archive)
    assert result["source_crs"] == "EPSG:4326" and result["source_crs_assumed"] is True
    assert any("EPSG:4326 was assumed" in n and "--crs" in n for n in result["notes"])


def test_no_crs_and_projected_extent_asks_for_crs(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    archive = _shapefile_without_prj(tmp_path / "shp", [fx.polygon(fx.square(530000, 180000, 100))])
    with pytest.raises(JobError, match=r"does not say which coordinate system.*extent \(530000, 180000, 530100, "
                                       r"180100\).*--crs") as failure:
        fx.load_as(db_url, 7, archive)
    assert "sites.zip/sites.shp" in str(failure.value)
    assert tables(conn) == []
    given = fx.load_as(db_url, 7, archive, source_srid=27700)
    assert given["source_crs"] == "EPSG:27700" and given["source_crs_assumed"] is False


LOCAL_LAMBERT = "+proj=lcc +lat_1=45 +lat_2=50 +lat_0=47 +lon_0=3 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"


def test_a_crs_without_an_epsg_code_is_transformed_from_its_own_definition(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """A local projection (no EPSG code matches it) loads as QGIS and ogr2ogr load it: reprojected from
    the .prj's definition."""
    folder = tmp_path / "local"
    folder.mkdir()
    shp = fx.write_layer(folder / "survey.shp", "ESRI Shapefile", [fx.point(1000, 2000), fx.point(-3000, 500)],
                         crs=LOCAL_LAMBERT, name=["a", "b"], geometry_type="Point")
    archive = fx.zip_files(tmp_path / "survey.zip", fx.shapefile_members(shp))
    result = fx.load_as(db_url, 10, archive)
    assert result["source_crs"].startswith("PROJCS[") and result["source_crs_assumed"] is False
    assert result["srid"] == 4326
    first = conn.execute("SELECT ST_X(wkb_geometry) AS x, ST_Y(wkb_geometry) AS y, ST_SRID(wkb_geometry) AS srid "
                         "FROM locaria_uploads.upload_file_10 WHERE name = 'a'").fetchone()
    # what `gdaltransform -s_srs LOCAL_LAMBERT -t_srs "+proj=longlat +datum=WGS84"` gives for 1000 2000
    assert first["srid"] == 4326
    assert abs(first["x"] - 3.013164618884484) < 1e-7 and abs(first["y"] - 47.01800591638197) < 1e-7, first


def test_x_y_and_easting_northing_columns_any_case(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    lonlat = fx.load_as(db_url, 8, fx.write_text(tmp_path / "a.csv", "name,X,Y\na,-0.1,51.5\n"))
    assert lonlat["source_crs"] == "EPSG:4326" and lonlat["source_crs_assumed"] is True
    projected = fx.write_text(tmp_path / "b.csv", "name,EASTING,NORTHING\na,5000000,9000000\n")
    with pytest.raises(JobError, match=r"not longitude/latitude.*--crs"):
        fx.load_as(db_url, 8, projected)
    given = fx.load_as(db_url, 8, projected, source_srid=3857)
    assert given["source_crs"] == "EPSG:3857" and given["source_crs_assumed"] is False


def test_target_crs(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    result = fx.load_as(db_url, 9, fx.write_text(tmp_path / "p.csv", "lon,lat\n-0.1,51.5\n"), target_srid=27700)
    assert column_type(conn, "upload_file_9") == "geometry(Point,27700)"
    assert result["srid"] == 27700


# -- encodings -----------------------------------------------------------------------------------

RUSSIAN = ("id,city,note\n1,Москва,столица России\n2,Санкт-Петербург,северная столица\n3,Новосибирск,Сибирь\n"
           "4,Екатеринбург,Урал\n5,Казань,Татарстан\n")
FRENCH = "id,nom,ville\n1,Café de la Gare,Nîmes\n2,Crème brûlée,Besançon\n3,Hôtel Élysée,Orléans\n"


@pytest.mark.parametrize(("text", "encoding", "expected", "guessed"), [  # Python's codec names
    (RUSSIAN, "cp1251", "cp1251", True),
    (FRENCH, "cp1252", "cp1252", True),
    (RUSSIAN, "utf-16", "utf-16", False),  # with its byte-order mark
    (RUSSIAN, "utf-16-le", "utf-16-le", True),  # without one
    (RUSSIAN, "utf-8", "utf-8", False),
], ids=["cp1251", "cp1252", "utf-16-bom", "utf-16-le", "utf-8"])
def test_encodings_are_detected(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path, text: str, encoding: str,
                                expected: str, guessed: bool) -> None:
    result = fx.load_as(db_url, 10, fx.write_text(tmp_path / "cities.csv", text, encoding=encoding))
    assert result["encoding"] == expected and result["encoding_guessed"] is guessed
    names = [r for r in conn.execute("SELECT * FROM locaria_uploads.upload_file_10 ORDER BY ogc_fid").fetchall()]
    original = list(csv.reader(text.splitlines()))[1]
    assert list(names[0].values())[1:3] == [int(original[0]), original[1]]
    assert any("guessed" in n for n in result["notes"]) is guessed


def test_encoding_given_overrides_detection(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = fx.write_text(tmp_path / "koi.csv", RUSSIAN, encoding="koi8_r")
    result = fx.load_as(db_url, 11, path, encoding="koi8_r")
    assert result["encoding"] == "koi8-r" and result["encoding_guessed"] is False
    assert conn.execute("SELECT city FROM locaria_uploads.upload_file_11 WHERE id = 1").fetchone()["city"] == "Москва"


def test_shapefile_without_cpg_in_cp1251(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    folder = tmp_path / "shp"
    folder.mkdir()
    shp = fx.write_layer(folder / "towns.shp", "ESRI Shapefile", [fx.point(37.6, 55.7)] * 5, encoding="cp1251",
                         name=["Москва", "Санкт-Петербург", "Новосибирск", "Екатеринбург", "Казань"],
                         geometry_type="Point")
    (folder / "towns.cpg").unlink()
    result = fx.load_as(db_url, 12, fx.zip_files(tmp_path / "towns.zip", fx.shapefile_members(shp)))
    assert result["encoding"] == "cp1251" and result["encoding_guessed"] is True
    assert conn.execute("SELECT name FROM locaria_uploads.upload_file_12 ORDER BY ogc_fid").fetchone()["name"] \
        == "Москва"


@pytest.mark.parametrize("suffix", [".tab", ".mif"])
def test_mapinfo_table_whose_charset_is_neutral(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path,
                                                suffix: str) -> None:
    """A table saying '!charset Neutral' (or 'Charset "Neutral"') over cp1251 text: GDAL hands its bytes over
    unread, so they are detected as a text file's would be; a table naming its charset is left to GDAL."""
    from pyogrio.raw import write_arrow

    towns = ["Москва", "Санкт-Петербург", "Новосибирск", "Екатеринбург", "Казань"]
    for index, charset in enumerate(("Neutral", "WindowsCyrillic")):
        folder = tmp_path / charset
        folder.mkdir()
        table = folder / f"towns{suffix}"
        write_arrow(fx.arrow_layer([fx.point(37.6, 55.7)] * 5, name=towns), table, driver="MapInfo File",
                    geometry_name="geometry", geometry_type="Point", crs="EPSG:4326",
                    layer_options={"ENCODING": "CP1251"})
        definition = table.read_bytes()
        assert b"WindowsCyrillic" in definition
        table.write_bytes(definition.replace(b"WindowsCyrillic", charset.encode()))
        upload = fx.zip_files(tmp_path / f"{charset}.zip", {p.name: p for p in folder.iterdir()})
        result = fx.load_as(db_url, 60 + index, upload)
        assert (result.get("encoding"), result.get("encoding_guessed", False)) == (
            ("cp1251", True) if charset == "Neutral" else (None, False)), charset
        assert [r["name"] for r in conn.execute(f"SELECT name FROM locaria_uploads.upload_file_{60 + index} "
                                                "ORDER BY ogc_fid").fetchall()] == towns, charset
    given = fx.load_as(db_url, 62, tmp_path / "Neutral.zip", encoding="koi8_r")  # the user's word wins
    assert (given["encoding"], given["encoding_guessed"]) == ("koi8_r", False)


# -- layers, modes and ownership -------------------------------------------------------------------

def test_layers_chosen(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = gpkg_layers(conn, tmp_path / "city.gpkg", {"roads": ["LINESTRING(0 0,1 1)"], "parks": ["POINT(1 1)"],
                                                     "wards": ["POINT(2 2)"]})
    result = fx.load_as(db_url, 13, path, layers=["parks", "wards"])
    assert result["tables"] == ["locaria_uploads.upload_file_13_parks", "locaria_uploads.upload_file_13_wards"]


def test_gml_loads_every_feature_type_and_writes_nothing_beside_it(db_url: str, conn: psycopg.Connection[Any],
                                                                    tmp_path: Path) -> None:
    folder = tmp_path / "upload"
    folder.mkdir()
    members = "".join(
        f'<gml:featureMember><ogr:{kind} fid="{kind}.{i}"><ogr:geometryProperty>{shape}</ogr:geometryProperty>'
        f"<ogr:name>{kind} {i}</ogr:name></ogr:{kind}></gml:featureMember>"
        for kind, shape in (
            ("site", '<gml:Point srsName="EPSG:27700"><gml:coordinates>530000,180000</gml:coordinates></gml:Point>'),
            ("road", '<gml:LineString srsName="EPSG:27700"><gml:coordinates>530000,180000 530100,180100'
                     "</gml:coordinates></gml:LineString>"))
        for i in range(3))
    path = fx.write_text(folder / "survey.gml", '<?xml version="1.0" encoding="utf-8"?><ogr:FeatureCollection '
                         'xmlns:ogr="http://ogr.maptools.org/" xmlns:gml="http://www.opengis.net/gml" '
                         'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                         'xsi:schemaLocation="http://ogr.maptools.org/ http://127.0.0.1:9/never.xsd">'
                         f"{members}</ogr:FeatureCollection>")
    result = fx.load_as(db_url, 14, path)
    assert result["tables"] == ["locaria_uploads.upload_file_14_site", "locaria_uploads.upload_file_14_road"]
    sites = conn.execute("SELECT name, ST_X(wkb_geometry) AS x, ST_SRID(wkb_geometry) AS srid "
                         "FROM locaria_uploads.upload_file_14_site ORDER BY name").fetchall()
    assert [row["name"] for row in sites] == ["site 0", "site 1", "site 2"]
    assert all(row["srid"] == 4326 and -0.2 < row["x"] < -0.1 for row in sites), sites
    assert [child.name for child in folder.iterdir()] == ["survey.gml"]  # no .gfs or schema written beside it


def test_a_table_of_another_file_is_refused_without_a_mode(db_url: str, conn: psycopg.Connection[Any],
                                                           tmp_path: Path) -> None:
    first = fx.write_text(tmp_path / "parks.csv", "name,lon,lat\n" + "".join(f"p{i},0,{i}\n" for i in range(20)))
    fx.load_as(db_url, 1, first)
    other = fx.write_text(tmp_path / "x.csv", "name,lon,lat\nA,-0.1,51.5\n")
    with pytest.raises(JobError, match=r"upload_file_1 belongs to parks.csv \(file 1\); load with mode overwrite"):
        fx.load_as(db_url, 2, other, base_table="upload_file_1")
    with pytest.raises(JobError, match=r"already exists .*parks.csv"):
        fx.load_as(db_url, 2, other, base_table="upload_file_1", mode=LoadMode.fail)
    assert conn.execute("SELECT count(*) AS n FROM locaria_uploads.upload_file_1").fetchone()["n"] == 20
    # a name kept for another file's uploads cannot be taken before that file loads
    with pytest.raises(JobError, match="kept for the uploads of file 77"):
        fx.load_as(db_url, 2, other, base_table="upload_file_77")
    # a table Locaria did not load is never replaced
    conn.execute("CREATE TABLE locaria_uploads.hand_made AS SELECT 1 AS a")
    with pytest.raises(JobError, match="hand_made exists but was not loaded by Locaria"):
        fx.load_as(db_url, 2, other, base_table="hand_made", mode=LoadMode.overwrite)
    assert tables(conn) == ["hand_made", "upload_file_1"]
    # asked for: the table is replaced and now belongs to file 2
    fx.load_as(db_url, 2, other, base_table="upload_file_1", mode=LoadMode.overwrite)
    assert conn.execute("SELECT count(*) AS n FROM locaria_uploads.upload_file_1").fetchone()["n"] == 1
    assert conn.execute("SELECT file_id FROM locaria_core.upload_tables WHERE table_name = 'upload_file_1'"
                        ).fetchone()["file_id"] == 2


def test_long_table_names_sharing_a_prefix_get_their_own_index_names(db_url: str, conn: psycopg.Connection[Any],
                                                                     tmp_path: Path) -> None:
    points = fx.write_text(tmp_path / "p.csv", "name,lon,lat\na,-0.1,51.5\n")
    names = [f"planning_applications_greater_london_authority_2023_quarter_{q}" for q in (1, 2)]
    for file_id, name in enumerate(names, start=1):
        fx.load_as(db_url, file_id, points, base_table=name)
    indexes = conn.execute("SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'locaria_uploads' "
                           "ORDER BY 1, 2").fetchall()
    assert [i["tablename"] for i in indexes] == [names[0], names[0], names[1], names[1]]
    assert len({i["indexname"] for i in indexes}) == 4 and all(len(i["indexname"]) <= 63 for i in indexes)


def test_append_checks_the_columns(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    fx.load_as(db_url, 1, fx.write_text(tmp_path / "a.csv", "name,count,lon,lat\na,1,0,0\nb,2,1,1\n"))
    result = fx.load_as(db_url, 2, fx.write_text(tmp_path / "b.csv", "name,count,lon,lat\nc,3,2,2\n"),
                        base_table="upload_file_1", mode=LoadMode.append)
    assert result["appended"] == ["upload_file_1"]
    rows = conn.execute("SELECT ogc_fid, name FROM locaria_uploads.upload_file_1 ORDER BY ogc_fid").fetchall()
    assert rows == [{"ogc_fid": 1, "name": "a"}, {"ogc_fid": 2, "name": "b"}, {"ogc_fid": 3, "name": "c"}]
    mismatched = fx.write_text(tmp_path / "c.csv", "name,count,colour,lon,lat\nd,many,red,2,2\n")
    with pytest.raises(JobError, match=r"columns do not match .*the table has no column colour; count is text in "
                                       r"the file, bigint in the table"):
        fx.load_as(db_url, 2, mismatched, base_table="upload_file_1", mode=LoadMode.append)
    assert conn.execute("SELECT count(*) AS n FROM locaria_uploads.upload_file_1").fetchone()["n"] == 3
    # single parts go into a Multi column of their kind
    fx.load_as(db_url, 3, gpkg_layers(conn, tmp_path / "m.gpkg", {"m": ["MULTIPOINT((0 0),(1 1))"]}))
    fx.load_as(db_url, 4, gpkg_layers(conn, tmp_path / "s.gpkg", {"s": ["POINT(5 5)"]}), base_table="upload_file_3",
               mode=LoadMode.append)
    assert conn.execute("SELECT count(*) AS n FROM locaria_uploads.upload_file_3").fetchone()["n"] == 2


def test_append_takes_values_the_table_holds(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """Whole numbers go into a double precision column, dates into a timestamp one, and a column left empty
    this time into whatever the table has; a fraction into a whole-number column is still refused."""
    january = "name,val,day,lat,lon\na,1.5,2024-01-01 10:00,51.5,0.1\n"
    fx.load_as(db_url, 1, fx.write_text(tmp_path / "jan.csv", january))
    for file_id, body in ((2, "b,2,2024-02-01,52,1\n"), (3, "c,,,52.5,1.5\n")):
        month = fx.write_text(tmp_path / f"m{file_id}.csv", "name,val,day,lat,lon\n" + body)
        result = fx.load_as(db_url, file_id, month, base_table="upload_file_1", mode=LoadMode.append)
        assert result["appended"] == ["upload_file_1"]
    got = conn.execute("SELECT name, val, day::text AS day, lat FROM locaria_uploads.upload_file_1 "
                       "ORDER BY ogc_fid").fetchall()
    assert got == [{"name": "a", "val": 1.5, "day": "2024-01-01 10:00:00", "lat": 51.5},
                   {"name": "b", "val": 2.0, "day": "2024-02-01 00:00:00", "lat": 52.0},
                   {"name": "c", "val": None, "day": None, "lat": 52.5}]
    fx.load_as(db_url, 4, fx.write_text(tmp_path / "n.csv", "name,n\na,1\n"), base_table="counts")
    with pytest.raises(JobError, match=r"n is double precision in the file, bigint in the table"):
        fx.load_as(db_url, 5, fx.write_text(tmp_path / "f.csv", "name,n\nb,1.5\n"), base_table="counts",
                   mode=LoadMode.append)


def test_a_reload_replaces_the_files_own_tables_and_drops_the_ones_it_no_longer_makes(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    two = gpkg_layers(conn, tmp_path / "two.gpkg", {"a": ["POINT(0 0)"], "b": ["POINT(1 1)"]})
    fx.load_as(db_url, 5, two)
    fx.load_as(db_url, 6, fx.write_text(tmp_path / "other.csv", "n,lon,lat\n1,0,0\n"))
    assert tables(conn) == ["upload_file_5_a", "upload_file_5_b", "upload_file_6"]
    fx.load_as(db_url, 5, fx.write_text(tmp_path / "one.csv", "n,lon,lat\n1,0,0\n"))
    assert tables(conn) == ["upload_file_5", "upload_file_6"]
    with pytest.raises(JobError, match="already exists"):
        fx.load_as(db_url, 5, fx.write_text(tmp_path / "again.csv", "n,lon,lat\n1,0,0\n"), mode=LoadMode.fail)


def test_published_tables_belong_to_the_functions_owner_and_a_job_role_can_publish(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """The job role creates its staging table and publishes through the function; it owns nothing
    published, so it cannot drop another file's table directly."""
    fx.load_as(db_url, 1, fx.write_text(tmp_path / "a.csv", "n,lon,lat\n1,0,0\n"))
    fence = fx.loader_fence(conn, 2)
    staging = f"_lb_{fence.job_id}_{fence.attempt}_0"
    with connect(db_url) as job:
        job.execute("SET ROLE locaria_job")  # the grants a job gets (grant_roles), nothing more
        job.execute(f"CREATE TABLE locaria_uploads.{staging} AS SELECT 1 AS ogc_fid")
        job.execute("SELECT locaria_core.job_publish_tables(%s, %s, %s, NULL)",
                    [fence.job_id, fence.token, Jsonb([{"target": "upload_file_2", "staging": staging}])])
        job.commit()
        assert job.execute("SELECT count(*) AS n FROM locaria_uploads.upload_file_2").fetchone()["n"] == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            job.execute("DROP TABLE locaria_uploads.upload_file_1")
        job.rollback()
        job.execute("SET ROLE locaria_job")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            job.execute("DROP TABLE locaria_uploads.upload_file_2")
    owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'upload_file_2'").fetchone()
    assert owner["tableowner"] == conn.execute("SELECT current_user AS u").fetchone()["u"]


def test_a_stale_attempt_publishes_nothing(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    fence = fx.loader_fence(conn, 2)
    conn.execute("UPDATE locaria_core.jobs SET state = 'failed' WHERE id = %s", [fence.job_id])
    with pytest.raises(psycopg.Error, match="no longer running"):
        conn.execute("SELECT locaria_core.job_publish_tables(%s, %s, %s, NULL)",
                     [fence.job_id, fence.token, Jsonb([{"target": "upload_file_2", "staging": "x"}])])


# -- one type whatever the format, labels ------------------------------------------------------------

def test_integer_columns_have_one_width_whatever_the_format(db_url: str, conn: psycopg.Connection[Any],
                                                            tmp_path: Path) -> None:
    fx.load_as(db_url, 1, fx.write_text(tmp_path / "a.csv", "count,lon,lat\n3,0,0\n"))
    fx.load_as(db_url, 2, fx.write_layer(tmp_path / "b.geojson", "GeoJSON", [fx.point(0, 0)], count=[3]))
    fx.load_as(db_url, 3, fx.write_layer(tmp_path / "c.gpkg", "GPKG", [fx.point(0, 0)],
                                         count=pa.array([3], pa.int16())))
    kinds = {r["table_name"]: r["data_type"] for r in conn.execute(
        "SELECT table_name, data_type FROM information_schema.columns WHERE table_schema = 'locaria_uploads' "
        "AND column_name = 'count'").fetchall()}
    assert kinds == {"upload_file_1": "bigint", "upload_file_2": "bigint", "upload_file_3": "bigint"}


def test_messages_name_the_users_file_not_a_storage_id(db_url: str, conn: psycopg.Connection[Any],
                                                       tmp_path: Path) -> None:
    stored = fx.write_text(tmp_path / "19.geojson", '{"type": "FeatureCollection", "features": [{"type": "Fea')
    with pytest.raises(JobError) as failure:
        fx.load_as(db_url, 19, stored, name="broken.geojson")
    assert str(failure.value).startswith("broken.geojson ") and "19" not in str(failure.value)


def test_loader_progress_never_passes_the_total(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    from locaria_batch.jobs.file_loader.loader import LoadOptions, load_file

    path = fx.write_layer(tmp_path / "many.gpkg", "GPKG", [fx.point(0, i % 80) for i in range(500)],
                          n=list(range(500)))
    seen: list[tuple[int, int | None]] = []
    fence = fx.loader_fence(conn, 20)
    with connect(db_url) as load:
        load_file(load, path, "many.gpkg", LoadOptions(base_table="upload_file_20", batch_rows=64), fence,
                  progress=lambda done, total: seen.append((done, total)))
    assert seen and all(total is None or done <= total for done, total in seen)


# -- formats beside the common ones: MapInfo, Esri File Geodatabase, SpatiaLite, OpenStreetMap -------

def rows_of(conn: psycopg.Connection[Any], table: str, columns: str) -> list[dict[str, Any]]:
    return conn.execute(f"SELECT {columns}, round(ST_X(wkb_geometry)::numeric, 6)::float AS x, ST_SRID(wkb_geometry) "
                        f"AS srid FROM {table} ORDER BY 1").fetchall()


@pytest.mark.parametrize("suffix", [".tab", ".mif"])
def test_zipped_mapinfo_tables_load_with_their_attributes(db_url: str, conn: psycopg.Connection[Any],
                                                          tmp_path: Path, suffix: str) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    fx.write_layer(folder / f"sites{suffix}", "MapInfo File", [fx.point(-0.12, 51.5), fx.point(-0.13, 51.6)],
                   geometry_type="Point", name=["Mill", "Ford"], visits=[3, 4])
    assert len(list(folder.iterdir())) > 1  # the table and its own files
    result = fx.load_as(db_url, 40, fx.zip_files(tmp_path / "sites.zip", {p.name: p for p in folder.iterdir()}))
    assert result["tables"] == ["locaria_uploads.upload_file_40"]
    assert rows_of(conn, "locaria_uploads.upload_file_40", "name, visits") == [
        {"name": "Ford", "visits": 4, "x": -0.13, "srid": 4326},
        {"name": "Mill", "visits": 3, "x": -0.12, "srid": 4326}]


def test_a_mapinfo_table_without_its_data_file_says_what_to_upload(db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    tab = fx.write_layer(folder / "sites.tab", "MapInfo File", [fx.point(-0.12, 51.5)], geometry_type="Point",
                         name=["Mill"])
    alone = tmp_path / "sites.tab"  # uploaded by itself
    alone.write_bytes(tab.read_bytes())
    with pytest.raises(JobError, match=r"^sites\.tab has no \.dat next to it; zip the \.tab with its \.dat, \.map, "):
        fx.load_as(db_url, 41, alone)
    with pytest.raises(JobError, match=r"^lone\.zip/sites\.tab has no \.dat"):
        fx.load_as(db_url, 41, fx.zip_files(tmp_path / "lone.zip", {"sites.tab": tab}))


def test_tab_separated_text_named_tab_is_still_text(db_url: str, conn: psycopg.Connection[Any],
                                                    tmp_path: Path) -> None:
    path = fx.write_text(tmp_path / "sites.tab", "name\tlon\tlat\nMill\t-0.12\t51.5\n")
    fx.load_as(db_url, 42, path)
    assert rows_of(conn, "locaria_uploads.upload_file_42", "name") == [{"name": "Mill", "x": -0.12, "srid": 4326}]


def test_a_zipped_file_geodatabase_loads_every_feature_class(db_url: str, conn: psycopg.Connection[Any],
                                                             tmp_path: Path) -> None:
    gdb = tmp_path / "city.gdb"
    fx.write_layer(gdb, "OpenFileGDB", [fx.point(-0.12, 51.5)], layer="parks", geometry_type="Point", name=["Hyde"])
    fx.write_layer(gdb, "OpenFileGDB", [fx.linestring([(-0.1, 51.0), (-0.2, 51.1)])], layer="roads",
                   geometry_type="LineString", append=True, name=["A1"])
    uploads = {  # the folder zipped as it is, inside other folders under another name, and its files alone
        43: fx.zip_files(tmp_path / "city.gdb.zip", {f"city.gdb/{p.name}": p for p in gdb.iterdir()}),
        44: fx.zip_files(tmp_path / "deep.zip", {f"export/data/{p.name}": p for p in gdb.iterdir()}),
        45: fx.zip_files(tmp_path / "flat.zip", {p.name: p for p in gdb.iterdir()}),
    }
    for file_id, upload in uploads.items():
        result = fx.load_as(db_url, file_id, upload)
        base = f"locaria_uploads.upload_file_{file_id}"
        assert result["tables"] == [f"{base}_parks", f"{base}_roads"], upload.name
        assert rows_of(conn, f"{base}_parks", "name") == [{"name": "Hyde", "x": -0.12, "srid": 4326}]
        assert conn.execute(f"SELECT name, ST_NPoints(wkb_geometry) AS n FROM {base}_roads").fetchall() == [
            {"name": "A1", "n": 2}]


def test_spatialite_is_read_as_spatialite(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    from pyogrio.raw import write_arrow

    path = tmp_path / "sites.sqlite"
    write_arrow(fx.arrow_layer([fx.point(-0.12, 51.5)], name=["Mill"]), path, driver="SQLite", layer="sites",
                geometry_name="geometry", geometry_type="Point", crs="EPSG:4326", dataset_options={"SPATIALITE": "YES"})
    assert path.read_bytes()[68:72] not in (b"GPKG", b"GP10", b"GP11")  # SQLite, but not a GeoPackage
    fx.load_as(db_url, 46, path)
    assert rows_of(conn, "locaria_uploads.upload_file_46", "name") == [{"name": "Mill", "x": -0.12, "srid": 4326}]


@pytest.mark.parametrize("make", [fx.osm_xml, fx.osm_pbf], ids=["xml", "pbf"])
def test_openstreetmap_nodes_out_of_id_order_are_placed_right(db_url: str, conn: psycopg.Connection[Any],
                                                              tmp_path: Path, make: Any) -> None:
    path = make(tmp_path / ("area.osm" if make is fx.osm_xml else "area.osm.pbf"))
    result = fx.load_as(db_url, 47, path)
    base = "locaria_uploads.upload_file_47"
    assert result["tables"] == [f"{base}_points", f"{base}_lines", f"{base}_multipolygons"]
    assert f"{path.name}, layer multilinestrings has no features and was not loaded" in result["warnings"]

    def vertices(table: str, column: str) -> list[tuple[float, float]]:
        points = conn.execute(f"SELECT ST_X(p.geom) AS x, ST_Y(p.geom) AS y FROM {table}, "
                              f"ST_DumpPoints(wkb_geometry) p WHERE {column} IS NOT NULL ORDER BY p.path").fetchall()
        return [(round(p["x"], 6), round(p["y"], 6)) for p in points]

    expected = {name: [(lon, lat) for lat, lon in (fx.OSM_NODES[i] for i in refs)]
                for name, refs in (("road", fx.OSM_ROAD), ("building", fx.OSM_BUILDING))}
    assert vertices(f"{base}_lines", "highway") == expected["road"]
    assert vertices(f"{base}_multipolygons", "building") == expected["building"]
    road = conn.execute(f"SELECT name, other_tags FROM {base}_lines").fetchone()
    assert road == {"name": "Mill Lane", "other_tags": {"surface": "asphalt"}}  # tags without a column: jsonb
    assert conn.execute(f"SELECT name, other_tags FROM {base}_points").fetchall() == [
        {"name": "Corner", "other_tags": {"amenity": "cafe"}}]


def test_a_dxf_drawing_loads_once_its_coordinate_system_is_given(db_url: str, conn: psycopg.Connection[Any],
                                                                 tmp_path: Path) -> None:
    path = fx.write_layer(tmp_path / "site plan.dxf", "DXF", [fx.point(530000, 180000),
                                                              fx.linestring([(530000, 180000), (530100, 180100)])])
    with pytest.raises(JobError, match=r"^site plan\.dxf does not say which coordinate system.*--crs"):
        fx.load_as(db_url, 48, path)
    result = fx.load_as(db_url, 48, path, source_srid=27700)
    assert result["source_crs"] == "EPSG:27700"
    shapes = conn.execute("SELECT GeometryType(wkb_geometry) AS kind, round(ST_XMin(wkb_geometry)::numeric, 2)::float "
                          "AS x FROM locaria_uploads.upload_file_48 ORDER BY ogc_fid").fetchall()
    assert shapes == [{"kind": "POINT", "x": -0.13}, {"kind": "LINESTRING", "x": -0.13}]


# -- exports: every format writes every table it can -------------------------------------------------

def exported(db_url: str, tmp_path: Path, table: str, fmt: str, **attributes: Any) -> tuple[Path, list[str], list]:
    progress: list[tuple[int, int]] = []
    request = parse_request({"format": fmt, "table": table, "name": "out", **attributes}, 1)
    with connect(db_url) as conn:
        result = export(conn, request, tmp_path, f"{fmt}-{table}", lambda d, t: progress.append((d, t)))
    assert all(done <= total for done, total in progress), progress
    return result.path, result.notes, progress


def read_gdal(path: Path) -> tuple[dict[str, Any], list[bytes | None], dict[str, list[Any]]]:
    """(metadata, ISO WKB geometries, columns) as GDAL reads the file, one feature per batch (GDAL's
    FlatGeobuf Arrow stream garbles batches holding a missing geometry)."""
    target = f"/vsizip/{path}" if path.suffix == ".zip" else str(path)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            target += "/" + next(n for n in archive.namelist() if n.endswith(".shp"))
    geometries: list[bytes | None] = []
    columns: dict[str, list[Any]] = {}
    with open_arrow(target, use_pyarrow=True, batch_size=1) as (meta, reader):
        for batch in reader:
            for name in batch.schema.names:
                if name == meta["geometry_name"] or (name == "wkb_geometry" and not meta["geometry_name"]):
                    value = batch.column(name)[0].as_py()
                    geometries.append(value or None)
                else:
                    columns.setdefault(name, []).append(batch.column(name)[0].as_py())
    return meta, geometries, columns


@pytest.fixture
def survey(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> str:
    """A table of Z M points, one without geometry, and text a spreadsheet would run."""
    wkts = ["POINT ZM (-0.1 51.5 10 1)", "POINT ZM (-0.2 51.6 20 2)", None]
    geometries = [fx.wkb_of(conn, w) if w else None for w in wkts]
    fx.load_as(db_url, 30, fx.write_layer(tmp_path / "survey.gpkg", "GPKG", geometries,
                                          note=["=HYPERLINK(\"http://x\")", "+1", "plain"], n=[1, 2, 3]))
    return "upload_file_30"


@pytest.mark.parametrize(("fmt", "z", "m"), [("gpkg", True, True), ("flatgeobuf", True, True),
                                             ("shapefile", True, True), ("kml", True, False),
                                             ("geojson", True, False), ("geojsonseq", True, False)])
def test_gdal_formats_keep_what_they_can_hold(db_url: str, tmp_path: Path, survey: str, fmt: str, z: bool,
                                              m: bool) -> None:
    path, notes, _ = exported(db_url, tmp_path, survey, fmt)
    _meta, geometries, _columns = read_gdal(path)
    values = [v for v in geometries if v]
    code = int.from_bytes(values[0][1:5], "little")
    assert (code // 1000 in (1, 3), code // 1000 in (2, 3)) == (z, m), (fmt, code)
    assert any("M values were dropped" in n for n in notes) is (not m)
    assert len(geometries) == (2 if fmt == "shapefile" else 3)  # the shapefile's row without geometry: its own .dbf


def test_flatgeobuf_with_missing_and_empty_geometries_and_without_geometry(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path, survey: str) -> None:
    path, notes, _ = exported(db_url, tmp_path, survey, "flatgeobuf")
    assert any("without a spatial index" in n for n in notes)
    conn.execute("CREATE TABLE locaria_uploads.empties AS SELECT 1 AS n, 'POINT EMPTY'::geometry(Point, 4326) AS g "
                 "UNION ALL SELECT 2, 'SRID=4326;POINT(1 2)'")
    path, notes, _ = exported(db_url, tmp_path, "empties", "flatgeobuf")
    assert len(read_gdal(path)[1]) == 2 and any("empty" in n for n in notes)
    fx.load_as(db_url, 31, fx.write_text(tmp_path / "plain.csv", "a,b\n1,x\n2,y\n"))
    path, _, _ = exported(db_url, tmp_path, "upload_file_31", "flatgeobuf")
    assert read_gdal(path)[2]["b"] == ["x", "y"]


def test_flatgeobuf_with_missing_geometries_loads_again(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path,
                                                        survey: str) -> None:
    path, _, _ = exported(db_url, tmp_path, survey, "flatgeobuf")
    result = fx.load_as(db_url, 32, path)
    assert result["record_count"] == 3 and result["geometry_type"] == "PointZM"
    assert [r["g"] for r in conn.execute("SELECT ST_AsText(wkb_geometry) AS g FROM locaria_uploads.upload_file_32 "
                                         "ORDER BY ogc_fid").fetchall()] == [
        "POINT ZM (-0.1 51.5 10 1)", "POINT ZM (-0.2 51.6 20 2)", None]


def test_geoparquet_types_are_exact_and_pyarrow_reads_it(db_url: str, tmp_path: Path, survey: str) -> None:
    path, notes, _ = exported(db_url, tmp_path, survey, "geoparquet")
    table = pq.read_table(path)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["columns"]["geometry"]["geometry_types"] == ["Point Z"]
    assert int.from_bytes(table.column("geometry")[0].as_py()[1:5], "little") == 1001
    assert any("M values were dropped: GeoParquet" in n for n in notes)


def test_xlsx_has_its_dimension_and_openpyxl_read_only_sees_the_rows(db_url: str, tmp_path: Path, survey: str) -> None:
    from openpyxl import load_workbook

    path, _, _ = exported(db_url, tmp_path, survey, "xlsx")
    book = load_workbook(path, read_only=True)
    sheet = book.worksheets[0]
    assert sheet.calculate_dimension() == "A1:C4"
    rows = list(sheet.iter_rows(values_only=True))
    assert len(rows) == 4 and rows[1][2] == "POINT ZM (-0.1 51.5 10 1)"


def test_csv_neutralises_formulas_unless_asked_and_counts_rows_not_the_header(db_url: str, tmp_path: Path,
                                                                              survey: str) -> None:
    path, _, progress = exported(db_url, tmp_path, survey, "csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["note"] for r in rows] == ["'=HYPERLINK(\"http://x\")", "'+1", "plain"]
    assert rows[0]["wkt"] == "POINT ZM (-0.1 51.5 10 1)"
    assert progress[-1] == (3, 3)
    raw, _, _ = exported(db_url, tmp_path, survey, "csv", csv_keep_formulas=True)
    assert next(r["note"] for r in csv.DictReader(raw.open())) == "=HYPERLINK(\"http://x\")"
