"""A layer's table, planned from its first batch: each column's PostgreSQL type, where the geometry
comes from (WKB, coordinate columns or text) and of which type, and the source's coordinate system
(the user's, the file's, or inferred from the values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.types as pat
from psycopg import sql

from locaria_batch.job import JobError
from locaria_batch.jobs.file_loader import columns as col
from locaria_batch.jobs.file_loader.crs import WGS84, declared_srid, fits_lon_lat, infer_srid, srid_from_crs
from locaria_batch.jobs.file_loader.pgbinary import ARROW_TYPE
from locaria_batch.jobs.file_loader.readers import RawLayer

CONCRETE_KINDS = {"Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon"}


@dataclass
class GeometryPlan:
    """The geometry column; converting and finishing refine it as they learn what the rows hold."""

    source: str  # "wkb", "xy" or "text"
    srid: int
    kind: str = "Geometry"  # the column's type: Point, MultiPolygon, Geometry ...
    dimension: int = 0  # 0 2D, 1 Z, 2 M, 3 ZM
    column: str | None = None  # the WKB or text column in the batches
    xy: col.CoordinateColumns | None = None
    crs_source: str = ""  # where the CRS came from: file, attribute, or assumed (the file does not say)
    definition: str | None = None  # the file's CRS as it gives it, when it has no EPSG code (srid is then 0)
    kinds_seen: set[int] = field(default_factory=set)
    # the column is a plain `geometry` while loading and gets its type when finished: curves to straighten,
    # or values of different dimensions (2D and Z ...) to bring to one
    unsettled: bool = False
    points_bbox: list[float] | None = None  # kept while every value is a 2D point: spares a scan for the extent
    # coordinate columns empty in the first rows: the CRS is told by the first rows that have values
    crs_unseen: bool = False
    only_points: bool = True

    def extend(self, x: np.ndarray, y: np.ndarray) -> None:
        finite = np.isfinite(x) & np.isfinite(y)
        if not finite.any():
            return
        box = [float(x[finite].min()), float(y[finite].min()), float(x[finite].max()), float(y[finite].max())]
        old = self.points_bbox
        self.points_bbox = box if old is None else [min(old[0], box[0]), min(old[1], box[1]),
                                                    max(old[2], box[2]), max(old[3], box[3])]

    @property
    def crs_name(self) -> str:
        """The CRS as results and messages name it: EPSG:n, or the file's own definition."""
        return f"EPSG:{self.srid}" if self.definition is None else self.definition

    @property
    def crs_assumed(self) -> bool:
        return self.crs_source == "assumed"

    @property
    def curves(self) -> list[str]:
        return [col.CURVE_NAMES[k] for k in sorted(self.kinds_seen) if k in col.CURVE_NAMES]

    @property
    def column_type(self) -> sql.Composable:
        if self.unsettled:
            return sql.SQL("geometry")
        return sql.SQL("geometry({}, {})").format(sql.SQL(self.kind + col.DIMENSION_SUFFIX[self.dimension]),
                                                  sql.Literal(self.srid))


@dataclass
class TablePlan:
    """The source's fields as the table's columns; the fields beyond what a table holds share one
    jsonb column."""

    originals: list[str]  # the source's field names
    names: list[str]  # their column names: safe and unique
    types: list[str]  # their PostgreSQL types
    plain: int  # how many leading fields get a column of their own
    geometry: GeometryPlan | None
    columns: list[str] = field(init=False)  # the table's columns, in the order COPY sends them
    column_types: list[str] = field(init=False)

    def __post_init__(self) -> None:
        spill = [col.SPILL_COLUMN] if self.spilled else []
        geometry = [col.GEOMETRY_COLUMN] if self.geometry else []
        self.columns = [col.FID_COLUMN, *self.names[: self.plain], *spill, *geometry]
        geometry_type = [] if self.geometry is None else ["text" if self.geometry.source == "text" else "geometry"]
        self.column_types = ["integer", *self.types[: self.plain], *(["jsonb"] if spill else []), *geometry_type]

    def widen(self, index: int, kind: str) -> str:
        """Field `index` gets a wider type (its values did not all fit the one the first rows gave)."""
        self.types[index] = kind
        self.column_types[index + 1] = kind  # after the fid
        return kind

    @property
    def spilled(self) -> list[str]:
        return self.originals[self.plain:]

    def warnings(self) -> list[str]:
        if not self.spilled:
            return []
        return [f"{len(self.originals):,} columns are more than a table holds: the last {len(self.spilled):,} are "
                f"kept together in the jsonb column {col.SPILL_COLUMN}"]

    def described(self) -> list[dict[str, str]]:
        """Each source field and the column that holds it, for the result."""
        own = [{"source": o, "column": n, "type": t} for o, n, t in
               zip(self.originals[: self.plain], self.names[: self.plain], self.types[: self.plain], strict=True)]
        return own + [{"source": o, "column": col.SPILL_COLUMN, "type": "jsonb"} for o in self.spilled]


def plan_table(conn: psycopg.Connection[Any], raw: RawLayer, first: pa.RecordBatch | None,
               source_crs: int | None, append_to: dict[str, str] | None = None) -> TablePlan:
    """The plan for `raw` from its first non-empty batch (None: the layer has no rows); rows to be
    appended to a table take its column types where their values fit them."""
    types = column_types(raw, first)
    geometry = plan_geometry(conn, raw, first, source_crs)
    originals = [f.name for f in raw.fields]
    names = col.unique_identifiers(originals)
    for i, name in enumerate(names):
        if append_to and name in append_to and fits_type(types[i], append_to[name], first, i):
            types[i] = append_to[name]
    return TablePlan(originals, names, types, col.plain_column_count(types), geometry)


# a column of one type whose values the other holds without loss
WIDER_TYPES = {"integer": {"bigint", "double precision"}, "bigint": {"double precision"},
               "date": {"timestamp", "timestamptz"}}


def fits_type(kind: str, table_type: str, first: pa.RecordBatch | None, index: int) -> bool:
    """Whether a column planned as `kind` can be loaded as the table's type instead: a wider type, or any
    type the loader writes when the first rows hold no value (a column left empty this time)."""
    if table_type not in ARROW_TYPE or table_type == "geometry":
        return False
    if table_type in WIDER_TYPES.get(kind, ()):
        return True
    return first is not None and first.column(index).null_count == first.num_rows


def create_table(conn: psycopg.Connection[Any], table: sql.Identifier, plan: TablePlan) -> None:
    parts = [sql.SQL("{} integer NOT NULL").format(sql.Identifier(col.FID_COLUMN))]
    parts += [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
              for n, t in zip(plan.names[: plan.plain], plan.types[: plan.plain], strict=True)]
    if plan.spilled:
        parts.append(sql.SQL("{} jsonb").format(sql.Identifier(col.SPILL_COLUMN)))
    if plan.geometry is not None:
        kind = sql.SQL("text") if plan.geometry.source == "text" else plan.geometry.column_type
        parts.append(sql.SQL("{} {}").format(sql.Identifier(col.GEOMETRY_COLUMN), kind))
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(", ").join(parts)))


def column_types(raw: RawLayer, first: pa.RecordBatch | None) -> list[str]:
    types = list(raw.types) if raw.types else [col.pg_type(f.type) for f in raw.fields]
    if raw.types and first is not None:  # text: codes like 007 keep their leading zeros
        types = ["text" if _codes(first.column(i), kind) else kind for i, kind in enumerate(types)]
    if raw.spreadsheet and first is not None:  # Excel has no dates before 1900: such a column is text
        for i, item in enumerate(raw.fields):
            if pat.is_string(item.type) and col.holds_only_dates(first.column(i)):
                types[i] = "date"
    return types


def _codes(text: pa.Array, kind: str) -> bool:
    """Whether a column of text that reads as numbers is codes or identifiers, which only text keeps."""
    return (kind in col.NUMBER_TYPES and col.code_like_numbers(text)) or (
        kind == "double precision" and col.whole_numbers_beyond_bigint(text))


def plan_geometry(conn: psycopg.Connection[Any], raw: RawLayer, first: pa.RecordBatch | None,
                  source_crs: int | None) -> GeometryPlan | None:
    names = [f.name for f in raw.fields]
    if raw.geometry_column is not None:
        srid, origin = _srid_for_file(conn, raw, first, source_crs)
        plan = GeometryPlan("wkb", srid or 0, column=raw.geometry_column, crs_source=origin,
                            definition=raw.crs if srid is None else None)
        declared = str(raw.declared_type or "").replace(" ", "")
        if first is not None:
            kinds, dims = col.wkb_kinds(first.column(raw.geometry_column))
            present = kinds[kinds > 0]
            plan.kinds_seen = set(np.unique(present).tolist())
            dimensions = set(np.unique(dims[kinds > 0]).tolist())
            plan.dimension = max(dimensions, default=0)
            plan.kind = kind_for(plan.kinds_seen, declared)
            plan.unsettled = bool(plan.curves) or len(dimensions) > 1
        elif declared.removesuffix("Z").removesuffix("M").removesuffix("Z") not in CONCRETE_KINDS:
            plan.unsettled = bool(declared)  # a curved type declared by an empty layer
        return plan
    if first is None:
        return None
    xy = col.find_coordinate_columns(names)
    if xy is not None:
        x = col.coordinate_array(first.column(names.index(xy.x)), raw.decimal_comma)
        y = col.coordinate_array(first.column(names.index(xy.y)), raw.decimal_comma)
        if source_crs is not None:
            return GeometryPlan("xy", source_crs, kind="Point", xy=xy, crs_source="attribute", kinds_seen={1})
        unseen = not (np.isfinite(x) & np.isfinite(y)).any()
        srid = WGS84 if unseen else infer_from_values(raw.label, x, y, xy)
        return GeometryPlan("xy", srid, kind="Point", xy=xy, crs_source="assumed", kinds_seen={1}, crs_unseen=unseen)
    text = col.find_geometry_text_column(names, pa.Table.from_batches([first]))
    if text is not None:
        srid = source_crs or 4326
        return GeometryPlan("text", srid, column=text, crs_source="attribute" if source_crs else "default")
    return None


def kind_code(kind: str) -> int:
    return next((code for code, name in col.KIND_NAMES.items() if name == kind), 0)


def kind_for(kinds: set[int], declared: str) -> str:
    """The column type for the WKB type codes seen, or the declared type when no value says."""
    families = {k if k <= 3 else k - 3 for k in kinds if k != 7}
    if not kinds:
        bare = declared.removesuffix("Z").removesuffix("M").removesuffix("Z")
        return bare if bare in CONCRETE_KINDS else "Geometry"
    if 7 in kinds or len(families) != 1 or max(kinds) > 7:
        return "Geometry"
    family = families.pop()
    multi = any(k > 3 for k in kinds) or declared.startswith("Multi")
    return col.KIND_NAMES[family + 3 if multi else family]


def _srid_for_file(conn: psycopg.Connection[Any], raw: RawLayer, first: pa.RecordBatch | None,
                   source_crs: int | None) -> tuple[int | None, str]:
    """The layer's SRID and where it came from; None: the file's own definition, without an EPSG code."""
    if source_crs is not None:
        return source_crs, "attribute"
    if raw.declared_crs:
        srid = declared_srid(conn, raw.declared_crs, raw.label)
        if srid is not None:
            return srid, "file"
    if raw.crs:
        return srid_from_crs(conn, raw.crs, raw.label), "file"
    if first is not None and raw.geometry_column is not None:
        kinds, dims = col.wkb_kinds(first.column(raw.geometry_column))
        if set(np.unique(kinds).tolist()) <= {0, 1} and not dims.any():
            x, y = col.point_coordinates(first.column(raw.geometry_column), kinds)
            if np.isfinite(x).any():
                return infer_from_values(raw.label, x, y, None), "assumed"
    # longitude/latitude until the extent says otherwise (the finisher checks it)
    return WGS84, "assumed"


def infer_from_values(label: str, x: np.ndarray, y: np.ndarray, xy: col.CoordinateColumns | None) -> int:
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any():
        raise JobError(f"{label}: the coordinate columns {xy.x if xy else 'x'}/{xy.y if xy else 'y'} "
                       "hold no finite numbers in the first rows; fill them in or remove them")
    x, y = x[finite], y[finite]
    srid = infer_srid(x, y)
    if srid is None:
        names = f"{xy.x}/{xy.y}" if xy else "coordinates"
        outside = int(np.argmin(fits_lon_lat(x, y)))  # the first value that is not longitude/latitude
        raise JobError(f"{label}: cannot tell the coordinate system of {names} (values such as "
                       f"{x[outside]:g}, {y[outside]:g}, not longitude/latitude; extent {x.min():g}, {y.min():g}, "
                       f"{x.max():g}, {y.max():g}); give it with --crs (the source_crs attribute, for example "
                       "EPSG:27700) and load the file again")
    return srid
