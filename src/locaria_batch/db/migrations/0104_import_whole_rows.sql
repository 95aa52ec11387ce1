-- job_import_items wrote each row's data as to_jsonb(t): in a table with a column named t that is the
-- column, not the row, and every import of it failed ("cannot delete from scalar").  t.* always names
-- the row.  The function is patched where it stands rather than restated, so that it keeps one text.
DO $patch$
DECLARE
    v_definition TEXT := pg_catalog.pg_get_functiondef(
        'locaria_core.job_import_items(bigint, uuid, text, bigint, jsonb, bigint, bigint)'::pg_catalog.regprocedure);
BEGIN
    IF pg_catalog.strpos(v_definition, 'pg_catalog.to_jsonb(t) -') > 0 THEN
        EXECUTE pg_catalog.replace(v_definition, 'pg_catalog.to_jsonb(t) -', 'pg_catalog.to_jsonb(t.*) -');
    END IF;
END;
$patch$;
