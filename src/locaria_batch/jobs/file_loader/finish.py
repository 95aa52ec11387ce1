"""A loaded staging table made final: text geometry parsed, coordinates checked and reprojected,
invalid geometries repaired (or reported), keys and indexes built, and the layer's result
described (extent, geometry type, a preview)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from locaria_batch.job import JobError
from locaria_batch.jobs.file_loader import columns as col
from locaria_batch.jobs.file_loader.limits import MAX_REPORTED_ROWS, counted
from locaria_batch.jobs.file_loader.plan import GeometryPlan, TablePlan, kind_code, kind_for

SURFACES = {"Tin", "PolyhedralSurface", "Triangle"}


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
    source_crs_assumed: bool = False
    linearised: dict[str, int] = field(default_factory=dict)  # curved types straightened: count of each
    encoding: str | None = None
    encoding_guessed: bool = False
    notes: list[str] = field(default_factory=list)  # assumptions made, for the file's log


class TableFinisher:
    """Finishes one staging table; the warnings it adds follow those it is given."""

    def __init__(self, conn: psycopg.Connection[Any], table: sql.Identifier, staging: str, label: str, *,
                 target_srid: int, repair: bool) -> None:
        self.conn = conn
        self.table = table
        self.staging = staging  # the table's name, which its index names start with
        self.label = label
        self.target_srid = target_srid
        self.repair = repair
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.linearised: dict[str, int] = {}
        self.surfaces: list[int] = []  # rows whose surfaces (TIN, PolyhedralSurface) became polygons

    def finish(self, layer: str, plan: TablePlan, count: int, warnings: list[str]) -> LayerResult:
        conn, table, geometry = self.conn, self.table, plan.geometry
        geom = sql.Identifier(col.GEOMETRY_COLUMN)
        invalid: dict[str, Any] = {"count": 0, "repaired": False, "rows": []}
        bbox = None
        source_srid = geometry.srid if geometry is not None else None
        source_crs = geometry.crs_name if geometry is not None else None
        if geometry is not None and geometry.source == "text":
            self._parse_text_geometry(geometry)
        if geometry is not None and geometry.unsettled:
            self._settle(geometry)
        if geometry is not None:
            if geometry.srid == 4326:
                bbox = _points_bbox(geometry, source_srid) or self._extent()
                if bbox and (bbox[0] < -180.5 or bbox[2] > 180.5 or bbox[1] < -90.5 or bbox[3] > 90.5):
                    extent = ", ".join(f"{v:.6g}" for v in bbox)
                    if geometry.crs_assumed:
                        raise JobError(
                            f"{self.label} does not say which coordinate system it uses, and its extent ({extent}) "
                            "is not longitude/latitude; give its coordinate system with --crs (the source_crs "
                            "attribute, for example EPSG:27700) and load it again")
                    raise JobError(
                        f"{self.label}: coordinates run to {bbox[2]:.6g}, {bbox[3]:.6g}, out of range for "
                        f"longitude/latitude (extent {extent}); if the file uses a projected coordinate system "
                        "give it with --crs (the source_crs attribute, for example EPSG:27700) and load it again")
            if geometry.crs_assumed and not geometry.crs_unseen:
                self.notes.append(f"{self.label} does not say which coordinate system it uses; its coordinates fit "
                                  f"{'longitude/latitude' if geometry.srid == 4326 else f'EPSG:{geometry.srid}'}, "
                                  f"so EPSG:{geometry.srid} was assumed (load it again with --crs if that is wrong)")
            if geometry.srid != self.target_srid:
                self._transform(geometry)
                bbox = None
            invalid = self._validity(geometry)
            conn.execute(sql.SQL("CREATE INDEX {} ON {} USING gist ({})").format(
                sql.Identifier(f"{self.staging}_geom_idx"), table, geom))
            bbox = bbox or _points_bbox(geometry, source_srid) or self._extent()
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
            table, sql.Identifier(f"{self.staging}_pkey"), sql.Identifier(col.FID_COLUMN)))
        conn.execute(sql.SQL("ANALYZE {}").format(table))
        kind = None
        if geometry is not None:
            kind = geometry.kind + col.DIMENSION_SUFFIX[geometry.dimension]
        return LayerResult(
            layer=layer, table=self.staging, record_count=count, columns=plan.described(), geometry_type=kind,
            source_crs=source_crs, srid=(
                geometry.srid if geometry else None), bbox=bbox, invalid_geometries=invalid,
            warnings=[*warnings, *self.warnings], preview=self._preview(geometry is not None),
            source_crs_assumed=bool(geometry and geometry.crs_assumed), linearised=self.linearised,
            notes=self.notes)

    def _transform(self, geometry: GeometryPlan) -> None:
        """To the target SRID, from the source's EPSG code or, for a CRS without one, its own definition."""
        source = geometry.crs_name
        geom = sql.Identifier(col.GEOMETRY_COLUMN)
        transformed = sql.SQL("ST_Transform({}, {})").format(geom, sql.Literal(self.target_srid)) \
            if geometry.definition is None else \
            sql.SQL("ST_Transform({}, {}::text, {})").format(geom, sql.Literal(geometry.definition),
                                                             sql.Literal(self.target_srid))
        geometry.srid, geometry.definition = self.target_srid, None
        try:
            with self.conn.transaction():
                self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}").format(
                    self.table, geom, geometry.column_type, transformed))
        except psycopg.errors.DatabaseError as exc:
            if isinstance(exc, psycopg.OperationalError):
                raise
            raise JobError(f"{self.label}: the coordinates cannot be transformed from {source[:120]} to "
                           f"EPSG:{self.target_srid} ({exc.diag.message_primary}); check the file's coordinate "
                           "system, or give the right one with --crs (the source_crs attribute, for example "
                           "EPSG:27700) and load it again") from exc

    def _parse_text_geometry(self, geometry: GeometryPlan) -> None:
        """The text column becomes a plain geometry column, settled to one type next."""
        geom = sql.Identifier(col.GEOMETRY_COLUMN)
        parse = sql.SQL("locaria_core.loader_parse_geometry({}, {})").format(geom, sql.Literal(geometry.srid))
        unreadable = [r["fid"] for r in self.conn.execute(sql.SQL(
            "SELECT {} AS fid FROM {} WHERE upper(btrim(coalesce({}, ''))) <> ALL(%s) AND {} IS NULL ORDER BY 1"
        ).format(sql.Identifier(col.FID_COLUMN), self.table, geom, parse), [list(col.NO_GEOMETRY_TEXT)]).fetchall()]
        if unreadable:
            self.warnings.append(f"{counted(len(unreadable), 'row holds', 'rows hold')} text in the geometry column "
                                 f"{geometry.column!r} that is not WKT, WKB or GeoJSON; geometry left empty (rows "
                                 f"{', '.join(map(str, unreadable[:MAX_REPORTED_ROWS]))})")
        self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE geometry USING {}").format(
            self.table, geom, parse))
        geometry.unsettled = True

    def _settle(self, geometry: GeometryPlan) -> None:
        """A plain geometry column gets one type: curves straightened, every value brought to the
        dimensions any value has (Z, M), single parts made multi where multi parts are present."""
        geom = sql.Identifier(col.GEOMETRY_COLUMN)
        curved = sql.SQL("locaria_core.loader_is_curved({})").format(geom)
        counts = self.conn.execute(sql.SQL(
            "SELECT substr(ST_GeometryType({g}), 4) AS kind, count(*) AS n FROM {t} WHERE {c} GROUP BY 1 ORDER BY 1"
        ).format(g=geom, t=self.table, c=curved)).fetchall()
        if counts:
            self.linearised = {r["kind"]: int(r["n"]) for r in counts}
            if SURFACES & self.linearised.keys():  # faces of a 3D surface are no 2D multipolygon to repair
                self.surfaces = [r["fid"] for r in self.conn.execute(sql.SQL(
                    "SELECT {f} AS fid FROM {t} WHERE substr(ST_GeometryType({g}), 4) = ANY(%s)").format(
                    f=sql.Identifier(col.FID_COLUMN), t=self.table, g=geom), [sorted(SURFACES)]).fetchall()]
            self.conn.execute(sql.SQL("UPDATE {t} SET {g} = locaria_core.loader_linear_geometry({g}) WHERE {c}").format(
                g=geom, t=self.table, c=curved))
            described = ", ".join(f"{n:,} {kind}" for kind, n in self.linearised.items())
            self.notes.append(f"{self.label}: curved geometries were converted to straight segments, and surfaces "
                              f"to polygons, one a face ({described})")
        found = self.conn.execute(sql.SQL(
            "SELECT array_agg(DISTINCT ST_GeometryType({g})) FILTER (WHERE {g} IS NOT NULL) AS kinds, "
            "array_agg(DISTINCT ST_Zmflag({g})) FILTER (WHERE {g} IS NOT NULL) AS zm FROM {t}").format(
            g=geom, t=self.table)).fetchone()
        assert found is not None  # an aggregate without GROUP BY returns one row
        codes = {kind_code(k.removeprefix("ST_")) or 7 for k in (found["kinds"] or [])}
        flags = set(found["zm"] or [])  # PostGIS's zmflag: 0 2D, 1 M, 2 Z, 3 ZM
        has_z, has_m = bool(flags & {2, 3}), bool(flags & {1, 3})
        geometry.kinds_seen = codes
        geometry.kind = kind_for(codes, "")
        geometry.dimension = int(has_z) + 2 * int(has_m)
        geometry.unsettled = False
        value: sql.Composable = geom
        if len(flags) > 1:
            force = {0: "ST_Force2D", 1: "ST_Force3DZ", 2: "ST_Force3DM", 3: "ST_Force4D"}[geometry.dimension]
            value = sql.SQL(force + "({})").format(value)
            added = " and ".join(d for d, present in (("Z", has_z), ("M", has_m)) if present)
            self.warnings.append(f"some geometries have {added} values and others not; those without were given "
                                 f"{added} = 0")
        if geometry.kind.startswith("Multi"):
            value = sql.SQL("ST_Multi({})").format(value)
        self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING ST_SetSRID({}, {})").format(
            self.table, geom, geometry.column_type, value, sql.Literal(geometry.srid)))

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
        fid = sql.Identifier(col.FID_COLUMN)
        rows = self.conn.execute(sql.SQL(
            "SELECT {} AS fid FROM {} WHERE {} IS NOT NULL AND NOT ST_IsValid({}) AND {} <> ALL(%s) ORDER BY 1").format(
            fid, self.table, geom, geom, fid), [self.surfaces]).fetchall()
        fids = [r["fid"] if isinstance(r, dict) else r[0] for r in rows]
        result: dict[str, Any] = {"count": len(fids), "repaired": False, "rows": fids[:MAX_REPORTED_ROWS]}
        if not fids:
            return result
        if not self.repair:
            self.warnings.append(f"{counted(len(fids), 'geometry is', 'geometries are')} invalid; kept unchanged (rows "
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
        self.warnings.append(f"{counted(len(fids), 'invalid geometry was', 'invalid geometries were')} repaired with "
                             "ST_MakeValid (rows "
                             f"{', '.join(map(str, fids[:MAX_REPORTED_ROWS]))})")
        return result

    def _preview(self, has_geometry: bool) -> dict[str, Any]:
        geometry = (sql.SQL("ST_AsGeoJSON({})::jsonb").format(sql.Identifier(col.GEOMETRY_COLUMN))
                    if has_geometry else sql.SQL("NULL::jsonb"))
        rows = self.conn.execute(sql.SQL(
            "SELECT {} AS geometry, to_jsonb(t.*) - {} AS properties FROM {} t ORDER BY {} LIMIT 10").format(
            geometry, sql.Literal(col.GEOMETRY_COLUMN), self.table, sql.Identifier(col.FID_COLUMN))).fetchall()
        features = [{"type": "Feature", "id": r["properties"].get(col.FID_COLUMN), "geometry": r["geometry"],
                     "properties": r["properties"]} for r in rows]
        return {"type": "FeatureCollection", "features": features}


def _points_bbox(geometry: GeometryPlan, source_srid: int | None) -> list[float] | None:
    """The extent seen while streaming, when it is exact: 2D points not reprojected since."""
    if geometry.only_points and geometry.points_bbox is not None and geometry.srid == source_srid:
        return [round(v, 9) for v in geometry.points_bbox]
    return None
