"""Hostile and odd inputs, generated here: malformed, oversized, binary, zip tricks, odd encodings,
names, numbers, geometries and coordinate systems, and CSV injection.  Each ends loaded correctly, or
refused with a sentence naming the user's file and the kind of problem (never "failed unexpectedly"),
and nothing else is touched: another file's table stays as it was and no staging table is left.

Most go through the loader's Python API in this process; a few go through real jobs."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import re
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from locaria_batch.db import connect
from locaria_batch.dispatch.wait import wait_for_file
from locaria_batch.files import register_upload
from locaria_batch.job import JobError
from locaria_batch.jobs.file_download import export
from locaria_batch.jobs.file_download.request import parse_request
from locaria_batch.settings import LoaderLimits
from locaria_batch.storage import open_storage
from tests import loader_fixtures as fx

Maker = Callable[[Path, psycopg.Connection[Any]], Path]
Check = Callable[[psycopg.Connection[Any], dict[str, Any]], None]


@dataclass
class Case:
    name: str  # the file's name as the user gave it
    make: Maker  # writes the input under the folder given, returns its path
    refused: str | None = None  # a pattern of the message; None: it loads
    check: Check | None = None  # more about what loaded
    options: dict[str, Any] = field(default_factory=dict)


def text(content: str | bytes, encoding: str = "utf-8") -> Maker:
    def make(folder: Path, conn: psycopg.Connection[Any]) -> Path:
        path = folder / "input"
        path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
        return path
    return make


def archive(members: dict[str, bytes] | list[tuple[str, bytes]], symlinks: tuple[str, ...] = (),
            compression: int = zipfile.ZIP_DEFLATED) -> Maker:
    def make(folder: Path, conn: psycopg.Connection[Any]) -> Path:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression) as zipped:
            for name, content in (members.items() if isinstance(members, dict) else members):
                info = zipfile.ZipInfo(name)
                if name in symlinks:
                    info.external_attr = (0o120777 << 16)
                zipped.writestr(info, content, compress_type=compression)
        path = folder / "input"
        path.write_bytes(buffer.getvalue())
        return path
    return make


def encrypted(folder: Path, conn: psycopg.Connection[Any]) -> Path:
    path = archive({"data.csv": b"a,lon,lat\n1,0,0\n"})(folder, conn)
    raw = bytearray(path.read_bytes())
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers
        at = raw.find(signature)
        raw[at + flag_at] |= 1  # "encrypted"
    path.write_bytes(bytes(raw))
    return path


def layer(driver: str, wkts: list[str | None], crs: str = "EPSG:4326", **columns: list[Any]) -> Maker:
    def make(folder: Path, conn: psycopg.Connection[Any]) -> Path:
        extension = {"GPKG": "gpkg", "GeoJSON": "geojson", "FlatGeobuf": "fgb"}[driver]
        path = folder / f"input.{extension}"
        geometries = [fx.wkb_of(conn, w) if w else None for w in wkts]
        fx.write_layer(path, driver, geometries, crs=crs, **(columns or {"n": list(range(len(wkts)))}))
        return path
    return make


def shapefile(prj: str | None, drop: tuple[str, ...] = ()) -> Maker:
    def make(folder: Path, conn: psycopg.Connection[Any]) -> Path:
        (folder / "shp").mkdir()
        shp = fx.write_layer(folder / "shp" / "places.shp", "ESRI Shapefile", [fx.point(-0.1, 51.5)], name=["a"])
        if prj is None:
            (folder / "shp" / "places.prj").unlink()
        else:
            (folder / "shp" / "places.prj").write_text(prj)
        members = {k: v.read_bytes() for k, v in fx.shapefile_members(shp).items() if Path(k).suffix not in drop}
        return archive(members)(folder, conn)
    return make


def rows(conn: psycopg.Connection[Any], query: str) -> list[dict[str, Any]]:
    return conn.execute(query.replace("{t}", "locaria_uploads.upload_file_2")).fetchall()


def has(query: str, expected: Any) -> Check:
    def check(conn: psycopg.Connection[Any], result: dict[str, Any]) -> None:
        assert rows(conn, query) == expected, rows(conn, query)
    return check


def warns(pattern: str) -> Check:
    def check(conn: psycopg.Connection[Any], result: dict[str, Any]) -> None:
        assert any(re.search(pattern, w) for w in result["warnings"]), result["warnings"]
    return check


def columns_are(*names: str) -> Check:
    def check(conn: psycopg.Connection[Any], result: dict[str, Any]) -> None:
        loaded = [c["column"] for c in result["columns"]]
        assert loaded[: len(names)] == list(names), loaded
    return check


def exported_csv_cells(column: str, expected: list[str]) -> Check:
    def check(conn: psycopg.Connection[Any], result: dict[str, Any]) -> None:
        request = parse_request({"format": "csv", "table": "upload_file_2", "name": "out"}, 2)
        with tempfile.TemporaryDirectory() as folder, connect() as reader:
            path = export(reader, request, Path(folder), "out", lambda d, t: None).path
            cells = [r[column] for r in csv.DictReader(path.open(newline=""))]
        assert cells == expected, cells
    return check


def crs_is(srid: str, assumed: bool) -> Check:
    def check(conn: psycopg.Connection[Any], result: dict[str, Any]) -> None:
        assert (result["source_crs"], result["source_crs_assumed"]) == (srid, assumed), result
    return check


def geometry_is(kind: str) -> Check:
    def check(conn: psycopg.Connection[Any], result: dict[str, Any]) -> None:
        assert result["geometry_type"] == kind, result["geometry_type"]
    return check


LON_LAT = "name,lon,lat\nA,-0.1,51.5\nB,-0.2,51.6\n"
FEATURE = '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {"n": 1}}'
COLLECTION = '{"type": "FeatureCollection", "features": [' + FEATURE + "]}"
XXE = ('<?xml version="1.0"?><!DOCTYPE kml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       '<kml xmlns="http://www.opengis.net/kml/2.2"><Document><Placemark><name>&x;</name>'
       "<Point><coordinates>1,2</coordinates></Point></Placemark></Document></kml>")
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE gpx [<!ENTITY a "aaaaaaaaaa">' + "".join(
    f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8)) + ']>'
    '<gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><wpt lat="1" lon="2"><name>&i;</name></wpt></gpx>')
GML = ('<?xml version="1.0" encoding="utf-8"?><ogr:FeatureCollection xmlns:ogr="http://ogr.maptools.org/" '
       'xmlns:gml="http://www.opengis.net/gml"><gml:featureMember><ogr:site fid="site.0"><ogr:geometryProperty>'
       '<gml:Point srsName="EPSG:4326"><gml:coordinates>-0.1,51.5</gml:coordinates></gml:Point>'
       '</ogr:geometryProperty><ogr:name>A</ogr:name></ogr:site></gml:featureMember></ogr:FeatureCollection>')
XXE_GML = GML.replace('<?xml version="1.0" encoding="utf-8"?>', '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM '
                      '"file:///etc/passwd">]>').replace("<ogr:name>A</ogr:name>", "<ogr:name>&e;</ogr:name>")
RUSSIAN = "id,city\n" + "".join(f"{i},{c}\n" for i, c in enumerate(
    ["Москва", "Санкт-Петербург", "Новосибирск", "Екатеринбург", "Казань", "Нижний Новгород"]))
JAPANESE = "id,city\n" + "".join(f"{i},{c}\n" for i, c in enumerate(
    ["東京都", "大阪市", "名古屋市", "札幌市", "福岡市"]))
LOCAL_WKT = 'LOCAL_CS["site grid",LOCAL_DATUM["site",0],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
FORMULAS = ["=cmd|' /C calc'!A0", "+SUM(1,2)", "-2+3", "@SUM(1)", "\tTAB", "\rCR", "plain"]

CASES: list[Case] = [
    # -- malformed ---------------------------------------------------------------------------
    Case("empty.csv", text(""), r"empty.csv is empty"),
    Case("blank.csv", text("\n\n   \n"), r"blank.csv has no header line"),
    Case("header_only.csv", text("a,b,c\n"), r"header_only.csv has no rows or features"),
    Case("truncated.geojson", text(COLLECTION[:60]), r"truncated.geojson (cannot be read|stops being readable)"),
    Case("not_geojson.geojson", text('{"hello": "world"}'), r"not_geojson.geojson (cannot be read|has no rows)"),
    Case("broken.geojson", text('{"type": "FeatureCollection", "features": [}'), r"broken.geojson cannot be read"),
    Case("numbers.json", text("[1, 2, 3]"), r"numbers.json (cannot be read|has no rows)"),
    Case("bad_type.geojson", text('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
                                  '{"type": "Blob", "coordinates": [1]}, "properties": {"n": 1}}]}'),
         None, has("SELECT n, wkb_geometry IS NULL AS empty FROM {t}", [{"n": 1, "empty": True}])),
    Case("deep.geojson", text('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": null, '
                              '"properties": {"a": ' + "[" * 10_000 + "]" * 10_000 + "}}]}"),
         r"deep.geojson nests JSON objects or arrays too deeply"),
    Case("deep_line.geojsonl", text("[" * 100_000 + "]" * 100_000 + "\n" + FEATURE + "\n"),
         r"deep_line.geojsonl (nests JSON|cannot be read|stops being readable)"),
    Case("seq_bad_line.geojsonl", text(FEATURE + "\n{not json}\n" + FEATURE + "\n"),  # GDAL skips the line
         None, has("SELECT count(*) AS n FROM {t}", [{"n": 2}])),
    Case("broken.kml", text("<kml><Document><Placemark>"), r"broken.kml (cannot be read|cannot be opened|"
                                                              r"holds no layers)"),
    Case("xxe.kml", text(XXE), r"xxe.kml cannot be opened as LIBKML \(ERROR parsing kml xxe.kml"),
    Case("laughs.gpx", text(LAUGHS), r"laughs.gpx (cannot be read|cannot be opened|is not in a format)"),
    Case("xxe.gml", text(XXE_GML), r"xxe.gml declares XML entities, which are refused"),
    Case("other.xml", text('<?xml version="1.0"?><catalog><book id="1"/></catalog>'),
         r"other.xml is XML, but not GPX, KML, GML or OpenStreetMap; upload"),
    Case("xxe.osm", text('<?xml version="1.0"?><!DOCTYPE osm [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                         '<osm version="0.6"><node id="1" lat="51.5" lon="-0.1"><tag k="name" v="&e;"/></node></osm>'),
         r"xxe.osm declares XML entities, which are refused"),
    Case("seamless.zip", lambda folder, conn: _mapinfo(folder, conn, '\nbegin_metadata\n"\\IsSeamless" = "TRUE"\n'
                                                                      "end_metadata\n"),
         r"seamless.zip/sites.tab is a seamless table or a view, which reads other tables by their paths"),
    Case("view.zip", lambda folder, conn: _mapinfo(folder, conn, '\nOpen Table "/etc/secrets" Hide\nCreate View sites '
                                                                  "As Select * From secrets\n"),
         r"view.zip/sites.tab is a seamless table or a view"),
    Case("raster.zip", archive({"map.tab": b'!table\n!version 300\n\nDefinition Table\n  File "map.tif"\n'
                                           b'  Type "RASTER"\n  (0,0) (0,0) Label "Pt 1",\n', "map.dat": b"x"}),
         r"raster.zip/map.tab is a MapInfo raster registration .*, not a table of features"),
    Case("garbage.gpkg", text(b"SQLite format 3\x00" + b"\x07" * 500), r"garbage.gpkg cannot be opened"),
    Case("no_tables.gpkg", text(b"SQLite format 3\x00" + b"\x00" * 84 + b"\x00" * 412),
         r"no_tables.gpkg (cannot be opened|holds no layers)"),
    Case("garbage.fgb", text(b"fgb\x03fgb\x00" + b"\xff" * 200), r"garbage.fgb cannot be read"),
    Case("garbage.parquet", text(b"PAR1" + b"\x00" * 100), r"garbage.parquet is not a readable Parquet file"),
    Case("garbage_gdb.zip", archive({"x.gdb/a00000001.gdbtable": bytes(range(256)) * 12}),
         r"garbage_gdb.zip/x.gdb cannot be opened as OpenFileGDB \([^;]*\); the file may be damaged"),
    Case("garbage_tab.zip", archive({"t.tab": b"!table\n!version 300\n\nDefinition Table\n  Fields 1\n",
                                     "t.dat": b"\x03" * 100, "t.map": b"\x07" * 100}),
         r"garbage_tab.zip/t.tab cannot be opened as MapInfo File \([^;]*\); the file may be damaged"),
    Case("garbage.osm.pbf", text(b"\x00\x00\x00\x0d\x0a\x09OSMHeader\x18\xff\xff\xff\x0f" + bytes(range(256)) * 2),
         r"garbage.osm.pbf: every layer is empty \(points, lines, multilinestrings, multipolygons, other_relations\); "
         r"nothing to load"),
    Case("garbage.dxf", text("  0\nSECTION\n  2\nENTITIES\n  0\nLINE\n 10\nabc\n"),
         r"garbage.dxf has no rows or features; nothing to load"),
    Case("shp_no_dbf.zip", shapefile("", drop=(".dbf",)), r"shp_no_dbf.zip/places.shp has no .dbf"),
    Case("shp_no_shx.zip", shapefile("", drop=(".shx",)), r"shp_no_shx.zip/places.shp has no .shx next to it; zip"),
    Case("noise.bin", text(bytes(range(256)) * 40), r"noise.bin is not in a format we read"),
    Case("picture.csv", text(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 200),
         r"picture.csv is not in a format we read"),
    Case("old.xls", text(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600), r"old.xls is an old Excel .xls"),
    Case("broken.xlsx", archive({"[Content_Types].xml": b"<Types/>", "xl/styles.xml": b"<x/>"}),
         r"broken.xlsx is not a complete Excel workbook"),
    Case("pdf.geojson", text(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"\x00\x01" * 100),
         r"pdf.geojson is not in a format we read"),
    # -- oversized ----------------------------------------------------------------------------
    Case("long_cell.csv", text("name,lon,lat,note\nA,-0.1,51.5," + "x" * (3 << 20) + "\nB,-0.2,51.6,short\n"),
         None, has("SELECT length(note) AS n FROM {t} ORDER BY ogc_fid", [{"n": 3 << 20}, {"n": 5}])),
    Case("long_line.csv", text("name,note\nA," + "y" * (3 << 20) + "\n"),
         r"long_line.csv: row 1 holds 3,145,729 bytes, more than the 2,097,152-byte limit of one line "
         r"\(LOCARIA_LOADER_MAX_LINE_BYTES\)",
         options={"limits": LoaderLimits(max_line_bytes=2 << 20)}),
    Case("unclosed_quote.csv", text('name,note\nA,"never closed\nB,x\n' + "C,z\n" * 100),
         None, has("SELECT count(*) AS n FROM {t}", [{"n": 1}])),
    Case("wide.csv", text(",".join(f"c{i}" for i in range(30)) + "\n" + ",".join("1" * 30) + "\n"),
         r"wide.csv has 30 columns, over the limit of 20", options={"limits": LoaderLimits(max_columns=20)}),
    Case("long.csv", text("a\n" + "1\n" * 50), r"long.csv has more than 10 features",
         options={"limits": LoaderLimits(max_features=10)}),
    Case("big.csv", text("a\n" + "1\n" * 500), r"big.csv is 1,002 bytes, over the 1,000-byte limit",
         options={"limits": LoaderLimits(max_file_bytes=1000)}),
    Case("long_header.csv", text(",".join(f"column_{i:07d}" for i in range(80_000)) + "\n1\n"),
         r"long_header.csv: its first line is longer than"),
    Case("many_layers.gpkg", lambda folder, conn: _many_layers(folder, conn),
         r"many_layers.gpkg holds 3 layers, over the limit of 2", options={"limits": LoaderLimits(max_layers=2)}),
    # -- zip tricks ---------------------------------------------------------------------------
    Case("slip.zip", archive({"../../evil.csv": LON_LAT.encode()}), r"slip.zip contains the entry .* outside the"),
    Case("absolute.zip", archive({"/etc/evil.csv": LON_LAT.encode()}), r"absolute.zip contains the entry .* outside"),
    Case("drive.zip", archive({"C:\\evil.csv": LON_LAT.encode()}), r"drive.zip contains the entry .* outside"),
    Case("symlink.zip", archive({"data.csv": b"/etc/passwd"}, symlinks=("data.csv",)),
         r"symlink.zip contains the symbolic link 'data.csv'"),
    Case("symlink_dir.zip", archive({"d": b"/", "d/x.csv": LON_LAT.encode()}, symlinks=("d",)),
         r"symlink_dir.zip contains the symbolic link 'd'"),
    Case("bomb.zip", archive({"zeros.csv": b"a\n" + b"0" * (30 << 20)}), r"bomb.zip would expand to .* zip bomb"),
    Case("deep.zip", lambda folder, conn: _nested_zip(folder, conn, 3), r"nests archives more than 2 deep"),
    Case("bomb.csv.gz", text(gzip.compress(b"a\n" + b"0" * (30 << 20))), r"bomb.csv.gz expands far beyond"),
    Case("truncated.zip", lambda folder, conn: _cut(archive({"a.csv": LON_LAT.encode() * 50})(folder, conn)),
         r"truncated.zip is a damaged zip"),
    Case("encrypted.zip", encrypted, r"encrypted.zip: the entry 'data.csv' cannot be unpacked .* encrypted"),
    Case("readme_only.zip", archive({"README.txt": b"hello"}), r"readme_only.zip holds no data file"),
    Case("mac_junk.zip", archive({"__MACOSX/._a.csv": b"junk", ".hidden.csv": b"a\n1\n"}),
         r"mac_junk.zip holds no data file"),
    Case("duplicate.zip", archive([("a.csv", LON_LAT.encode()), ("a.csv", b"x,y\n1,2\n")]),
         r"duplicate.zip holds the entry 'a.csv' twice"),
    Case("file_and_folder.zip", archive({"a": b"x", "a/b.csv": LON_LAT.encode()}),
         r"file_and_folder.zip holds the entry 'a/b.csv' twice, or as both a file and a folder"),
    Case("empty.zip", archive({}), r"empty.zip holds no data file"),
    Case("crowded.zip", archive({f"f{i}.txt": b"x" for i in range(30)}), r"crowded.zip holds 30 files, over the "
         r"limit of 20", options={"limits": LoaderLimits(max_archive_entries=20)}),
    Case("truncated.csv.gz", text(gzip.compress(LON_LAT.encode() * 200)[:80]), r"truncated.csv.gz is a damaged or "
                                                                                r"truncated .gz file"),
    Case("truncated.csv.bz2", text(bz2.compress(LON_LAT.encode() * 200)[:60]),
         r"truncated.csv.bz2 is a damaged or truncated .bz2 file"),
    Case("bomb.csv.xz", text(lzma.compress(b"a\n" + b"0" * (30 << 20))), r"bomb.csv.xz expands far beyond"),
    # -- odd encodings --------------------------------------------------------------------------
    Case("cp1251.csv", text(RUSSIAN, "cp1251"), None, has("SELECT city FROM {t} WHERE id = 0", [{"city": "Москва"}])),
    Case("utf16.csv", text(RUSSIAN, "utf-16"), None, has("SELECT city FROM {t} WHERE id = 1",
                                                         [{"city": "Санкт-Петербург"}])),
    Case("utf16be.csv", text(RUSSIAN, "utf-16-be"), None, has("SELECT city FROM {t} WHERE id = 2",
                                                              [{"city": "Новосибирск"}])),
    Case("bom.csv", text("\ufeff" + LON_LAT), None, columns_are("name", "lon", "lat")),
    Case("shift_jis.csv", text(JAPANESE, "shift_jis"), None, has("SELECT city FROM {t} WHERE id = 0",
                                                                 [{"city": "東京都"}])),
    Case("late_bad_byte.csv", text(("a,b\n" + "1,x\n" * 300_000).encode() + b"2,\xff\xfe\n"),
         r"late_bad_byte.csv holds text that is not valid utf-8; give its encoding with --encoding"),
    Case("wrong_encoding.csv", text(LON_LAT), r"the encoding 'klingon' is not known",
         options={"encoding": "klingon"}),
    Case("mac_line_endings.csv", text(LON_LAT.replace("\n", "\r")), None, has("SELECT count(*) AS n FROM {t}",
                                                                              [{"n": 2}])),
    Case("crlf.csv", text(LON_LAT.replace("\n", "\r\n")), None, has("SELECT name FROM {t} ORDER BY ogc_fid",
                                                                    [{"name": "A"}, {"name": "B"}])),
    Case("nul_in_cell.csv", text("name,lon,lat\nA\x00B,-0.1,51.5\nC,-0.2,51.6\n"), None,
         warns(r"row 1, column 'name'")),
    Case("latin1_given.csv", text("name,lon,lat\nZürich,8.5,47.4\n", "latin-1"), None,
         has("SELECT name FROM {t}", [{"name": "Zürich"}]), options={"encoding": "latin-1"}),
    # -- odd names --------------------------------------------------------------------------
    Case("bbox.csv", text("xmin,ymin,xmax,ymax\n0,0,1,1\n"), None, columns_are("xmin_2", "ymin", "xmax_2", "ymax")),
    Case("system_columns.csv", text("ctid,cmin,cmax,tableoid,oid\n1,2,3,4,5\n"), None,
         columns_are("ctid_2", "cmin_2", "cmax_2", "tableoid_2", "oid")),
    Case("duplicate_names.csv", text("a,A,a ,a\n1,2,3,4\n"), None, columns_are("a", "a_2", "a_3", "a_4")),
    Case("empty_names.csv", text(",,x\n1,2,3\n"), None, columns_are("column_1", "column_2", "x")),
    Case("injection_names.csv", text('"a""; DROP TABLE locaria_core.files; --",b\n1,2\n'), None,
         columns_are("a_drop_table_locaria_core_files", "b")),
    Case("long_names.csv", text("n" * 300 + ",m" + "é" * 100 + "\n1,2\n"), None, columns_are("n" * 63, "m" + "e" * 62)),
    Case("cyrillic_names.csv", text("имя,город\n1,2\n"), None, columns_are("column_1", "column_2")),
    Case("reserved_names.csv", text("ogc_fid,wkb_geometry,extra_attributes\n1,2,3\n"), None,
         columns_are("ogc_fid_2", "wkb_geometry_2", "extra_attributes_2")),
    Case("[bold]x'; --.csv", text(""), r"^\[bold\]x'; --\.csv is empty"),
    Case("bad_table.csv", text(LON_LAT), r"the table name 'robert_drop' is kept|is not allowed|kept for",
         options={"base_table": "upload_file_99"}),
    Case("staging_name.csv", text(LON_LAT), r"table name '_lb_x' is not allowed",
         options={"base_table": "_lb_x"}),
    # -- odd numbers ----------------------------------------------------------------------------
    Case("nan_inf.csv", text("v,w\n1.5,a\nNaN,b\ninf,c\n-inf,d\n2.5,e\n"), None,
         has("SELECT v::text AS v FROM {t} ORDER BY ogc_fid",
             [{"v": "1.5"}, {"v": "NaN"}, {"v": "Infinity"}, {"v": "-Infinity"}, {"v": "2.5"}])),
    Case("nan_coordinates.csv", text("name,lon,lat\nA,-0.1,51.5\nB,NaN,NaN\nC,inf,51\nD,-0.2,51.6\n"), None,
         lambda conn, result: (warns(r"2 rows have a coordinate that is not a finite number .*rows 2, 3")(conn,
                                                                                                          result),
                               has("SELECT ST_AsText(wkb_geometry) AS g FROM {t} ORDER BY ogc_fid",
                                   [{"g": "POINT(-0.1 51.5)"}, {"g": None}, {"g": None},
                                    {"g": "POINT(-0.2 51.6)"}])(conn, result))),
    Case("huge_integers.csv", text("big\n99999999999999999999\n1\n"), None,
         has("SELECT big AS b FROM {t} ORDER BY ogc_fid", [{"b": "99999999999999999999"}, {"b": "1"}])),  # exact
    Case("decimal_comma.csv", text("name;lon;lat;v\nA;-0,1;51,5;3,25\n"), None,
         has("SELECT v, ST_X(wkb_geometry) AS x FROM {t}", [{"v": 3.25, "x": -0.1}])),
    Case("decimal_comma_beside_a_version.csv", text("name;lon;lat;version\nA;-0,1;51,5;3.5\n"), None,
         has("SELECT version, ST_X(wkb_geometry) AS x FROM {t}", [{"version": "3.5", "x": -0.1}])),
    Case("thousands.csv", text('v\n"1,234"\n"5,678"\n'), None, has("SELECT v FROM {t} ORDER BY ogc_fid",
                                                                   [{"v": "1,234"}, {"v": "5,678"}])),
    Case("out_of_range.csv", text("name,lon,lat\n" + "A,-0.1,51.5\n" * 20 + "B,-0.1,100\n"), None,
         warns(r"1 row has coordinates out of range .*rows 21")),
    Case("empty_coordinates.csv", text("name,lon,lat\nA,,\nB,,\n"), None,
         warns(r"the coordinate columns lon/lat hold no numbers; the rows have no geometry")),
    Case("enormous.csv", text("name,x,y\nA,1e308,1e308\nB,-1e308,1e300\n"),
         r"enormous.csv: cannot tell the coordinate system of x/y .* --crs"),
    Case("exponents.csv", text("name,lon,lat\nA,-1e-1,5.15e1\nB,-0.0,0\n"), None,
         has("SELECT ST_AsText(wkb_geometry) AS g FROM {t} ORDER BY ogc_fid",
             [{"g": "POINT(-0.1 51.5)"}, {"g": "POINT(0 0)"}])),
    Case("leading_zeros.csv", text("code,n\n007,1\n010,2\n"), None,
         has("SELECT code FROM {t} ORDER BY ogc_fid", [{"code": "007"}, {"code": "010"}])),
    # -- odd geometries ---------------------------------------------------------------------------
    Case("bowtie.gpkg", layer("GPKG", ["POLYGON((0 0,1 1,1 0,0 1,0 0))", "POLYGON((5 5,6 5,6 6,5 5))"]), None,
         has("SELECT bool_and(ST_IsValid(wkb_geometry)) AS ok FROM {t}", [{"ok": True}])),
    Case("unclosed.csv", text('name,wkt\na,"POLYGON((0 0,1 0,1 1))"\nb,"POINT(1 2)"\n'), None,
         warns(r"1 row holds text in the geometry column 'wkt'")),
    Case("empty_geometries.csv", text('name,wkt\na,POINT EMPTY\nb,POINT(1 2)\n'), None,
         has("SELECT ST_IsEmpty(wkb_geometry) AS e FROM {t} ORDER BY ogc_fid", [{"e": True}, {"e": False}])),
    Case("collection.gpkg", layer("GPKG", ["GEOMETRYCOLLECTION(POINT(1 1),LINESTRING(0 0,1 1))", "POINT(2 2)"]),
         None, geometry_is("Geometry")),
    Case("curves.gpkg", layer("GPKG", ["CIRCULARSTRING(0 0,1 1,2 0)", "COMPOUNDCURVE((0 0,1 1),(1 1,2 2))"]),
         None, geometry_is("LineString")),
    Case("dimensions.gpkg", layer("GPKG", ["POINT(1 2)", "POINT Z (1 2 3)", "POINT M (1 2 4)"]), None,
         geometry_is("PointZM")),
    Case("many_vertices.gpkg", layer("GPKG", ["LINESTRING(" + ",".join(f"{i / 1000} {i % 7}" for i in range(100_000))
                                              + ")"]), None,
         has("SELECT ST_NPoints(wkb_geometry) AS n FROM {t}", [{"n": 100_000}])),
    Case("all_null.geojson", text('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": null, '
                                  '"properties": {"n": 1}}, {"type": "Feature", "geometry": null, "properties": '
                                  'null}]}'), None, has("SELECT count(*) AS n FROM {t}", [{"n": 2}])),
    Case("nested_polygon_holes.gpkg", layer("GPKG", ["POLYGON((0 0,10 0,10 10,0 10,0 0),(20 20,21 20,21 21,20 20))"]),
         None, has("SELECT bool_and(ST_IsValid(wkb_geometry)) AS ok FROM {t}", [{"ok": True}])),
    Case("tin.gpkg", layer("GPKG", ["TIN Z (((0 0 0,0 1 0,1 0 0,0 0 0)))"]), None, geometry_is("MultiPolygonZ")),
    # -- odd coordinate systems --------------------------------------------------------------------
    Case("unknown_epsg.geojson", text(COLLECTION.replace('{"type": "FeatureCollection",',
                                                         '{"type": "FeatureCollection", "crs": {"type": "name", '
                                                         '"properties": {"name": "EPSG:99999999"}},')),
         r"unknown_epsg.geojson declares the coordinate system 'EPSG:99999999', which is not a known EPSG code"),
    Case("urn_27700.geojson", text('{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": '
                                   '"urn:ogc:def:crs:EPSG::27700"}}, "features": [{"type": "Feature", "geometry": '
                                   '{"type": "Point", "coordinates": [530000, 180000]}, "properties": {}}]}'),
         None, crs_is("EPSG:27700", False)),
    Case("crs84.geojson", text(COLLECTION.replace('{"type": "FeatureCollection",',
                                                  '{"type": "FeatureCollection", "crs": {"type": "name", "properties": '
                                                  '{"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},')),
         None, crs_is("EPSG:4326", False)),
    Case("local_grid.gpkg", layer("GPKG", ["POINT(10 20)"], crs=LOCAL_WKT),
         r"local_grid.gpkg, layer input: the coordinates cannot be transformed from LOCAL_CS\[\"site grid\".* "
         r"to EPSG:4326 .* --crs"),
    Case("garbage_prj.zip", shapefile("this is not a projection"), None, crs_is("EPSG:4326", True)),
    Case("projected.geojson", text(COLLECTION.replace("[1, 2]", "[530000, 180000]")),
         r"projected.geojson: coordinates run to 530000, 180000, out of range .* --crs"),
    Case("no_prj_projected.zip", lambda folder, conn: _projected_shapefile(folder, conn),
         r"no_prj_projected.zip/places.shp does not say which coordinate system .* --crs"),
    Case("grid_points.csv", text("name,x,y\nA,530000,180000\nB,531000,181000\n"),
         r"grid_points.csv: cannot tell the coordinate system of x/y \(values such as 530000, 180000, not "
         r"longitude/latitude; extent 530000, 180000, 531000, 181000\); give it with --crs"),
    Case("grid_points_given.csv", text("name,Easting,Northing\nA,530000,180000\n"), None, crs_is("EPSG:27700", False),
         {"source_srid": 27700}),
    # -- CSV injection: the cells load as they are, and a CSV export neutralises them -------------
    Case("formulas.csv", text("n,cell\n" + "".join(f'{i},"{v}"\n' for i, v in enumerate(FORMULAS))), None,
         exported_csv_cells("cell", [f"'{v}" if v != "plain" else v for v in FORMULAS])),
    Case("formula_header.csv", text('"=1+1",b\n1,2\n'), None, columns_are("_1_1", "b")),
    # -- formats told by their content, whatever the name --------------------------------------------
    Case("geojson_named.csv", text(COLLECTION), None, geometry_is("Point")),
    Case("csv_named.geojson", text(LON_LAT), None, geometry_is("Point")),
    Case("gpkg_named.zip", layer("GPKG", ["POINT(1 2)"]), None, geometry_is("Point")),
    Case("kml_named.txt", text(fx.KML), None, has("SELECT count(*) AS n FROM {t}", [{"n": 2}])),
    Case("seq_named.json", text(FEATURE + "\n" + FEATURE + "\n"), None, has("SELECT count(*) AS n FROM {t}",
                                                                          [{"n": 2}])),
    Case("gml_named.txt", text(GML), None, has("SELECT name, ST_AsText(wkb_geometry) AS g FROM {t}",
                                                [{"name": "A", "g": "POINT(-0.1 51.5)"}])),
    Case("gpx_named.xml", lambda folder, conn: fx.gpx(folder / "input"), None,
         lambda conn, result: (result["result"]["layers"] == ["waypoints", "routes", "tracks"]) or pytest.fail(
             str(result["result"]))),
]


def _mapinfo(folder: Path, conn: psycopg.Connection[Any], definition: str) -> Path:
    """A zipped MapInfo table whose .tab has `definition` added: a table that reads other tables."""
    (folder / "tab").mkdir()
    tab = fx.write_layer(folder / "tab" / "sites.tab", "MapInfo File", [fx.point(-0.1, 51.5)], geometry_type="Point",
                         name=["a"])
    tab.write_text(tab.read_text() + definition)
    return archive({p.name: p.read_bytes() for p in tab.parent.iterdir()})(folder, conn)


def _many_layers(folder: Path, conn: psycopg.Connection[Any]) -> Path:
    path = folder / "input.gpkg"
    for index in range(3):
        fx.write_layer(path, "GPKG", [fx.point(index, 1)], layer=f"l{index}", append=index > 0, n=[index])
    return path


def _nested_zip(folder: Path, conn: psycopg.Connection[Any], depth: int) -> Path:
    content = LON_LAT.encode()
    for level in range(depth):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zipped:
            zipped.writestr("a.csv" if level == 0 else f"level{level}.zip", content)
        content = buffer.getvalue()
    path = folder / "input"
    path.write_bytes(content)
    return path


def _cut(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:-30])
    return path


def _projected_shapefile(folder: Path, conn: psycopg.Connection[Any]) -> Path:
    (folder / "shp").mkdir()
    shp = fx.write_layer(folder / "shp" / "places.shp", "ESRI Shapefile", [fx.polygon(fx.square(530000, 180000))],
                         name=["a"])
    (folder / "shp" / "places.prj").unlink()
    return archive({k: v.read_bytes() for k, v in fx.shapefile_members(shp).items()})(folder, conn)


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 80
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.fixture
def bystander(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> dict[str, Any]:
    """File 1's table, which no hostile input may touch."""
    fx.load_as(db_url, 1, fx.write_text(tmp_path / "bystander.csv", LON_LAT * 1 + "C,-0.3,51.7\n"))
    return conn.execute("SELECT count(*) AS n, md5(string_agg(t::text, ',' ORDER BY ogc_fid)) AS sum "
                        "FROM locaria_uploads.upload_file_1 t").fetchone()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path, bystander: dict[str, Any],
                       case: Case) -> None:
    folder = tmp_path / "input"
    folder.mkdir()
    path = case.make(folder, conn)
    named = path.with_name(case.name) if "/" not in case.name else path
    path.rename(named)
    options = dict(case.options)
    if case.refused is None:
        result = fx.load_as(db_url, 2, named, case.name, **options)
        assert result["record_count"] > 0
        if case.check is not None:
            case.check(conn, result)
    else:
        with pytest.raises(JobError) as failure:
            fx.load_as(db_url, 2, named, case.name, **options)
        message = str(failure.value)
        assert re.search(case.refused, message), message
        assert "unexpectedly" not in message and "\n" not in message and str(tmp_path) not in message
        assert case.name in message or "encoding" in message or "table name" in message, message
        assert not [t for t in tables(conn) if t.startswith("upload_file_2")], "a refused load leaves no table"
    assert [t for t in tables(conn) if not t.startswith("upload_file_2")] == ["upload_file_1"]
    after = conn.execute("SELECT count(*) AS n, md5(string_agg(t::text, ',' ORDER BY ogc_fid)) AS sum "
                         "FROM locaria_uploads.upload_file_1 t").fetchone()
    assert after == bystander


def tables(conn: psycopg.Connection[Any]) -> list[str]:
    return [r["tablename"] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'locaria_uploads' ORDER BY 1").fetchall()]


# -- a few through real jobs: the user's view of the same refusals -----------------------------------

JOB_CASES = [
    ("xmin_bbox.csv", b"xmin,ymin,xmax,ymax\n0,0,1,1\n", {}, None),
    ("symlink.zip", None, {}, r"symlink.zip contains the symbolic link"),
    ("unknown_crs.geojson", COLLECTION.replace('{"type": "FeatureCollection",', '{"type": "FeatureCollection", '
                                               '"crs": {"type": "name", "properties": {"name": "EPSG:99999999"}},'
                                               ).encode(), {}, r"not a known EPSG code"),
    ("given_crs.csv", LON_LAT.encode(), {"source_crs": "EPSG:99999999"}, r"--crs \(the source_crs attribute\) "
                                                                         r"'EPSG:99999999' is not a known EPSG code"),
    ("other_files_table.csv", LON_LAT.encode(), {"table_name": "upload_file_1"},
     r"upload_file_1 belongs to bystander.csv \(file 1\); load with mode overwrite"),
    ("stored_path.csv", LON_LAT.encode(), {"id_as_filename": False, "path": "incoming/1.csv"}, None),
]


def test_hostile_inputs_through_real_jobs(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    storage = open_storage()
    first = register_upload(conn, storage, fx.write_text(tmp_path / "bystander.csv", LON_LAT), name="bystander.csv")
    assert wait_for_file(first, timeout=90)["status"] == "FARGATE_PROCESSED"
    before = conn.execute("SELECT md5(string_agg(t::text, ',')) AS sum FROM locaria_uploads.upload_file_1 t"
                          ).fetchone()
    ids = {}
    for name, content, attributes, refused in JOB_CASES:
        path = tmp_path / name
        if content is None:
            path = archive({"data.csv": b"/etc/passwd"}, symlinks=("data.csv",))(tmp_path, conn).rename(path)
        else:
            path.write_bytes(content)
        file_id = ids[name] = register_upload(conn, storage, path, attributes=attributes)
        row = wait_for_file(file_id, timeout=90)
        log = [entry.get("message") for entry in row["attributes"]["log_messages"]]
        if refused is None:
            assert row["status"] == "FARGATE_PROCESSED", log
        else:
            assert row["status"] == "ERROR", log
            assert re.search(refused, row["attributes"]["error"]), row["attributes"]["error"]
            assert "unexpectedly" not in row["attributes"]["error"]
    loaded = conn.execute(f"SELECT name FROM locaria_uploads.upload_file_{ids['stored_path.csv']} ORDER BY ogc_fid"
                          ).fetchall()
    assert [r["name"] for r in loaded] == ["A", "B"]  # its own upload, not file 1's stored object
    after = conn.execute("SELECT md5(string_agg(t::text, ',')) AS sum FROM locaria_uploads.upload_file_1 t"
                         ).fetchone()
    assert after == before

