-- Which file owns which table in locaria_uploads, and the one way a job publishes tables there.
--
-- A loader job creates and fills staging tables of its own in locaria_uploads (named
-- _lb_{job}_{attempt}_{n}: it needs CREATE on that schema and nothing else there), then calls
-- job_publish_tables in the same transaction.  The function is fenced by the attempt (job id +
-- attempt token + state running), checks every target against the registry and the mode, then
-- swaps, appends, records the owner and hands the table to the function's owner with SELECT for
-- the job and console roles.  So a job needs no ownership of, nor DDL rights on, published tables,
-- and one file cannot replace or drop another's table unless its user asked for it (--mode).
--
-- Privileges a loader job needs (locaria_core.grant_roles): USAGE on locaria_core and locaria_uploads,
-- CREATE on locaria_uploads, EXECUTE on job_publish_tables and locaria_core.loader_*, SELECT on
-- spatial_ref_sys; published tables get SELECT for the job, dispatcher and console roles from here.
-- job_publish_tables runs as its owner (SECURITY DEFINER, set by grant_roles); it qualifies every name,
-- so it does not depend on the search_path it is given.

CREATE TABLE IF NOT EXISTS locaria_core.upload_tables (
    table_name   TEXT PRIMARY KEY,                 -- a table in locaria_uploads
    file_id      BIGINT NOT NULL,                  -- the file whose load made it (or last replaced it)
    job_id       BIGINT,
    published_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS upload_tables_file_idx ON locaria_core.upload_tables (file_id);

-- Tables loaded before the registry existed belong to the last file that says it loaded them.
INSERT INTO locaria_core.upload_tables (table_name, file_id)
SELECT DISTINCT ON (t.name) t.name, f.id
  FROM locaria_core.files f
 CROSS JOIN LATERAL jsonb_array_elements_text(
           CASE WHEN jsonb_typeof(f.attributes->'tables') = 'array' THEN f.attributes->'tables' ELSE '[]' END) raw
 CROSS JOIN LATERAL (SELECT regexp_replace(raw, '^locaria_uploads\.', '') AS name) t
 WHERE f.status <> 'DELETED'
   AND to_regclass(format('locaria_uploads.%I', t.name)) IS NOT NULL
 ORDER BY t.name, f.last_update DESC, f.id DESC
ON CONFLICT (table_name) DO NOTHING;

-- The file a default table name is kept for: upload_file_12 and upload_file_12_roads are file 12's.
CREATE OR REPLACE FUNCTION locaria_core.upload_table_reserved_for(p_table TEXT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (pg_catalog.regexp_match(p_table, '^upload_file_([0-9]{1,18})(_|$)'))[1]::BIGINT
$$;

-- A user's file name for messages ("parks.csv (file 12)").
CREATE OR REPLACE FUNCTION locaria_core.upload_file_label(p_file BIGINT) RETURNS TEXT
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE((SELECT pg_catalog.format('%s (file %s)', f.attributes->>'name', f.id)
                       FROM locaria_core.files f WHERE f.id = p_file AND f.attributes ? 'name'),
                    pg_catalog.format('file %s', p_file))
$$;

-- p_tables: [{"target": "upload_file_12", "staging": "_lb_7_1_0", "label": "parks.zip/roads.shp"}, ...]
-- p_mode: NULL (the default: this file's own tables are replaced, any other existing table refused),
--         'fail' (refuse any existing table), 'overwrite' or 'append' (also tables other files loaded).
-- p_check_only: check the targets and the mode only (staging tables need not exist yet).
-- Returns {"tables": [...], "dropped": [...], "appended": [...]}.  Refusals raise SQLSTATE LB002 with
-- a sentence for the user; a stale attempt raises LB001 and changes nothing.
CREATE OR REPLACE FUNCTION locaria_core.job_publish_tables(p_job BIGINT, p_token UUID, p_tables JSONB, p_mode TEXT,
                                                          p_check_only BOOLEAN DEFAULT false)
RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER SET search_path = locaria_core, public, pg_temp AS $$
DECLARE
    v_file BIGINT;
    v_attempt INTEGER;
    v_mode TEXT := NULLIF(pg_catalog.lower(pg_catalog.btrim(COALESCE(p_mode, ''))), '');
    v_item JSONB;
    v_target TEXT;
    v_staging TEXT;
    v_label TEXT;
    v_owner BIGINT;
    v_exists BOOLEAN;
    v_reserved BIGINT;
    v_targets TEXT[] := '{}';
    v_published JSONB := '[]';
    v_appended JSONB := '[]';
    v_dropped JSONB := '[]';
    v_stale RECORD;
BEGIN
    SELECT j.file_id, j.attempt INTO v_file, v_attempt FROM locaria_core.jobs j
     WHERE j.id = p_job AND j.attempt_token = p_token AND j.state = 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % is no longer running this attempt; nothing was published', p_job
              USING ERRCODE = 'LB001';
    END IF;
    IF v_mode IS NOT NULL AND v_mode NOT IN ('fail', 'overwrite', 'append') THEN
        RAISE EXCEPTION 'mode % is not known: use fail, overwrite or append', pg_catalog.quote_literal(p_mode)
              USING ERRCODE = 'LB002';
    END IF;
    IF pg_catalog.jsonb_typeof(p_tables) IS DISTINCT FROM 'array' OR pg_catalog.jsonb_array_length(p_tables) = 0 THEN
        RAISE EXCEPTION 'no tables to publish' USING ERRCODE = 'LB002';
    END IF;

    -- every target first: a refusal leaves every table as it was
    FOR v_item IN SELECT value FROM pg_catalog.jsonb_array_elements(p_tables) LOOP
        v_target := v_item->>'target';
        v_label := COALESCE(v_item->>'label', locaria_core.upload_file_label(v_file));
        IF v_target IS NULL OR v_target !~ '^[a-z_][a-z0-9_]{0,62}$' OR v_target LIKE '\_lb\_%' THEN
            RAISE EXCEPTION '%: the table name % is not allowed: use lower-case letters, digits and underscores '
                            '(at most 63), not starting with _lb_', v_label,
                            pg_catalog.quote_literal(COALESCE(v_target, '')) USING ERRCODE = 'LB002';
        END IF;
        IF v_target = ANY (v_targets) THEN
            RAISE EXCEPTION '%: two layers would both go into locaria_uploads.%', v_label, v_target
                  USING ERRCODE = 'LB002';
        END IF;
        v_targets := v_targets || v_target;
        -- one publisher of a name at a time: the second sees the first's table and its owner
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('locaria_batch.upload_table'),
                                                 pg_catalog.hashtext(v_target));
        v_exists := pg_catalog.to_regclass(pg_catalog.format('locaria_uploads.%I', v_target)) IS NOT NULL;
        SELECT u.file_id INTO v_owner FROM locaria_core.upload_tables u WHERE u.table_name = v_target;
        IF NOT v_exists AND v_owner IS NOT NULL THEN  -- dropped by hand: the name is free again
            DELETE FROM locaria_core.upload_tables WHERE table_name = v_target;
            v_owner := NULL;
        END IF;
        IF v_exists AND v_owner IS NULL THEN
            RAISE EXCEPTION '%: locaria_uploads.% exists but was not loaded by Locaria, so it is never replaced '
                            'or appended to; choose another table name', v_label, v_target USING ERRCODE = 'LB002';
        END IF;
        v_reserved := locaria_core.upload_table_reserved_for(v_target);
        IF NOT v_exists AND v_reserved IS NOT NULL AND v_reserved <> v_file THEN
            RAISE EXCEPTION '%: the table name % is kept for the uploads of file %; choose another table name',
                            v_label, v_target, v_reserved USING ERRCODE = 'LB002';
        END IF;
        IF v_exists AND v_mode = 'fail' THEN
            RAISE EXCEPTION '%: locaria_uploads.% already exists (loaded by %); load with mode overwrite to '
                            'replace it or append to add rows to it', v_label, v_target,
                            locaria_core.upload_file_label(v_owner) USING ERRCODE = 'LB002';
        END IF;
        IF v_exists AND v_mode IS NULL AND v_owner <> v_file THEN
            RAISE EXCEPTION '%: locaria_uploads.% belongs to %; load with mode overwrite to replace it or '
                            'append to add rows to it, or choose another table name', v_label, v_target,
                            locaria_core.upload_file_label(v_owner) USING ERRCODE = 'LB002';
        END IF;
    END LOOP;
    IF p_check_only THEN
        RETURN pg_catalog.jsonb_build_object('tables', pg_catalog.to_jsonb(v_targets));
    END IF;

    FOR v_item IN SELECT value FROM pg_catalog.jsonb_array_elements(p_tables) LOOP
        v_target := v_item->>'target';
        v_staging := v_item->>'staging';
        v_label := COALESCE(v_item->>'label', locaria_core.upload_file_label(v_file));
        IF v_staging IS NULL OR v_staging NOT LIKE pg_catalog.format('\_lb\_%s\_%s\_%%', p_job, v_attempt)
           OR pg_catalog.to_regclass(pg_catalog.format('locaria_uploads.%I', v_staging)) IS NULL THEN
            RAISE EXCEPTION 'staging table % is not this attempt''s', pg_catalog.quote_literal(COALESCE(v_staging, ''))
                  USING ERRCODE = 'LB002';
        END IF;
        v_exists := pg_catalog.to_regclass(pg_catalog.format('locaria_uploads.%I', v_target)) IS NOT NULL;
        IF v_mode = 'append' AND v_exists THEN
            PERFORM locaria_core.upload_table_append(v_staging, v_target, v_label);
            v_appended := v_appended || pg_catalog.to_jsonb(v_target);
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE pg_catalog.format('DROP TABLE IF EXISTS locaria_uploads.%I', v_target);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE EXCEPTION '%: a view or another table depends on locaria_uploads.% (%); drop or change it, '
                            'then load the file again', v_label, v_target, SQLERRM USING ERRCODE = 'LB002';
        END;
        PERFORM locaria_core.upload_table_adopt(v_staging, v_target);
        INSERT INTO locaria_core.upload_tables (table_name, file_id, job_id) VALUES (v_target, v_file, p_job)
        ON CONFLICT (table_name) DO UPDATE
           SET file_id = EXCLUDED.file_id, job_id = EXCLUDED.job_id, published_at = clock_timestamp();
        v_published := v_published || pg_catalog.to_jsonb(v_target);
    END LOOP;

    -- a reload replaces the file's tables: those of its earlier load it no longer makes go
    IF v_mode IS DISTINCT FROM 'append' THEN
        FOR v_stale IN SELECT u.table_name FROM locaria_core.upload_tables u
                        WHERE u.file_id = v_file AND NOT (u.table_name = ANY (v_targets))
                        ORDER BY 1 FOR UPDATE LOOP
            BEGIN
                EXECUTE pg_catalog.format('DROP TABLE IF EXISTS locaria_uploads.%I', v_stale.table_name);
            EXCEPTION WHEN dependent_objects_still_exist THEN
                RAISE EXCEPTION '%: a view or another table depends on locaria_uploads.%, a table of the earlier '
                                'load (%); drop or change it, then load the file again',
                                locaria_core.upload_file_label(v_file), v_stale.table_name, SQLERRM
                                USING ERRCODE = 'LB002';
            END;
            DELETE FROM locaria_core.upload_tables WHERE table_name = v_stale.table_name;
            v_dropped := v_dropped || pg_catalog.to_jsonb(v_stale.table_name);
        END LOOP;
    END IF;
    RETURN pg_catalog.jsonb_build_object('tables', pg_catalog.to_jsonb(v_targets), 'published', v_published,
                                         'appended', v_appended, 'dropped', v_dropped);
END;
$$;

-- The staging table under its published name: indexes renamed after it, owned by this function's
-- owner (so the job that made it can no longer drop or change it), readable by jobs and the console.
CREATE OR REPLACE FUNCTION locaria_core.upload_table_adopt(p_staging TEXT, p_target TEXT) RETURNS VOID
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_index RECORD;
    v_suffix TEXT;
BEGIN
    EXECUTE pg_catalog.format('ALTER TABLE locaria_uploads.%I RENAME TO %I', p_staging, p_target);
    FOR v_index IN SELECT c.relname FROM pg_catalog.pg_index x
                     JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
                    WHERE x.indrelid = pg_catalog.format('locaria_uploads.%I', p_target)::regclass
                      AND c.relname LIKE p_staging || '%' LOOP
        v_suffix := pg_catalog.substr(v_index.relname, pg_catalog.length(p_staging) + 1);
        EXECUTE pg_catalog.format('ALTER INDEX locaria_uploads.%I RENAME TO %I', v_index.relname,
                                  pg_catalog.left(p_target, 63 - pg_catalog.length(v_suffix)) || v_suffix);
    END LOOP;
    EXECUTE pg_catalog.format('ALTER TABLE locaria_uploads.%I OWNER TO %I', p_target, current_user);
    EXECUTE pg_catalog.format('GRANT SELECT ON locaria_uploads.%I TO locaria_job, locaria_dispatcher, locaria_console',
                              p_target);
END;
$$;

-- Append a staging table's rows to a published table whose columns match (names and types; a
-- single-part geometry goes into a Multi* column of its kind).  ogc_fid continues the table's.
CREATE OR REPLACE FUNCTION locaria_core.upload_table_append(p_staging TEXT, p_target TEXT, p_label TEXT)
RETURNS BIGINT
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_postgis TEXT := (SELECT n.nspname FROM pg_catalog.pg_extension e
                         JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis');
    v_column RECORD;
    v_missing TEXT[] := '{}';
    v_extra TEXT[] := '{}';
    v_differ TEXT[] := '{}';
    v_names TEXT[] := '{}';
    v_values TEXT[] := '{}';
    v_problems TEXT[] := '{}';
    v_offset BIGINT;
    v_count BIGINT;
BEGIN
    FOR v_column IN
        -- types as users know them: geometry(Point,4326), not public.geometry(...) (search_path is pg_catalog)
        WITH s AS (SELECT a.attname AS name, pg_catalog.regexp_replace(
                              pg_catalog.format_type(a.atttypid, a.atttypmod), '^[a-z_][a-z0-9_]*\.', '') AS type
                     FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = pg_catalog.format('locaria_uploads.%I', p_staging)::regclass
                      AND a.attnum > 0 AND NOT a.attisdropped),
             t AS (SELECT a.attname AS name, pg_catalog.regexp_replace(
                              pg_catalog.format_type(a.atttypid, a.atttypmod), '^[a-z_][a-z0-9_]*\.', '') AS type,
                          a.attnum
                     FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = pg_catalog.format('locaria_uploads.%I', p_target)::regclass
                      AND a.attnum > 0 AND NOT a.attisdropped)
        SELECT COALESCE(t.name, s.name) AS name, s.type AS file_type, t.type AS table_type
          FROM s FULL JOIN t ON t.name = s.name
         WHERE COALESCE(t.name, s.name) <> 'ogc_fid'
         ORDER BY t.attnum NULLS LAST, s.name
    LOOP
        IF v_column.table_type IS NULL THEN
            v_extra := v_extra || v_column.name;
        ELSIF v_column.file_type IS NULL THEN
            v_missing := v_missing || v_column.name;
        ELSIF v_column.file_type = v_column.table_type
              OR v_column.table_type = pg_catalog.regexp_replace(v_column.file_type, '^geometry\(', 'geometry(Multi')
              OR (v_column.table_type ~ '^geometry\(Geometry' AND v_column.file_type ~ '^geometry\('
                  AND pg_catalog.regexp_replace(v_column.table_type, '^geometry\(Geometry', '')
                      = pg_catalog.regexp_replace(v_column.file_type, '^geometry\((Multi)?(Point|LineString|Polygon|GeometryCollection|Geometry)', '')) THEN
            v_names := v_names || pg_catalog.quote_ident(v_column.name);
            v_values := v_values || CASE
                WHEN v_column.file_type <> v_column.table_type AND v_column.table_type ~ '^geometry\(Multi'
                THEN pg_catalog.format('%I.st_multi(s.%I)', v_postgis, v_column.name)
                ELSE pg_catalog.format('s.%I', v_column.name) END;
        ELSE
            v_differ := v_differ || pg_catalog.format('%s is %s in the file, %s in the table', v_column.name,
                                                      v_column.file_type, v_column.table_type);
        END IF;
    END LOOP;
    IF pg_catalog.cardinality(v_extra) > 0 THEN
        v_problems := v_problems || ('the table has no column ' || pg_catalog.array_to_string(v_extra, ', '));
    END IF;
    IF pg_catalog.cardinality(v_missing) > 0 THEN
        v_problems := v_problems || ('the file has no column ' || pg_catalog.array_to_string(v_missing, ', '));
    END IF;
    IF pg_catalog.cardinality(v_differ) > 0 THEN
        v_problems := v_problems || pg_catalog.array_to_string(v_differ, '; ');
    END IF;
    IF pg_catalog.cardinality(v_problems) > 0 THEN
        RAISE EXCEPTION '%: the columns do not match locaria_uploads.%, so nothing was appended: %; load it into '
                        'another table, or with mode overwrite to replace the table', p_label, p_target,
                        pg_catalog.array_to_string(v_problems, '; ') USING ERRCODE = 'LB002';
    END IF;
    EXECUTE pg_catalog.format('SELECT COALESCE(max(ogc_fid), 0) FROM locaria_uploads.%I', p_target) INTO v_offset;
    EXECUTE pg_catalog.format('INSERT INTO locaria_uploads.%I (ogc_fid%s) SELECT s.ogc_fid + %s%s '
                              'FROM locaria_uploads.%I s ORDER BY s.ogc_fid',
                              p_target,
                              (SELECT pg_catalog.string_agg(', ' || n, '') FROM pg_catalog.unnest(v_names) n),
                              v_offset,
                              (SELECT pg_catalog.string_agg(', ' || v, '') FROM pg_catalog.unnest(v_values) v),
                              p_staging);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    EXECUTE pg_catalog.format('DROP TABLE locaria_uploads.%I', p_staging);
    EXECUTE pg_catalog.format('ANALYZE locaria_uploads.%I', p_target);
    RETURN v_count;
END;
$$;

-- Its helpers are not fenced themselves: only their owner (so job_publish_tables) may call them.
REVOKE ALL ON FUNCTION locaria_core.upload_table_adopt(TEXT, TEXT) FROM PUBLIC;
REVOKE ALL ON FUNCTION locaria_core.upload_table_append(TEXT, TEXT, TEXT) FROM PUBLIC;

-- Table owners' membership: handing a staging table (the job role's) over needs it, unless the
-- owner of these functions is a superuser.
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
       AND NOT pg_catalog.pg_has_role(current_user, 'locaria_job', 'MEMBER') THEN
        EXECUTE pg_catalog.format('GRANT locaria_job TO %I', current_user);
    END IF;
END;
$$;
