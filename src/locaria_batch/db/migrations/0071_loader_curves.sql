-- file_loader: curved and surface geometries (GeoPackages and Esri/Ordnance Survey exports have them)
-- are stored as their straight-segment types: CircularString and CompoundCurve as LineString,
-- CurvePolygon as Polygon, MultiCurve as MultiLineString, MultiSurface, PolyhedralSurface and TIN as
-- MultiPolygon, Triangle as Polygon.  Z and M are kept.

CREATE OR REPLACE FUNCTION locaria_core.loader_is_curved(p_geom geometry) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ST_GeometryType(p_geom) IN ('ST_CircularString', 'ST_CompoundCurve', 'ST_CurvePolygon', 'ST_MultiCurve',
                                       'ST_MultiSurface', 'ST_PolyhedralSurface', 'ST_Tin', 'ST_Triangle')
           OR (ST_GeometryType(p_geom) = 'ST_GeometryCollection' AND ST_HasArc(p_geom))
$$;

CREATE OR REPLACE FUNCTION locaria_core.loader_linear_geometry(p_geom geometry) RETURNS geometry
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN ST_GeometryType(p_geom) = 'ST_Triangle' THEN ST_MakePolygon(ST_ExteriorRing(p_geom))
        WHEN ST_GeometryType(p_geom) IN ('ST_PolyhedralSurface', 'ST_Tin') THEN (
            SELECT ST_Multi(ST_Collect(CASE WHEN ST_GeometryType(d.geom) = 'ST_Triangle'
                                            THEN ST_MakePolygon(ST_ExteriorRing(d.geom)) ELSE d.geom END
                                       ORDER BY d.path))
              FROM ST_Dump(p_geom) d)
        ELSE ST_CurveToLine(p_geom)
    END
$$;
