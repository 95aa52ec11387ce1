"""GeoJSON and GeoJSONSeq straight into Arrow, without building OGR features one by one.

GDAL's GeoJSON driver reads a file twice (once for the schema, once for the rows) and builds every
feature as an OGR object: it is the slowest reader we have, on the format web users upload most.
Here the features are cut into blocks of whole features, each block parsed by orjson and turned into
columns (by this process and, when the job has a second CPU, a helper process); the blocks are
spooled to Arrow IPC files while the schema is worked out, then streamed.

The columns, their names, order and types are GDAL's (FLATTEN_NESTED_ATTRIBUTES=YES,
ARRAY_AS_STRING=YES, dates detected): the same table whichever reader made it.  Whatever this reader
does not reproduce exactly raises NotFast before a single batch is handed over, and the caller reads
the file with GDAL instead; so does a file that is not valid JSON, so that its error stays GDAL's.
"""

from __future__ import annotations

import gc
import math
import os
import pickle
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import chain, pairwise
from operator import methodcaller
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from locaria_batch.jobs.file_loader.columns import INT64_MAX, text_times

PARALLEL_BYTES = 32 << 20  # below this, starting a helper process costs more than it saves
HELPER_QUEUE = 2  # blocks handed to the helper ahead, so that it never waits for the next
BLOCK_BYTES = 1 << 20  # text parsed at a time: ~5k point features; bigger blocks cost memory, not speed
HEAD_BYTES = 1 << 20  # where the "features" array must start
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-INT64_MAX - 1, INT64_MAX)
WKB_FIELD = {b"ARROW:extension:name": b"geoarrow.wkb"}
JSON_TYPE = pa.json_(pa.string()) if hasattr(pa, "json_") else pa.string()
GEOMETRY_CODES = {"Point": 1, "LineString": 2, "Polygon": 3, "MultiPoint": 4, "MultiLineString": 5,
                  "MultiPolygon": 6, "GeometryCollection": 7}
CRS84 = {"urn:ogc:def:crs:ogc:1.3:crs84", "urn:ogc:def:crs:ogc::crs84", "ogc:crs84", "crs84"}

# value classes, as GDAL's GeoJSON reader tells them apart
NULL, BOOL, INT, INT64_, REAL, STRING, ARRAY, DATE, TIME, DATETIME = range(10)
# field types: (OGR type, JSON subtype); "undetermined" while only nulls were seen
UNDETERMINED, F_BOOL, F_INT, F_INT64, F_REAL, F_STRING, F_JSON, F_DATE, F_TIME, F_DATETIME = range(10)

DATE_RE = r"^\d{4}[-/]\d{2}[-/]\d{2}$"
TIME_RE = r"^\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?$"
DATETIME_RE = r"^\d{4}[-/]\d{2}[-/]\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?$"  # with a zone: GDAL's
DATEISH_RE = r"^\s*(\d{1,4}[-/]\d{1,2}([-/]|$)|\d{1,2}:\d{1,2})"  # what GDAL may read as a date or time


class NotFast(Exception):
    """The file holds something only GDAL's reader handles the way users have always had it."""


class BadCut(Exception):
    """A block cut at a line break turned out to end inside a feature."""


class _Nested(Exception):
    """A block's properties hold objects: flatten them first."""


# -- the file as blocks of whole features ---------------------------------------------------------

def _escaped(buf: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """Which quotes are escaped: preceded by an odd run of backslashes (rare: checked one by one)."""
    keep = np.ones(len(quotes), dtype=bool)
    for i in np.flatnonzero(buf[np.maximum(quotes - 1, 0)] == 92):
        start = end = int(quotes[i]) - 1
        while start > 0 and buf[start - 1] == 92:
            start -= 1
        keep[i] = (end - start + 1) % 2 == 0
    return keep


def _structure(text: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of the brackets outside strings, +1 for [ and {, -1 for ] and }; and of the quotes."""
    buf = np.frombuffer(text, dtype=np.uint8)
    quotes = np.flatnonzero(buf == 34)
    quotes = quotes[_escaped(buf, quotes)]
    folded = buf | 0x20  # [ and { fold onto {, ] and } onto }
    opens = np.flatnonzero(folded == 0x7B)
    closes = np.flatnonzero(folded == 0x7D)
    marks = np.concatenate([opens, closes])
    steps = np.concatenate([np.ones(len(opens), np.int32), -np.ones(len(closes), np.int32)])
    order = np.argsort(marks, kind="stable")
    marks, steps = marks[order], steps[order]
    outside = np.searchsorted(quotes, marks, side="right") % 2 == 0
    return marks[outside], steps[outside], quotes


def object_ends(text: bytes) -> tuple[list[int], int | None]:
    """End offsets (exclusive) of the whole JSON values at depth 0 of `text`, which starts between two
    values of an array; and the offset of the array's closing bracket if `text` reaches it."""
    marks, steps, _quotes = _structure(text)
    depth = np.cumsum(steps)
    below = np.flatnonzero(depth < 0)
    end = int(marks[below[0]]) if below.size else None
    ends = marks[(steps < 0) & (depth == 0)] + 1
    if end is not None:
        ends = ends[ends <= end]
    return ends.tolist(), end


def _skip_space(text: bytes, at: int) -> int:
    while at < len(text) and text[at] in b" \t\r\n":
        at += 1
    return at


def collection_header(path: Path) -> tuple[dict[str, Any], int]:
    """The members before "features" (type, name, crs...) and the offset where the features start."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    start = _skip_space(head, 3 if head.startswith(b"\xef\xbb\xbf") else 0)
    if head[start:start + 1] != b"{":
        raise NotFast("not a JSON object")
    marks, steps, quotes = _structure(head)
    depth = np.cumsum(steps)
    for opening, closing in zip(quotes[0::2].tolist(), quotes[1::2].tolist(), strict=False):
        before = int(np.searchsorted(marks, opening)) - 1
        if before < 0 or depth[before] != 1 or head[opening + 1:closing] != b"features":
            continue
        colon = _skip_space(head, closing + 1)
        value = _skip_space(head, colon + 1)
        if head[colon:colon + 1] != b":" or head[value:value + 1] != b"[":
            raise NotFast("features is not an array")
        try:
            members = orjson.loads(head[start:opening].rstrip().rstrip(b",") + b"}")
        except orjson.JSONDecodeError as exc:
            raise NotFast("the members before the features are not JSON") from exc
        return members, value + 1
    raise NotFast("no features array near the start")


def collection_texts(path: Path, first: int, line_cuts: bool) -> Iterator[tuple[bytes, bool]]:
    """The features array as blocks of whole features (a block grows for a feature bigger than it),
    each with whether it was cut at a line.

    Most files hold a feature a line (GDAL writes them so): a block then ends at its last line break
    between two features, which the parse confirms, since only whole values parse (a failure there
    raises BadCut, and the file is cut again without line cuts).  Other layouts are cut where the
    bracket depth, counted outside strings, comes back to the array's."""
    with path.open("rb") as handle:
        handle.seek(first)
        carry = b""
        size = BLOCK_BYTES
        while True:
            more = handle.read(size)
            text = carry + more
            cut = text.rfind(b",\n{") if line_cuts and more else -1
            if cut > 0:
                yield text[:cut], True
                carry, size = text[cut + 2:], BLOCK_BYTES
                continue
            ends, closing = object_ends(text)
            if closing is not None:
                last = ends[-1] if ends else 0
                if text[last:closing].strip(b" \t\r\n,"):
                    raise NotFast("something other than features in the features array")
                if ends:
                    yield text[:last], False
                _trailing_members(text[closing + 1:] + handle.read())
                return
            if not more:
                raise NotFast("the features array is not closed")
            if ends:
                yield text[:ends[-1]], False
                carry, size = text[ends[-1]:].lstrip(b" \t\r\n,"), BLOCK_BYTES
            else:
                carry, size = text, size * 2


def _trailing_members(tail: bytes) -> None:
    """Members after the features array (a crs written last, say) change what GDAL reports: leave such
    files to it, unless they are plain metadata."""
    text = tail.strip(b" \t\r\n").lstrip(b",")
    if text == b"}":
        return
    try:
        members = orjson.loads(b"{" + text if not text.startswith(b"{") else text)
    except orjson.JSONDecodeError as exc:
        raise NotFast("not valid JSON after the features") from exc
    if not isinstance(members, dict) or "crs" in members or "features" in members:
        raise NotFast("members after the features")


def sequence_texts(path: Path) -> Iterator[tuple[bytes, bool]]:
    """GeoJSONSeq: one feature a line (RFC 8142's record separators too), as blocks of lines."""
    with path.open("rb") as handle:
        first = True
        while True:
            lines = handle.readlines(BLOCK_BYTES)
            if not lines:
                return
            if first and lines[0].startswith(b"\xef\xbb\xbf"):
                lines[0] = lines[0][3:]
            first = False
            body = b",".join(line.strip(b" \t\r\n\x1e") for line in lines if line.strip(b" \t\r\n\x1e"))
            if body:
                yield body, False


@contextmanager
def _no_gc() -> Iterator[None]:
    """Millions of small containers from one parse would set off the cyclic collector again and again
    (tenfold the parse time); none of them can be part of a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_block(block: bytes, line_cut: bool = False) -> list[Any]:
    try:
        with _no_gc():
            features = orjson.loads(b"[" + block + b"]")
    except orjson.JSONDecodeError as exc:
        if line_cut:
            raise BadCut from exc
        raise NotFast(f"not JSON orjson reads: {exc}") from exc
    return features  # type: ignore[no-any-return]


# -- values as GDAL types them --------------------------------------------------------------------

def json_text(value: Any) -> str:
    """A value as GDAL's json-c writes it in a JSON string field: spaced, slashes escaped, 17 digits."""
    kind = type(value)
    if kind is str:
        out = ['"']
        for ch in value:
            code = ord(ch)
            if ch == '"':
                out.append('\\"')
            elif ch == "\\":
                out.append("\\\\")
            elif ch == "/":
                out.append("\\/")
            elif code < 0x20:
                out.append({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(code, f"\\u{code:04x}"))
            else:
                out.append(ch)
        return "".join(out) + '"'
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return real_text(value)
    if kind is list:
        return "[ " + ", ".join(json_text(v) for v in value) + " ]" if value else "[ ]"
    if kind is dict:
        return "{ " + ", ".join(f"{json_text(k)}: {json_text(v)}" for k, v in value.items()) + " }" if value \
            else "{ }"
    raise NotFast(f"value of type {kind.__name__}")


def real_text(value: float) -> str:
    text = f"{value:.17g}"
    if not math.isfinite(value):
        raise NotFast("not a finite number")
    return text if any(c in text for c in ".e") else text + ".0"


def value_class(value: Any) -> int:
    kind = type(value)
    if value is None:
        return NULL
    if kind is bool:
        return BOOL
    if kind is int:
        if not INT64[0] <= value <= INT64[1]:
            raise NotFast("integer beyond 64 bits")
        return INT if INT32[0] <= value <= INT32[1] else INT64_
    if kind is float:
        return REAL
    if kind is str:
        return STRING
    if kind is list:
        return ARRAY
    raise NotFast(f"value of type {kind.__name__}")


def first_type(cls: int) -> int:
    return {NULL: UNDETERMINED, BOOL: F_BOOL, INT: F_INT, INT64_: F_INT64, REAL: F_REAL, STRING: F_STRING,
            ARRAY: F_JSON, DATE: F_DATE, TIME: F_TIME, DATETIME: F_DATETIME}[cls]


def next_type(state: int, cls: int) -> int:
    """GDAL's field type after one more value (OGRGeoJSONReaderAddOrUpdateField)."""
    if cls == NULL:
        return state
    if state == UNDETERMINED:
        return first_type(cls)
    if state in (F_BOOL, F_INT):
        if cls in (BOOL, INT):
            return state if state == F_BOOL and cls == BOOL else F_INT
        if cls in (INT64_, REAL):
            return F_INT64 if cls == INT64_ else F_REAL
        return F_JSON
    if state == F_INT64:
        if cls in (BOOL, INT, INT64_):
            return F_INT64
        return F_REAL if cls == REAL else F_JSON
    if state == F_REAL:
        return F_REAL if cls in (BOOL, INT, INT64_, REAL) else F_JSON
    if state == F_STRING:
        return F_STRING if cls in (STRING, DATE, TIME, DATETIME, ARRAY) else F_JSON
    if state == F_JSON:
        return F_JSON
    # a date, time or date-time field
    if cls in (STRING, ARRAY):
        return F_STRING if cls == STRING else F_JSON
    new = first_type(cls)
    if new == state:
        return state
    if {state, new} == {F_DATE, F_DATETIME}:
        return F_DATETIME
    return F_JSON


ARROW_TYPES = {UNDETERMINED: pa.string(), F_BOOL: pa.bool_(), F_INT: pa.int32(), F_INT64: pa.int64(),
               F_REAL: pa.float64(), F_STRING: pa.string(), F_JSON: JSON_TYPE, F_DATE: pa.date32(),
               F_TIME: pa.time32("ms"), F_DATETIME: pa.timestamp("ms")}


@dataclass
class BlockColumn:
    """One attribute of one block: its values as Arrow (numbers, booleans or strings as written),
    the classes of its values in order (consecutive repeats dropped), and its state after them."""

    values: pa.Array
    classes: list[int]


def string_classes(strings: pa.Array) -> np.ndarray:
    """STRING, DATE, TIME or DATETIME for each string; text that GDAL might read as a date in a way
    not reproduced here gives up on the fast path."""
    classes = np.full(len(strings), STRING, dtype=np.int64)
    digit = np.asarray(pc.fill_null(pc.utf8_is_digit(pc.utf8_slice_codeunits(strings, 0, 1)), False))
    if not digit.any():  # most text: nothing like a date at all
        return classes
    where = np.flatnonzero(digit)
    candidates = strings.take(pa.array(where))
    found = np.full(len(where), STRING, dtype=np.int64)
    for cls, pattern in ((DATE, DATE_RE), (DATETIME, DATETIME_RE), (TIME, TIME_RE)):
        open_ = found == STRING
        if open_.any():
            hits = np.asarray(pc.match_substring_regex(candidates.filter(pa.array(open_)), pattern))
            found[np.flatnonzero(open_)[hits]] = cls
    rest = found == STRING
    if rest.any() and pc.any(pc.match_substring_regex(candidates.filter(pa.array(rest)), DATEISH_RE)).as_py():
        raise NotFast("date-like text in a form left to GDAL")
    classes[where] = found
    return classes


def build_column(values: list[Any]) -> BlockColumn:
    """A block's values of one attribute, typed as far as they go together."""
    try:
        column = typed_column(pa.array(values))
        if not _coerced(column, values):
            return column
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    return mixed_column(values)


def _coerced(column: BlockColumn, values: list[Any]) -> bool:
    """Whether Arrow made numbers of values of other kinds (1 beside 0.5, true beside 1): GDAL keeps
    them as written should the field end up as text."""
    return column.classes[0] in (BOOL, INT, INT64_, REAL) and len(set(map(type, values)) - {type(None)}) > 1


def mixed_column(values: list[Any]) -> BlockColumn:
    """Values Arrow does not type together (text and numbers, integers beside reals...), class by class."""
    if any(type(v) is dict for v in values):
        raise _Nested
    classes = [value_class(v) for v in values]
    # anything but integers is kept as text, as it would be written should the field end up as text
    # (1 stays 1 beside 0.5, true stays true beside 1); numbers and booleans are read back from it
    if set(classes) - {NULL, INT, INT64_}:
        texts = [None if v is None else v if type(v) is str else json_text(v) for v in values]
        array = pa.array(texts, pa.string())
        if STRING in classes:
            strings = string_classes(array)
            classes = [int(strings[i]) if c == STRING else c for i, c in enumerate(classes)]
        return BlockColumn(array, _runs(np.array([c for c in classes if c != NULL], dtype=np.int64)))
    numbers = pa.array(values, pa.int64())
    return BlockColumn(numbers, _runs(np.array([c for c in classes if c != NULL], dtype=np.int64)))


def typed_column(array: pa.Array) -> BlockColumn:
    """A column whose values Arrow could type together: all numbers, all text, all booleans..."""
    kind = array.type
    if pa.types.is_struct(kind):
        raise _Nested
    if pa.types.is_null(kind):
        return BlockColumn(array, [NULL])
    if pa.types.is_boolean(kind):
        return BlockColumn(array, [BOOL])
    if pa.types.is_floating(kind):
        return BlockColumn(array, [REAL])
    if pa.types.is_integer(kind):
        if pa.types.is_unsigned_integer(kind):
            raise NotFast("integer beyond 64 bits")
        low, high = (v.as_py() for v in pc.min_max(array).values())
        return BlockColumn(array, [INT if low is None or (INT32[0] <= low and high <= INT32[1]) else INT64_])
    if pa.types.is_string(kind):
        return BlockColumn(array, _runs(string_classes(array)[np.asarray(array.is_valid())]))
    # lists among others: GDAL writes them as JSON text from the values as written (1 stays 1, not 1.0)
    raise pa.ArrowInvalid(f"{kind}: written value by value")


def _runs(classes: np.ndarray) -> list[int]:
    if classes.size == 0:
        return [NULL]
    keep = np.ones(classes.size, dtype=bool)
    keep[1:] = classes[1:] != classes[:-1]
    return [int(c) for c in classes[keep]]


def final_array(values: pa.Array, state: int) -> pa.Array:
    """A block's column as the field's final type."""
    target = ARROW_TYPES[state]
    if state in (F_STRING, F_JSON, UNDETERMINED):
        if not pa.types.is_string(values.type) and not pa.types.is_null(values.type):
            texts = [None if v is None else json_text(v) for v in values.to_pylist()]
            values = pa.array(texts, pa.string())
        values = values.cast(pa.string())
        return pa.ExtensionArray.from_storage(target, values) if target != pa.string() else values
    if state in (F_DATE, F_DATETIME, F_TIME):
        text = pc.replace_substring(values.cast(pa.string()), "/", "-")
        if state == F_DATE:
            return pc.cast(pc.strptime(text, "%Y-%m-%d", "s"), pa.date32())
        if state == F_DATETIME:
            text = pc.replace_substring(text, "T", " ")
            padded = pc.if_else(pc.match_substring_regex(text, r" \d{2}:\d{2}$"), pc.binary_join_element_wise(
                text, ":00", ""), text)
            return pc.cast(pc.cast(padded, pa.timestamp("ms")), pa.timestamp("ms"))
        return text_times(text, "ms")
    if pa.types.is_boolean(values.type) and state != F_BOOL:
        values = values.cast(pa.int64())
    if pa.types.is_string(values.type):  # numbers kept as written, booleans among them as GDAL counts them
        values = pc.replace_substring_regex(values, "^true$", "1")
        values = pc.replace_substring_regex(values, "^false$", "0")
    return values.cast(target)


# -- geometry -------------------------------------------------------------------------------------

_POINT = np.dtype([("order", "u1"), ("kind", "<u4"), ("x", "<f8"), ("y", "<f8")])
_POINT_Z = np.dtype([("order", "u1"), ("kind", "<u4"), ("x", "<f8"), ("y", "<f8"), ("z", "<f8")])


def _position(coords: Any, dims: int) -> bytes:
    if type(coords) is not list or len(coords) != dims or not all(type(c) in (int, float) for c in coords):
        raise NotFast("position not of 2 or 3 numbers")
    return struct.pack(f"<{dims}d", *coords)


def _dims(geometry: dict[str, Any]) -> int:
    """2 or 3: the length of the first position found (GDAL writes each geometry with its own)."""
    coords = geometry.get("coordinates")
    if geometry.get("type") == "GeometryCollection":
        parts = geometry.get("geometries")
        return max((_dims(g) for g in parts if isinstance(g, dict)), default=2) if isinstance(parts, list) else 2
    while type(coords) is list and coords and type(coords[0]) is list:
        coords = coords[0]
    if type(coords) is not list or len(coords) not in (2, 3):
        raise NotFast("empty or odd coordinates")
    return len(coords)


def geometry_wkb(geometry: Any, dims: int | None = None) -> bytes:
    if type(geometry) is not dict:
        raise NotFast("geometry is not an object")
    name = geometry.get("type")
    code = GEOMETRY_CODES.get(name)  # type: ignore[arg-type]
    if code is None:
        raise NotFast(f"geometry type {name!r}")
    dims = dims or _dims(geometry)
    header = struct.pack("<BI", 1, code + (1000 if dims == 3 else 0))
    if code == 7:
        parts = geometry.get("geometries")
        if type(parts) is not list:
            raise NotFast("geometry collection without geometries")
        return header + struct.pack("<I", len(parts)) + b"".join(geometry_wkb(g, dims) for g in parts)
    coords = geometry.get("coordinates")
    if type(coords) is not list:
        raise NotFast("geometry without coordinates")
    if code == 1:
        return header + _position(coords, dims)
    return header + _body(code, coords, dims)


def _ring(points: Any, dims: int) -> bytes:
    if type(points) is not list:
        raise NotFast("coordinates not nested as their type says")
    return struct.pack("<I", len(points)) + b"".join(_position(p, dims) for p in points)


def _body(code: int, coords: list[Any], dims: int) -> bytes:
    z = 1000 if dims == 3 else 0
    if code == 2:
        return _ring(coords, dims)
    if code == 3:
        return struct.pack("<I", len(coords)) + b"".join(_ring(r, dims) for r in coords)
    single = code - 3
    prefix = struct.pack("<BI", 1, single + z)
    if single == 1:
        return struct.pack("<I", len(coords)) + b"".join(prefix + _position(p, dims) for p in coords)
    if any(type(part) is not list for part in coords):
        raise NotFast("coordinates not nested as their type says")
    return struct.pack("<I", len(coords)) + b"".join(prefix + _body(single, part, dims) for part in coords)


# the levels of nesting below a geometry, outermost first: (WKB type of each element or 0 for a ring)
NESTING = {2: (), 3: (0,), 5: (2,), 6: (3, 0)}


def nested_wkb(coordinates: list[Any], code: int) -> tuple[pa.Array, bool] | None:
    """WKB for geometries of one type that nest lists of positions (LineString, Polygon,
    MultiLineString, MultiPolygon), written in whole arrays, and whether they have Z; None when the
    positions are not all of one dimension (GDAL's per-geometry rules then apply one by one)."""
    counts = [np.fromiter(map(len, coordinates), dtype=np.int64, count=len(coordinates))]
    items = coordinates
    for _level in NESTING[code]:
        items = [inner for outer in items for inner in outer]
        counts.append(np.fromiter(map(len, items), dtype=np.int64, count=len(items)))
    positions = [p for inner in items for p in inner]
    xy = _positions(positions)
    if xy is None:
        return None
    dims = xy.shape[1]
    kinds = (code, *NESTING[code])
    header = [9 if kind else 4 for kind in kinds]  # byte order, type and count; a ring has its count only
    sizes = [counts[-1] * (8 * dims) + header[-1]]  # bytes of each element, innermost level first
    for level in range(len(kinds) - 2, -1, -1):
        owners = np.repeat(np.arange(len(counts[level])), counts[level])
        sizes.insert(0, header[level] + np.bincount(owners, weights=sizes[0],
                                                     minlength=len(counts[level])).astype(np.int64))
    ends = np.cumsum(sizes[0])
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
    is_data = np.ones(len(out), dtype=bool)
    starts = ends - sizes[0]
    for level, kind in enumerate(kinds):
        fixed = np.frombuffer(b"\x01" + struct.pack("<I", kind + (1000 if dims == 3 else 0)) if kind else b"",
                              dtype=np.uint8)
        number = counts[level].astype("<u4").view(np.uint8).reshape(-1, 4)
        where = starts[:, None] + np.arange(header[level])
        out[where] = np.concatenate([np.broadcast_to(fixed, (len(starts), fixed.size)), number], axis=1)
        is_data[where] = False
        if level + 1 < len(kinds):  # where each child starts: after its parent's header and elder siblings
            child = sizes[level + 1]
            before = np.cumsum(child) - child
            first = np.concatenate([[0], np.cumsum(counts[level])])[:-1]
            base = np.append(before, 0)[first]
            starts = np.repeat(starts + header[level] - base, counts[level]) + before
    out[is_data] = xy.astype("<f8").view(np.uint8).ravel()
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    return pa.Array.from_buffers(pa.binary(), len(coordinates), [None, pa.py_buffer(offsets.tobytes()),
                                                                 pa.py_buffer(out.tobytes())]), dims == 3


def _positions(positions: list[Any]) -> np.ndarray | None:
    """Positions as an (n, 2) or (n, 3) array, when they are all lists of that many finite numbers
    (a flat pass over the numbers: several times faster than numpy's nested-list conversion)."""
    lengths = set(map(type, positions)) == {list} and set(map(len, positions))
    if not lengths or len(lengths) != 1 or (dims := lengths.pop()) not in (2, 3):
        return None
    numbers = list(chain.from_iterable(positions))
    if set(map(type, numbers)) - {float, int}:
        return None
    xy = np.array(numbers, dtype=np.float64).reshape(-1, dims)
    return xy if np.isfinite(xy).all() else None


def geometries_wkb(geometries: list[Any]) -> tuple[pa.Array, set[str], bool]:
    """WKB for a block's geometries (points in one vectorised step), the geometry types seen, and
    whether any has Z."""
    dicts = set(map(type, geometries)) == {dict}
    kinds = set(map(methodcaller("get", "type"), geometries)) if dicts else {None}
    if kinds == {"Point"}:
        coords = _positions(list(map(methodcaller("get", "coordinates"), geometries)))
        if coords is not None:
            z = coords.shape[1] == 3
            points = np.empty(len(geometries), dtype=_POINT_Z if z else _POINT)
            points["order"], points["kind"] = 1, 1001 if z else 1
            points["x"], points["y"] = coords[:, 0], coords[:, 1]
            if z:
                points["z"] = coords[:, 2]
            size = points.dtype.itemsize
            offsets = pa.py_buffer((np.arange(len(points) + 1, dtype=np.int32) * size).tobytes())
            return pa.Array.from_buffers(pa.binary(), len(points), [None, offsets, pa.py_buffer(points.tobytes())]), \
                {"Point"}, z
    if len(kinds) == 1 and (name := next(iter(kinds))) in ("LineString", "Polygon", "MultiLineString", "MultiPolygon"):
        coordinates = list(map(methodcaller("get", "coordinates"), geometries))
        if all(type(c) is list for c in coordinates) and all(
                type(x) is list for level in _levels(coordinates, GEOMETRY_CODES[name]) for x in level):
            nested = nested_wkb(coordinates, GEOMETRY_CODES[name])
            if nested is not None:
                return nested[0], {name}, nested[1]
    wkb_values = [None if g is None else geometry_wkb(g) for g in geometries]
    seen = {g["type"] for g in geometries if g is not None}
    z = any(w is not None and struct.unpack_from("<I", w, 1)[0] >= 1000 for w in wkb_values)
    return pa.array(wkb_values, pa.binary()), seen, z


def _levels(coordinates: list[Any], code: int) -> Iterator[list[Any]]:
    """The lists that must hold lists at each level of nesting (positions are checked by numpy)."""
    items = coordinates
    for _ in NESTING[code]:
        yield items
        items = [inner for outer in items for inner in outer]
    yield items


# -- blocks into columns --------------------------------------------------------------------------

def flatten(properties: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as prefix_key attributes (GDAL's FLATTEN_NESTED_ATTRIBUTES, separator _)."""
    out: dict[str, Any] = {}
    for key, value in properties.items():
        name = prefix + key
        if type(value) is dict:
            out.update(flatten(value, name + "_"))
        else:
            out[name] = value
    return out


@dataclass
class Block:
    rows: int
    columns: dict[str, BlockColumn]
    sequences: list[tuple[str, ...]]  # the distinct key orders of its features, first seen first
    geometry: pa.Array
    geometry_types: set[str]
    has_z: bool


@dataclass
class BlockInfo:
    """What the schema needs of a block spooled to disk (small: it crosses from a worker process)."""

    rows: int
    keys: list[str]  # its attributes, in its spool file's column order
    classes: list[list[int]]  # per attribute, the classes of its values in order
    sequences: list[tuple[str, ...]]
    geometry_types: set[str]
    has_z: bool


def spool_block(text: bytes, line_cut: bool, target: str) -> BlockInfo:
    """Parse one block, write its columns to an Arrow IPC file, and say what the schema needs."""
    with _no_gc():
        block = read_block(parse_block(text, line_cut))
        keys = list(block.columns)
        table = pa.table([*(block.columns[k].values for k in keys), block.geometry],
                         names=[*(f"c{i}" for i in range(len(keys))), "geometry"])
        with pa.OSFile(target, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return BlockInfo(block.rows, keys, [block.columns[k].classes for k in keys], block.sequences,
                         block.geometry_types, block.has_z)


def read_block(features: list[Any]) -> Block:
    if set(map(type, features)) - {dict} or set(map(methodcaller("get", "type"), features)) - {"Feature"}:
        raise NotFast("an element that is not a Feature")
    if any(i is not None and (type(i) is not int or i < 0) for i in set(map(methodcaller("get", "id"), features))):
        raise NotFast("feature ids that GDAL turns into an attribute")
    properties = list(map(methodcaller("get", "properties"), features))
    if set(map(type, properties)) - {dict}:
        if set(map(type, properties)) - {dict, type(None)}:
            raise NotFast("properties that are not an object")
        properties = [p or {} for p in properties]
    geometries = list(map(methodcaller("get", "geometry"), features))
    try:
        columns, sequences = _columns(properties)
    except _Nested:
        columns, sequences = _columns([flatten(p) for p in properties])
    wkb, seen, z = geometries_wkb(geometries)
    return Block(len(properties), columns, sequences, wkb, seen, z)


def _columns(properties: list[dict[str, Any]]) -> tuple[dict[str, BlockColumn], list[tuple[str, ...]]]:
    sequences = list(dict.fromkeys(map(tuple, properties)))
    try:
        struct_ = pa.array(properties) if properties else None  # typed in C, missing keys as nulls
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        struct_ = None
    columns: dict[str, BlockColumn] = {}
    for key in dict.fromkeys(k for s in sequences for k in s):
        if struct_ is not None:
            try:
                column = typed_column(struct_.field(key))
                values = list(map(methodcaller("get", key), properties)) if column.classes[0] in (
                    BOOL, INT, INT64_, REAL) else []
                columns[key] = mixed_column(values) if _coerced(column, values) else column
                continue
            except pa.ArrowInvalid:
                pass
        columns[key] = build_column([p.get(key) for p in properties])
    return columns, sequences


# -- schema: GDAL's field order and types ----------------------------------------------------------

@dataclass
class Schema:
    order: list[str] = field(default_factory=list)  # fields by first appearance
    types: dict[str, int] = field(default_factory=dict)
    edges: dict[str, set[str]] = field(default_factory=dict)
    geometry_types: set[str] = field(default_factory=set)
    has_z: bool = False
    rows: int = 0

    def add(self, block: BlockInfo) -> None:
        self.rows += block.rows
        for sequence in block.sequences:
            for key in sequence:
                if key not in self.types:
                    self.order.append(key)
                    self.types[key] = UNDETERMINED
                    self.edges[key] = set()
            for before, after in pairwise(sequence):
                if after not in self.edges[before] and not self._path(after, before):
                    self.edges[before].add(after)
        for key, classes in zip(block.keys, block.classes, strict=True):
            state = self.types[key]
            for cls in classes:
                state = next_type(state, cls)
            self.types[key] = state
        self.geometry_types |= block.geometry_types
        self.has_z = self.has_z or block.has_z

    def _path(self, start: str, goal: str) -> bool:
        seen, todo = {start}, [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            for nxt in self.edges[node] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return False

    def fields(self) -> list[str]:
        """Kahn's topological order of the key graph, ties broken by name, as GDAL orders fields."""
        incoming = {k: 0 for k in self.order}
        for targets in self.edges.values():
            for target in targets:
                incoming[target] += 1
        ready = sorted(k for k, n in incoming.items() if n == 0)
        out: list[str] = []
        while ready:
            node = ready.pop(0)
            out.append(node)
            for target in sorted(self.edges[node]):
                incoming[target] -= 1
                if incoming[target] == 0:
                    ready.append(target)
                    ready.sort()
        return out

    def declared_type(self) -> str:
        kinds = self.geometry_types
        name = next(iter(kinds)) if len(kinds) == 1 else "Unknown"
        return f"{name} Z" if self.has_z and name != "Unknown" else name


# -- the reader ----------------------------------------------------------------------------------

def _crs(members: dict[str, Any], has_z: bool) -> str:
    crs = members.get("crs")
    if crs is None:
        return "EPSG:4979" if has_z else "EPSG:4326"
    name = crs.get("properties", {}).get("name") if isinstance(crs, dict) and crs.get("type") == "name" \
        and isinstance(crs.get("properties"), dict) else None
    if not isinstance(name, str):
        raise NotFast("a crs member of a kind left to GDAL")
    lowered = name.strip().lower()
    if lowered in CRS84:
        return "EPSG:4979" if has_z else "EPSG:4326"
    for prefix in ("urn:ogc:def:crs:epsg::", "urn:ogc:def:crs:epsg:", "epsg:"):
        if lowered.startswith(prefix) and lowered[len(prefix):].lstrip(":").isdigit():
            code = int(lowered[len(prefix):].lstrip(":"))
            if code == 4326 and has_z:
                return "EPSG:4979"
            return f"EPSG:{code}"
    raise NotFast("a crs name left to GDAL")


@dataclass
class Spooled:
    """A parsed file: its schema, and its blocks as Arrow IPC files in a temporary folder."""

    schema: Schema
    crs: str
    folder: tempfile.TemporaryDirectory[str]
    files: list[Path]
    names: list[list[str]]  # each block's attribute names, in its file's column order


def spool(path: Path, sequence: bool) -> Spooled:
    """Parse every block once, keep it as Arrow on disk, and work out the schema on the way."""
    line_cuts, helper = True, True
    while True:
        try:
            return _spool(path, sequence, line_cuts, helper)
        except BadCut:
            line_cuts = False
        except BrokenHelper:
            helper = False


def _spool(path: Path, sequence: bool, line_cuts: bool, helper: bool) -> Spooled:
    members: dict[str, Any] = {}
    if sequence:
        texts = sequence_texts(path)
    else:
        members, first = collection_header(path)
        if members.get("type") != "FeatureCollection":
            raise NotFast("not a FeatureCollection")
        texts = collection_texts(path, first, line_cuts)
    folder = tempfile.TemporaryDirectory(prefix="locaria-geojson-")
    schema = Schema()
    infos: list[BlockInfo] = []
    files: list[Path] = []
    done: dict[int, BlockInfo] = {}
    # a helper for big files only: it takes a moment to start; blocks go to it once it has, so that it
    # never keeps this process waiting at the end
    assistant = Helper() if helper and path.stat().st_size >= PARALLEL_BYTES and usable_cpus() >= 2 else None

    def collect(wait: bool) -> None:
        """Blocks into the schema in file order (GDAL's field order depends on it), as they are ready."""
        while len(infos) < len(files):
            if assistant is not None:
                done.update(assistant.poll(block=wait and len(infos) not in done))
            if len(infos) not in done:
                return
            infos.append(done.pop(len(infos)))
            schema.add(infos[-1])

    try:
        for index, (text, line_cut) in enumerate(texts):
            files.append(Path(folder.name) / f"{index}.arrow")
            if assistant is not None:
                done.update(assistant.poll())
            if assistant is not None and assistant.ready and len(assistant.waiting) < HELPER_QUEUE:
                assistant.submit(index, text, line_cut, str(files[-1]))
            else:
                done[index] = spool_block(text, line_cut, str(files[-1]))
            collect(wait=False)
        collect(wait=True)
        crs = "EPSG:4326" if sequence else _crs(members, schema.has_z)  # GeoJSONSeq is WGS 84, Z or not
    except BaseException:
        if assistant is not None:
            assistant.close()  # before the folder goes: it may be writing a block there
        folder.cleanup()
        raise
    if assistant is not None:
        assistant.close()
    return Spooled(schema, crs, folder, files, [info.keys for info in infos])


class Helper:
    """A second Python process that parses blocks beside this one.  It runs this file as a script
    (python -P: not the package, whose other modules the parsing does not need), so that it imports
    numpy, pyarrow and orjson only; blocks go to it on its stdin, what the schema needs of each comes
    back on its stdout, read by a thread into a queue."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-P", __file__], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)
        self.answers: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.outbox: queue.Queue[tuple[bytes, bytes] | None] = queue.Queue()
        self.ready = False
        self.waiting: set[int] = set()
        # its pipes are written and read on threads of their own: a block waits in the pipe until
        # the helper has finished the block before, and this process has blocks of its own to parse
        for work, name in ((self._read, "locaria-geojson-answers"), (self._write, "locaria-geojson-blocks")):
            threading.Thread(target=work, name=name, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while answer := _read_frame(self.process.stdout):
            self.answers.put(pickle.loads(answer))
        self.answers.put((-1, BrokenHelper("the helper process ended")))

    def _write(self) -> None:
        assert self.process.stdin is not None
        try:
            while (frames := self.outbox.get()) is not None:
                for frame in frames:
                    _write_frame(self.process.stdin, frame)
                self.process.stdin.flush()
        except OSError:
            pass  # the helper ended: its reader reports it
        finally:
            with suppress(OSError):
                self.process.stdin.close()

    def poll(self, block: bool = False) -> list[tuple[int, BlockInfo]]:
        """Blocks the helper has finished (waiting for one if asked to)."""
        finished: list[tuple[int, BlockInfo]] = []
        while True:
            try:
                index, answer = self.answers.get(block=block and not finished)
            except queue.Empty:
                return finished
            if index == READY:
                self.ready = True
                continue
            if isinstance(answer, BaseException):
                raise answer
            if answer[0] == "BadCut":
                raise BadCut
            if answer[0] == "NotFast":
                raise NotFast(answer[1])
            self.waiting.discard(index)
            finished.append((index, BlockInfo(*answer[1:])))

    def submit(self, index: int, text: bytes, line_cut: bool, target: str) -> None:
        self.outbox.put((pickle.dumps((index, line_cut, target)), text))
        self.waiting.add(index)

    def close(self) -> None:
        self.outbox.put(None)  # the helper ends once it has read everything
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class BrokenHelper(Exception):
    """The helper process could not start or ended: parse alone."""


READY = -2


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    size = struct.unpack("<Q", head)[0]
    data = stream.read(size)
    return data if len(data) == size else None


def serve(source: IO[bytes], sink: IO[bytes]) -> None:
    """The helper's side: parse and spool each block sent, answer with what the schema needs (plain
    values and this module's exceptions by name: the other side knows this module by another name)."""
    _write_frame(sink, pickle.dumps((READY, None)))
    sink.flush()
    while (header := _read_frame(source)) is not None and (text := _read_frame(source)) is not None:
        index, line_cut, target = pickle.loads(header)
        try:
            info = spool_block(text, line_cut, target)
            answer: Any = ("ok", info.rows, info.keys, info.classes, info.sequences, info.geometry_types,
                           info.has_z)
        except BadCut:
            answer = ("BadCut",)
        except NotFast as exc:
            answer = ("NotFast", str(exc))
        _write_frame(sink, pickle.dumps((index, answer)))
        sink.flush()


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a container's)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cpus


def batches(spooled: Spooled, batch_size: int) -> Iterator[pa.RecordBatch]:
    """The spooled blocks in the schema's columns and types, attributes first, geometry last."""
    fields = spooled.schema.fields()
    types = [ARROW_TYPES[spooled.schema.types[k]] for k in fields]
    try:
        for path, keys in zip(spooled.files, spooled.names, strict=True):
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_file(source).read_all()
            position = {k: i for i, k in enumerate(keys)}
            columns = []
            for name, kind in zip(fields, types, strict=True):
                if name in position:
                    values = table.column(position[name]).combine_chunks()
                    columns.append(final_array(values, spooled.schema.types[name]))
                else:
                    columns.append(pa.nulls(table.num_rows, kind))
            columns.append(table.column("geometry").combine_chunks())
            batch = pa.RecordBatch.from_arrays(columns, schema=arrow_schema(spooled))
            path.unlink()
            for start in range(0, batch.num_rows, batch_size):
                yield batch.slice(start, batch_size)
    finally:
        spooled.folder.cleanup()


def arrow_schema(spooled: Spooled) -> pa.Schema:
    from locaria_batch.jobs.names import unique_name  # here: the helper process runs this file without the package

    fields = spooled.schema.fields()
    geometry = unique_name("wkb_geometry", set(fields))  # named apart from a property of that name
    return pa.schema([pa.field(k, ARROW_TYPES[spooled.schema.types[k]]) for k in fields]
                     + [pa.field(geometry, pa.binary(), metadata=WKB_FIELD)])


if __name__ == "__main__":  # the helper process (see Helper)
    serve(sys.stdin.buffer, sys.stdout.buffer)
