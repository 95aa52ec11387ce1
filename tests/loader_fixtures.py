"""Data files for the loader tests, made on the spot (pyogrio writes the GDAL formats)."""

from __future__ import annotations

import datetime as dt
import json
import struct
import zipfile
from itertools import pairwise
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

WKB_FIELD = {b"ARROW:extension:name": b"geoarrow.wkb"}


def point(x: float, y: float) -> bytes:
    return struct.pack("<BIdd", 1, 1, x, y)


def _ring(coords: list[tuple[float, float]]) -> bytes:
    return struct.pack("<I", len(coords)) + b"".join(struct.pack("<dd", *c) for c in coords)


def polygon(coords: list[tuple[float, float]]) -> bytes:
    return struct.pack("<BII", 1, 3, 1) + _ring(coords)


def multipolygon(*parts: list[tuple[float, float]]) -> bytes:
    return struct.pack("<BII", 1, 6, len(parts)) + b"".join(polygon(p) for p in parts)


def linestring(coords: list[tuple[float, float]]) -> bytes:
    return struct.pack("<BI", 1, 2) + _ring(coords)


def square(x: float, y: float, size: float = 1.0) -> list[tuple[float, float]]:
    return [(x, y), (x + size, y), (x + size, y + size), (x, y + size), (x, y)]


BOWTIE = [(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (0.0, 0.0)]  # self-intersecting


def arrow_layer(geometries: list[bytes | None], **columns: list[Any]) -> pa.Table:
    arrays = [v if isinstance(v, pa.Array) else pa.array(v) for v in columns.values()]
    fields = [pa.field(k, a.type) for k, a in zip(columns, arrays, strict=True)]
    fields.append(pa.field("geometry", pa.binary(), metadata=WKB_FIELD))
    return pa.table([*arrays, pa.array(geometries, pa.binary())], schema=pa.schema(fields))


def write_layer(path: Path, driver: str, geometries: list[bytes | None], *, crs: str = "EPSG:4326",
                layer: str | None = None, geometry_type: str = "Unknown", append: bool = False,
                encoding: str | None = None, **columns: list[Any]) -> Path:
    from pyogrio import write_arrow  # here: a test may check that a load alone does not import GDAL

    write_arrow(arrow_layer(geometries, **columns), path, driver=driver, layer=layer, geometry_name="geometry",
                geometry_type=geometry_type, crs=crs, append=append, encoding=encoding)
    return path


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def zip_files(path: Path, members: dict[str, bytes | Path]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content.read_bytes() if isinstance(content, Path) else content)
    return path


def shapefile_members(shp: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(shp.parent.glob(f"{shp.stem}.*"))}


def geoparquet(path: Path, geometries: list[bytes], crs_code: int | None = None, **columns: list[Any]) -> Path:
    table = arrow_layer(geometries, **columns)
    spec: dict[str, Any] = {"encoding": "WKB", "geometry_types": []}
    if crs_code is not None:
        spec["crs"] = {"id": {"authority": "EPSG", "code": crs_code}}
    geo = {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": spec}}
    table = table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})
    pq.write_table(table, path)
    return path


def gpx(path: Path) -> Path:
    return write_text(path, """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="tests" xmlns="http://www.topografix.com/GPX/1/1">
  <wpt lat="51.5" lon="-0.12"><name>Start</name></wpt>
  <wpt lat="51.6" lon="-0.13"><name>End</name></wpt>
  <rte><name>Route</name><rtept lat="51.5" lon="-0.12"/><rtept lat="51.55" lon="-0.125"/></rte>
  <trk><name>Walk</name><trkseg><trkpt lat="51.5" lon="-0.12"/><trkpt lat="51.52" lon="-0.11"/>
  <trkpt lat="51.53" lon="-0.1"/></trkseg></trk>
</gpx>
""")


KML = """<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document><name>Places</name>
  <Placemark><name>Big Ben</name><description>Clock</description>
    <Point><coordinates>-0.1246,51.5007,0</coordinates></Point></Placemark>
  <Placemark><name>Eye</name><Point><coordinates>-0.1196,51.5033,0</coordinates></Point></Placemark>
</Document></kml>
"""


def xlsx(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Sites"
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


TODAY = dt.date(2024, 5, 17)


def loader_fence(conn: Any, file_id: int, name: str | None = None) -> Any:
    """The attempt a load directly through the Python API belongs to: a file row (created when
    missing) and a running file_loader job of it, as the dispatcher and job SDK would leave them."""
    import uuid

    from psycopg.types.json import Jsonb

    from locaria_batch.jobs.file_loader.publish import Fence

    attributes = Jsonb({"name": name or f"file{file_id}.csv", "upload": True})
    conn.execute("INSERT INTO locaria_core.files (id, status, attributes) VALUES (%s, 'FARGATE_PROCESSING', %s) "
                 "ON CONFLICT (id) DO NOTHING", [file_id, attributes])
    conn.execute("SELECT setval('locaria_core.files_id_seq', greatest((SELECT max(id) FROM locaria_core.files), 1))")
    row = conn.execute("SELECT id, attempt, attempt_token FROM locaria_core.jobs WHERE file_id = %s "
                       "AND docker = 'file_loader' AND state = 'running'", [file_id]).fetchone()
    if row is None:
        row = conn.execute(
            "INSERT INTO locaria_core.jobs (file_id, docker, trigger_status, max_attempts, state, attempt, "
            "attempt_token) VALUES (%s, 'file_loader', 'REGISTERED', 3, 'running', 1, %s) "
            "RETURNING id, attempt, attempt_token", [file_id, uuid.uuid4()]).fetchone()
    return Fence(int(row["id"]), int(row["attempt"]), str(row["attempt_token"]))


def load_as(db_url: str, file_id: int, path: Path, name: str | None = None, **options: Any) -> dict[str, Any]:
    """Load `path` as file `file_id` through the loader's Python API (its default table
    upload_file_{id}), commit, and return the result attributes."""
    from locaria_batch.db import connect
    from locaria_batch.jobs.file_loader import describe
    from locaria_batch.jobs.file_loader.loader import LoadOptions, load_file

    with connect(db_url, autocommit=True) as setup:
        fence = loader_fence(setup, file_id, name or path.name)
    options.setdefault("base_table", f"upload_file_{file_id}")
    with connect(db_url) as conn:
        loaded = load_file(conn, path, name or path.name, LoadOptions(**options), fence)
        conn.commit()
    result = describe(loaded, name or path.name, 0.0)
    result["appended"] = [item.table for item in loaded.layers if item.appended]
    result["notes"] = [note for item in loaded.layers for note in item.result.notes]
    return result


def wkb_of(conn: Any, wkt: str) -> bytes:
    """ISO WKB of a WKT geometry, as PostGIS writes it (curves, Z and M included)."""
    return bytes(conn.execute("SELECT ST_AsBinary(%s::geometry) AS b", [wkt]).fetchone()["b"])


# -- OpenStreetMap: a small area whose nodes are not sorted by id (as many extracts' are not) ------

OSM_NODES = {7: (51.5010, -0.1200), 3: (51.5010, -0.1190), 9: (51.5020, -0.1190), 1: (51.5020, -0.1200),
             5: (51.5030, -0.1210)}  # id: (lat, lon), in file order
OSM_ROAD = [7, 3, 9]  # an open way: the lines layer
OSM_BUILDING = [7, 3, 9, 1, 7]  # a closed way tagged as a building: the multipolygons layer
OSM_TAGS = {"road": {"highway": "residential", "name": "Mill Lane", "surface": "asphalt"},
            "building": {"building": "yes", "roof:shape": "flat"}, "cafe": {"amenity": "cafe", "name": "Corner"}}


def osm_xml(path: Path) -> Path:
    def tags(kind: str) -> str:
        return "".join(f'<tag k="{k}" v="{v}"/>' for k, v in OSM_TAGS[kind].items())

    nodes = "".join(f'<node id="{i}" lat="{lat}" lon="{lon}">{tags("cafe") if i == 5 else ""}</node>'
                    for i, (lat, lon) in OSM_NODES.items())
    ways = "".join(f'<way id="{way_id}">' + "".join(f'<nd ref="{r}"/>' for r in refs) + f"{tags(kind)}</way>"
                   for way_id, refs, kind in ((20, OSM_ROAD, "road"), (21, OSM_BUILDING, "building")))
    return write_text(path, f'<?xml version="1.0" encoding="UTF-8"?><osm version="0.6" generator="tests">'
                            f"{nodes}{ways}</osm>")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _field(number: int, payload: bytes | int) -> bytes:
    """One protobuf field: a varint, or length-delimited bytes."""
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _packed(values: list[int]) -> bytes:
    return b"".join(_varint(v) for v in values)


def osm_pbf(path: Path) -> Path:
    """The same area as osm_xml, in OpenStreetMap's PBF format (plain nodes, raw blobs)."""
    strings = [b""]

    def index(text: str) -> int:
        if text.encode() not in strings:
            strings.append(text.encode())
        return strings.index(text.encode())

    def keys_vals(kind: str) -> bytes:
        tags = OSM_TAGS[kind]
        return _field(2, _packed([index(k) for k in tags])) + _field(3, _packed([index(v) for v in tags.values()]))

    nodes = b"".join(_field(1, _field(1, _zigzag(i)) + (keys_vals("cafe") if i == 5 else b"")
                               + _field(8, _zigzag(round(lat * 1e7))) + _field(9, _zigzag(round(lon * 1e7))))
                     for i, (lat, lon) in OSM_NODES.items())
    ways = b""
    for way_id, refs, kind in ((20, OSM_ROAD, "road"), (21, OSM_BUILDING, "building")):
        deltas = [_zigzag(b - a) for a, b in pairwise([0, *refs])]
        ways += _field(3, _field(1, way_id) + keys_vals(kind) + _field(8, _packed(deltas)))
    block = _field(1, b"".join(_field(1, s) for s in strings)) + _field(2, nodes) + _field(2, ways)
    header = _field(4, b"OsmSchema-V0.6")

    def blob(kind: str, data: bytes) -> bytes:
        body = _field(1, data)
        head = _field(1, kind.encode()) + _field(3, len(body))
        return struct.pack(">I", len(head)) + head + body

    path.write_bytes(blob("OSMHeader", header) + blob("OSMData", block))
    return path
