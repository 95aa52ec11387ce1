-- The loader's, importer's and CLI's functions in the roles' lists (grant_roles, 0061), and file_import
-- through its fenced functions instead of writes on locaria_data.items:
--   locaria_job         + job_import_prune (job_publish_tables and job_import_items were listed already)
--   locaria_dispatcher  + list_categories, add_category, remove_category (`locaria-batch categories`)
--   anyone              + loader_is_curved, loader_linear_geometry (pure geometry helpers the loader uses)
-- and a successful attempt clears the error and exit code an earlier one left on the file row.

CREATE OR REPLACE FUNCTION locaria_core.grant_roles() RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    job_functions TEXT[] := ARRAY['job_start', 'job_heartbeat', 'job_log', 'job_finish', 'job_publish_tables',
                                  'job_import_items', 'job_import_prune'];
    dispatcher_functions TEXT[] := ARRAY[
        -- dispatch
        'claim_jobs', 'job_launched', 'renew_leases', 'adopt_expired_jobs', 'job_attempt_failed', 'job_requeue',
        'jobs_released', 'job_stop_done', 'release_leases', 'release_lost_launches', 'dispatcher_attach',
        'dispatcher_beat', 'dispatcher_detach',
        -- the file API
        'add_file', 'update_file', 'get_files', 'delete_file', 'file_cron', 'get_parameters', 'set_parameters',
        'locaria_internal_gateway', 'retry_file', 'cancel_file_jobs', 'request_upload', 'complete_upload', 'log',
        -- categories, from the command line
        'list_categories', 'add_category', 'remove_category'];
    console_functions TEXT[] := ARRAY['get_files'];
    -- read nothing, write nothing: anyone may call them, as their caller
    open_functions TEXT[] := ARRAY['log_timestamp', 'acl_check', 'jsonb_leaves', 'loader_parse_geometry',
                                   'retry_delay', 'loader_is_curved', 'loader_linear_geometry'];
    f RECORD;
    secured BOOLEAN;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS signature, p.proname AS name, p.prorettype = 'trigger'::regtype AS trigger
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'locaria_core' AND p.prokind = 'f' LOOP
        secured := f.name = ANY (job_functions || dispatcher_functions);
        IF secured THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = locaria_core, public, pg_temp',
                           f.signature);
        END IF;
        IF f.name = ANY (open_functions) THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f.signature);
            CONTINUE;
        END IF;
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.signature);
        IF f.name = ANY (job_functions) THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO locaria_job', f.signature);
        END IF;
        IF f.name = ANY (dispatcher_functions) THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO locaria_dispatcher', f.signature);
        END IF;
        IF f.name = ANY (console_functions) THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO locaria_console', f.signature);
        END IF;
    END LOOP;

    GRANT USAGE ON SCHEMA locaria_core, locaria_data, locaria_uploads
       TO locaria_job, locaria_dispatcher, locaria_console;
    REVOKE ALL ON ALL TABLES IN SCHEMA locaria_core FROM PUBLIC;
    GRANT SELECT ON ALL TABLES IN SCHEMA locaria_core TO locaria_dispatcher, locaria_console;
    REVOKE SELECT ON locaria_core.parameters FROM locaria_console;  -- deployment settings are not for display
    GRANT SELECT ON locaria_core.categories TO locaria_job;  -- downloads select by category
    GRANT SELECT ON ALL TABLES IN SCHEMA locaria_data, locaria_uploads
       TO locaria_job, locaria_dispatcher, locaria_console;
    GRANT CREATE ON SCHEMA locaria_uploads TO locaria_job;
    -- file_import writes the search data through job_import_items / job_import_prune only
    REVOKE INSERT, UPDATE, DELETE ON locaria_data.items FROM locaria_job;
    REVOKE USAGE ON ALL SEQUENCES IN SCHEMA locaria_data FROM locaria_job;
    REVOKE CREATE ON SCHEMA locaria_core, locaria_data FROM PUBLIC;
    BEGIN
        -- what jobs create is readable by the dispatcher and the console as soon as it exists
        ALTER DEFAULT PRIVILEGES FOR ROLE locaria_job IN SCHEMA locaria_uploads
            GRANT SELECT ON TABLES TO locaria_dispatcher, locaria_console;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'default privileges of locaria_job not set: the migrating role is not a member of it';
    END;
END;
$$;

-- job_finish as in 0003, except that success removes `error` and `exit_code` from the file's attributes
-- (a retry that worked leaves no trace of the failure but the log).
CREATE OR REPLACE FUNCTION locaria_core.job_finish(p_job BIGINT, p_token UUID, p_outcome JSONB) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    j locaria_core.jobs;
    d locaria_core.dockers;
    verdict TEXT := p_outcome->>'state';
BEGIN
    IF verdict = 'retry' THEN
        RETURN locaria_core.job_attempt_failed(p_job, p_token, NULL, p_outcome->>'error') IS NOT NULL;
    END IF;
    IF verdict NOT IN ('succeeded', 'failed') THEN
        RAISE EXCEPTION 'job_finish: unknown outcome state %', verdict;
    END IF;
    UPDATE locaria_core.jobs
       SET state = verdict, finished_at = clock_timestamp(), updated_at = clock_timestamp(),
           error = p_outcome->>'error', exit_code = (p_outcome->>'exit_code')::INTEGER,
           progress = COALESCE(p_outcome->'progress', progress)
     WHERE id = p_job AND attempt_token = p_token AND state = 'running'
    RETURNING * INTO j;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT * INTO d FROM locaria_core.dockers WHERE name = j.docker;
    IF verdict = 'succeeded' THEN
        UPDATE locaria_core.files SET attributes = attributes - 'error' - 'exit_code' WHERE id = j.file_id;
    END IF;
    PERFORM locaria_core.job_file_update(
        j.file_id,
        COALESCE(p_outcome->>'status', CASE WHEN verdict = 'succeeded' THEN d.success_status ELSE d.error_status END),
        COALESCE(p_outcome->'log', '{}'::jsonb),
        COALESCE(p_outcome->'attributes', '{}'::jsonb) - 'progress' - CASE WHEN verdict = 'succeeded'
                                                                          THEN 'error' ELSE '' END);
    RETURN true;
END;
$$;
