-- file_loader: geometry given as text in a data file (WKT, EWKT, hex WKB or GeoJSON).
-- A value that is not a geometry becomes NULL instead of failing the whole load; the loader
-- counts and reports those rows.  A value carrying its own SRID is reprojected to p_srid.
CREATE OR REPLACE FUNCTION locaria_core.loader_parse_geometry(p_text TEXT, p_srid INTEGER) RETURNS geometry
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    g geometry;
BEGIN
    IF p_text IS NULL OR btrim(p_text) = '' THEN
        RETURN NULL;
    END IF;
    g := p_text::geometry;
    IF ST_SRID(g) = 0 THEN
        RETURN ST_SetSRID(g, p_srid);
    END IF;
    RETURN ST_Transform(g, p_srid);
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END;
$$;
