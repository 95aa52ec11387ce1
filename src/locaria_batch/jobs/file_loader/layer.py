"""One layer into one staging table: plan the columns and the geometry from the first batch, stream
every batch over COPY, then reproject, repair, index and describe the table."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat
from psycopg import sql

from locaria_batch.job import JobError, RetryableJobError
from locaria_batch.jobs.file_loader import columns as col
from locaria_batch.jobs.file_loader.copyin import BadRow, Prepared, ahead, copy_prepared, produce
from locaria_batch.jobs.file_loader.crs import infer_srid, srid_from_crs
from locaria_batch.jobs.file_loader.limits import Limits
from locaria_batch.jobs.file_loader.pgbinary import encode
from locaria_batch.jobs.file_loader.readers import LEADING_ZERO, RawLayer

SCHEMA = "locaria_uploads"
FAMILY_DIMENSION = {1: 0, 2: 1, 3: 2}  # point, line, polygon families -> ST_CollectionExtract type
MAX_REPORTED_ROWS = 20


@dataclass
class GeometryPlan:
    source: str  # "wkb", "xy" or "text"
    srid: int
    kind: str = "Geometry"  # the column's type: Point, MultiPolygon, Geometry ...
    dimension: int = 0  # 0 2D, 1 Z, 2 M, 3 ZM
    column: str | None = None  # the WKB or text column in the batches
    xy: col.CoordinateColumns | None = None
    crs_source: str = ""  # where the CRS came from: file, attribute, inferred
    kinds_seen: set[int] = field(default_factory=set)
    points_bbox: list[float] | None = None  # kept while every value is a 2D point: spares a scan for the extent
    only_points: bool = True

    def extend(self, x: np.ndarray, y: np.ndarray) -> None:
        finite = ~(np.isnan(x) | np.isnan(y))
        if not finite.any():
            return
        box = [float(x[finite].min()), float(y[finite].min()), float(x[finite].max()), float(y[finite].max())]
        old = self.points_bbox
        self.points_bbox = box if old is None else [min(old[0], box[0]), min(old[1], box[1]),
                                                    max(old[2], box[2]), max(old[3], box[3])]

    @property
    def column_type(self) -> sql.Composable:
        return sql.SQL("geometry({}, {})").format(sql.SQL(self.kind + col.DIMENSION_SUFFIX[self.dimension]),
                                                  sql.Literal(self.srid))


@dataclass
class LayerResult:
    layer: str
    table: str  # the staging table until the swap
    record_count: int
    columns: list[dict[str, str]]
    geometry_type: str | None
    source_crs: str | None
    srid: int | None
    bbox: list[float] | None
    invalid_geometries: dict[str, Any]
    warnings: list[str]
    preview: dict[str, Any]


def kind_code(kind: str) -> int:
    return next((code for code, name in col.KIND_NAMES.items() if name == kind), 0)


def _first(batches: Iterator[pa.RecordBatch]) -> tuple[pa.RecordBatch | None, Iterator[pa.RecordBatch]]:
    for batch in batches:
        if batch.num_rows:
            def rest(head: pa.RecordBatch = batch) -> Iterator[pa.RecordBatch]:
                yield head
                yield from batches
            return batch, rest()
    return None, iter(())


class LayerLoader:
    def __init__(self, conn: psycopg.Connection[Any], raw: RawLayer, staging: str, *, source_crs: int | None,
                 target_srid: int, repair: bool, limits: Limits, on_rows: Callable[[int], None]) -> None:
        self.conn = conn
        self.raw = raw
        self.staging = staging
        self.table = sql.Identifier(SCHEMA, staging)
        self.source_crs = source_crs
        self.target_srid = target_srid
        self.repair = repair
        self.limits = limits
        self.on_rows = on_rows
        self.warnings: list[str] = []
        self.out_of_range: list[int] = []
        self.out_of_range_count = 0
        self.bad_values: list[BadRow] = []  # text values that are not of their column's type
        self._source_srid: int | None = None

    # -- planning ---------------------------------------------------------------------------
    def plan_types(self, first: pa.RecordBatch | None) -> list[str]:
        raw = self.raw
        types = list(raw.types) if raw.types else [col.pg_type(f.type) for f in raw.fields]
        if raw.types and first is not None:  # text: codes like 007 keep their leading zeros
            for i, kind in enumerate(types):
                if kind in ("bigint", "double precision"):
                    values = first.column(i).slice(0, 5000).drop_null().to_pylist()
                    if any(LEADING_ZERO.match(v) and not v.strip().startswith("0.") for v in values):
                        types[i] = "text"
        if raw.spreadsheet and first is not None:  # Excel has no dates before 1900: such a column is text
            for i, field in enumerate(raw.fields):
                if pat.is_string(field.type) and col.holds_only_dates(first.column(i)):
                    types[i] = "date"
        return types

    def plan_geometry(self, first: pa.RecordBatch | None) -> GeometryPlan | None:
        raw = self.raw
        names = [f.name for f in raw.fields]
        if raw.geometry_column is not None:
            srid, origin = self._srid_for_file(first)
            plan = GeometryPlan("wkb", srid, column=raw.geometry_column, crs_source=origin)
            declared = str(raw.declared_type or "").replace(" ", "")
            if first is not None:
                kinds, dims = col.wkb_kinds(first.column(raw.geometry_column))
                present = kinds[kinds > 0]
                plan.kinds_seen = set(np.unique(present).tolist())
                plan.dimension = int(dims[kinds > 0].max()) if present.size else 0
                plan.kind = self._kind_for(plan.kinds_seen, declared)
            return plan
        if first is None:
            return None
        xy = col.find_coordinate_columns(names)
        if xy is not None:
            table = pa.Table.from_batches([first]).rename_columns(names)
            x = col.coordinate_array(table.column(xy.x), raw.decimal_comma)
            y = col.coordinate_array(table.column(xy.y), raw.decimal_comma)
            if self.source_crs is not None:
                srid, origin = self.source_crs, "attribute"
            else:
                srid = self._infer_from_values(x, y, xy)
                origin = "inferred"
            return GeometryPlan("xy", srid, kind="Point", xy=xy, crs_source=origin, kinds_seen={1})
        text = col.find_geometry_text_column(names, pa.Table.from_batches([first]).rename_columns(names))
        if text is not None:
            srid = self.source_crs or 4326
            return GeometryPlan("text", srid, column=text, crs_source="attribute" if self.source_crs else "default")
        return None

    def _kind_for(self, kinds: set[int], declared: str) -> str:
        families = {k if k <= 3 else k - 3 for k in kinds if k != 7}
        if not kinds:
            bare = declared.removesuffix("Z").removesuffix("M").removesuffix("Z")
            return bare if bare in _CONCRETE else "Geometry"
        if 7 in kinds or len(families) != 1:
            return "Geometry"
        family = families.pop()
        multi = any(k > 3 for k in kinds) or declared.startswith("Multi")
        return col.KIND_NAMES[family + 3 if multi else family]

    def _srid_for_file(self, first: pa.RecordBatch | None) -> tuple[int, str]:
        if self.source_crs is not None:
            return self.source_crs, "attribute"
        if self.raw.crs:
            return srid_from_crs(self.conn, self.raw.crs, self.raw.label), "file"
        if first is not None and self.raw.geometry_column is not None:
            kinds, _ = col.wkb_kinds(first.column(self.raw.geometry_column))
            if set(np.unique(kinds).tolist()) <= {0, 1}:
                x, y = _point_coordinates(first.column(self.raw.geometry_column), kinds)
                return self._infer_from_values(x, y, None), "inferred"
        raise JobError(f"{self.raw.label} does not say which coordinate system it uses; set the file's source_crs "
                       "attribute (for example EPSG:27700) and load it again")

    def _infer_from_values(self, x: np.ndarray, y: np.ndarray, xy: col.CoordinateColumns | None) -> int:
        finite = ~(np.isnan(x) | np.isnan(y))
        if not finite.any():
            raise JobError(f"{self.raw.label}: the coordinate columns {xy.x if xy else 'x'}/{xy.y if xy else 'y'} "
                           "hold no numbers in the first rows; fill them in or remove them")
        srid = infer_srid(x[finite], y[finite])
        if srid is None:
            names = f"{xy.x}/{xy.y}" if xy else "coordinates"
            raise JobError(f"{self.raw.label}: cannot tell the coordinate system of {names} (values such as "
                           f"{x[finite][0]:g}, {y[finite][0]:g}); set the file's source_crs attribute "
                           "(for example EPSG:27700) and load it again")
        return srid

    # -- loading ----------------------------------------------------------------------------
    def load(self) -> LayerResult:
        """Load the layer; a problem the database or Arrow reports becomes one sentence about this layer."""
        try:
            return self._load()
        except psycopg.OperationalError as exc:
            raise RetryableJobError(f"{self.raw.label}: the database connection failed ({exc}); "
                                    "the load will be retried") from exc
        except psycopg.Error as exc:
            problem = (exc.diag.message_primary or str(exc)).strip()
            raise JobError(f"{self.raw.label}: the database refused the data ({problem}); check the file and "
                           "upload it again") from exc
        except (pa.ArrowException, ValueError, OverflowError) as exc:
            raise JobError(f"{self.raw.label}: the data cannot be converted ({str(exc).splitlines()[0][:200]}); "
                           "check the file and upload it again") from exc

    def _load(self) -> LayerResult:
        raw = self.raw
        if len(raw.fields) > self.limits.max_columns:
            raise JobError(f"{raw.label} has {len(raw.fields):,} columns, over the limit of "
                           f"{self.limits.max_columns:,}; remove columns you do not need")
        first, batches = _first(raw.batches)
        types = self.plan_types(first)
        geometry = self.plan_geometry(first)
        originals = [f.name for f in raw.fields]
        names = col.unique_identifiers(originals)
        plain = col.plain_column_count(types)
        spilled = originals[plain:]
        if spilled:
            self.warnings.append(f"{len(originals):,} columns are more than a table holds: the last "
                                 f"{len(spilled):,} are kept together in the jsonb column {col.SPILL_COLUMN}")
        self._create(names[:plain], types[:plain], bool(spilled), geometry)
        table_names = [col.FID_COLUMN, *names[:plain]] + ([col.SPILL_COLUMN] if spilled else []) \
            + ([col.GEOMETRY_COLUMN] if geometry else [])
        table_types = ["integer", *types[:plain]] + (["jsonb"] if spilled else []) \
            + ([("text" if geometry.source == "text" else "geometry")] if geometry else [])

        def encoder(batch: pa.RecordBatch) -> bytes:
            return encode(batch.columns, table_types)

        prepared = self._prepare(ahead(batches, name="locaria-loader-reader"), types, plain, geometry, originals,
                                 table_names)
        count, bad = copy_prepared(self.conn, self.table, table_names, produce(prepared, encoder), encoder,
                                   raw.label, self.limits.max_bad_rows, self.on_rows)
        self._report_bad_rows(self.bad_values + bad, dict(zip(names, originals, strict=True)))
        if raw.skipped_count[0]:
            rows = ", ".join(map(str, raw.skipped_rows[:MAX_REPORTED_ROWS]))
            self.warnings.append(f"{raw.skipped_count[0]:,} rows have the wrong number of fields and were left out "
                                 f"(rows {rows})")
        if self.out_of_range_count:
            rows = ", ".join(map(str, self.out_of_range[:MAX_REPORTED_ROWS]))
            self.warnings.append(f"{self.out_of_range_count:,} rows have coordinates out of range for longitude/"
                                 f"latitude; their geometry is left empty (rows {rows})")
        described = [{"source": o, "column": n, "type": t} for o, n, t in zip(originals[:plain], names[:plain],
                                                                               types[:plain], strict=True)]
        described += [{"source": o, "column": col.SPILL_COLUMN, "type": "jsonb"} for o in spilled]
        return self._finish(count, geometry, described)

    def _create(self, names: list[str], types: list[str], spill: bool, geometry: GeometryPlan | None) -> None:
        parts = [sql.SQL("{} integer NOT NULL").format(sql.Identifier(col.FID_COLUMN))]
        parts += [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in zip(names, types, strict=True)]
        if spill:
            parts.append(sql.SQL("{} jsonb").format(sql.Identifier(col.SPILL_COLUMN)))
        if geometry is not None:
            kind = sql.SQL("text") if geometry.source == "text" else geometry.column_type
            parts.append(sql.SQL("{} {}").format(sql.Identifier(col.GEOMETRY_COLUMN), kind))
        self.conn.execute(sql.SQL("CREATE TABLE {} ({})").format(self.table, sql.SQL(", ").join(parts)))

    def _prepare(self, batches: Iterator[pa.RecordBatch], types: list[str], plain: int,
                 geometry: GeometryPlan | None, originals: list[str], table_names: list[str]) -> Iterator[Prepared]:
        """Runs on the reader thread: each source batch as the table's columns."""
        done = 0
        for batch in batches:
            if done + batch.num_rows > self.limits.max_features:
                raise JobError(f"{self.raw.label} has more than {self.limits.max_features:,} features, the "
                               "limit; split the file")
            fids = pa.array(np.arange(done + 1, done + 1 + batch.num_rows, dtype=np.int32))
            arrays: list[pa.Array] = [fids]
            for i in range(plain):
                arrays.append(self._attribute(batch.column(i), types[i], table_names[i + 1], fids))
            if plain < len(originals):
                arrays.append(_spill(batch, range(plain, len(originals)), originals))
            before: list[sql.Composed] = []
            if geometry is not None:
                arrays.append(self._geometry(batch, geometry, done + 1, before))
            out = pa.RecordBatch.from_arrays(arrays, names=table_names)
            yield Prepared(out, done + 1, before)
            done += batch.num_rows

    def _attribute(self, column: pa.Array, kind: str, name: str, fids: pa.Array) -> pa.Array:
        """A source column as the Arrow type binary COPY encodes for its PostgreSQL type."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        kind_in = column.type
        if self.raw.types is not None or (pat.is_string(kind_in) and kind != "text"):  # text, typed here
            typed, bad = col.coerce_text(column, kind, self.raw.decimal_comma)
            if len(self.bad_values) + len(bad) > self.limits.max_bad_rows:
                raise JobError(f"{self.raw.label}: more than {self.limits.max_bad_rows:,} values are not of their "
                               f"column's type (column {name!r}); "
                               "fix the file and upload it again")
            for index in bad:
                self.bad_values.append(BadRow(int(fids[index].as_py()), name,
                                              f"{str(column[index].as_py())[:40]!r} is not a {kind}; loaded as empty"))
            return typed
        if isinstance(kind_in, pa.BaseExtensionType):
            return column.storage
        if pat.is_dictionary(kind_in):
            return column.dictionary_decode()
        if pat.is_binary(kind_in) or pat.is_large_binary(kind_in):
            return col.wkb_to_hex(column)
        if pat.is_nested(kind_in):
            return pa.array([None if v is None else json.dumps(v, default=str) for v in column.to_pylist()],
                            pa.string())
        return column

    def _geometry(self, batch: pa.RecordBatch, plan: GeometryPlan, first_row: int,
                  before: list[sql.Composed]) -> pa.Array:
        if plan.source == "xy":
            assert plan.xy is not None
            names = [f.name for f in self.raw.fields]
            x = col.coordinate_array(batch.column(names.index(plan.xy.x)), self.raw.decimal_comma)
            y = col.coordinate_array(batch.column(names.index(plan.xy.y)), self.raw.decimal_comma)
            if plan.srid == 4326:
                bad = (np.abs(x) > 180) | (np.abs(y) > 90)
                if bad.any():
                    rows = np.nonzero(bad)[0] + first_row
                    self.out_of_range_count += int(bad.sum())
                    self.out_of_range.extend(rows[: MAX_REPORTED_ROWS].tolist())
                    x = np.where(bad, np.nan, x)
            plan.extend(x, y)
            return col.point_wkb(x, y)
        names = [f.name for f in self.raw.fields]
        if plan.source == "text":
            return pc.cast(batch.column(names.index(plan.column)), pa.string())
        wkb = col.plain_binary(batch.column(batch.num_columns - 1))
        kinds, dims = col.wkb_kinds(wkb)
        if plan.only_points:
            if np.all((kinds == 1) & (dims == 0) | (kinds == 0)):
                plan.extend(*_point_coordinates(wkb, kinds))
            else:
                plan.only_points = False
        seen = set(np.unique(kinds[kinds > 0]).tolist())
        if plan.kind == "Geometry" or not seen:
            plan.kinds_seen |= seen
            return wkb
        family = kind_code(plan.kind) if kind_code(plan.kind) <= 3 else kind_code(plan.kind) - 3
        fits = {family, family + 3}
        if not seen <= fits:
            plan.kind = "Geometry"
            before.append(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
                self.table, sql.Identifier(col.GEOMETRY_COLUMN), plan.column_type))
            plan.kinds_seen |= seen
            return wkb
        if family + 3 in seen and plan.kind == col.KIND_NAMES[family]:
            plan.kind = col.KIND_NAMES[family + 3]
            before.append(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING ST_Multi({})").format(
                self.table, sql.Identifier(col.GEOMETRY_COLUMN), plan.column_type,
                sql.Identifier(col.GEOMETRY_COLUMN)))
        plan.kinds_seen |= seen
        if plan.kind == col.KIND_NAMES[family + 3] and family in seen:
            return col.promote_to_multi(wkb, kinds, plan.dimension)
        return wkb

    def _report_bad_rows(self, bad: list[BadRow], originals: dict[str, str]) -> None:
        for problem in bad[:MAX_REPORTED_ROWS]:
            where = f", column {originals.get(problem.column, problem.column)!r}" if problem.column else ""
            self.warnings.append(f"row {problem.row}{where}: {problem.problem}")
        if len(bad) > MAX_REPORTED_ROWS:
            self.warnings.append(f"... and {len(bad) - MAX_REPORTED_ROWS} more rows with values that could not "
                                 "be loaded")

    # -- finishing --------------------------------------------------------------------------
    def _finish(self, count: int, geometry: GeometryPlan | None, described: list[dict[str, str]]) -> LayerResult:
        conn, table = self.conn, self.table
        geom = sql.Identifier(col.GEOMETRY_COLUMN)
        invalid: dict[str, Any] = {"count": 0, "repaired": False, "rows": []}
        bbox = None
        source_srid = geometry.srid if geometry is not None else None
        self._source_srid = source_srid
        if geometry is not None and geometry.source == "text":
            self._parse_text_geometry(geometry)
        if geometry is not None:
            if geometry.srid == 4326:
                bbox = self._points_bbox(geometry) or self._extent()
                if bbox and (bbox[0] < -180.5 or bbox[2] > 180.5 or bbox[1] < -90.5 or bbox[3] > 90.5):
                    raise JobError(
                        f"{self.raw.label}: coordinates run to {bbox[2]:.6g}, {bbox[3]:.6g}, out of range for "
                        "longitude/latitude; if the file uses a projected coordinate system set its source_crs "
                        "attribute (for example EPSG:27700) and load it again")
            if geometry.srid != self.target_srid:
                self._transform(geometry)
                bbox = None
            invalid = self._validity(geometry)
            conn.execute(sql.SQL("CREATE INDEX {} ON {} USING gist ({})").format(
                sql.Identifier(f"{self.staging}_geom_idx"), table, geom))
            bbox = bbox or self._points_bbox(geometry) or self._extent()
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
            table, sql.Identifier(f"{self.staging}_pkey"), sql.Identifier(col.FID_COLUMN)))
        conn.execute(sql.SQL("ANALYZE {}").format(table))
        kind = None
        if geometry is not None:
            kind = geometry.kind + col.DIMENSION_SUFFIX[geometry.dimension]
        return LayerResult(
            layer=self.raw.name, table=self.staging, record_count=count, columns=described, geometry_type=kind,
            source_crs=f"EPSG:{source_srid}" if source_srid else None, srid=(
                geometry.srid if geometry else None), bbox=bbox, invalid_geometries=invalid,
            warnings=self.warnings, preview=self._preview(geometry is not None))

    def _transform(self, geometry: GeometryPlan) -> None:
        source, geometry.srid = geometry.srid, self.target_srid
        geom = sql.Identifier(col.GEOMETRY_COLUMN)
        try:
            with self.conn.transaction():
                self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING ST_Transform({}, {})").format(
                    self.table, geom, geometry.column_type, geom, sql.Literal(self.target_srid)))
        except psycopg.errors.DatabaseError as exc:
            if isinstance(exc, psycopg.OperationalError):
                raise
            raise JobError(f"{self.raw.label}: the coordinates cannot be transformed from EPSG:{source} to "
                           f"EPSG:{self.target_srid} ({exc.diag.message_primary}); check the file's coordinate "
                           "system or set its source_crs attribute") from exc

    def _parse_text_geometry(self, geometry: GeometryPlan) -> None:
        """The text column becomes a geometry column of the one type its values share (or a generic one)."""
        geom = sql.Identifier(col.GEOMETRY_COLUMN)
        parse = sql.SQL("locaria_core.loader_parse_geometry({}, {})").format(geom, sql.Literal(geometry.srid))
        unreadable = [r["fid"] for r in self.conn.execute(sql.SQL(
            "SELECT {} AS fid FROM {} WHERE btrim(coalesce({}, '')) <> '' AND {} IS NULL ORDER BY 1").format(
            sql.Identifier(col.FID_COLUMN), self.table, geom, parse)).fetchall()]
        if unreadable:
            self.warnings.append(f"{len(unreadable):,} rows hold text in the geometry column "
                                 f"{self.raw.fields[[f.name for f in self.raw.fields].index(geometry.column)].name!r} "
                                 "that is not WKT, WKB or GeoJSON; their geometry is left empty (rows "
                                 f"{', '.join(map(str, unreadable[:MAX_REPORTED_ROWS]))})")
        self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE geometry USING {}").format(
            self.table, geom, parse))
        found = self.conn.execute(sql.SQL(
            "SELECT array_agg(DISTINCT ST_GeometryType({g})) FILTER (WHERE {g} IS NOT NULL) AS kinds, "
            "coalesce(max(ST_Zmflag({g})), 0) AS zm "
            "FROM {t}").format(g=geom, t=self.table)).fetchone()
        codes = {kind_code(k.removeprefix("ST_")) or 7 for k in (found["kinds"] or [])}
        geometry.kinds_seen = codes
        geometry.kind = self._kind_for(codes, "")
        geometry.dimension = {0: 0, 1: 2, 2: 1, 3: 3}[int(found["zm"])]  # PostGIS's zmflag to ours
        multi = geometry.kind.startswith("Multi")
        using = sql.SQL("ST_Multi({})").format(geom) if multi else geom
        self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}").format(
            self.table, geom, geometry.column_type, using))

    def _points_bbox(self, geometry: GeometryPlan) -> list[float] | None:
        """The extent seen while streaming, when it is exact: 2D points not reprojected since."""
        if geometry.only_points and geometry.points_bbox is not None and geometry.srid == self._source_srid:
            return [round(v, 9) for v in geometry.points_bbox]
        return None

    def _extent(self) -> list[float] | None:
        row = self.conn.execute(sql.SQL(
            "SELECT ST_XMin(e) AS x0, ST_YMin(e) AS y0, ST_XMax(e) AS x1, ST_YMax(e) AS y1 "
            "FROM (SELECT ST_Extent({}) AS e FROM {}) s").format(
            sql.Identifier(col.GEOMETRY_COLUMN), self.table)).fetchone()
        values = list(row.values()) if isinstance(row, dict) else list(row or [])
        if not values or values[0] is None or any(math.isnan(v) for v in values):
            return None
        return [round(float(v), 9) for v in values]

    def _validity(self, geometry: GeometryPlan) -> dict[str, Any]:
        family = kind_code(geometry.kind)
        family = family - 3 if family > 3 else family
        if family == 1 and geometry.kinds_seen <= {1, 4}:
            return {"count": 0, "repaired": False, "rows": []}  # points are always valid
        geom = sql.Identifier(col.GEOMETRY_COLUMN)
        rows = self.conn.execute(sql.SQL(
            "SELECT {} AS fid FROM {} WHERE {} IS NOT NULL AND NOT ST_IsValid({}) ORDER BY 1").format(
            sql.Identifier(col.FID_COLUMN), self.table, geom, geom)).fetchall()
        fids = [r["fid"] if isinstance(r, dict) else r[0] for r in rows]
        result: dict[str, Any] = {"count": len(fids), "repaired": False, "rows": fids[:MAX_REPORTED_ROWS]}
        if not fids:
            return result
        if not self.repair:
            self.warnings.append(f"{len(fids):,} geometries are invalid and were kept as they are (rows "
                                 f"{', '.join(map(str, fids[:MAX_REPORTED_ROWS]))})")
            return result
        fixed: sql.Composable = sql.SQL("ST_MakeValid({})").format(geom)
        if geometry.kind != "Geometry":
            fixed = sql.SQL("ST_CollectionExtract({}, {})").format(fixed, sql.Literal(family))
            if geometry.kind == col.KIND_NAMES[family]:  # a repair can split one part into several
                geometry.kind = col.KIND_NAMES[family + 3]
                self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING ST_Multi({})").format(
                    self.table, geom, geometry.column_type, geom))
            fixed = sql.SQL("ST_Multi({})").format(fixed)
        self.conn.execute(sql.SQL("UPDATE {} SET {} = {} WHERE {} = ANY(%s)").format(
            self.table, geom, fixed, sql.Identifier(col.FID_COLUMN)), [fids])
        result["repaired"] = True
        self.warnings.append(f"{len(fids):,} invalid geometries were repaired with ST_MakeValid (rows "
                             f"{', '.join(map(str, fids[:MAX_REPORTED_ROWS]))})")
        return result

    def _preview(self, has_geometry: bool) -> dict[str, Any]:
        geometry = (sql.SQL("ST_AsGeoJSON({})::jsonb").format(sql.Identifier(col.GEOMETRY_COLUMN))
                    if has_geometry else sql.SQL("NULL::jsonb"))
        rows = self.conn.execute(sql.SQL(
            "SELECT {} AS geometry, to_jsonb(t) - {} AS properties FROM {} t ORDER BY {} LIMIT 10").format(
            geometry, sql.Literal(col.GEOMETRY_COLUMN), self.table, sql.Identifier(col.FID_COLUMN))).fetchall()
        features = [{"type": "Feature", "id": r["properties"].get(col.FID_COLUMN), "geometry": r["geometry"],
                     "properties": r["properties"]} for r in rows]
        return {"type": "FeatureCollection", "features": features}


_CONCRETE = {"Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon"}


def _point_coordinates(column: pa.Array, kinds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the 2D point values of a WKB column, gathered straight from its bytes."""
    column = col.plain_binary(column)
    offsets, raw = col.wkb_offsets(column)
    starts = offsets[:-1][(kinds == 1) & (offsets[1:] - offsets[:-1] >= 21)]
    little = raw[starts] == 1
    x_bytes = raw[(starts[:, None] + np.arange(5, 13)).ravel()].reshape(-1, 8)
    y_bytes = raw[(starts[:, None] + np.arange(13, 21)).ravel()].reshape(-1, 8)
    x_bytes[~little] = x_bytes[~little, ::-1]
    y_bytes[~little] = y_bytes[~little, ::-1]
    return x_bytes.copy().view("<f8").ravel(), y_bytes.copy().view("<f8").ravel()


def _spill(batch: pa.RecordBatch, indices: range, originals: list[str]) -> pa.Array:
    """The columns beyond what a table holds, as one JSON object per row."""
    names = [originals[i] for i in indices]
    columns = [batch.column(i).to_pylist() for i in indices]
    rows = []
    for values in zip(*columns, strict=True):
        rows.append(json.dumps({n: v for n, v in zip(names, values, strict=True) if v is not None}, default=str))
    return pa.array(rows, pa.string())
