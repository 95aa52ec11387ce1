"""Source batches as the table's columns, ready for binary COPY: attributes coerced to their
column's type, geometry as WKB of the column's type (points built from coordinate columns, single
parts promoted to multi), and the values and rows that could not be converted, for the warnings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat
from psycopg import sql

from locaria_batch.job import JobError
from locaria_batch.jobs.file_loader import columns as col
from locaria_batch.jobs.file_loader.copyin import BadRow, Copied, Prepared
from locaria_batch.jobs.file_loader.limits import MAX_REPORTED_ROWS, counted
from locaria_batch.jobs.file_loader.pgbinary import encode
from locaria_batch.jobs.file_loader.plan import GeometryPlan, TablePlan, infer_from_values, kind_code
from locaria_batch.jobs.file_loader.readers import RawLayer
from locaria_batch.settings import LoaderLimits


@dataclass
class SetAside:
    """What converting could not keep as it came."""

    bad_values: list[BadRow] = field(default_factory=list)  # text values that are not of their column's type
    out_of_range: list[int] = field(default_factory=list)  # the first rows with lon/lat out of range
    out_of_range_count: int = 0
    not_finite: list[int] = field(default_factory=list)  # the first rows with a NaN or infinite coordinate
    not_finite_count: int = 0


class BatchConverter:
    """Converts a layer's batches for its planned table; widens the geometry plan as batches need."""

    def __init__(self, raw: RawLayer, plan: TablePlan, table: sql.Identifier, limits: LoaderLimits) -> None:
        self.raw = raw
        self.plan = plan
        self.table = table
        self.limits = limits
        self.set_aside = SetAside()
        self._field_names = [f.name for f in raw.fields]

    @staticmethod
    def encode(batch: pa.RecordBatch, column_types: list[str]) -> bytes:
        """A converted batch as a binary COPY stream."""
        return encode(batch.columns, column_types)

    def prepare(self, batches: Iterator[pa.RecordBatch]) -> Iterator[Prepared]:
        """Each source batch as the table's columns."""
        plan, originals = self.plan, self.plan.originals
        done = 0
        for batch in batches:
            if done + batch.num_rows > self.limits.max_features:
                raise JobError(f"{self.raw.label} has more than {self.limits.max_features:,} features, the "
                               "limit; split the file")
            fids = pa.array(np.arange(done + 1, done + 1 + batch.num_rows, dtype=np.int32))
            arrays: list[pa.Array] = [fids]
            before: list[sql.Composed] = []
            for i in range(plan.plain):
                arrays.append(self._attribute(batch.column(i), i, fids, before))
            if plan.plain < len(originals):
                arrays.append(_spill(batch, range(plan.plain, len(originals)), originals))
            if plan.geometry is not None:
                arrays.append(self._geometry(batch, plan.geometry, done + 1, before))
            out = pa.RecordBatch.from_arrays(arrays, names=plan.columns)
            yield Prepared(out, list(plan.column_types), done + 1, before)
            done += batch.num_rows

    def warnings(self, copied: Copied) -> list[str]:
        """Rows and values set aside while converting, those the COPY rejected and those it repaired."""
        warnings = _bad_row_warnings(self.set_aside.bad_values + copied.rejected,
                                     dict(zip(self.plan.names, self.plan.originals, strict=True)))
        if copied.rings_closed:
            rows = ", ".join(map(str, copied.rings_closed[:MAX_REPORTED_ROWS]))
            warnings.append(f"{counted(len(copied.rings_closed), 'polygon had', 'polygons had')} a ring that did not "
                            f"end where it started; closed, as GDAL does (rows {rows})")
        raw, set_aside = self.raw, self.set_aside
        if skipped := raw.skipped_warning():
            warnings.append(skipped)
        geometry = self.plan.geometry
        if geometry is not None and geometry.crs_unseen and geometry.xy is not None:
            warnings.append(f"the coordinate columns {geometry.xy.x}/{geometry.xy.y} hold no numbers; the rows have no "
                            "geometry")
        if set_aside.out_of_range_count:
            rows = ", ".join(map(str, set_aside.out_of_range[:MAX_REPORTED_ROWS]))
            warnings.append(f"{counted(set_aside.out_of_range_count, 'row has', 'rows have')} coordinates out of "
                            f"range for longitude/latitude; geometry left empty (rows {rows})")
        if set_aside.not_finite_count:
            rows = ", ".join(map(str, set_aside.not_finite[:MAX_REPORTED_ROWS]))
            warnings.append(f"{counted(set_aside.not_finite_count, 'row has', 'rows have')} a coordinate that is not "
                            f"a finite number (such as inf, NaN or text); geometry left empty (rows {rows})")
        return warnings

    def _attribute(self, column: pa.Array, index: int, fids: pa.Array, before: list[sql.Composed]) -> pa.Array:
        """A source column as the Arrow type binary COPY encodes for its PostgreSQL type; a statement
        widening the column, when its type (from the first rows of text) does not hold these values,
        goes into `before`."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        kind_in, kind, name = column.type, self.plan.types[index], self.plan.names[index]
        if self.raw.types is not None and kind in col.NUMBER_TYPES and col.code_like_numbers(column):
            kind = self._widen(index, "text", before)
        if self.raw.types is not None or (pat.is_string(kind_in) and kind != "text"):  # text, typed here
            typed, bad = col.coerce_text(column, kind, self.raw.decimal_comma)
            if bad and self.raw.types is not None and kind in col.INTEGER_TYPES and (
                    wider := col.wider_number_type(column.take(bad), self.raw.decimal_comma)):
                kind = self._widen(index, wider, before)
                typed, bad = col.coerce_text(column, kind, self.raw.decimal_comma)
            bad_values = self.set_aside.bad_values
            if len(bad_values) + len(bad) > self.limits.max_bad_rows:
                raise JobError(f"{self.raw.label}: more than {self.limits.max_bad_rows:,} values are not of their "
                               f"column's type (column {name!r}); "
                               "fix the file and upload it again")
            for index in bad:
                bad_values.append(BadRow(int(fids[index].as_py()), name,
                                         f"{str(column[index].as_py())[:40]!r} is not a {kind}; loaded as empty"))
            return typed
        if pat.is_uint64(kind_in) and kind == "bigint" and (pc.max(column).as_py() or 0) > col.INT64_MAX:
            kind = self._widen(index, "text", before)  # identifiers beyond bigint, kept exact
        if kind == "text" and (pat.is_integer(kind_in) or pat.is_floating(kind_in)):
            return pc.cast(column, pa.string())
        if isinstance(kind_in, pa.BaseExtensionType):
            return json_values(column.storage) if kind == "jsonb" else column.storage
        if pat.is_dictionary(kind_in):
            return column.dictionary_decode()
        if pat.is_binary(kind_in) or pat.is_large_binary(kind_in):
            return col.wkb_to_hex(column)
        if pat.is_nested(kind_in):
            return pa.array([None if v is None else json.dumps(v, default=str) for v in column.to_pylist()],
                            pa.string())
        return column

    def _widen(self, index: int, kind: str, before: list[sql.Composed]) -> str:
        """Field `index`'s column becomes `kind` from this batch on, the rows before it converted."""
        column = sql.Identifier(self.plan.names[index])
        before.append(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}").format(
            self.table, column, sql.SQL(kind), column, sql.SQL(kind)))
        return self.plan.widen(index, kind)

    def _settle_crs(self, plan: GeometryPlan, x: np.ndarray, y: np.ndarray, before: list[sql.Composed]) -> None:
        """The first coordinates after rows without any tell the CRS; the column (empty so far) takes it."""
        assert plan.xy is not None
        srid = infer_from_values(self.raw.label, x, y, plan.xy)
        plan.crs_unseen = False
        if srid != plan.srid:
            plan.srid = srid
            before.append(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING ST_SetSRID({}, {})").format(
                self.table, sql.Identifier(col.GEOMETRY_COLUMN), plan.column_type,
                sql.Identifier(col.GEOMETRY_COLUMN), sql.Literal(srid)))

    def _geometry(self, batch: pa.RecordBatch, plan: GeometryPlan, first_row: int,
                  before: list[sql.Composed]) -> pa.Array:
        """The batch's geometry for the column; a statement widening the column goes into `before`."""
        names = self._field_names
        if plan.source == "xy":
            assert plan.xy is not None
            x_text, y_text = batch.column(names.index(plan.xy.x)), batch.column(names.index(plan.xy.y))
            x = col.coordinate_array(x_text, self.raw.decimal_comma)
            y = col.coordinate_array(y_text, self.raw.decimal_comma)
            # a coordinate that is there but no finite number (inf, NaN, text): reported, not guessed at
            infinite = ~(np.isfinite(x) & np.isfinite(y)) & (col.has_value(x_text) | col.has_value(y_text))
            if infinite.any():
                rows = np.nonzero(infinite)[0] + first_row
                self.set_aside.not_finite_count += int(infinite.sum())
                self.set_aside.not_finite.extend(rows[: MAX_REPORTED_ROWS].tolist())
                x = np.where(infinite, np.nan, x)
            if plan.crs_unseen and (np.isfinite(x) & np.isfinite(y)).any():
                self._settle_crs(plan, x, y, before)
            if plan.srid == 4326:
                bad = (np.abs(x) > 180) | (np.abs(y) > 90)
                if bad.any():
                    rows = np.nonzero(bad)[0] + first_row
                    self.set_aside.out_of_range_count += int(bad.sum())
                    self.set_aside.out_of_range.extend(rows[: MAX_REPORTED_ROWS].tolist())
                    x = np.where(bad, np.nan, x)
            plan.extend(x, y)
            return col.point_wkb(x, y)
        if plan.source == "text":
            return pc.cast(batch.column(names.index(plan.column)), pa.string())
        wkb = col.plain_binary(batch.column(batch.num_columns - 1))
        kinds, dims = col.wkb_kinds(wkb)
        if plan.only_points:
            if np.all((kinds == 1) & (dims == 0) | (kinds == 0)):
                plan.extend(*col.point_coordinates(wkb, kinds))
            else:
                plan.only_points = False
        seen = set(np.unique(kinds[kinds > 0]).tolist())
        if not plan.unsettled and (max(seen, default=0) > 7 or np.any(dims[kinds > 0] != plan.dimension)):
            # curves, or a dimension the column lacks: a plain geometry column until the finisher settles it
            plan.unsettled = True
            before.append(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE geometry").format(
                self.table, sql.Identifier(col.GEOMETRY_COLUMN)))
        if plan.unsettled or plan.kind == "Geometry" or not seen:
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


def _bad_row_warnings(bad: list[BadRow], originals: dict[str, str]) -> list[str]:
    warnings = []
    for problem in bad[:MAX_REPORTED_ROWS]:
        where = f", column {originals.get(problem.column, problem.column)!r}" if problem.column else ""
        warnings.append(f"row {problem.row}{where}: {problem.problem}")
    if len(bad) > MAX_REPORTED_ROWS:
        warnings.append(f"... and {len(bad) - MAX_REPORTED_ROWS} more rows with values that could not be loaded")
    return warnings


def _spill(batch: pa.RecordBatch, indices: range, originals: list[str]) -> pa.Array:
    """The columns beyond what a table holds, as one JSON object per row."""
    names = [originals[i] for i in indices]
    columns = [batch.column(i).to_pylist() for i in indices]
    rows = []
    for values in zip(*columns, strict=True):
        rows.append(json.dumps({n: v for n, v in zip(names, values, strict=True) if v is not None}, default=str))
    return pa.array(rows, pa.string())


# what a JSON field's text is when it is JSON already: an array, object or string, a number, a literal
JSON_TEXT = r'^\s*([\[{"]|-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\s*$|(true|false|null)\s*$)'


def json_values(texts: pa.Array) -> pa.Array:
    """A JSON field's values as valid JSON.  GDAL gives a field that mixes numbers and strings the JSON
    subtype, yet its strings stay bare text (`text` beside `1` and `1.5`): such text becomes a JSON string,
    instead of being refused value by value by jsonb."""
    looks_json = pc.match_substring_regex(texts, JSON_TEXT)
    if pc.all(pc.fill_null(looks_json, True)).as_py():
        return texts
    return pa.array([v if v is None or ok else json.dumps(v, ensure_ascii=False)
                     for v, ok in zip(texts.to_pylist(), looks_json.to_pylist(), strict=True)], pa.string())

