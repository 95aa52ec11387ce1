-- A published table's indexes are named after it.  upload_table_adopt cut a long name to fit 63 bytes,
-- so two tables sharing their first 50-odd characters got the same index name and the second load
-- failed ("relation ... already exists").  A name that must be cut now ends in a hash of the whole.
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
        EXECUTE pg_catalog.format('ALTER INDEX locaria_uploads.%I RENAME TO %I', v_index.relname, CASE
            WHEN pg_catalog.octet_length(p_target || v_suffix) <= 63 THEN p_target || v_suffix
            ELSE pg_catalog.left(p_target, 63 - 9 - pg_catalog.octet_length(v_suffix)) || '_'
                 || pg_catalog.left(pg_catalog.md5(p_target), 8) || v_suffix END);
    END LOOP;
    EXECUTE pg_catalog.format('ALTER TABLE locaria_uploads.%I OWNER TO %I', p_target, current_user);
    EXECUTE pg_catalog.format('GRANT SELECT ON locaria_uploads.%I TO locaria_job, locaria_dispatcher, locaria_console',
                              p_target);
END;
$$;
