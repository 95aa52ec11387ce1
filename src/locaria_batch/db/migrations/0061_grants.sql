-- Least privilege.  Each role reaches the data only through the functions it needs:
--   locaria_job         the job_* functions, fenced by the attempt's token; CREATE in locaria_uploads
--                       (its staging tables); SELECT on what downloads read (loaded tables, search data)
--   locaria_dispatcher  the dispatch and file API functions; SELECT on the rows it shows and reconciles
--   locaria_console     SELECT only
-- Those functions run as their owner (SECURITY DEFINER, with a search_path nobody else can write to);
-- nobody else may call them.  Helpers that read nothing and write nothing stay open to all.
-- locaria_core.grant_roles() is run after every migration, so functions added or replaced later are
-- covered too; a function it does not name is for the owner alone.

-- A job's log entry for its own file (a job cannot call update_file, which reaches any row).
CREATE OR REPLACE FUNCTION locaria_core.job_log(p_job BIGINT, p_token UUID, p_entry JSONB) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    f_id BIGINT;
BEGIN
    SELECT file_id INTO f_id FROM locaria_core.jobs
     WHERE id = p_job AND attempt_token = p_token AND state = 'running';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM locaria_core.update_file((COALESCE(p_entry, '{}'::jsonb) - 'id' - 'status' - 'attributes')
                                     || jsonb_build_object('id', f_id));
    RETURN true;
END;
$$;

-- Statuses a file may be created in: the entry points of uploads and downloads, and the trigger
-- statuses of enabled dockers.  Creating a row straight into a running or final status would leave
-- it with nothing ever to process it.
CREATE OR REPLACE FUNCTION locaria_core.entry_statuses() RETURNS TEXT[]
LANGUAGE sql STABLE AS $$
    SELECT ARRAY['UPLOADING', 'REGISTERED', 'DOWNLOAD_REQUESTED']
           || COALESCE((SELECT array_agg(DISTINCT s) FROM locaria_core.dockers d, unnest(d.trigger_statuses) s
                         WHERE d.enabled), '{}'::TEXT[])
$$;

CREATE OR REPLACE FUNCTION locaria_core.add_file(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    wanted TEXT := COALESCE(NULLIF(parameters->>'status', ''), 'REGISTERED');
    attrs JSONB := COALESCE(parameters->'file_attributes', '{}'::jsonb);
    ret JSONB;
BEGIN
    IF jsonb_typeof(attrs) <> 'object' THEN
        RETURN jsonb_build_object('error', 'file_attributes must be a JSON object');
    END IF;
    IF NOT wanted = ANY (locaria_core.entry_statuses()) THEN
        RETURN jsonb_build_object('error', format('a file cannot be created in status %s: use one of %s', wanted,
                                                  array_to_string(locaria_core.entry_statuses(), ', ')));
    END IF;
    INSERT INTO locaria_core.files (status, attributes)
    VALUES (wanted, (attrs - 'log_messages') || jsonb_build_object('log_messages', jsonb_build_array(
                        jsonb_build_object('message', 'File created', 'timestamp', locaria_core.log_timestamp()))))
    RETURNING jsonb_build_object('id', id, 'status', status) INTO ret;
    RETURN ret;
END;
$$;

-- file_cron re-runs uploads only (a finished download sent to REGISTERED would reach the loader).
CREATE OR REPLACE FUNCTION locaria_core.file_cron(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    ids JSONB;
    target TEXT := COALESCE(NULLIF(parameters->>'new_status', ''), 'REGISTERED');
BEGIN
    IF jsonb_typeof(parameters->'filter') IS DISTINCT FROM 'object' THEN
        RETURN jsonb_build_object('route', 'file_cron', 'error', 'filter must be a JSON object',
                                  'response_code', 2000);
    END IF;
    IF target = 'DOWNLOAD_REQUESTED' OR NOT target = ANY (locaria_core.entry_statuses()) THEN
        RETURN jsonb_build_object('route', 'file_cron', 'response_code', 2000, 'error',
                                  format('file_cron re-runs uploads: new_status %s is not an upload''s entry status',
                                         target));
    END IF;
    WITH changed AS (
        UPDATE locaria_core.files f
           SET status = target, last_update = now()
         WHERE f.attributes @> (parameters->'filter')
           AND NOT f.attributes @> '{"download": true}'
           AND f.status <> 'DELETED'
           AND f.status <> ALL (locaria_core.in_flight_statuses())
           AND NOT EXISTS (SELECT 1 FROM locaria_core.jobs j
                            WHERE j.file_id = f.id AND j.state IN ('queued', 'launching', 'running'))
        RETURNING f.id)
    SELECT jsonb_agg(id ORDER BY id) INTO ids FROM changed;
    PERFORM locaria_core.log(parameters || jsonb_build_object('method', 'file_cron', 'ids', ids), 'file_cron');
    RETURN ids;
EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('route', 'file_cron', 'error', 'request could not be completed', 'response_code', 2000)
           || locaria_core.log(parameters || jsonb_build_object('method', 'file_cron'), SQLERRM);
END;
$$;

-- The gateway answers anything that is not a JSON object (null, an array, a string) with its
-- ordinary error, and reports a method's own {"error": ...} with the error code.
CREATE OR REPLACE FUNCTION locaria_core.locaria_internal_gateway(parameters JSONB, acl JSONB DEFAULT '{}'::jsonb)
RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    p JSONB;
    result JSONB;
BEGIN
    IF jsonb_typeof(parameters) IS DISTINCT FROM 'object'
       OR (acl IS NOT NULL AND jsonb_typeof(acl) NOT IN ('object', 'null')) THEN
        RETURN jsonb_build_object('route', 'internal_api', 'error', 'parameters must be a JSON object',
                                  'response_code', 600)
               || locaria_core.log(jsonb_build_object('method', 'internal_gateway'),
                                   'malformed parameters: ' || left(COALESCE(parameters::text, 'NULL'), 200));
    END IF;
    p := (parameters - 'acl' - 'id_token')
         || jsonb_build_object('acl', CASE WHEN jsonb_typeof(acl) = 'object' THEN acl ELSE '{}'::jsonb END);
    result := CASE p->>'method'
        WHEN 'add_file' THEN locaria_core.add_file(p)
        WHEN 'request_download_data' THEN locaria_core.add_file(
            p || jsonb_build_object('status', COALESCE(p->>'status', 'DOWNLOAD_REQUESTED')))
        WHEN 'update_file' THEN locaria_core.update_file(p)
        WHEN 'get_files' THEN locaria_core.get_files(p)
        WHEN 'delete_file' THEN locaria_core.delete_file(p)
        WHEN 'file_cron' THEN locaria_core.file_cron(p)
        WHEN 'get_parameters' THEN locaria_core.get_parameters(p)
        WHEN 'set_parameters' THEN locaria_core.set_parameters(p)
        ELSE NULL
    END;
    IF result IS NULL AND p->>'method' NOT IN ('update_file', 'file_cron') THEN
        RETURN jsonb_build_object('route', 'internal_api', 'error', 'unsupported method', 'response_code', 600)
               || locaria_core.log(p - 'acl', 'unsupported method ' || COALESCE(p->>'method', '(none)'));
    END IF;
    IF jsonb_typeof(result) = 'object' AND result ? 'error' AND NOT result ? 'response_code' THEN
        RETURN jsonb_build_object('route', 'internal_api', 'response_code', 600) || result;
    END IF;
    IF jsonb_typeof(result) = 'object' THEN
        RETURN jsonb_build_object('response_code', 200) || result;
    END IF;
    RETURN jsonb_build_object('response_code', 200, 'result', result);
EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('route', 'internal_api', 'error', 'request could not be completed', 'response_code', 600)
           || locaria_core.log(p - 'acl', SQLERRM);
END;
$$;

CREATE OR REPLACE FUNCTION locaria_core.grant_roles() RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    job_functions TEXT[] := ARRAY['job_start', 'job_heartbeat', 'job_log', 'job_finish', 'job_publish_tables',
                                  'job_import_items', 'job_import_prune'];
    dispatcher_functions TEXT[] := ARRAY[
        -- dispatch
        'claim_jobs', 'job_launched', 'renew_leases', 'adopt_expired_jobs', 'job_attempt_failed', 'job_requeue',
        'jobs_released', 'job_stop_done', 'release_leases', 'release_lost_launches', 'dispatcher_attach',
        'dispatcher_beat', 'dispatcher_detach', 'claim_free_slots', 'jobs_launched', 'jobs_ended',
        -- the file API
        'add_file', 'update_file', 'get_files', 'delete_file', 'file_cron', 'get_parameters', 'set_parameters',
        'locaria_internal_gateway', 'retry_file', 'cancel_file_jobs', 'request_upload', 'complete_upload', 'log',
        -- operations
        'jobs_retry', 'jobs_cancel', 'prune_jobs',
        -- categories (`locaria-batch categories`)
        'list_categories', 'add_category', 'remove_category'];
    console_functions TEXT[] := ARRAY['get_files'];
    -- the owner's alone: triggers, helpers other functions call, and the owner's own commands (migrations,
    -- `locaria adopt`); named so that a test can tell a function nobody classified from one kept private
    owner_functions TEXT[] := ARRAY['aws_lambda_interface', 'install_launcher_hook', 'jobs_wake_launcher',
        'files_trigger', 'files_broadcast', 'jobs_audit', 'job_events_append_only', 'job_file_update',
        'job_live_file', 'dead_dispatchers', 'enter_status', 'entry_statuses', 'in_flight_statuses', 'grant_roles', 'take_over_files',
        'hand_back_files', 'import_tags', 'import_text', 'upload_file_label', 'upload_table_adopt',
        'upload_table_append', 'upload_table_of_file', 'upload_table_reserved_for'];
    -- read nothing, write nothing: anyone may call them, as their caller
    open_functions TEXT[] := ARRAY['log_timestamp', 'acl_check', 'jsonb_leaves', 'loader_parse_geometry',
                                   'retry_delay', 'loader_is_curved', 'loader_linear_geometry'];
    f RECORD;
    t TEXT;
    secured BOOLEAN;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS signature, p.proname AS name, p.prorettype = 'trigger'::regtype AS trigger
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'locaria_core' AND p.prokind = 'f' LOOP
        IF NOT f.name = ANY (job_functions || dispatcher_functions || console_functions || open_functions
                             || owner_functions) THEN
            RAISE NOTICE 'locaria_core.% has no role in grant_roles(): only its owner may call it', f.name;
        END IF;
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
    -- our tables only: on a database taken over from Locaria, the CMS's own tables share the schema
    FOREACH t IN ARRAY ARRAY['files', 'jobs', 'job_events', 'dockers', 'dispatchers', 'dispatchers_alive', 'logs',
                             'categories', 'parameters', 'schema_migrations'] LOOP
        CONTINUE WHEN to_regclass('locaria_core.' || t) IS NULL;
        EXECUTE format('REVOKE ALL ON locaria_core.%I FROM PUBLIC', t);
        EXECUTE format('GRANT SELECT ON locaria_core.%I TO locaria_dispatcher', t);
        IF t <> 'parameters' THEN  -- deployment settings are not for display
            EXECUTE format('GRANT SELECT ON locaria_core.%I TO locaria_console', t);
        END IF;
    END LOOP;
    GRANT SELECT ON locaria_core.categories TO locaria_job;  -- downloads select by category
    GRANT SELECT ON locaria_data.items TO locaria_job, locaria_dispatcher, locaria_console;
    GRANT SELECT ON ALL TABLES IN SCHEMA locaria_uploads TO locaria_job, locaria_dispatcher, locaria_console;
    GRANT CREATE ON SCHEMA locaria_uploads TO locaria_job;
    -- file_import writes the search data through job_import_items / job_import_prune only (0072)
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
