"""Readers: every layer of a data file as a stream of Arrow record batches.

GDAL formats go through pyogrio's Arrow stream, except GeoJSON and GeoJSONSeq whenever our own parser
(geojson.py) reads them as GDAL would; delimited text through Arrow's CSV reader (after its encoding,
delimiter and decimal mark are found); GeoParquet through pyarrow.parquet.
"""

from __future__ import annotations

import codecs
import csv
import html
import io
import json
import operator
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pyarrow.types as pat

from locaria_batch.errors import first_line
from locaria_batch.job import JobError
from locaria_batch.jobs.file_loader import columns as col
from locaria_batch.jobs.file_loader import geojson
from locaria_batch.jobs.file_loader.limits import MAX_REPORTED_ROWS, counted
from locaria_batch.jobs.file_loader.sources import MAPINFO_SIDECARS, DataFile, sidecar, utf16_without_mark
from locaria_batch.jobs.names import unique_name

SAMPLE_BYTES = 1 << 20

CSV_BLOCK_BYTES = 1 << 20  # Arrow reads several blocks ahead: bigger blocks cost memory, not speed
# formats with one layer, named after the file; opening GeoJSON reads it whole, so it is opened once only
ONE_LAYER_DRIVERS = {"GeoJSON", "GeoJSONSeq", "FlatGeobuf", "ESRI Shapefile", "DXF"}
SLOW_TO_COUNT = {"GeoJSON", "GeoJSONSeq", "XLSX", "ODS", "GPX", "LIBKML"}  # counting would parse them twice
SPREADSHEET_DRIVERS = {"XLSX", "ODS"}
GDAL_BATCH_ROWS = 8_192  # a batch of 33-vertex polygons is ~4.5 MB: peak memory stays low whatever the shapes
GPX_LAYERS = ("waypoints", "routes", "tracks")  # route_points/track_points repeat routes/tracks vertex by vertex
DELIMITERS = (",", ";", "\t", "|")
MAPINFO_CHARSET = re.compile(rb'^\s*!?charset\s+"?(\w+)', re.IGNORECASE | re.MULTILINE)  # .tab: !charset; .mif
SEPARATOR_LINE = re.compile(r'^\s*sep=([^"\r\n])\s*$', re.IGNORECASE)  # Excel's first line naming the delimiter
DECIMAL_COMMA = re.compile(r"^\s*-?\d+,\d+\s*$")
DECIMAL_POINT = re.compile(r"^\s*-?\d+\.\d+\s*$")
# encodings a text file without a byte-order mark may be in, besides UTF-8 (charset-normalizer picks)
ENCODING_CANDIDATES = ("cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "cp1258",
                       "koi8_r", "koi8_u", "iso8859_2", "iso8859_5", "iso8859_7", "iso8859_15", "mac_roman",
                       "cp437", "cp850", "cp866", "shift_jis", "euc_jp", "gb18030", "big5", "euc_kr",
                       "utf_16_le", "utf_16_be")
COHERENCE_TIE = 0.02  # charset-normalizer's language coherence this close counts as the same
DETECTION_BYTES = 64 << 10  # of the lines that are not plain ASCII: enough to tell, and quick
# GeoParquet-like files without `geo` metadata: a binary column by one of these names holding WKB
WKB_COLUMN_NAMES = ("geometry", "geom", "wkb_geometry", "wkb", "the_geom", "shape", "geog", "geography")


@dataclass(frozen=True)
class ReadOptions:
    """How to read: rows per batch, the user's text encoding (None: detected), the longest text line."""

    batch_rows: int = 65_536
    encoding: str | None = None
    max_line_bytes: int = 128 << 20
    block_bytes: int | None = None  # Arrow's CSV block (a row must fit one); None: CSV_BLOCK_BYTES

    @property
    def block(self) -> int:
        return self.block_bytes or CSV_BLOCK_BYTES


class LineTooLong(JobError):
    """A row of delimited text does not fit the block Arrow reads it in."""


@dataclass
class RawLayer:
    """One layer as it comes out of its reader."""

    name: str
    label: str  # for messages: "parks.zip/roads.shp, layer roads"
    fields: list[pa.Field]  # attribute fields, original names, in order
    batches: Iterator[pa.RecordBatch]  # the fields' columns (same order), then the geometry column if any
    geometry_column: str | None  # name of the WKB column in the batches
    crs: str | None  # "EPSG:n", other CRS text, or None when the source does not say
    declared_type: str | None
    total: int | None
    types: list[str] | None = None  # PostgreSQL types when the reader knows better than the Arrow types
    spreadsheet: bool = False  # cells a spreadsheet cannot type (dates before 1900) arrive as text
    decimal_comma: bool = False
    skipped_rows: list[str] = field(default_factory=list)  # rows the reader could not parse: numbers, or texts
    skipped_count: list[int] = field(default_factory=lambda: [0])
    encoding: str | None = None  # the text encoding read with (text formats)
    encoding_guessed: bool = False  # detected rather than known (a byte-order mark, valid UTF-8, the user's)
    declared_crs: str | None = None  # a CRS the file names that GDAL may have passed over (GeoJSON's crs member)

    def skipped_warning(self) -> str | None:
        """The rows of the wrong number of fields the reader left out, as a warning (once they are read)."""
        if not self.skipped_count[0]:
            return None
        return (f"{counted(self.skipped_count[0], 'row has', 'rows have')} the wrong number of fields; left out "
                f"(rows {', '.join(self.skipped_rows[:MAX_REPORTED_ROWS])})")


def display_name(data: DataFile, layer: str) -> str:
    """A layer named after the stored file (incoming/12.geojson) takes the name the user gave the file."""
    return PurePosixPath(data.label).stem if layer == data.path.stem else layer


def workbook_sheets(data: DataFile) -> list[str]:
    """Sheet names from an .xlsx's workbook.xml: listing layers through GDAL parses every sheet."""
    with zipfile.ZipFile(data.path) as book:
        text = book.read("xl/workbook.xml").decode("utf-8", errors="replace")
    return [html.unescape(name) for name in re.findall(r'<(?:\w+:)?sheet\b[^>]*?\bname="([^"]*)"', text)]


def layer_names(data: DataFile) -> list[str]:
    if data.kind != "gdal" or data.driver in ONE_LAYER_DRIVERS:
        return [data.path.stem]
    if data.driver == "XLSX":
        try:
            return workbook_sheets(data)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise JobError(f"{data.label} is not a complete Excel workbook ({exc}); save it again as .xlsx") from exc
    import pyogrio  # see open_gdal

    try:
        listed = pyogrio.list_layers(data.path)
    except Exception as exc:
        raise JobError(f"{data.label} cannot be opened as {data.driver} ({_gdal_message(exc, data)}); "
                       "the file may be damaged or truncated, export it again") from exc
    names = [str(row[0]) for row in listed]
    if data.driver == "GPX":
        names = [n for n in names if n in GPX_LAYERS]
    return names


@contextmanager
def open_layer(data: DataFile, layer: str, read: ReadOptions, label: str) -> Iterator[RawLayer]:
    """One layer as batches; `label` (the user's file and layer) names it in messages."""
    if data.kind == "text":
        raw = open_text(data, read, label)
        raw.name = display_name(data, raw.name)
        yield raw
    elif data.kind == "parquet":
        raw = open_parquet(data, read.batch_rows, label)
        raw.name = display_name(data, raw.name)
        yield raw
    elif data.driver in ("GeoJSON", "GeoJSONSeq") and (fast := open_geojson(data, read.batch_rows, label)):
        fast.name = display_name(data, fast.name)
        yield fast
    else:
        with open_gdal(data, layer, read, label) as raw:
            raw.name = display_name(data, raw.name)
            yield raw


def _gdal_message(exc: BaseException, data: DataFile | None = None) -> str:
    """GDAL's first line, with the path of our working copy replaced by the name the user knows."""
    message = first_line(exc).split("; It might help to specify the correct driver")[0][:300]  # not the user's to do
    if data is not None:
        for path in {str(data.path), str(data.path.resolve())}:
            message = message.replace(path, data.label)
    return message


def _unreadable(label: str, exc: BaseException, data: DataFile, part_way: bool = False) -> JobError:
    """GDAL's complaint as one sentence about the user's file."""
    message = _gdal_message(exc, data)
    if "Too many nested" in message or "nesting" in message.lower():
        return JobError(f"{label} nests JSON objects or arrays too deeply to be read ({message}); flatten its "
                        "properties and upload it again")
    if part_way:
        return JobError(f"{label} stops being readable part way ({message}); the file is damaged or truncated, "
                        "export it again")
    return JobError(f"{label} cannot be read ({message}); the file may be damaged or truncated, export it again")


@contextmanager
def open_gdal(data: DataFile, layer: str, read: ReadOptions, label: str) -> Iterator[RawLayer]:
    # GDAL is imported only for the files that need it: ~70 MB of memory and a tenth of a second that
    # CSV, GeoJSON and Parquet loads do not pay
    import pyogrio
    from pyogrio.errors import DataLayerError
    from pyogrio.raw import open_arrow

    only = data.driver in ONE_LAYER_DRIVERS
    encoding, guessed = dbf_encoding(data, read.encoding) if data.driver == "ESRI Shapefile" else (None, False)
    # GDAL passes a MapInfo table's bytes through as they are when the table names no charset
    recode, recode_guessed = mapinfo_encoding(data, read.encoding) if data.driver == "MapInfo File" else (None, False)
    try:
        info = {} if data.driver in SLOW_TO_COUNT else pyogrio.read_info(data.path, layer=None if only else layer,
                                                                         encoding=encoding, **data.options)
        stream = open_arrow(data.path, layer=None if only else layer,
                            batch_size=min(read.batch_rows, GDAL_BATCH_ROWS), use_pyarrow=True,
                            return_fids=False, encoding=encoding, datetime_as_string=True, **data.options)
        meta, reader = stream.__enter__()
    except DataLayerError:
        if data.driver != "XLSX":
            raise JobError(f"{label} cannot be opened; the file may be damaged, export it again") from None
        # GDAL leaves out empty sheets
        yield RawLayer(name=layer, label=label, fields=[], batches=iter(()), geometry_column=None, crs=None,
                       declared_type=None, total=0)
        return
    except Exception as exc:
        raise _unreadable(label, exc, data) from exc
    try:
        schema: pa.Schema = reader.schema
        at = next((i for i, f in enumerate(schema) if (f.metadata or {}).get(b"ARROW:extension:name")
                   == b"geoarrow.wkb"), None)
        names = schema.names
        if at is not None:  # named apart from an attribute of the same name (GDAL calls both wkb_geometry)
            names[at] = unique_name(names[at], set(names[:at] + names[at + 1:]))
        geometry = names[at] if at is not None else None
        # GDAL's Arrow datetimes drop each value's own UTC offset (KML, GPX, GML): they are read as text and
        # parsed here, in UTC when the first rows carry offsets
        stamps = [i for i, f in enumerate(schema) if (f.metadata or {}).get(b"GDAL:OGR:type") == b"DateTime"]
        rows = iter(reader)
        try:
            head = next(rows, None) if stamps else None
        except Exception as exc:
            raise _unreadable(label, exc, data, part_way=True) from exc
        zoned = {i: head is not None and col.has_utc_offsets(head.column(i)) for i in stamps}
        fields = [pa.field(name, pa.timestamp("ms", tz="UTC" if zoned[i] else None)) if i in zoned
                  else f.with_name(name) for i, (f, name) in enumerate(zip(schema, names, strict=True)) if i != at]
        total = int(info["features"]) if info.get("features") is not None and info["features"] >= 0 else None

        def batches() -> Iterator[pa.RecordBatch]:
            start = 0
            try:
                for batch in chain([head] if head is not None else [], rows):
                    for i, utc in zoned.items():
                        batch = batch.set_column(i, schema.field(i).name, col.iso_datetimes(batch.column(i), utc))
                    batch = batch.rename_columns(names) if names != schema.names else batch
                    batch = recoded(batch, recode) if recode else batch
                    if geometry is not None and data.driver == "FlatGeobuf" and _broken_binary(batch.column(geometry)):
                        batch = _reread_geometry(data, batch, geometry, start)
                    start += batch.num_rows
                    yield batch
            except Exception as exc:
                raise _unreadable(label, exc, data, part_way=True) from exc

        yield RawLayer(name=layer, label=label, fields=fields, batches=batches(), geometry_column=geometry,
                       crs=meta.get("crs"), declared_type=meta.get("geometry_type"), total=total,
                       spreadsheet=data.driver in SPREADSHEET_DRIVERS, encoding=encoding or recode,
                       encoding_guessed=guessed or recode_guessed,
                       declared_crs=geojson_crs_member(data.path) if data.driver == "GeoJSON" else None)
    finally:
        stream.__exit__(None, None, None)


def open_geojson(data: DataFile, batch_size: int, label: str) -> RawLayer | None:
    """The layer through the fast GeoJSON reader; None when only GDAL reads this file as users expect."""
    try:
        spooled = geojson.spool(data.path, sequence=data.driver == "GeoJSONSeq")
    except geojson.NotFast:
        return None
    schema = geojson.arrow_schema(spooled)
    return RawLayer(name=data.path.stem, label=label, fields=list(schema)[:-1],
                    batches=geojson.batches(spooled, batch_size), geometry_column=schema.names[-1], crs=spooled.crs,
                    declared_type=spooled.schema.declared_type(), total=spooled.schema.rows,
                    declared_crs=geojson_crs_member(data.path) if data.driver == "GeoJSON" else None)


def _broken_binary(column: pa.Array | pa.ChunkedArray) -> bool:
    """GDAL's FlatGeobuf Arrow stream garbles the geometry column of a batch holding a missing
    geometry (offsets going back, no data): such a batch's geometries are read again."""
    from locaria_batch.jobs.file_loader.columns import plain_binary, wkb_offsets

    offsets, raw = wkb_offsets(plain_binary(column))
    return bool(len(offsets) > 1 and (np.any(np.diff(offsets) < 0) or int(offsets[-1]) > len(raw)))


def _reread_geometry(data: DataFile, batch: pa.RecordBatch, geometry: str, start: int) -> pa.RecordBatch:
    """The batch with its geometries read again one feature at a time (single-feature batches are sound)."""
    from pyogrio.raw import open_arrow

    values: list[bytes | None] = []
    with open_arrow(data.path, skip_features=start, batch_size=1, use_pyarrow=True, columns=[],
                    **data.options) as (_meta, reader):
        for single in reader:
            value = single.column(single.num_columns - 1)[0].as_py() if single.num_rows else None
            values.append(value or None)
            if len(values) == batch.num_rows:
                break
    index = batch.schema.get_field_index(geometry)
    return batch.set_column(index, batch.schema.field(index), pa.array(values, pa.binary()))


def dbf_encoding(data: DataFile, wanted: str | None) -> tuple[str | None, bool]:
    """The encoding to read a shapefile's text in, and whether it is a guess.  GDAL recodes the text when a
    .cpg or the DBF's language byte names its encoding (None: leave it to GDAL), but not in its Arrow stream
    when neither does: then the records' bytes are detected as a text file's would be."""
    if wanted:
        return wanted, False
    if sidecar(data.path, ".cpg") is not None:
        return None, False
    dbf = sidecar(data.path, ".dbf")
    if dbf is None:
        return None, False
    with dbf.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
    if len(head) > 29 and head[29] != 0:
        return None, False  # the language driver byte is set: GDAL honours it
    encoding, guessed = detect_encoding(dbase_records(head))
    return ("UTF-8" if encoding == "utf-8" else encoding), guessed


def dbase_records(head: bytes) -> bytes:
    """The records of a dBase file's first bytes (after its header), their padding (blanks, or NULs in a
    MapInfo .dat) squeezed: text to tell the encoding from, not mostly padding."""
    records = head[int.from_bytes(head[8:10], "little"):] if len(head) > 10 else b""
    return re.sub(rb"[ \x00]{2,}", b" ", records[: len(records) - 4])  # a character may straddle the cut


def mapinfo_encoding(data: DataFile, wanted: str | None) -> tuple[str | None, bool]:
    """The encoding of a MapInfo table's text when its .tab (or .mif) says `!charset Neutral` or nothing:
    the user's, else detected from its .dat records (or .mid lines); None when GDAL recodes the text
    itself or it is UTF-8 already, and whether it is a guess."""
    with data.path.open("rb") as handle:
        definition = handle.read(SAMPLE_BYTES)
    named = MAPINFO_CHARSET.search(definition)
    if named and named.group(1).lower() != b"neutral":
        return None, False
    if wanted:
        return wanted, False
    source = sidecar(data.path, MAPINFO_SIDECARS[data.path.suffix.lower()][0])  # the .dat (a dBase file) or .mid
    if source is None:
        return None, False
    with source.open("rb") as handle:
        sample = handle.read(SAMPLE_BYTES)
    encoding, guessed = detect_encoding(dbase_records(sample) if source.suffix.lower() == ".dat" else sample)
    return (None, False) if encoding == "utf-8" else (encoding, guessed)


def recoded(batch: pa.RecordBatch, encoding: str) -> pa.RecordBatch:
    """The batch with its text columns' bytes read in `encoding` (GDAL handed them over unread)."""
    columns = []
    for column in batch.columns:
        if pa.types.is_string(column.type):
            raw = column.view(pa.binary()).to_pylist()
            column = pa.array([None if v is None else v.decode(encoding, errors="replace") for v in raw], pa.string())
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def open_parquet(data: DataFile, batch_size: int, label: str) -> RawLayer:
    try:
        parquet = pq.ParquetFile(data.path)
    except Exception as exc:
        raise JobError(f"{label} is not a readable Parquet file ({exc}); export it again") from exc
    schema = parquet.schema_arrow
    try:
        geo = json.loads((schema.metadata or {}).get(b"geo", b"{}") or b"{}")
    except ValueError:
        geo = {}
    geometry = geo.get("primary_column") if isinstance(geo, dict) else None
    crs: str | None = None
    if not geometry:
        geometry = _wkb_column(parquet)  # no metadata: a WKB column is still the geometry, CRS unknown
    elif geometry:
        spec = geo.get("columns", {}).get(geometry, {})
        if spec.get("encoding", "WKB").upper() != "WKB":
            raise JobError(f"{label} stores geometry as {spec.get('encoding')}; write the GeoParquet with "
                           "WKB geometry encoding and upload it again")
        projjson = spec.get("crs", "absent")
        if projjson == "absent" or projjson is None:
            crs = "EPSG:4326"  # GeoParquet's default is OGC:CRS84
        elif isinstance(projjson, dict) and isinstance(projjson.get("id"), dict):
            crs = f"{projjson['id'].get('authority')}:{projjson['id'].get('code')}"
        else:
            crs = json.dumps(projjson) if not isinstance(projjson, str) else projjson
    fields = [f for f in schema if f.name != geometry]
    order = [f.name for f in fields] + ([geometry] if geometry else [])  # attributes first, geometry last

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in parquet.iter_batches(batch_size=batch_size):
                yield batch.select(order)
        except Exception as exc:
            raise JobError(f"{label} stops being readable part way ({exc}); export it again") from exc

    return RawLayer(name=data.path.stem, label=label, fields=fields, batches=batches(),
                    geometry_column=geometry, crs=crs, declared_type=None, total=parquet.metadata.num_rows)


def _wkb_column(parquet: pq.ParquetFile) -> str | None:
    """A binary column whose first values are all WKB: by a geometry-like name first, then any."""
    binary: list[str] = [str(f.name) for f in parquet.schema_arrow
                         if pat.is_binary(f.type) or pat.is_large_binary(f.type)]
    if not binary or parquet.metadata.num_rows == 0:
        return None
    ordered = sorted(binary, key=lambda n: (n.lower() not in WKB_COLUMN_NAMES, binary.index(n)))
    sample = next(parquet.iter_batches(batch_size=200, columns=ordered))
    for name in ordered:
        if col.looks_like_wkb(sample.column(name)):
            return name
    return None


GEOJSON_CRS = re.compile(rb'"crs"\s*:\s*\{.*?"name"\s*:\s*"([^"]{1,200})"', re.DOTALL)


def geojson_crs_member(path: Any) -> str | None:
    """The coordinate system a GeoJSON file names in its (2008-style) crs member, if it names one near
    its start.  GDAL falls back to WGS 84 for a name it does not know; the loader must not."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    features = head.find(b'"features"')
    match = GEOJSON_CRS.search(head if features < 0 else head[:features])
    return str(match.group(1).decode("utf-8", "replace")) if match else None


# -- delimited text ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextFormat:
    encoding: str  # a Python codec name
    delimiter: str
    decimal_comma: bool
    header: list[str]
    encoding_guessed: bool = False
    lines_before_header: int = 0  # Excel's "sep=;" line


def detect_encoding(sample: bytes) -> tuple[str, bool]:
    """(Python codec, whether it is a guess).  A byte-order mark or valid UTF-8 is not a guess; anything
    else is charset-normalizer's best reading of the lines that are not plain ASCII."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", False
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", False
    wide = utf16_without_mark(sample[:DETECTION_BYTES])
    if wide is not None:
        return wide, True
    cut = sample[: sample.rfind(b"\n") + 1] if b"\n" in sample[:-1] else sample
    try:
        cut.decode("utf-8")
        return "utf-8", False
    except UnicodeDecodeError:
        pass
    import charset_normalizer

    probe = b"\n".join(line for line in cut.split(b"\n") if max(line, default=0) >= 0x80)[:DETECTION_BYTES]
    matches = charset_normalizer.from_bytes(probe, cp_isolation=list(ENCODING_CANDIDATES))
    best = matches.best()
    if best is None:
        return ("cp1252" if _decodes(probe, "cp1252") is not None else "latin-1"), True
    found = codecs.lookup(best.encoding).name
    western = next((m for m in matches if codecs.lookup(m.encoding).name == "cp1252"), None)
    # the most common encoding wins when the text reads the same in it, or when nothing in the text
    # tells one language from another (a few accented words) and it reads as cleanly
    if found != "cp1252" and western is not None and (str(western) == str(best) or (
            western.chaos <= best.chaos and western.coherence >= best.coherence - COHERENCE_TIE)):
        found = "cp1252"
    return found, True


def _decodes(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def check_encoding(name: str) -> str:
    """A user's encoding name as Python's codec name; unknown names are refused."""
    try:
        return codecs.lookup(name.strip()).name
    except LookupError:
        raise JobError(f"the encoding {name[:60]!r} is not known; use a name such as utf-8, cp1252, cp1251, "
                       "latin-1 or utf-16") from None


def sniff_text(data: DataFile, label: str, wanted: str | None = None) -> TextFormat:
    with data.path.open("rb") as handle:
        sample = handle.read(SAMPLE_BYTES)
    encoding, guessed = (check_encoding(wanted), False) if wanted else detect_encoding(sample)
    text = sample.decode(encoding, errors="replace")
    lines = text.splitlines()[:50]
    if len(sample) == SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line of a sample may be cut
    named = SEPARATOR_LINE.match(lines[0]) if lines else None
    if named:
        lines = lines[1:]
    if not lines or not lines[0].strip():
        raise JobError(f"{label} has no header line; put the column names on the first line")
    if len(sample) == SAMPLE_BYTES and b"\n" not in sample and b"\r" not in sample:
        raise JobError(f"{label}: its first line is longer than {SAMPLE_BYTES:,} bytes, too long for a header of "
                       "column names; check the file is delimited text with the column names on the first line")
    preferred = "\t" if data.path.suffix.lower() in (".tsv", ".tab") else "|" if data.path.suffix.lower() == ".psv" \
        else None
    csv.field_size_limit(max(csv.field_size_limit(), SAMPLE_BYTES * 2))  # a sample's long cell is still a cell
    best, best_score = ",", (-1, 0)
    for delimiter in [named.group(1)] if named else DELIMITERS:
        rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
        width = len(rows[0]) if rows else 0
        consistent = sum(1 for r in rows if len(r) == width)
        score = (int(consistent >= 0.9 * len(rows)) * (width > 1), width + (1000 if delimiter == preferred else 0))
        if score > best_score:
            best, best_score = delimiter, score
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=best))
    header = [h.strip() for h in rows[0]]
    # numbers with a decimal comma in some column, and no column mixing them with decimal points (a
    # version number such as 3.5 in a column of its own does not count against them)
    whole = [r for r in rows[1:] if len(r) == len(header)]
    columns = [[c for c in column if c] for column in zip(*whole, strict=True)]
    commas = [any(DECIMAL_COMMA.match(c) for c in column) for column in columns]
    points = [any(DECIMAL_POINT.match(c) for c in column) for column in columns]
    decimal_comma = best != "," and any(commas) and not any(map(operator.and_, commas, points))
    return TextFormat(encoding, best, decimal_comma, header, guessed, lines_before_header=int(named is not None))


def _arrow_encoding(encoding: str) -> str:
    return "utf8" if encoding in ("utf-8", "utf_8") else encoding


def _text_problem(exc: BaseException, label: str, read: ReadOptions, encoding: str) -> JobError:
    """Arrow's complaint about delimited text as one sentence about the user's file."""
    message = str(exc)
    if "straddling" in message or "block size" in message:
        limit = max(read.block, read.max_line_bytes)
        if read.block < read.max_line_bytes:
            return LineTooLong(f"{label} has a line longer than {read.block:,} bytes")
        return JobError(f"{label} has a line longer than {limit:,} bytes (LOCARIA_LOADER_MAX_LINE_BYTES), or a "
                        "quote (\") that is never closed; split the long values, check the quoting, and upload it "
                        "again")
    if "UTF8" in message or isinstance(exc, UnicodeDecodeError):
        return JobError(f"{label} holds text that is not valid {encoding}; give its encoding with --encoding "
                        "(the encoding attribute), or save it as UTF-8 CSV and upload it again")
    return JobError(f"{label} cannot be read as delimited text ({message.splitlines()[0][:200]}); save it as "
                    "UTF-8 CSV and upload it again")


def open_text(data: DataFile, read: ReadOptions, label: str) -> RawLayer:
    fmt = sniff_text(data, label, read.encoding)
    names = [f"c{i}" for i in range(len(fmt.header))]
    before = 1 + fmt.lines_before_header  # lines before the data: the header, and Excel's sep= line
    skipped_rows: list[str] = []
    skipped_count = [0]

    def skip_bad(row: Any) -> str:
        """A row of the wrong number of fields, named by its number or, where the reader cannot tell it (it
        can not when values may hold line breaks), by its text."""
        skipped_count[0] += 1
        if len(skipped_rows) < MAX_REPORTED_ROWS:
            text = " ".join(str(row.text or "").split())
            skipped_rows.append(str(row.number - before) if row.number is not None and row.number > before
                                else repr(text if len(text) <= 40 else text[:39] + "…"))
        return "skip"

    options = pacsv.ReadOptions(column_names=names, skip_rows=before, block_size=read.block,
                                encoding=_arrow_encoding(fmt.encoding))
    parse = pacsv.ParseOptions(delimiter=fmt.delimiter, newlines_in_values=True, invalid_row_handler=skip_bad)
    probing = pacsv.ParseOptions(delimiter=fmt.delimiter, newlines_in_values=True,
                                 invalid_row_handler=lambda row: "skip")  # the read proper counts them
    inferred = pacsv.ConvertOptions(strings_can_be_null=True, null_values=[""],
                                    decimal_point="," if fmt.decimal_comma else ".")
    try:
        with pacsv.open_csv(data.path, read_options=options, parse_options=probing,
                            convert_options=inferred) as probe:
            sample = probe.read_next_batch()
    except StopIteration:
        sample = None
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _text_problem(exc, label, read, fmt.encoding) from exc
    types = [text_column_type(sample.column(i)) if sample is not None else "text" for i in range(len(names))]
    as_text = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True,
                                   null_values=[""])
    reader = pacsv.open_csv(data.path, read_options=options, parse_options=parse, convert_options=as_text)
    fields = [pa.field(h or f"column_{i + 1}", pa.string()) for i, h in enumerate(fmt.header)]

    def batches() -> Iterator[pa.RecordBatch]:
        done = 0
        try:
            for batch in reader:
                _check_line_lengths(batch, done, label, read.max_line_bytes)
                done += batch.num_rows
                for start in range(0, batch.num_rows, read.batch_rows):
                    yield batch.slice(start, read.batch_rows)
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise _text_problem(exc, label, read, fmt.encoding) from exc

    return RawLayer(name=data.path.stem, label=label, fields=fields, batches=batches(), geometry_column=None,
                    crs=None, declared_type=None, total=None, types=types, decimal_comma=fmt.decimal_comma,
                    skipped_rows=skipped_rows, skipped_count=skipped_count, encoding=fmt.encoding,
                    encoding_guessed=fmt.encoding_guessed)


def _check_line_lengths(batch: pa.RecordBatch, before: int, label: str, limit: int) -> None:
    """Refuse a row whose values add up to more than the limit (LOCARIA_LOADER_MAX_LINE_BYTES): a
    cheap bound, checked on the whole batch at once, before any of it reaches the database."""
    if batch.num_rows == 0 or batch.num_columns == 0 or batch.nbytes <= limit:
        return
    lengths = pc.fill_null(pc.binary_length(batch.column(0)), 0)
    for column in batch.columns[1:]:
        lengths = pc.add(lengths, pc.fill_null(pc.binary_length(column), 0))
    longest = pc.max(lengths).as_py() or 0
    if longest > limit:
        row = before + int(pc.index(lengths, longest).as_py()) + 1
        raise JobError(f"{label}: row {row} holds {longest:,} bytes, more than the {limit:,}-byte limit of one line "
                       "(LOCARIA_LOADER_MAX_LINE_BYTES); split its long values and upload it again")


def text_column_type(column: pa.ChunkedArray | pa.Array) -> str:
    """The type Arrow infers from the first block, except that codes with leading zeros stay text."""
    from locaria_batch.jobs.file_loader.columns import pg_type

    kind = column.type
    if pat.is_null(kind):
        return "text"
    if pat.is_integer(kind) or pat.is_floating(kind):
        return "bigint" if pat.is_integer(kind) else "double precision"
    if pat.is_boolean(kind):
        return "boolean"
    if pat.is_string(kind):
        return "text"
    return pg_type(kind)

