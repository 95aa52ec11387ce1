"""What an uploaded file holds: its format found from its content (and then its extension),
archives unpacked safely, and the data files inside listed."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from locaria_batch.job import JobError
from locaria_batch.settings import LoaderLimits

SHAPEFILE_SIDECARS = {".dbf", ".shx", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".xml", ".qmd", ".fix", ".aih",
                      ".ain", ".atx", ".ixs", ".mxs"}
# a MapInfo table's own files: read through its .tab (.dat, .map, .id, .ind) or its .mif (.mid)
MAPINFO_SIDECARS = {".tab": (".dat", ".map", ".id", ".ind"), ".mif": (".mid",)}
FILEGDB_MARKER = "a00000001.gdbtable"  # the catalogue table every Esri File Geodatabase folder holds
SIDECARS = SHAPEFILE_SIDECARS | {ext for exts in MAPINFO_SIDECARS.values() for ext in exts}
GPKG_APPLICATION_IDS = (b"GPKG", b"GP10", b"GP11")  # at offset 68 of the SQLite header; other SQLite is SpatiaLite
GDAL_OPTIONS = {
    "GeoJSON": {"FLATTEN_NESTED_ATTRIBUTES": "YES", "ARRAY_AS_STRING": "YES", "DATE_AS_STRING": "NO"},
    "GeoJSONSeq": {"FLATTEN_NESTED_ATTRIBUTES": "YES", "ARRAY_AS_STRING": "YES"},
    "XLSX": {"HEADERS": "FORCE", "FIELD_TYPES": "AUTO"},
    "ODS": {"HEADERS": "FORCE", "FIELD_TYPES": "AUTO"},
    # never fetch a schema the file points at (a request to any address), never write a .gfs beside it
    "GML": {"DOWNLOAD_SCHEMA": "NO", "WRITE_GFS": "NO"},
    # GDAL's own node index needs nodes sorted by id and misplaces them otherwise; tags not given columns
    # of their own as a JSON object (jsonb), not HSTORE text
    "OSM": {"USE_CUSTOM_INDEXING": "NO", "TAGS_FORMAT": "JSON"},
}
OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # old binary Office files (.xls)
# GDAL picks a driver by the extension too: content sniffed as another format is read under its own
DRIVER_EXTENSIONS = {"GeoJSON": ".geojson", "GeoJSONSeq": ".geojsonl", "GPKG": ".gpkg", "FlatGeobuf": ".fgb",
                     "LIBKML": ".kml", "GPX": ".gpx", "GML": ".gml", "OpenFileGDB": ".gdb", "DXF": ".dxf"}
SUPPORTED = ("CSV/TSV/TXT, Excel .xlsx, GeoJSON, GeoJSONSeq, zipped Shapefile, GeoPackage, KML/KMZ, GPX, GML, "
             "FlatGeobuf, GeoParquet, zipped MapInfo TAB or MIF, zipped Esri File Geodatabase (.gdb), SpatiaLite, "
             "OpenStreetMap (.osm, .pbf) or AutoCAD DXF")
# single compressed files: how each is read, and the extension its name ends with
COMPRESSED: dict[str, tuple[Callable[[Path], io.BufferedIOBase], str]] = {
    "gzip": (gzip.GzipFile, ".gz"), "bzip2": (bz2.BZ2File, ".bz2"), "xz": (lzma.LZMAFile, ".xz")}
OSM_XML = re.compile(rb"<osm[\s>]")
DXF_START = re.compile(rb"(999[ \t]*\r?\n[^\n]*\n\s*)*0[ \t]*\r?\n[ \t]*SECTION\b")  # comments, then a section
MIF_HEADER = re.compile(rb"version\s+\d+\s.*\bcolumns\s+\d+", re.DOTALL)
XML_HEAD_BYTES = 64 << 10  # where an XML file's DOCTYPE and entity declarations (or a .tab's definition) are


@dataclass
class DataFile:
    path: Path
    kind: str  # "text" (delimited text), "gdal" or "parquet"
    label: str  # the name users know it by, for messages: parks.zip/roads.shp
    driver: str | None = None
    options: dict[str, str] = field(default_factory=dict)


def sniff(path: Path) -> str | None:
    """The format by content: a GDAL driver name, 'zip', a COMPRESSED kind, 'parquet', 'text', or None."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not head:
        return None
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and head[4:10] == b"1AY&SY":
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(OLE2):
        return "xls"
    if head.startswith(b"SQLite format 3\x00"):
        return "GPKG" if head[68:72] in GPKG_APPLICATION_IDS else "SQLite"
    if head.startswith(b"AutoCAD Binary DXF"):
        return "DXF"
    if head[4:15] == b"\x0a\x09OSMHeader":  # an OpenStreetMap PBF: a blob header's length, then its type
        return "OSM"
    if head.startswith(b"fgb\x03"):
        return "FlatGeobuf"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head[:4] == b"\x00\x00\x27\x0a":
        return "ESRI Shapefile"
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"\x1e"):
        return "GeoJSONSeq"
    if text.startswith(b"<"):
        lower = head.lower()
        if b"<gpx" in lower:
            return "GPX"
        if b"<kml" in lower:
            return "LIBKML"
        if b"opengis.net/gml" in lower or b"<gml:" in lower:
            return "GML"
        if OSM_XML.search(lower):
            return "OSM"
        return "xml"  # XML of another kind
    if text.startswith(b"{") or text.startswith(b"["):
        return json_flavour(path)
    if DXF_START.match(text):
        return "DXF"
    if text[:6].lower() == b"!table" or MIF_HEADER.match(text[:1024].lower()):
        return "MapInfo File"  # its .tab or .mif: text, but not delimited text
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")) and not utf16_without_mark(head) \
            and not _text_with_stray_nuls(head):
        return None  # binary we do not know
    return "text"


def _text_with_stray_nuls(head: bytes) -> bool:
    """Text with a NUL byte or two in it (the loader reports the values holding them)."""
    return head.count(0) <= max(len(head) // 100, 1) and _printable(head.replace(b"\x00", b""), "utf-8")


def _printable(data: bytes, encoding: str) -> bool:
    text = data.decode(encoding, errors="replace")
    return bool(text) and sum(c.isprintable() or c in "\t\r\n" for c in text) >= 0.95 * len(text)


def utf16_without_mark(head: bytes) -> str | None:
    """'utf-16-le' or 'utf-16-be' for UTF-16 text without a byte-order mark: zero bytes in one byte
    position of the pairs (the high byte of ASCII characters), hardly any in the other."""
    first, second = head[0::2], head[1::2]
    pairs = min(len(first), len(second))
    if pairs < 8:
        return None
    zeros_first, zeros_second = first.count(0) / pairs, second.count(0) / pairs
    found = "utf-16-le" if zeros_first <= 0.02 and zeros_second >= 0.2 else \
        "utf-16-be" if zeros_second <= 0.02 and zeros_first >= 0.2 else None
    return found if found and _printable(head[: pairs * 2], found) else None


def json_flavour(path: Path) -> str:
    """GeoJSONSeq when the first line is a whole JSON object of its own, else GeoJSON."""
    import json

    with path.open("rb") as handle:
        first = handle.readline(1 << 20).strip()
        second = handle.readline(1 << 20).strip()
    try:
        value = json.loads(first)
    except (ValueError, RecursionError):  # not one object on its own line, or nested beyond Python's reach
        return "GeoJSON"
    if isinstance(value, dict) and value.get("type") in ("Feature", "Point", "LineString", "Polygon", "MultiPoint",
                                                          "MultiLineString", "MultiPolygon", "GeometryCollection") \
            and second.startswith(b"{"):
        return "GeoJSONSeq"
    return "GeoJSON"


def find_data_files(path: Path, name: str, workdir: Path, limits: LoaderLimits) -> list[DataFile]:
    """Every data file the upload holds, archives unpacked into workdir."""
    size = path.stat().st_size
    if size == 0:
        raise JobError(f"{name} is empty; upload the file again with its data")
    if size > limits.max_file_bytes:
        raise JobError(f"{name} is {size:,} bytes, over the {limits.max_file_bytes:,}-byte limit; "
                       "split it into smaller files")
    budget = [limits.max_unpacked_bytes]
    found = _examine(path, name, workdir, limits, depth=0, budget=budget)
    if not found:
        raise JobError(f"{name} holds no data file in a format we read; upload {SUPPORTED}")
    return found


def _examine(path: Path, label: str, workdir: Path, limits: LoaderLimits, depth: int, budget: list[int],
             inside_archive: bool = False) -> list[DataFile]:
    fmt = sniff(path)
    suffix = path.suffix.lower()
    if fmt == "zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise JobError(f"{label} is a damaged zip ({exc}); upload it again") from exc
        if any(n.startswith("xl/") for n in names) and "[Content_Types].xml" in names:
            return [DataFile(path, "gdal", label, "XLSX", GDAL_OPTIONS["XLSX"])]
        if "mimetype" in names and "content.xml" in names:  # OpenDocument spreadsheet
            return [DataFile(path, "gdal", label, "ODS", GDAL_OPTIONS["ODS"])]
        return _unzip(path, label, workdir, limits, depth, budget)
    if fmt in COMPRESSED:
        return _decompress(path, fmt, label, workdir, limits, depth, budget)
    if fmt == "parquet":
        return [DataFile(path, "parquet", label)]
    if fmt == "xls":
        raise JobError(f"{label} is an old Excel .xls workbook; save it as .xlsx (or CSV) and upload it again")
    if fmt == "text":
        if inside_archive and suffix not in {".csv", ".tsv", ".psv", ".tab"}:
            return []  # a README.txt next to the data is not data
        return [DataFile(path, "text", label)]
    if fmt == "xml":
        if inside_archive:
            return []  # a schema (.xsd), a GDAL .gfs or metadata next to the data
        raise JobError(f"{label} is XML, but not GPX, KML, GML or OpenStreetMap; upload {SUPPORTED}")
    if fmt in ("GML", "OSM") and _declares_entities(path):
        raise JobError(f"{label} declares XML entities, which are refused (they can read local files or expand "
                       "without end); export it again without a DOCTYPE")
    if fmt is None:
        if inside_archive:
            return []
        raise JobError(f"{label} is not in a format we read (its content is neither text nor a known "
                       f"geodata format); upload {SUPPORTED}")
    if fmt == "MapInfo File":
        return [DataFile(_mapinfo_table(path, label), "gdal", label, fmt)]
    if fmt == "ESRI Shapefile" and suffix != ".shp":
        return []
    if fmt == "ESRI Shapefile" and (missing := [s for s in (".dbf", ".shx") if sidecar(path, s) is None]):
        raise JobError(f"{label} has no {' or '.join(missing)} next to it; zip the .shp with its .dbf, .shx, .prj "
                       "(and .cpg) and upload the zip")
    return [DataFile(_named_for(path, fmt, workdir), "gdal", label, fmt, GDAL_OPTIONS.get(fmt, {}))]


def sidecar(path: Path, suffix: str) -> Path | None:
    """The file beside `path` with its name and another extension (in lower or upper case), if there is one."""
    return next((p for p in (path.with_suffix(suffix), path.with_suffix(suffix.upper())) if p.exists()), None)


def _mapinfo_table(path: Path, label: str) -> Path:
    """A MapInfo .tab with its .dat (or a .mif with its .mid), which hold its attributes."""
    needed = MAPINFO_SIDECARS.get(path.suffix.lower())
    if needed is None:
        raise JobError(f"{label} is a MapInfo table under another name; name it .tab (or .mif), zip it with its "
                       ".dat, .map and .id (or its .mid) and upload the zip")
    if sidecar(path, needed[0]) is None:
        raise JobError(f"{label} has no {needed[0]} next to it; zip the {path.suffix.lower()} with its "
                       f"{', '.join(needed[:3])} and upload the zip")
    with path.open("rb") as handle:
        definition = handle.read(XML_HEAD_BYTES).lower()
    if re.search(rb'\btype\s+"?raster', definition):
        raise JobError(f"{label} is a MapInfo raster registration (where an image lies on the map), not a table of "
                       "features; upload the features themselves")
    if b"isseamless" in definition or b"create view" in definition:  # tables elsewhere, named by their paths
        raise JobError(f"{label} is a seamless table or a view, which reads other tables by their paths on the "
                       "machine that made it; save it in MapInfo as a native table (Save Copy As) and upload that")
    return path


def _geodatabases(folder: Path) -> list[Path]:
    """The Esri File Geodatabase folders under `folder` (itself included), by their catalogue table."""
    return sorted({marker.parent for marker in folder.rglob("*") if marker.name.lower() == FILEGDB_MARKER})


def _declares_entities(path: Path) -> bool:
    with path.open("rb") as handle:
        return b"<!entity" in handle.read(XML_HEAD_BYTES).lower()


def _named_for(path: Path, driver: str, workdir: Path) -> Path:
    """`path`, or a link to it in the work directory named with its format's extension: when its own
    name says otherwise (GeoJSON content in parks.csv), since GDAL would open it with the driver its
    extension names; and always for GML, since GDAL may write what it learns of the schema beside it."""
    wanted = DRIVER_EXTENSIONS.get(driver)
    suffix = path.suffix.lower()
    if wanted is None:
        return path
    if driver != "GML" and (suffix == wanted or (driver == "GeoJSON" and suffix == ".json") or (
            driver == "GeoJSONSeq" and suffix in (".geojsons", ".geojsonseq", ".ndjson", ".jsonl", ".json"))):
        return path
    folder = workdir / f"renamed_{len(list(workdir.glob('renamed_*')))}"
    folder.mkdir(parents=True)
    link = folder / f"{path.stem}{wanted}"
    link.symlink_to(path.resolve())
    return link


def _safe_member(name: str, label: str) -> PurePosixPath:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise JobError(f"{label} contains the entry {name!r}, a path outside the archive; such zips are refused, "
                       "re-create the zip from the data folder itself")
    return pure


def _unzip(path: Path, label: str, workdir: Path, limits: LoaderLimits, depth: int,
           budget: list[int]) -> list[DataFile]:
    if depth >= limits.max_nesting:
        raise JobError(f"{label} nests archives more than {limits.max_nesting} deep; unpack it and upload the data")
    target = workdir / f"unpacked_{depth}_{len(list(workdir.iterdir())) if workdir.exists() else 0}"
    target.mkdir(parents=True)
    packed = max(path.stat().st_size, 1)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise JobError(f"{label} is a damaged zip ({exc}); upload it again") from exc
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > limits.max_archive_entries:
            raise JobError(f"{label} holds {len(members):,} files, over the limit of {limits.max_archive_entries:,}")
        declared = sum(m.file_size for m in members)
        if declared > packed * limits.max_expansion_ratio or declared > budget[0]:
            raise JobError(f"{label} would expand to {declared:,} bytes from {packed:,} (a zip bomb?); "
                           "the limit is a ratio of "
                           f"{limits.max_expansion_ratio} and {budget[0]:,} bytes in all")
        for member in members:
            relative = _safe_member(member.filename, label)
            if stat.S_ISLNK(member.external_attr >> 16):
                raise JobError(f"{label} contains the symbolic link {member.filename!r}; zips with links are refused, "
                               "zip the data files themselves and upload that")
            if relative.name.startswith(".") or "__MACOSX" in relative.parts:
                continue
            destination = target.joinpath(*relative.parts)
            try:
                destination.parent.mkdir(parents=True, exist_ok=True)
                if destination.exists():
                    raise FileExistsError(member.filename)
            except OSError as exc:
                raise JobError(f"{label} holds the entry {member.filename!r} twice, or as both a file and a folder; "
                               "re-create the zip from the data folder itself") from exc
            try:
                with archive.open(member) as source, destination.open("wb") as out:
                    _copy_limited(source, out, budget, label, max(member.compress_size, 1) * limits.max_expansion_ratio)
            except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
                raise JobError(f"{label}: the entry {member.filename!r} cannot be unpacked ({exc}); "
                               "the zip is damaged, encrypted or uses a compression we do not read; "
                               "zip it again without a password and upload it") from exc
    geodatabases = _geodatabases(target)  # a folder of tables read as one: each of its feature classes a layer
    found = [DataFile(_named_for(gdb, "OpenFileGDB", workdir), "gdal",
                      label if gdb == target else f"{label}/{gdb.relative_to(target).as_posix()}", "OpenFileGDB")
             for gdb in geodatabases]
    for item in sorted(target.rglob("*")):
        if any(gdb in item.parents for gdb in geodatabases):
            continue
        if item.is_file() and item.suffix.lower() not in SIDECARS:
            inner = f"{label}/{item.relative_to(target).as_posix()}"
            found += _examine(item, inner, workdir, limits, depth + 1, budget, inside_archive=True)
    # delimited text beside geodata describes it (a field-name mapping, a data dictionary), unless it has
    # coordinate or geometry columns of its own: then it is a layer too
    return [f for f in found if f.kind != "text" or _names_geodata(f.path)] or found


def _names_geodata(path: Path) -> bool:
    """Whether a delimited text file's header names coordinate columns or a geometry column."""
    from locaria_batch.jobs.file_loader import columns as col  # Arrow: only for archives that need it

    with path.open("rb") as handle:
        header = handle.read(1 << 16).decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()[:1]
    if not header:
        return False
    delimiter = max(",;\t|", key=header[0].count)
    names = [n.strip().strip('"') for n in header[0].split(delimiter)]
    return col.find_coordinate_columns(names) is not None or any(map(col.is_geometry_text_name, names))


def _copy_limited(source: IO[bytes] | io.BufferedIOBase, out: IO[bytes], budget: list[int], label: str,
                  entry_limit: int) -> None:
    written = 0
    while chunk := source.read(1 << 20):
        written += len(chunk)
        budget[0] -= len(chunk)
        if budget[0] < 0 or written > entry_limit:
            raise JobError(f"{label} expands far beyond its size (a zip bomb?); unpacking stopped. "
                           "Upload the data itself or raise the loader's limits")
        out.write(chunk)


def _decompress(path: Path, kind: str, label: str, workdir: Path, limits: LoaderLimits, depth: int,
                budget: list[int]) -> list[DataFile]:
    """One compressed file (parks.geojson.gz, london.osm.bz2): unpacked within the limits, then examined."""
    if depth >= limits.max_nesting:
        raise JobError(f"{label} nests archives more than {limits.max_nesting} deep; unpack it and upload the data")
    opener, suffix = COMPRESSED[kind]
    inner_name = label.rsplit("/", 1)[-1]
    inner_name = inner_name[:-len(suffix)] if inner_name.lower().endswith(suffix) else f"{inner_name}.data"
    target = workdir / f"unpacked_{kind}_{depth}"
    target.mkdir(parents=True, exist_ok=True)
    destination = target / inner_name
    packed = max(path.stat().st_size, 1)
    try:
        with opener(path) as source, destination.open("wb") as out:
            _copy_limited(source, out, budget, label, packed * limits.max_expansion_ratio)
    except (OSError, EOFError, lzma.LZMAError) as exc:  # a bad gzip or bzip2 stream is an OSError
        raise JobError(f"{label} is a damaged or truncated {suffix} file ({exc}); upload it again") from exc
    found = _examine(destination, inner_name if "/" not in label else f"{label}/{inner_name}", workdir, limits,
                     depth + 1, budget)
    return found
