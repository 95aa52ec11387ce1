"""Column names, PostgreSQL types, and geometry taken from attribute columns.

Everything here works on whole Arrow arrays (numpy underneath): no Python loop per row.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from locaria_batch.jobs.names import unique_name

FID_COLUMN = "ogc_fid"
GEOMETRY_COLUMN = "wkb_geometry"
SPILL_COLUMN = "extra_attributes"
# PostgreSQL's system columns exist in every table: a column of the file by one of these names is renamed
SYSTEM_COLUMNS = {"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"}
RESERVED = {FID_COLUMN, GEOMETRY_COLUMN, SPILL_COLUMN, *SYSTEM_COLUMNS}
MAX_IDENTIFIER_BYTES = 63
MAX_TABLE_COLUMNS = 1600  # PostgreSQL's hard limit per table
ROW_WIDTH_BUDGET = 6000  # bytes of fixed-width values per row; a heap row must fit an 8 kB page


LETTERS_WITHOUT_DECOMPOSITION = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe",
                                               "Œ": "OE", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th"})


def safe_identifier(name: str, fallback: str = "column") -> str:
    """Lower-case ASCII letters, digits and underscores, at most 63 bytes, not starting with a digit."""
    ascii_name = unicodedata.normalize("NFKD", name.translate(LETTERS_WITHOUT_DECOMPOSITION))
    ascii_name = ascii_name.encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^a-z0-9_]+", "_", ascii_name.strip().lower()).strip("_") or fallback
    if cleaned[0].isdigit():
        cleaned = f"_{cleaned}"
    return cleaned[:MAX_IDENTIFIER_BYTES]


def unique_identifiers(originals: list[str], taken: set[str] | None = None) -> list[str]:
    """Safe names, made unique with a numeric suffix (still within 63 bytes)."""
    seen = set(RESERVED if taken is None else taken)
    return [unique_name(safe_identifier(original, fallback=f"column_{index}"), seen,
                        max_length=MAX_IDENTIFIER_BYTES, utf8_bytes=True)
            for index, original in enumerate(originals, start=1)]


def pg_type(arrow_type: pa.DataType) -> str:
    """The PostgreSQL type for an Arrow type; decimals become double precision (no NUMERIC(w,p)
    overflow from a DBF field width), nested values jsonb."""
    if isinstance(arrow_type, pa.BaseExtensionType):
        return "jsonb" if arrow_type.extension_name == "arrow.json" else pg_type(arrow_type.storage_type)
    if pat.is_boolean(arrow_type):
        return "boolean"
    if pat.is_integer(arrow_type):  # one width whatever the format: a CSV's column and a GeoJSON's match
        return "bigint"
    if pat.is_floating(arrow_type) or pat.is_decimal(arrow_type):
        return "double precision"
    if pat.is_date(arrow_type):
        return "date"
    if pat.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if pat.is_time(arrow_type):
        return "time"
    if pat.is_list(arrow_type) or pat.is_large_list(arrow_type) or pat.is_struct(arrow_type) \
            or pat.is_map(arrow_type):
        return "jsonb"
    return "text"


FIXED_WIDTH = {"boolean": 1, "integer": 4, "date": 4, "bigint": 8, "double precision": 8, "timestamp": 8,
               "timestamptz": 8, "time": 8}


def plain_column_count(types: list[str]) -> int:
    """How many leading columns fit a table; the rest spill into one jsonb column."""
    width = 0
    for count, kind in enumerate(types):
        width += FIXED_WIDTH.get(kind, 4)  # short text and jsonb values: a few bytes each
        if count + 1 > MAX_TABLE_COLUMNS - len(RESERVED) or width > ROW_WIDTH_BUDGET:
            return count
    return len(types)


# -- geometry from coordinate columns ----------------------------------------------------------

COORDINATE_PAIRS = (  # (convention, x names, y names), first match wins
    ("lon/lat", ("lon", "long", "longitude", "lng", "wgs84lon", "wgs84longitude"),
     ("lat", "latitude", "wgs84lat", "wgs84latitude")),
    ("x/y", ("x", "xcoord", "xcoordinate", "coordx", "pointx"), ("y", "ycoord", "ycoordinate", "coordy", "pointy")),
    ("easting/northing", ("easting", "east", "e", "eastings"), ("northing", "north", "n", "northings")),
)
GEOMETRY_TEXT_NAMES = ("geom", "geometry", "wkt", "wkb", "the_geom", "wkb_geometry", "shape", "geojson", "geo_shape")
GEOMETRY_TEXT = re.compile(
    r"^\s*((SRID=\d+;)?\s*(POINT|LINESTRING|POLYGON|MULTIPOINT|MULTILINESTRING|MULTIPOLYGON|GEOMETRYCOLLECTION"
    r"|CIRCULARSTRING|COMPOUNDCURVE|CURVEPOLYGON|MULTICURVE|MULTISURFACE)\b"
    r"|0[01][0-9A-Fa-f]{16,}$|\{\s*\"type\"\s*:)", re.IGNORECASE)
NO_GEOMETRY_TEXT = ("", "NULL", "NONE")  # what database and Python dumps write for a missing value


@dataclass(frozen=True)
class CoordinateColumns:
    convention: str
    x: str
    y: str


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def is_geometry_text_name(name: str) -> bool:
    """Whether a column's name says it holds geometries as text (geom, WKT, the_geom, ...)."""
    return _key(name) in {_key(g) for g in GEOMETRY_TEXT_NAMES}


def find_coordinate_columns(names: list[str]) -> CoordinateColumns | None:
    keyed = {_key(n): n for n in reversed(names)}  # the first column of a given key wins
    for convention, xs, ys in COORDINATE_PAIRS:
        x = next((keyed[k] for k in xs if k in keyed), None)
        y = next((keyed[k] for k in ys if k in keyed), None)
        if x and y:
            return CoordinateColumns(convention, x, y)
    return None


def find_geometry_text_column(names: list[str], sample: pa.Table) -> str | None:
    """A text column holding WKT, hex WKB or GeoJSON geometries (PostGIS parses all three)."""
    candidates = [n for n in names if is_geometry_text_name(n)]
    candidates += [n for n in names if n not in candidates]
    for name in candidates:
        column = sample.column(names.index(name))  # by position: a file may repeat a name
        if not (pat.is_string(column.type) or pat.is_large_string(column.type)):
            continue
        values = [v for v in column.slice(0, 200).drop_null().to_pylist() if v.strip().upper() not in NO_GEOMETRY_TEXT]
        values = values[:50]
        if values and all(GEOMETRY_TEXT.match(v) for v in values):
            return name
    return None


NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


def to_float(column: pa.Array | pa.ChunkedArray, decimal_comma: bool = False) -> pa.Array:
    """Numbers from a column of any type; text that is not a number becomes null."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pat.is_floating(column.type) or pat.is_integer(column.type) or pat.is_decimal(column.type):
        return pc.cast(column, pa.float64())
    text = pc.cast(column, pa.string())
    if decimal_comma:
        text = pc.replace_substring(text, ",", ".")
    text = pc.if_else(pc.match_substring_regex(text, NUMBER), text, pa.scalar(None, pa.string()))
    return pc.cast(text, pa.float64())


def has_value(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per row: whether a value is there (not null, not blank text)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    present = pc.is_valid(column)
    if pat.is_string(column.type) or pat.is_large_string(column.type):
        present = pc.and_(present, pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(column), ""), False))
    return np.asarray(present)


_POINT = np.dtype([("order", "u1"), ("kind", "<u4"), ("x", "<f8"), ("y", "<f8")])  # packed: 21 bytes


def point_wkb(x: np.ndarray, y: np.ndarray) -> pa.Array:
    """WKB points from coordinate arrays; a NaN coordinate gives a null geometry."""
    n = len(x)
    points = np.empty(n, dtype=_POINT)
    points["order"] = 1
    points["kind"] = 1
    points["x"] = x
    points["y"] = y
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * _POINT.itemsize).tobytes())
    valid = ~(np.isnan(x) | np.isnan(y))
    validity = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.Array.from_buffers(pa.binary(), n, [validity, offsets, pa.py_buffer(points.tobytes())],
                                 null_count=int(n - valid.sum()))


def coordinate_array(column: pa.Array, decimal_comma: bool) -> np.ndarray:
    values: np.ndarray = to_float(column, decimal_comma).to_numpy(zero_copy_only=False)
    return values.astype(np.float64, copy=False)


# -- WKB as it comes from GDAL or GeoParquet ----------------------------------------------------

KIND_NAMES = {1: "Point", 2: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString",
              6: "MultiPolygon", 7: "GeometryCollection"}
# ISO WKB codes of curved and surface types; the loader stores them as their straight-segment types
CURVE_NAMES = {8: "CircularString", 9: "CompoundCurve", 10: "CurvePolygon", 11: "MultiCurve", 12: "MultiSurface",
               13: "Curve", 14: "Surface", 15: "PolyhedralSurface", 16: "TIN", 17: "Triangle"}
DIMENSION_SUFFIX = {0: "", 1: "Z", 2: "M", 3: "ZM"}


def wkb_offsets(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets of each value, the data bytes) of a binary array, as numpy views."""
    _validity, offsets, data = column.buffers()[:3]
    offset_values = np.frombuffer(offsets, dtype=np.int32)[column.offset: column.offset + len(column) + 1]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    return offset_values, raw


def wkb_kinds(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per value: the ISO WKB type code (1..7, 0 for null) and the dimension code (0 2D, 1 Z, 2 M, 3 ZM)."""
    offsets, raw = wkb_offsets(column)
    starts = offsets[:-1]
    present = (offsets[1:] - starts >= 5) & np.asarray(column.is_valid())
    header = raw[(starts[present, None] + np.arange(5)).ravel()].reshape(-1, 5).astype(np.uint32)
    little = header[:, 0] == 1
    code = np.where(little,
                    header[:, 1] | header[:, 2] << 8 | header[:, 3] << 16 | header[:, 4] << 24,
                    header[:, 4] | header[:, 3] << 8 | header[:, 2] << 16 | header[:, 1] << 24)
    ewkb_z, ewkb_m = (code & 0x80000000) != 0, (code & 0x40000000) != 0
    code = code & 0x0FFFFFFF
    iso_dims = code // 1000
    base = code % 1000
    dims = np.where(ewkb_z | ewkb_m, ewkb_z * 1 + ewkb_m * 2, np.where(iso_dims == 1, 1, np.where(
        iso_dims == 2, 2, np.where(iso_dims == 3, 3, 0))))
    kinds = np.zeros(len(column), dtype=np.uint32)
    dimensions = np.zeros(len(column), dtype=np.uint32)
    kinds[present] = base
    dimensions[present] = dims
    return kinds, dimensions


def looks_like_wkb(column: pa.Array | pa.ChunkedArray) -> bool:
    """Whether every value present is WKB of a known type (a binary column without metadata)."""
    column = plain_binary(column)
    if column.null_count == len(column):
        return False
    offsets, raw = wkb_offsets(column)
    present = np.asarray(column.is_valid())
    if np.any((offsets[1:] - offsets[:-1] < 9) & present):
        return False
    orders = raw[offsets[:-1][present]]
    kinds, _ = wkb_kinds(column)
    return bool(np.all((orders <= 1) & (kinds[present] >= 1) & (kinds[present] <= 17)))


def point_coordinates(column: pa.Array, kinds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the 2D point values of a WKB column, gathered straight from its bytes."""
    column = plain_binary(column)
    offsets, raw = wkb_offsets(column)
    starts = offsets[:-1][(kinds == 1) & (offsets[1:] - offsets[:-1] >= 21)]
    little = raw[starts] == 1
    x_bytes = raw[(starts[:, None] + np.arange(5, 13)).ravel()].reshape(-1, 8)
    y_bytes = raw[(starts[:, None] + np.arange(13, 21)).ravel()].reshape(-1, 8)
    x_bytes[~little] = x_bytes[~little, ::-1]
    y_bytes[~little] = y_bytes[~little, ::-1]
    return x_bytes.copy().view("<f8").ravel(), y_bytes.copy().view("<f8").ravel()


def promote_to_multi(column: pa.Array, kinds: np.ndarray, dimension: int) -> pa.Array:
    """Wrap single Point/LineString/Polygon WKB values as one-part Multi* values."""
    prefixes: list[bytes | None] = [None] * 8
    for single in (1, 2, 3):
        code = single + 3 + 1000 * dimension
        prefixes[single] = b"\x01" + code.to_bytes(4, "little") + (1).to_bytes(4, "little")
    prefix = pc.take(pa.array(prefixes, pa.binary()), pa.array(kinds.astype(np.int32)))
    promoted = pc.binary_join_element_wise(prefix, column, b"")
    return pc.if_else(pc.is_valid(prefix), promoted, column)


def close_rings(wkb: bytes) -> bytes | None:
    """The geometry with every polygon ring that does not end where it starts closed (GDAL reads such rings
    and ogr2ogr loads them, PostGIS's binary input refuses them); None when nothing needed closing or the
    WKB is not ISO/EWKB of the linear types (curves are left as they are)."""
    try:
        fixed, end, changed = _close_rings(wkb, 0)
    except (struct.error, ValueError):
        return None
    return fixed if changed and end == len(wkb) else None


def _close_rings(wkb: bytes, at: int) -> tuple[bytes, int, bool]:
    order = "<" if wkb[at] == 1 else ">"
    (code,) = struct.unpack_from(order + "I", wkb, at + 1)
    kind, has_z, has_m = code & 0x0FFFFFFF, bool(code & 0x80000000), bool(code & 0x40000000)
    header = 5 + (4 if code & 0x20000000 else 0)  # an EWKB SRID follows the type
    iso, kind = divmod(kind, 1000)
    if iso > 3 or kind not in range(1, 8):
        raise ValueError("not a linear geometry")
    size = 8 * (2 + (has_z or iso in (1, 3)) + (has_m or iso in (2, 3)))  # bytes per position
    out, pos, changed = [wkb[at:at + header]], at + header, False
    if kind == 1:
        return wkb[at:pos + size], pos + size, False
    (count,) = struct.unpack_from(order + "I", wkb, pos)
    if kind == 2:
        end = pos + 4 + count * size
        return wkb[at:end], end, False
    out.append(wkb[pos:pos + 4])
    pos += 4
    for _ in range(count):
        if kind == 3:
            (points,) = struct.unpack_from(order + "I", wkb, pos)
            ring = wkb[pos + 4:pos + 4 + points * size]
            if len(ring) != points * size:
                raise ValueError("truncated")
            if points and ring[:size] != ring[-size:]:
                out.append(struct.pack(order + "I", points + 1) + ring + ring[:size])
                changed = True
            else:
                out.append(wkb[pos:pos + 4 + points * size])
            pos += 4 + points * size
        else:
            part, pos, part_changed = _close_rings(wkb, pos)
            out.append(part)
            changed = changed or part_changed
    return b"".join(out), pos, changed


def plain_binary(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A binary column as one plain `binary` array (not chunked, not an extension type, not large)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column.type, pa.BaseExtensionType):
        column = column.storage
    if not pat.is_binary(column.type):
        column = column.cast(pa.binary())
    return column


def wkb_to_hex(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Hex-encode a binary column in one pass over its data buffer."""
    column = plain_binary(column)
    offsets, raw = wkb_offsets(column)
    base = int(offsets[0])
    hex_data = pa.py_buffer(raw[base: int(offsets[-1])].tobytes().hex().encode("ascii"))
    hex_offsets = pa.py_buffer(((offsets - base) * 2).astype(np.int32).tobytes())
    validity = column.buffers()[0]
    if validity is not None and column.offset:
        validity = pa.array(column.is_valid()).buffers()[1]
    return pa.StringArray.from_buffers(len(column), hex_offsets, hex_data, validity, column.null_count)


# -- text values as typed values (delimited text arrives as strings) -----------------------------

INT64_MAX = 2**63 - 1
INTEGER_TYPES = ("integer", "bigint")
NUMBER_TYPES = (*INTEGER_TYPES, "double precision")
TEXT_PATTERNS = {
    "integer": r"^[-+]?\d+$",
    "bigint": r"^[-+]?\d+$",
    "double precision": r"(?i)^([-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?|[-+]?(nan|inf|infinity))$",
    "boolean": r"(?i)^(true|false|1|0)$",
    "date": r"^\d{4}-\d{2}-\d{2}$",
    "timestamp": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$",
    "timestamptz": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[-+]\d{2}(:?\d{2})?)$",
    "time": r"^\d{2}:\d{2}(:\d{2}(\.\d+)?)?$",
}


def code_like_numbers(column: pa.Array) -> bool:
    """Whether text holds numbers written as codes, not quantities: leading zeros (007, postcodes,
    -0123) or hexadecimal (0x1F), which a numeric column would change."""
    if len(column) == column.null_count:
        return False
    column = column.cast(pa.large_string()) if pat.is_string(column.type) else column
    _, offsets, data = column.buffers()  # the first bytes of every value, read in place
    starts = np.frombuffer(offsets, dtype=np.int64)[column.offset: column.offset + len(column) + 1]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    signed = np.zeros(len(column), dtype=bool)
    nonempty = starts[1:] > starts[:-1]
    signed[nonempty] = (raw[starts[:-1][nonempty]] == 0x2B) | (raw[starts[:-1][nonempty]] == 0x2D)  # + -
    first = starts[:-1] + signed
    long_enough = starts[1:] - first >= 2
    zero, after = raw[first[long_enough]], raw[first[long_enough] + 1]
    return bool(np.any((zero == 0x30) & (((after >= 0x30) & (after <= 0x39)) | ((after | 0x20) == 0x78))))


def whole_numbers_beyond_bigint(column: pa.Array) -> bool:
    """Whether text typed as double precision is whole numbers only, some too long for bigint:
    identifiers, which double precision would round into one another."""
    text = pc.utf8_trim_whitespace(column.drop_null())
    return len(text) > 0 and bool(pc.all(pc.match_substring_regex(text, TEXT_PATTERNS["bigint"])).as_py())


def wider_number_type(values: pa.Array, decimal_comma: bool) -> str | None:
    """The type for a column of whole numbers that these values (text that is no whole number of its
    width) join: text when some are whole numbers too long for any integer (identifiers, kept exact),
    double precision when some are fractions; None when none is a number."""
    if pc.any(pc.match_substring_regex(pc.utf8_trim_whitespace(values), TEXT_PATTERNS["bigint"])).as_py():
        return "text"
    fractions, _ = coerce_text(values, "double precision", decimal_comma)
    return "double precision" if fractions.null_count < len(fractions) else None


UTC_OFFSET = r"(Z|[-+]\d{2}(:?\d{2})?)$"


def has_utc_offsets(text: pa.Array) -> bool:
    return bool(pc.any(pc.match_substring_regex(text, UTC_OFFSET)).as_py())


def iso_datetimes(text: pa.Array, utc: bool) -> pa.Array:
    """ISO 8601 date-times, each with its own UTC offset or none, as timestamps: in UTC (a value without
    an offset taken as UTC) when `utc`, else as written (a value with an offset brought to UTC).  A value
    that is no date-time becomes null."""
    zoned = pc.fill_null(pc.match_substring_regex(text, UTC_OFFSET), False)
    aware = pa.timestamp("ms", tz="UTC")
    if utc:
        return cast_each(pc.if_else(zoned, text, pc.binary_join_element_wise(text, "Z", "")), aware)
    if not pc.any(zoned).as_py():
        return cast_each(text, pa.timestamp("ms"))
    naive = cast_each(pc.if_else(zoned, pa.scalar(None, pa.string()), text), pa.timestamp("ms"))
    instants = cast_each(pc.if_else(zoned, text, pa.scalar(None, pa.string())), aware)
    return pc.if_else(zoned, instants.cast(pa.timestamp("ms")), naive)


def cast_each(values: pa.Array, target: pa.DataType,
              convert: Callable[[pa.Array], pa.Array] | None = None) -> pa.Array:
    """`convert` (a cast to `target`) of the whole array, or, when some value does not convert, value by
    value: those become null."""
    convert = convert or (lambda part: pc.cast(part, target))
    try:
        return convert(values)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    converted: list[object] = []
    for value in values.to_pylist():  # out-of-range numbers, impossible dates
        try:
            converted.append(None if value is None else convert(pa.array([value], values.type))[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            converted.append(None)
    return pa.array(converted, target)


def text_times(text: pa.Array, unit: str) -> pa.Array:
    """'HH:MM' or 'HH:MM:SS[.fff]' as times of day (Arrow casts no text to a time); ArrowInvalid for any
    other value."""
    text = pc.if_else(pc.match_substring_regex(text, r"^\d{2}:\d{2}$"), pc.binary_join_element_wise(text, ":00", ""),
                      text)
    stamps = pc.cast(pc.binary_join_element_wise("1970-01-01 ", text, ""), pa.timestamp(unit))
    kind, storage = (pa.time32(unit), pa.int32()) if unit in ("s", "ms") else (pa.time64(unit), pa.int64())
    ticks = pc.cast(stamps.cast(pa.int64()), storage)
    return pa.Array.from_buffers(kind, len(ticks), ticks.buffers(), ticks.null_count)


DATE_TEXT = r"^\s*\d{4}[-/]\d{2}[-/]\d{2}\s*$"  # ISO, or GDAL's 2024/05/01 for date cells among text


def holds_only_dates(column: pa.Array, sample: int = 5000) -> bool:
    values = column.slice(0, sample).drop_null()
    values = values.filter(pc.not_equal(pc.utf8_trim_whitespace(values), ""))
    return len(values) > 0 and bool(pc.all(pc.match_substring_regex(values, DATE_TEXT)).as_py())


def coerce_text(column: pa.Array, pg_type: str, decimal_comma: bool = False) -> tuple[pa.Array, list[int]]:
    """Strings as values of the column's type.  A value that is not one becomes null, and its position
    is returned; the vectorised cast is the normal path, the checks below only run for a batch that
    holds such a value."""
    from locaria_batch.jobs.file_loader.pgbinary import ARROW_TYPE

    if pg_type not in TEXT_PATTERNS:
        return column, []
    target = ARROW_TYPE[pg_type]

    def cast(values: pa.Array) -> pa.Array:
        return text_times(values, "us") if pg_type == "time" else pc.cast(values, target)

    text = pc.utf8_trim_whitespace(column)
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)  # a blank cell is no value
    if decimal_comma and pg_type == "double precision":
        text = pc.replace_substring(text, ",", ".")
    if pg_type == "date":
        text = pc.replace_substring(text, "/", "-")
    try:
        return cast(text), []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    fits = pc.fill_null(pc.match_substring_regex(text, TEXT_PATTERNS[pg_type]), True)
    values = pc.if_else(fits, text, pa.scalar(None, pa.string()))
    bad = np.nonzero(~np.asarray(fits))[0].tolist()
    typed = cast_each(values, target, cast)
    lost = pc.and_(pc.is_valid(values), pc.is_null(typed))  # of the right form, yet out of range
    return typed, sorted(bad + np.flatnonzero(np.asarray(lost)).tolist())
