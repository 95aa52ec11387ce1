-- file_import writes the search data (locaria_data.items) only through these two functions, fenced by
-- the attempt (job id + attempt token + state running) like the other job_* functions, and only from
-- tables the job's own file loaded (locaria_core.upload_tables).  The job itself then needs no write
-- privilege on items: SELECT on locaria_core.categories and on the file's tables (granted when they
-- are published) and EXECUTE on these two, which run as their owner and qualify every name.

-- The file a running attempt works on, or LB001 (the attempt is stale: write nothing).
CREATE OR REPLACE FUNCTION locaria_core.job_live_file(p_job BIGINT, p_token UUID) RETURNS BIGINT
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_file BIGINT;
BEGIN
    SELECT j.file_id INTO v_file FROM locaria_core.jobs j
     WHERE j.id = p_job AND j.attempt_token = p_token AND j.state = 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % is no longer running this attempt; nothing was written', p_job USING ERRCODE = 'LB001';
    END IF;
    RETURN v_file;
END;
$$;

-- A table in locaria_uploads the file loaded (else LB002 naming its owner).
CREATE OR REPLACE FUNCTION locaria_core.upload_table_of_file(p_file BIGINT, p_table TEXT) RETURNS VOID
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_owner BIGINT;
BEGIN
    SELECT u.file_id INTO v_owner FROM locaria_core.upload_tables u WHERE u.table_name = p_table;
    IF v_owner IS NULL THEN
        RAISE EXCEPTION 'locaria_uploads.% was not loaded by %; load the file first, then import it',
                        p_table, locaria_core.upload_file_label(p_file) USING ERRCODE = 'LB002';
    END IF;
    IF v_owner <> p_file THEN
        RAISE EXCEPTION 'locaria_uploads.% belongs to %, not to %; import that file instead', p_table,
                        locaria_core.upload_file_label(v_owner), locaria_core.upload_file_label(p_file)
                        USING ERRCODE = 'LB002';
    END IF;
END;
$$;

-- Upsert the rows p_low < ogc_fid <= p_high of p_table into p_category.  p_mapping names the columns
-- giving each item its title, text, url and tags ({"title": "name", "text": null, ...}).
-- Returns the rows written.
CREATE OR REPLACE FUNCTION locaria_core.job_import_items(p_job BIGINT, p_token UUID, p_table TEXT, p_category BIGINT,
                                                        p_mapping JSONB, p_low BIGINT, p_high BIGINT)
RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = locaria_core, public, pg_temp AS $$
DECLARE
    v_file BIGINT := locaria_core.job_live_file(p_job, p_token);
    v_postgis TEXT := (SELECT n.nspname FROM pg_catalog.pg_extension e
                         JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis');
    v_geometry TEXT;
    v_count BIGINT;
BEGIN
    PERFORM locaria_core.upload_table_of_file(v_file, p_table);
    v_geometry := CASE WHEN EXISTS (
                      SELECT 1 FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid = pg_catalog.format('locaria_uploads.%I', p_table)::regclass
                         AND a.attname = 'wkb_geometry' AND NOT a.attisdropped)
                  THEN pg_catalog.format('%1$I.st_force2d(%1$I.st_transform(t.wkb_geometry, 4326))', v_postgis)
                  ELSE 'NULL' END;
    EXECUTE pg_catalog.format($sql$
        INSERT INTO locaria_data.items AS i
               (category_id, title, attributes, wkb_geometry, source_file_id, source_table, source_fid)
        SELECT $1, %1$s,
               pg_catalog.jsonb_build_object(
                   'description', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                       'title', %1$s, 'text', %2$s, 'url', %3$s)),
                   'tags', %4$s,
                   'data', pg_catalog.to_jsonb(t) - 'wkb_geometry' - 'ogc_fid',
                   'source', pg_catalog.jsonb_build_object('file_id', $2, 'table', $3::text, 'fid', t.ogc_fid)),
               %5$s, $2, $3, t.ogc_fid
          FROM locaria_uploads.%6$I t
         WHERE t.ogc_fid > $4 AND t.ogc_fid <= $5
        ON CONFLICT (source_file_id, source_table, source_fid) DO UPDATE
           SET category_id = EXCLUDED.category_id, title = EXCLUDED.title, attributes = EXCLUDED.attributes,
               wkb_geometry = EXCLUDED.wkb_geometry
        $sql$,
        locaria_core.import_text(p_mapping->>'title'), locaria_core.import_text(p_mapping->>'text'),
        locaria_core.import_text(p_mapping->>'url'), locaria_core.import_tags(p_mapping->>'tags'),
        v_geometry, p_table)
    USING p_category, v_file, p_table, p_low, p_high;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

-- Drop the file's items whose table is no longer among p_tables, or whose row has gone from p_table.
CREATE OR REPLACE FUNCTION locaria_core.job_import_prune(p_job BIGINT, p_token UUID, p_tables TEXT[], p_table TEXT)
RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = locaria_core, public, pg_temp AS $$
DECLARE
    v_file BIGINT := locaria_core.job_live_file(p_job, p_token);
    v_count BIGINT;
BEGIN
    PERFORM locaria_core.upload_table_of_file(v_file, p_table);
    EXECUTE pg_catalog.format($sql$
        DELETE FROM locaria_data.items i
         WHERE i.source_file_id = $1
           AND (NOT (i.source_table = ANY ($2))
                OR (i.source_table = $3 AND NOT EXISTS (SELECT 1 FROM locaria_uploads.%I t
                                                         WHERE t.ogc_fid = i.source_fid)))
        $sql$, p_table)
    USING v_file, p_tables, p_table;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

-- The SQL of a mapped column's value as text, and of its tags (a JSON array).
CREATE OR REPLACE FUNCTION locaria_core.import_text(p_column TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_column IS NULL THEN 'NULL::text' ELSE pg_catalog.format('t.%I::text', p_column) END
$$;

CREATE OR REPLACE FUNCTION locaria_core.import_tags(p_column TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_column IS NULL THEN '''[]''::jsonb' ELSE pg_catalog.format(
        'CASE WHEN t.%1$I IS NULL THEN ''[]''::jsonb WHEN pg_catalog.jsonb_typeof(pg_catalog.to_jsonb(t.%1$I)) = '
        '''array'' THEN pg_catalog.to_jsonb(t.%1$I) ELSE pg_catalog.jsonb_build_array(t.%1$I) END', p_column) END
$$;

REVOKE ALL ON FUNCTION locaria_core.job_live_file(BIGINT, UUID) FROM PUBLIC;
REVOKE ALL ON FUNCTION locaria_core.upload_table_of_file(BIGINT, TEXT) FROM PUBLIC;
