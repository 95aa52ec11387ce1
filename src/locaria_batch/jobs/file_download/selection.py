"""What a download reads: the source's rows as typed columns plus one geometry, filtered and
ordered, split into layers (one per category, or the table).  Writers only compose SELECT lists
over it; filter values always travel as query parameters."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from locaria_batch.job import JobError
from locaria_batch.jobs.file_download.request import DownloadRequest
from locaria_batch.jobs.names import unique_name

UPLOADS_SCHEMA = "locaria_uploads"
LOADER_KEY = "ogc_fid"  # the loader's serial key: an artifact of loading, not data

# Column kinds: integer, number, boolean, text, json, date, datetime (no zone), timestamp (with zone)
SPECIFIC_TYPES = {"POINT", "LINESTRING", "POLYGON", "MULTIPOINT", "MULTILINESTRING", "MULTIPOLYGON"}
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


@dataclass
class Selection:
    columns: list[Column]
    stored_geometry: sql.Composable | None  # the geometry column as stored
    stored_srid: int
    srid: int  # the output's
    relation: sql.Composable  # FROM ... (aliases the rows)
    where: list[sql.Composable]
    params: dict[str, Any]
    order: sql.Composable
    row_key: sql.Composable  # identifies a row of the relation (its ctid)
    limit: int | None
    declared_type: str | None = None  # the geometry column's type when declared specific, e.g. POINT
    declared_dims: tuple[bool, bool] | None = None  # (Z, M) when the column's type says
    layers: list[Layer] = field(default_factory=list)
    force: str | None = None  # a PostGIS function dropping the dimensions a format lacks, e.g. ST_Force3DZ
    notes: list[str] = field(default_factory=list)  # what the export changed, for the file's log

    @property
    def geometry(self) -> sql.Composable | None:
        """The geometry in the output srid, with the dimensions the format keeps."""
        if self.stored_geometry is None:
            return None
        value = self.stored_geometry
        if self.stored_srid != self.srid:
            value = sql.SQL("ST_Transform({}, {})").format(value, sql.Literal(self.srid))
        if self.force is not None:
            value = sql.SQL(self.force + "({})").format(value)
        return value

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
        if condition is not None:
            where.append(condition)
            if limit is not None:  # the condition picks among the limited rows, not before limiting
                first, params = self.query(self.row_key, layer)
                where.append(sql.SQL("{} IN ({})").format(self.row_key, first))
                limit = None
        parts = [sql.SQL("SELECT {} FROM {} WHERE {}").format(
            select, self.relation, sql.SQL(" AND ").join(where or [sql.SQL("true")]))]
        if ordered:
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
TABLE_COLUMNS = """
SELECT a.attname AS name, t.typname AS type, a.atttypmod AS typmod,
       COALESCE((SELECT true FROM pg_index x WHERE x.indrelid = c.oid AND x.indisprimary
                  AND a.attnum = ANY (x.indkey)), false) AS is_key
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
 WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
 ORDER BY a.attnum
"""


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
    rows = conn.execute(TABLE_COLUMNS, [schema, table]).fetchall()
    if not rows:
        raise JobError(f"table {schema}.{table} does not exist; check the name of the loaded table")
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
    geometry, source_srid, declared_type, declared_dims = None, request.srid, None, None
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
        source_srid = source_srid or _data_srid(conn, geometry, schema, table) or request.srid
    relation = sql.SQL("{}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
    selection = Selection(columns=columns, stored_geometry=geometry, stored_srid=source_srid, srid=request.srid,
                          relation=relation, where=[],
                          params={"table_name": table}, order=sql.SQL(", ").join(keys or [sql.SQL("t.ctid")]),
                          row_key=sql.SQL("t.ctid"), limit=None, declared_type=declared_type,
                          declared_dims=declared_dims)
    return selection, sql.SQL("%(table_name)s")


def _data_srid(conn: psycopg.Connection[Any], ident: sql.Composable, schema: str, table: str) -> int:
    """A geometry column declared without an SRID: the SRID its rows carry (0 if none)."""
    row = conn.execute(sql.SQL("SELECT ST_SRID({}) AS srid FROM {}.{} t WHERE {} IS NOT NULL LIMIT 1").format(
        ident, sql.Identifier(schema), sql.Identifier(table), ident)).fetchone()
    return int(row["srid"]) if row else 0


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
        if selection.stored_srid != 4326:
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
    dims: sql.Composable = sql.SQL("bool_or(ST_Zmflag({g}) >= 2) AS has_z, bool_or(ST_Zmflag({g}) IN (1, 3)) AS has_m"
                                   ).format(g=geometry)
    if selection.declared_dims is not None:  # the column's type says: no need to look at every row
        dims = sql.SQL("{} AS has_z, {} AS has_m").format(*map(sql.Literal, selection.declared_dims))
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
        present = {"has_z": bool(row["has_z"]), "has_m": bool(row["has_m"])}
        if request.table:
            layers.append(Layer(str(row["layer"]), sql.SQL("true"), {}, count, tuple(row["types"]), row["nulls"],
                                **present))
        else:
            layers.append(Layer(str(row["layer"]), sql.SQL("c.category = %(layer)s"), {"layer": row["layer"]},
                                count, tuple(row["types"]), row["nulls"], **present))
    return layers
