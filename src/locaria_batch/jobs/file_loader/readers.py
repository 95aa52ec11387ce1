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
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pyarrow.types as pat
import pyogrio
from pyogrio.errors import DataLayerError
from pyogrio.raw import open_arrow

from locaria_batch.job import JobError
from locaria_batch.jobs.file_loader import geojson
from locaria_batch.jobs.file_loader.sources import DataFile

SAMPLE_BYTES = 1 << 20
CSV_BLOCK_BYTES = 1 << 20  # Arrow reads several blocks ahead: bigger blocks cost memory, not speed
# formats with one layer, named after the file; opening GeoJSON reads it whole, so it is opened once only
ONE_LAYER_DRIVERS = {"GeoJSON", "GeoJSONSeq", "FlatGeobuf", "ESRI Shapefile"}
SLOW_TO_COUNT = {"GeoJSON", "GeoJSONSeq", "XLSX", "ODS", "GPX", "LIBKML"}  # counting would parse them twice
SPREADSHEET_DRIVERS = {"XLSX", "ODS"}
GDAL_BATCH_ROWS = 16_384  # a batch of 33-vertex polygons is ~9 MB: peak memory stays low whatever the shapes
GPX_LAYERS = ("waypoints", "routes", "tracks")  # route_points/track_points repeat routes/tracks vertex by vertex
DELIMITERS = (",", ";", "\t", "|")
DECIMAL_COMMA = re.compile(r"^\s*-?\d+,\d+\s*$")
DECIMAL_POINT = re.compile(r"^\s*-?\d+\.\d+\s*$")
LEADING_ZERO = re.compile(r"^\s*0\d")


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
    skipped_rows: list[int] = field(default_factory=list)  # rows the reader could not parse
    skipped_count: list[int] = field(default_factory=lambda: [0])


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
    try:
        listed = pyogrio.list_layers(data.path)
    except Exception as exc:
        raise JobError(f"{data.label} cannot be opened as {data.driver} ({_gdal_message(exc)}); "
                       "the file may be damaged or truncated, export it again") from exc
    names = [str(row[0]) for row in listed]
    if data.driver == "GPX":
        names = [n for n in names if n in GPX_LAYERS]
    return names


@contextmanager
def open_layer(data: DataFile, layer: str, batch_size: int) -> Iterator[RawLayer]:
    if data.kind == "text":
        raw = open_text(data, batch_size)
        raw.name = display_name(data, raw.name)
        yield raw
    elif data.kind == "parquet":
        raw = open_parquet(data, batch_size)
        raw.name = display_name(data, raw.name)
        yield raw
    elif data.driver in ("GeoJSON", "GeoJSONSeq") and (fast := open_geojson(data, batch_size)) is not None:
        fast.name = display_name(data, fast.name)
        yield fast
    else:
        with open_gdal(data, layer, batch_size) as raw:
            raw.name = display_name(data, raw.name)
            yield raw


def _gdal_message(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


@contextmanager
def open_gdal(data: DataFile, layer: str, batch_size: int) -> Iterator[RawLayer]:
    label = f"{data.label}, layer {layer}"
    only = data.driver in ONE_LAYER_DRIVERS
    try:
        info = {} if data.driver in SLOW_TO_COUNT else pyogrio.read_info(data.path, layer=None if only else layer,
                                                                         **data.options)
        encoding = dbf_encoding(data) if data.driver == "ESRI Shapefile" else None
        stream = open_arrow(data.path, layer=None if only else layer, batch_size=min(batch_size, GDAL_BATCH_ROWS),
                            use_pyarrow=True,
                            return_fids=False, encoding=encoding, **data.options)
        meta, reader = stream.__enter__()
    except DataLayerError:
        if data.driver != "XLSX":
            raise JobError(f"{label} cannot be opened; the file may be damaged, export it again") from None
        # GDAL leaves out empty sheets
        yield RawLayer(name=layer, label=label, fields=[], batches=iter(()), geometry_column=None, crs=None,
                       declared_type=None, total=0)
        return
    except Exception as exc:
        raise JobError(f"{label} cannot be read ({_gdal_message(exc)}); the file may be damaged or truncated, "
                       "export it again") from exc
    try:
        schema: pa.Schema = reader.schema
        geometry = next((f.name for f in schema if (f.metadata or {}).get(b"ARROW:extension:name") == b"geoarrow.wkb"),
                        None)
        fields = [f for f in schema if f.name != geometry]
        total = int(info["features"]) if info.get("features") is not None and info["features"] >= 0 else None

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from reader
            except Exception as exc:
                raise JobError(f"{label} stops being readable part way ({_gdal_message(exc)}); the file is "
                               "damaged or truncated, export it again") from exc

        yield RawLayer(name=layer, label=label, fields=fields, batches=batches(), geometry_column=geometry,
                       crs=meta.get("crs"), declared_type=meta.get("geometry_type"), total=total,
                       spreadsheet=data.driver in SPREADSHEET_DRIVERS)
    finally:
        stream.__exit__(None, None, None)


def open_geojson(data: DataFile, batch_size: int) -> RawLayer | None:
    """The layer through the fast GeoJSON reader; None when only GDAL reads this file as users expect."""
    try:
        spooled = geojson.spool(data.path, sequence=data.driver == "GeoJSONSeq")
    except geojson.NotFast:
        return None
    schema = geojson.arrow_schema(spooled)
    layer = data.path.stem
    return RawLayer(name=layer, label=f"{data.label}, layer {layer}", fields=list(schema)[:-1],
                    batches=geojson.batches(spooled, batch_size), geometry_column=schema.names[-1], crs=spooled.crs,
                    declared_type=spooled.schema.declared_type(), total=spooled.schema.rows)


def dbf_encoding(data: DataFile) -> str | None:
    """GDAL recodes a shapefile's text when a .cpg or the DBF's language byte names its encoding, but not
    in its Arrow stream when neither does: then it is UTF-8 if the bytes decode as such, else Windows-1252."""
    if any(data.path.with_suffix(s).exists() for s in (".cpg", ".CPG")):
        return None
    dbf = next((p for p in (data.path.with_suffix(".dbf"), data.path.with_suffix(".DBF")) if p.exists()), None)
    if dbf is None:
        return None
    with dbf.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
    if len(head) > 29 and head[29] != 0:
        return None  # the language driver byte is set: GDAL honours it
    cut = head[: len(head) - 4]  # a multi-byte character may straddle the sample's end
    try:
        cut.decode("utf-8")
        return "UTF-8"
    except UnicodeDecodeError:
        return "CP1252"


def open_parquet(data: DataFile, batch_size: int) -> RawLayer:
    try:
        parquet = pq.ParquetFile(data.path)
    except Exception as exc:
        raise JobError(f"{data.label} is not a readable Parquet file ({exc}); export it again") from exc
    schema = parquet.schema_arrow
    geo = json.loads((schema.metadata or {}).get(b"geo", b"{}") or b"{}")
    geometry = geo.get("primary_column")
    crs: str | None = None
    if geometry:
        spec = geo.get("columns", {}).get(geometry, {})
        if spec.get("encoding", "WKB").upper() != "WKB":
            raise JobError(f"{data.label} stores geometry as {spec.get('encoding')}; write the GeoParquet with "
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
            raise JobError(f"{data.label} stops being readable part way ({exc}); export it again") from exc

    return RawLayer(name=data.path.stem, label=data.label, fields=fields, batches=batches(),
                    geometry_column=geometry, crs=crs, declared_type=None, total=parquet.metadata.num_rows)


# -- delimited text ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextFormat:
    encoding: str  # a Python codec name
    delimiter: str
    decimal_comma: bool
    header: list[str]


def detect_encoding(sample: bytes, label: str) -> str:
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    cut = sample[: sample.rfind(b"\n") + 1] if len(sample) == SAMPLE_BYTES and b"\n" in sample else sample
    try:
        cut.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        cut.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def sniff_text(data: DataFile) -> TextFormat:
    with data.path.open("rb") as handle:
        sample = handle.read(SAMPLE_BYTES)
    encoding = detect_encoding(sample, data.label)
    text = sample.decode(encoding, errors="replace")
    lines = text.splitlines()[:50]
    if len(sample) == SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line of a sample may be cut
    if not lines or not lines[0].strip():
        raise JobError(f"{data.label} has no header line; put the column names on the first line")
    preferred = "\t" if data.path.suffix.lower() in (".tsv", ".tab") else "|" if data.path.suffix.lower() == ".psv" \
        else None
    best, best_score = ",", (-1, 0)
    for delimiter in DELIMITERS:
        rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
        width = len(rows[0]) if rows else 0
        consistent = sum(1 for r in rows if len(r) == width)
        score = (int(consistent >= 0.9 * len(rows)) * (width > 1), width + (1000 if delimiter == preferred else 0))
        if score > best_score:
            best, best_score = delimiter, score
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=best))
    header = [h.strip() for h in rows[0]]
    cells = [c for r in rows[1:] for c in r]
    decimal_comma = best != "," and any(DECIMAL_COMMA.match(c) for c in cells) \
        and not any(DECIMAL_POINT.match(c) for c in cells)
    return TextFormat(encoding, best, decimal_comma, header)


def open_text(data: DataFile, batch_size: int) -> RawLayer:
    fmt = sniff_text(data)
    names = [f"c{i}" for i in range(len(fmt.header))]
    skipped_rows: list[int] = []
    skipped_count = [0]

    def skip_bad(row: Any) -> str:
        skipped_count[0] += 1
        if len(skipped_rows) < 20:
            skipped_rows.append(int(row.number) - 1 if row.number is not None else -1)
        return "skip"

    read = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=CSV_BLOCK_BYTES,
                             encoding="utf8" if fmt.encoding == "utf-8" else fmt.encoding)
    parse = pacsv.ParseOptions(delimiter=fmt.delimiter, newlines_in_values=True, invalid_row_handler=skip_bad)
    inferred = pacsv.ConvertOptions(strings_can_be_null=True, null_values=[""],
                                    decimal_point="," if fmt.decimal_comma else ".")
    try:
        with pacsv.open_csv(data.path, read_options=read, parse_options=parse, convert_options=inferred) as probe:
            sample = probe.read_next_batch()
    except StopIteration:
        sample = None
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise JobError(f"{data.label} cannot be read as delimited text ({exc}); save it as UTF-8 CSV and "
                       "upload it again") from exc
    types = [text_column_type(sample.column(i)) if sample is not None else "text" for i in range(len(names))]
    as_text = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True,
                                   null_values=[""])
    reader = pacsv.open_csv(data.path, read_options=pacsv.ReadOptions(
        column_names=names, skip_rows=1, block_size=CSV_BLOCK_BYTES, encoding=read.encoding),
        parse_options=parse, convert_options=as_text)
    fields = [pa.field(h or f"column_{i + 1}", pa.string()) for i, h in enumerate(fmt.header)]

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                for start in range(0, batch.num_rows, batch_size):
                    yield batch.slice(start, batch_size)
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            problem = "holds text that is not valid UTF-8" if "UTF8" in str(exc) or isinstance(
                exc, UnicodeDecodeError) else f"cannot be parsed ({exc})"
            raise JobError(f"{data.label} {problem}; save it as UTF-8 CSV and upload it again") from exc

    return RawLayer(name=data.path.stem, label=data.label, fields=fields, batches=batches(), geometry_column=None,
                    crs=None, declared_type=None, total=None, types=types, decimal_comma=fmt.decimal_comma,
                    skipped_rows=skipped_rows, skipped_count=skipped_count)


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

