"""What a download reads: the source's rows as typed columns plus one geometry, filtered and
ordered, split into layers (one per category, or the table).  Writers only compose SELECT lists
over it; filter values always travel as query parameters."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg import sql

from locaria_batch.db import scalar
from locaria_batch.job import JobError
from locaria_batch.jobs.file_download.request import DownloadRequest
from locaria_batch.jobs.names import unique_name

UPLOADS_SCHEMA = "locaria_uploads"
LOADER_KEY = "ogc_fid"  # the loader's serial key: an artifact of loading, not data

# Column kinds: integer, number, boolean, text, json, date, datetime (no zone), timestamp (with zone)
SPECIFIC_TYPES = {"POINT", "LINESTRING", "POLYGON", "MULTIPOINT", "MULTILINESTRING", "MULTIPOLYGON"}
# what a curved type becomes through ST_CurveToLine, and a surface of faces through loader_linear_geometry
LINEARISED = {"CIRCULARSTRING": "LINESTRING", "COMPOUNDCURVE": "LINESTRING", "CURVEPOLYGON": "POLYGON",
              "MULTICURVE": "MULTILINESTRING", "MULTISURFACE": "MULTIPOLYGON"}
FACETED = {"TRIANGLE": "POLYGON", "TIN": "MULTIPOLYGON", "POLYHEDRALSURFACE": "MULTIPOLYGON"}
PG_KINDS = {
    "int2": "integer", "int4": "integer", "int8": "integer",
    "float4": "number", "float8": "number", "numeric": "number",
    "bool": "boolean", "date": "date", "timestamp": "datetime", "timestamptz": "timestamp",
    "json": "json", "jsonb": "json",
}


@dataclass(frozen=True)
class Column:
    name: str  # as it appears in the output
    expression: sql.Composable  # the value, typed as its kind says
    kind: str
    text: sql.Composable  # the value as text, for attribute filters


@dataclass(frozen=True)
class Layer:
    name: str
    condition: sql.Composable  # restricts the selection to this layer
    params: dict[str, Any]
    count: int  # rows this layer holds (after the limit)
    geometry_types: tuple[str, ...]  # the types present, without dimensions: ('POINT', 'MULTIPOINT')
    null_geometries: bool = False  # some rows have no geometry
    has_z: bool = False  # some geometries have Z values
    has_m: bool = False  # some geometries have M values
    mixed_dims: bool = False  # geometries of different dimensions (2D and Z, say) in one layer


@dataclass
class Selection:
    columns: list[Column]
    stored_geometry: sql.Composable | None  # the geometry column as stored
    stored_srid: int | None  # None: the rows carry SRIDs of their own, each is transformed from its own
    srid: int  # the output's
    relation: sql.Composable  # FROM ... (aliases the rows)
    where: list[sql.Composable]
    params: dict[str, Any]
    order: sql.Composable | None  # None: the source has no key to order by (a view without one)
    row_key: sql.Composable | None  # identifies a row of the relation (its ctid); None for a view, which has none
    limit: int | None
    declared_type: str | None = None  # the geometry column's type when declared specific, e.g. POINT
    declared_dims: tuple[bool, bool] | None = None  # (Z, M) when the column's type says
    layers: list[Layer] = field(default_factory=list)
    force: str | None = None  # a PostGIS function dropping the dimensions a format lacks, e.g. ST_Force3DZ
    flatten: tuple[str, ...] = ()  # the shape types turned into lines or polygons for a format lacking them
    empty_as_null: bool = False  # for a format that cannot hold an empty geometry (POINT EMPTY)
    notes: list[str] = field(default_factory=list)  # what the export changed, for the file's log

    @property
    def geometry(self) -> sql.Composable | None:
        """The geometry in the output srid, with the dimensions the format keeps."""
        if self.stored_geometry is None:
            return None
        value = self.stored_geometry
        if self.stored_srid != self.srid:  # ST_Transform starts from each row's own SRID
            value = sql.SQL("ST_Transform({}, {})").format(value, sql.Literal(self.srid))
        if self.force is not None:
            value = sql.SQL(self.force + "({})").format(value)
        if self.flatten:
            value = flattened(value, self.flatten)
        if self.empty_as_null:
            value = sql.SQL("CASE WHEN ST_IsEmpty({v}) THEN NULL ELSE {v} END").format(v=value)
        return value

    @property
    def mixed_dims(self) -> bool:
        return any(layer.mixed_dims for layer in self.layers) or len({(lr.has_z, lr.has_m) for lr in self.layers}) > 1

    @property
    def has_z(self) -> bool:
        return self.force not in ("ST_Force2D", "ST_Force3DM") and any(layer.has_z for layer in self.layers)

    @property
    def has_m(self) -> bool:
        return self.force not in ("ST_Force2D", "ST_Force3DZ") and any(layer.has_m for layer in self.layers)

    def keep_dimensions(self, format_name: str, z: bool, m: bool) -> None:
        """Drop the Z or M values a format cannot hold, and say so in the notes."""
        dropped = [d for d, present, kept in (("Z", self.has_z, z), ("M", self.has_m, m)) if present and not kept]
        if not dropped:
            return
        keep_z = z and self.has_z
        self.force = "ST_Force3DZ" if keep_z else "ST_Force2D"
        self.notes.append(f"{' and '.join(dropped)} values were dropped: {format_name} cannot hold them "
                          "(GeoPackage, FlatGeobuf and Shapefile keep Z and M; CSV and XLSX keep them in the WKT)")

    def keep_shape_types(self, conn: psycopg.Connection[Any], format_name: str, *, curves: bool,
                         surfaces: bool) -> None:
        """Turn the curves (CIRCULARSTRING ...) and surfaces of faces (TIN ...) a format cannot hold into
        lines and multipolygons, and say in the notes how many rows changed."""
        lacking = {**({} if curves else LINEARISED), **({} if surfaces else FACETED)}
        present = [t for t in self.geometry_types if t in lacking]
        if not present or self.stored_geometry is None:
            return
        query, params = self.query(sql.SQL("count(*)"), condition=sql.SQL("{} = ANY ({})").format(
            shape_type(self.stored_geometry), sql.Literal(present)), ordered=False)
        count = int(scalar(conn, query, params))
        self.flatten = tuple(present)
        self.layers = [replace(layer, geometry_types=tuple(sorted({lacking.get(t, t) for t in layer.geometry_types})))
                       for layer in self.layers]
        were = "geometry was" if count == 1 else "geometries were"
        self.notes.append(f"{count:,} {', '.join(present)} {were} written as "
                          f"{' and '.join(sorted({lacking[t] for t in present}))}: {format_name} cannot hold "
                          f"{', '.join(present)} (GeoPackage and FlatGeobuf can)")

    def output_names(self, format_name: str, names: Sequence[str] | None = None, *,
                     reserved: Iterable[str] = (), fold_case: bool = False, what: str = "column") -> list[str]:
        """The columns' names (or `names`) made distinct for a format: none of `reserved` (the format's own
        fields, such as its geometry) and, with fold_case, none differing from another only in case.
        Each change is noted for the job's log."""
        given = [c.name for c in self.columns] if names is None else list(names)
        result = distinct_names(given, reserved, fold_case)
        for old, new in zip(given, result, strict=True):
            if old != new:
                taken = "another's, ignoring case," if fold_case else "another's"
                self.notes.append(f"{what} {old!r} is named {new!r} in the {format_name} file: its name is {taken} "
                                  f"or one {format_name} uses itself ({', '.join(reserved) or 'none'})")
        return result

    @property
    def null_geometries(self) -> bool:
        return any(layer.null_geometries for layer in self.layers)

    @property
    def total(self) -> int:
        return sum(layer.count for layer in self.layers)

    @property
    def geometry_types(self) -> tuple[str, ...]:
        return tuple(sorted({t for layer in self.layers for t in layer.geometry_types}))

    def query(self, select: sql.Composable, layer: Layer | None = None, *, condition: sql.Composable | None = None,
              ordered: bool = True, limited: bool = True) -> tuple[sql.Composed, dict[str, Any]]:
        """SELECT {select} over the selection (one layer of it, when given), with its parameters."""
        where = list(self.where)
        params = dict(self.params)
        limit = self.limit if limited else None
        if layer is not None:
            where.append(layer.condition)
            params.update(layer.params)
            limit = layer.count if limit is not None else None
        relation = self.relation
        if condition is not None:
            where.append(condition)
            if limit is not None and self.row_key is not None:  # the condition picks among the limited rows
                first, params = self.query(self.row_key, layer)
                where.append(sql.SQL("{} IN ({})").format(self.row_key, first))
                limit = None
            elif limit is not None:  # a view (no row key): the limited rows first, under the table's alias t
                first, params = self.query(sql.SQL("t.*"), layer)
                relation, where, limit = sql.SQL("({}) t").format(first), [condition], None
        parts = [sql.SQL("SELECT {} FROM {} WHERE {}").format(
            select, relation, sql.SQL(" AND ").join(where or [sql.SQL("true")]))]
        if ordered and self.order is not None:
            parts.append(sql.SQL("ORDER BY {}").format(self.order))
        if limit is not None:
            parts.append(sql.SQL("LIMIT {}").format(sql.Literal(limit)))
        return sql.SQL(" ").join(parts), params

    def output_layers(self, empty_name: str) -> list[Layer]:
        """The layers to write; an empty selection still gets one (empty) layer."""
        return self.layers or [Layer(empty_name, sql.SQL("false"), {}, 0, ())]


def build_selection(conn: psycopg.Connection[Any], request: DownloadRequest, schemas: tuple[str, ...],
                    max_rows: int) -> Selection:
    check_srid(conn, request.srid)
    if request.table:
        selection, group = table_selection(conn, request, schemas)
    else:
        selection, group = category_selection(conn, request)
    apply_filters(selection, request)
    selection.layers = count_layers(conn, selection, group, request)
    total = selection.total
    if total > max_rows:
        raise JobError(f"the selection holds more than {max_rows:,} rows, the most one download may hold; "
                       "narrow it with filters or set a limit")
    return selection


def check_srid(conn: psycopg.Connection[Any], srid: int) -> None:
    if conn.execute("SELECT 1 FROM spatial_ref_sys WHERE srid = %s", [srid]).fetchone() is None:
        raise JobError(f"srid {srid} is not a coordinate system PostGIS knows; use an EPSG code such as 4326")


# -- categories of search data -----------------------------------------------------------------
ITEMS = sql.SQL("locaria_data.items i JOIN locaria_core.categories c ON c.id = i.category_id")
ITEM_COLUMNS = [
    ("id", "i.id", "integer"),
    ("title", "i.title", "text"),
    ("category", "c.category", "text"),
    ("created", "i.created", "timestamp"),
]
LEAF_KINDS = {"integer": "integer", "number": "number", "boolean": "boolean", "string": "text", "array": "json"}


def category_selection(conn: psycopg.Connection[Any], request: DownloadRequest) -> tuple[Selection, sql.Composable]:
    categories = list(request.categories or ())
    where: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if categories:
        known = {r["category"] for r in conn.execute(
            "SELECT category FROM locaria_core.categories WHERE category = ANY (%s)", [categories]).fetchall()}
        missing = [c for c in categories if c not in known]
        if missing:
            raise JobError(f"category {missing[0]!r} does not exist; check the name (names are case-sensitive)")
        where.append(sql.SQL("c.category = ANY (%(categories)s)"))
        params["categories"] = categories
    columns = [Column(name, sql.SQL(expr), kind, sql.SQL("{}::text").format(sql.SQL(expr)))
               for name, expr, kind in ITEM_COLUMNS]
    taken = {c.name.lower() for c in columns}
    leaves = conn.execute(
        sql.SQL("SELECT l.path, array_agg(DISTINCT l.kind) AS kinds FROM {} "
                "CROSS JOIN LATERAL locaria_core.jsonb_leaves(i.attributes) l WHERE {} "
                "GROUP BY l.path ORDER BY l.path").format(ITEMS, sql.SQL(" AND ").join(where or [sql.SQL("true")])),
        params,
    ).fetchall()
    for leaf in leaves:
        path = sql.Literal(leaf["path"])
        name = unique_name(".".join(leaf["path"]), taken, fold_case=True)
        text = sql.SQL("(i.attributes #>> {}::text[])").format(path)
        columns.append(Column(name, leaf_expression(path, leaf["kinds"]), leaf_kind(leaf["kinds"]), text))
    selection = Selection(
        columns=columns, stored_geometry=sql.SQL("i.wkb_geometry"), stored_srid=4326, srid=request.srid,
        relation=ITEMS, where=where, params=params, order=sql.SQL("c.category, i.id"),
        row_key=sql.SQL("i.ctid"), limit=None, declared_dims=(False, False))  # items are 2D by their type
    return selection, sql.SQL("c.category")


def leaf_kind(kinds: list[str]) -> str:
    present = set(kinds) - {"null"}
    if present <= {"integer"} and present:
        return "integer"
    if present <= {"integer", "number"} and present:
        return "number"
    if present == {"boolean"}:
        return "boolean"
    if present == {"array"}:
        return "json"
    return "text"


def leaf_expression(path: sql.Composable, kinds: list[str]) -> sql.Composable:
    kind = leaf_kind(kinds)
    if kind == "json":
        return sql.SQL("(i.attributes #> {}::text[])").format(path)
    cast = {"integer": "::numeric::bigint", "number": "::float8", "boolean": "::boolean", "text": ""}[kind]
    return sql.SQL("(i.attributes #>> {}::text[])" + cast).format(path)


# -- a table -------------------------------------------------------------------------------------
TABLE_RELATION = """
SELECT c.oid, c.relkind, has_table_privilege(c.oid, 'SELECT') AS readable, current_user AS role
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
"""
TABLE_COLUMNS = """
SELECT a.attname AS name, t.typname AS type, a.atttypmod AS typmod,
       COALESCE((SELECT true FROM pg_index x WHERE x.indrelid = a.attrelid AND x.indisprimary
                  AND a.attnum = ANY (x.indkey)), false) AS is_key
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""
VIEW = "v"  # a view has no ctid to order or pick rows by


def parse_table(name: str, schemas: tuple[str, ...]) -> tuple[str, str]:
    schema, dot, table = name.strip().partition(".")
    if not dot:
        schema, table = UPLOADS_SCHEMA, schema
    allowed = (UPLOADS_SCHEMA, *schemas)
    if schema not in allowed:
        raise JobError(f"tables in schema {schema!r} may not be downloaded; allowed schemas: {', '.join(allowed)}")
    return schema, table


def table_selection(conn: psycopg.Connection[Any], request: DownloadRequest,
                    schemas: tuple[str, ...]) -> tuple[Selection, sql.Composable]:
    schema, table = parse_table(str(request.table), schemas)
    found = conn.execute(TABLE_RELATION, [schema, table]).fetchone()
    if found is None:
        raise JobError(f"table {schema}.{table} does not exist; check the name of the loaded table")
    qualified = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table)).as_string(conn)
    if not found["readable"]:
        raise JobError(f"the download job's database role {found['role']} cannot read table {schema}.{table}; "
                       f"let it, as the table's owner: GRANT SELECT ON {qualified} TO {found['role']}")
    rows = conn.execute(TABLE_COLUMNS, [found["oid"]]).fetchall()
    if not rows:
        raise JobError(f"table {schema}.{table} has no columns, so there is nothing to download")
    geometry_row = next((r for r in rows if r["type"] == "geometry"), None)
    columns: list[Column] = []
    keys: list[sql.Composable] = []
    for row in rows:
        ident = sql.SQL("t.{}").format(sql.Identifier(row["name"]))
        if row["is_key"]:
            keys.append(ident)
        if row is geometry_row or (schema == UPLOADS_SCHEMA and row["name"] == LOADER_KEY):
            continue
        if row["type"] in ("geometry", "geography"):
            expression = sql.SQL("ST_AsText({})").format(ident)
            kind = "text"
        else:
            kind = PG_KINDS.get(row["type"], "text")
            expression = ident if kind != "text" else sql.SQL("{}::text").format(ident)
        columns.append(Column(row["name"], expression, kind, sql.SQL("{}::text").format(ident)))
    geometry, declared_type, declared_dims = None, None, None
    source_srid: int | None = request.srid
    if geometry_row is not None:
        geometry = sql.SQL("t.{}").format(sql.Identifier(geometry_row["name"]))
        declared = conn.execute("SELECT postgis_typmod_srid(%s) AS srid, upper(postgis_typmod_type(%s)) AS type",
                                [geometry_row["typmod"]] * 2).fetchone()
        assert declared is not None  # a SELECT without FROM returns its one row
        source_srid = declared["srid"]
        bare = str(declared["type"])
        suffix = "ZM" if bare.endswith("ZM") else "Z" if bare.endswith("Z") else "M" if bare.endswith("M") else ""
        bare = bare.removesuffix(suffix)
        if bare in SPECIFIC_TYPES:
            declared_type = bare
        if geometry_row["typmod"] is not None and geometry_row["typmod"] >= 0:
            declared_dims = ("Z" in suffix, "M" in suffix)
        if not source_srid:
            source_srid = _rows_srid(conn, schema, table, str(geometry_row["name"]), request.srid)
    relation = sql.SQL("{} t").format(sql.SQL(qualified))
    row_key = None if found["relkind"] == VIEW else sql.SQL("t.ctid")
    order = sql.SQL(", ").join(keys) if keys else row_key
    selection = Selection(columns=columns, stored_geometry=geometry, stored_srid=source_srid, srid=request.srid,
                          relation=relation, where=[], params={"table_name": table}, order=order,
                          row_key=row_key, limit=None, declared_type=declared_type, declared_dims=declared_dims)
    return selection, sql.SQL("%(table_name)s")


def _rows_srid(conn: psycopg.Connection[Any], schema: str, table: str, column: str, default: int) -> int | None:
    """A geometry column declared without an SRID: the one SRID its rows carry, None when they carry
    several (each row is then transformed from its own), `default` when no row has a geometry.
    Rows without one (SRID 0) cannot be placed on the map: the download is refused."""
    names = {"g": sql.Identifier(column), "r": sql.Identifier(schema, table)}
    row = conn.execute(sql.SQL("SELECT min(ST_SRID({g})) AS low, max(ST_SRID({g})) AS high FROM {r}").format(
        **names)).fetchone()
    if row is None or row["low"] is None:
        return default
    if row["low"] == 0:
        fix = sql.SQL("UPDATE {r} SET {g} = ST_SetSRID({g}, 27700) WHERE ST_SRID({g}) = 0").format(**names)
        raise JobError(
            f"table {schema}.{table} has geometries in column {column} without a coordinate system (SRID 0), so "
            f"they cannot be placed; set it, e.g. SELECT UpdateGeometrySRID('{schema}', '{table}', '{column}', "
            f"27700) when every row is in EPSG:27700, or {fix.as_string(conn)}")
    return int(row["low"]) if row["low"] == row["high"] else None


def distinct_names(names: Sequence[str], reserved: Iterable[str] = (), fold_case: bool = False) -> list[str]:
    """`names` with each clash resolved by unique_name: a name kept by an earlier one (or differing from
    it only in case, with fold_case) or among `reserved` gets a suffix that no other name has."""
    key = str.lower if fold_case else str
    blocked = {key(name) for name in reserved}
    taken = blocked | {key(name) for name in names}  # a suffixed name never takes another column's
    seen: set[str] = set()
    result = []
    for name in names:
        if key(name) in blocked or key(name) in seen:
            result.append(unique_name(name, taken, fold_case=fold_case))
        else:
            seen.add(key(name))
            result.append(name)
    return result


def flattened(geometry: sql.Composable, types: tuple[str, ...]) -> sql.Composable:
    """The geometry, when its type is one of `types`, as the loader stores such shapes: curves as lines,
    surfaces of faces (TIN, TRIANGLE, POLYHEDRALSURFACE) as polygons (loader_linear_geometry)."""
    return sql.SQL("CASE WHEN {} = ANY ({}) THEN locaria_core.loader_linear_geometry({}) ELSE {} END").format(
        shape_type(geometry), sql.Literal(list(types)), geometry, geometry)


def shape_type(geometry: sql.Composable) -> sql.Composable:
    """A geometry's type in capitals without its dimensions: POINT for POINT, POINT Z and POINT M."""
    return sql.SQL("upper(substr(ST_GeometryType({}), 4))").format(geometry)


# -- filters ---------------------------------------------------------------------------------------
def apply_filters(selection: Selection, request: DownloadRequest) -> None:
    filters = request.filters
    by_name = {c.name: c for c in selection.columns}
    if filters.bbox is not None:
        if selection.stored_geometry is None:
            raise JobError("a bbox filter needs a geometry column, and this table has none")
        envelope: sql.Composable = sql.SQL("ST_MakeEnvelope(%(bbox_0)s, %(bbox_1)s, %(bbox_2)s, %(bbox_3)s, 4326)")
        if selection.stored_srid is None:  # rows of several SRIDs: the box in each row's own
            envelope = sql.SQL("ST_Transform({}, ST_SRID({}))").format(envelope, selection.stored_geometry)
        elif selection.stored_srid != 4326:
            envelope = sql.SQL("ST_Transform({}, {})").format(envelope, sql.Literal(selection.stored_srid))
        selection.where.append(sql.SQL("ST_Intersects({}, {})").format(selection.stored_geometry, envelope))
        selection.params.update({f"bbox_{n}": v for n, v in enumerate(filters.bbox)})
    for n, (name, values) in enumerate(filters.attributes.items()):
        column = by_name.get(name)
        if column is None:
            known = ", ".join(sorted(by_name)[:30])
            raise JobError(f"cannot filter on {name!r}: the selection has no such column (columns: {known})")
        texts = [v if isinstance(v, str) else json.dumps(v) for v in values if v is not None]
        clauses = [sql.SQL("{} = ANY ({})").format(column.text, sql.Placeholder(f"attribute_{n}"))]
        if None in values:
            clauses.append(sql.SQL("{} IS NULL").format(column.text))
        selection.where.append(sql.SQL("({})").format(sql.SQL(" OR ").join(clauses)))
        selection.params[f"attribute_{n}"] = texts
    for key, operator in (("created_after", ">="), ("created_before", "<")):
        stamp = getattr(filters, key)
        if stamp is None:
            continue
        column = by_name.get("created")
        if column is None or column.kind not in ("timestamp", "datetime", "date"):
            raise JobError(f"{key} needs a 'created' date or timestamp column, and this selection has none")
        selection.where.append(sql.SQL("{} " + operator + " %({})s").format(column.expression, sql.SQL(key)))
        selection.params[key] = stamp if column.kind == "timestamp" else stamp.replace(tzinfo=None)
    selection.limit = filters.limit


def count_layers(conn: psycopg.Connection[Any], selection: Selection, group: sql.Composable,
                 request: DownloadRequest) -> list[Layer]:
    """Rows and geometry types per layer; a limit is shared out in layer order, as the rows come."""
    geometry = selection.stored_geometry if selection.stored_geometry is not None else sql.SQL("NULL::geometry")
    types = sql.SQL("array_remove(array_agg(DISTINCT {}), NULL)").format(shape_type(geometry))
    if selection.declared_type is not None:  # no need to look at every row (a sort of them all)
        types = sql.SQL("ARRAY[{}]::text[]").format(sql.Literal(selection.declared_type))
    dims: sql.Composable = sql.SQL(
        "bool_or(ST_Zmflag({g}) >= 2) AS has_z, bool_or(ST_Zmflag({g}) IN (1, 3)) AS has_m, "
        "COALESCE(min(ST_Zmflag({g})) <> max(ST_Zmflag({g})), false) AS mixed_dims").format(g=geometry)
    if selection.declared_dims is not None:  # the column's type says: no need to look at every row
        dims = sql.SQL("{} AS has_z, {} AS has_m, false AS mixed_dims").format(
            *map(sql.Literal, selection.declared_dims))
    query, params = selection.query(
        sql.SQL("{} AS layer, count(*) AS n, {} AS types, bool_or({} IS NULL) AS nulls, {}").format(
            group, types, geometry, dims),
        ordered=False, limited=False)
    rows = conn.execute(sql.SQL("{} GROUP BY 1 ORDER BY 1").format(query), params).fetchall()
    budget = selection.limit
    layers = []
    for row in rows:
        count = int(row["n"]) if budget is None else min(int(row["n"]), budget)
        if budget is not None:
            budget -= count
        if count == 0:
            continue
        present = {"has_z": bool(row["has_z"]), "has_m": bool(row["has_m"]), "mixed_dims": bool(row["mixed_dims"])}
        if request.table:
            layers.append(Layer(str(row["layer"]), sql.SQL("true"), {}, count, tuple(row["types"]), row["nulls"],
                                **present))
        else:
            layers.append(Layer(str(row["layer"]), sql.SQL("c.category = %(layer)s"), {"layer": row["layer"]},
                                count, tuple(row["types"]), row["nulls"], **present))
    return layers
