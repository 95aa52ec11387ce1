"""A loaded staging table made final: text geometry parsed, coordinates checked and reprojected,
invalid geometries repaired (or reported), keys and indexes built, and the layer's result
described (extent, geometry type, a preview)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from locaria_batch.job import JobError
from locaria_batch.jobs.file_loader import columns as col
from locaria_batch.jobs.file_loader.limits import MAX_REPORTED_ROWS
from locaria_batch.jobs.file_loader.plan import GeometryPlan, TablePlan, kind_code, kind_for


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

    def finish(self, layer: str, plan: TablePlan, count: int, warnings: list[str]) -> LayerResult:
        conn, table, geometry = self.conn, self.table, plan.geometry
        geom = sql.Identifier(col.GEOMETRY_COLUMN)
        invalid: dict[str, Any] = {"count": 0, "repaired": False, "rows": []}
        bbox = None
        source_srid = geometry.srid if geometry is not None else None
        if geometry is not None and geometry.source == "text":
            self._parse_text_geometry(geometry)
        if geometry is not None:
            if geometry.srid == 4326:
                bbox = _points_bbox(geometry, source_srid) or self._extent()
                if bbox and (bbox[0] < -180.5 or bbox[2] > 180.5 or bbox[1] < -90.5 or bbox[3] > 90.5):
                    raise JobError(
                        f"{self.label}: coordinates run to {bbox[2]:.6g}, {bbox[3]:.6g}, out of range for "
                        "longitude/latitude; if the file uses a projected coordinate system set its source_crs "
                        "attribute (for example EPSG:27700) and load it again")
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
            source_crs=f"EPSG:{source_srid}" if source_srid else None, srid=(
                geometry.srid if geometry else None), bbox=bbox, invalid_geometries=invalid,
            warnings=[*warnings, *self.warnings], preview=self._preview(geometry is not None))

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
            raise JobError(f"{self.label}: the coordinates cannot be transformed from EPSG:{source} to "
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
            self.warnings.append(f"{len(unreadable):,} rows hold text in the geometry column {geometry.column!r} "
                                 "that is not WKT, WKB or GeoJSON; their geometry is left empty (rows "
                                 f"{', '.join(map(str, unreadable[:MAX_REPORTED_ROWS]))})")
        self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE geometry USING {}").format(
            self.table, geom, parse))
        found = self.conn.execute(sql.SQL(
            "SELECT array_agg(DISTINCT ST_GeometryType({g})) FILTER (WHERE {g} IS NOT NULL) AS kinds, "
            "coalesce(max(ST_Zmflag({g})), 0) AS zm "
            "FROM {t}").format(g=geom, t=self.table)).fetchone()
        assert found is not None  # an aggregate without GROUP BY returns one row
        codes = {kind_code(k.removeprefix("ST_")) or 7 for k in (found["kinds"] or [])}
        geometry.kinds_seen = codes
        geometry.kind = kind_for(codes, "")
        geometry.dimension = {0: 0, 1: 2, 2: 1, 3: 3}[int(found["zm"])]  # PostGIS's zmflag to ours
        multi = geometry.kind.startswith("Multi")
        using = sql.SQL("ST_Multi({})").format(geom) if multi else geom
        self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}").format(
            self.table, geom, geometry.column_type, using))

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


def _points_bbox(geometry: GeometryPlan, source_srid: int | None) -> list[float] | None:
    """The extent seen while streaming, when it is exact: 2D points not reprojected since."""
    if geometry.only_points and geometry.points_bbox is not None and geometry.srid == source_srid:
        return [round(v, 9) for v in geometry.points_bbox]
    return None
