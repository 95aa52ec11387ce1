-- The Locaria file API: the SQL functions are the source of truth, Python only calls them.
-- Response shapes follow the original's (see reference/locaria-original.md §3).

CREATE OR REPLACE FUNCTION locaria_core.log_timestamp() RETURNS TEXT
LANGUAGE sql STABLE AS $$ SELECT to_char(now(), 'DD/MM/YYYY HH24:MI:SS') $$;

CREATE OR REPLACE FUNCTION locaria_core.log(params JSONB, message TEXT) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    new_id BIGINT;
BEGIN
    INSERT INTO locaria_core.logs (log_type, log_message)
    VALUES (COALESCE(params->>'method', 'internal'), COALESCE(params, '{}'::jsonb) || jsonb_build_object('_message', message))
    RETURNING id INTO new_id;
    RETURN jsonb_build_object('logid', new_id);
END;
$$;

-- add_file: insert one row; log_messages is always replaced by the creation entry.
CREATE OR REPLACE FUNCTION locaria_core.add_file(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    ret JSONB;
BEGIN
    INSERT INTO locaria_core.files (status, attributes)
    VALUES (
        COALESCE(NULLIF(parameters->>'status', ''), 'REGISTERED'),
        (COALESCE(parameters->'file_attributes', '{}'::jsonb) - 'log_messages')
            || jsonb_build_object('log_messages', jsonb_build_array(
                   jsonb_build_object('message', 'File created', 'timestamp', locaria_core.log_timestamp())))
    )
    RETURNING jsonb_build_object('id', id, 'status', status) INTO ret;
    RETURN ret;
END;
$$;

-- update_file: shallow attribute merge, append-only log_messages, optional status change.
-- The log entry is the call's parameters minus status/id/method/attributes/acl, plus a timestamp.
CREATE OR REPLACE FUNCTION locaria_core.update_file(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    ret JSONB;
    entry JSONB := (parameters - 'status' - 'id' - 'method' - 'attributes' - 'acl')
                   || jsonb_build_object('timestamp', locaria_core.log_timestamp());
BEGIN
    UPDATE locaria_core.files
       SET attributes = attributes
                        || (COALESCE(parameters->'attributes', '{}'::jsonb) - 'log_messages')
                        || jsonb_build_object('log_messages',
                               COALESCE(attributes->'log_messages', '[]'::jsonb) || jsonb_build_array(entry)),
           status = COALESCE(NULLIF(parameters->>'status', ''), status),
           last_update = now()
     WHERE id = (parameters->>'id')::BIGINT
    RETURNING attributes || jsonb_build_object('id', id, 'status', status) INTO ret;
    RETURN ret;
END;
$$;

-- get_files: id / status / attribute-containment filters.  DELETED rows only when asked for.
CREATE OR REPLACE FUNCTION locaria_core.get_files(parameters JSONB) RETURNS JSONB
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('files', COALESCE(jsonb_agg(jsonb_build_object(
               'id', f.id,
               'status', f.status,
               'attributes', f.attributes,
               'created', to_char(f.created, 'DD/MM/YYYY HH24:MI'),
               'last_updated', to_char(f.last_update, 'DD/MM/YYYY HH24:MI')) ORDER BY f.id), '[]'::jsonb))
      FROM locaria_core.files f
     WHERE (parameters->>'id' IS NULL OR f.id = (parameters->>'id')::BIGINT)
       AND (CASE WHEN COALESCE(parameters->>'status', '*') = '*' THEN f.status <> 'DELETED'
                 ELSE f.status = parameters->>'status' END)
       AND (parameters->'filter' IS NULL OR f.attributes @> (parameters->'filter'))
$$;

CREATE OR REPLACE FUNCTION locaria_core.delete_file(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
BEGIN
    IF to_regprocedure('locaria_core.cancel_file_jobs(bigint,text)') IS NOT NULL THEN
        -- a deleted file's job has nothing left to do
        PERFORM locaria_core.cancel_file_jobs((parameters->>'id')::BIGINT, 'the file was deleted');
    END IF;
    UPDATE locaria_core.files SET status = 'DELETED', last_update = now()
     WHERE id = (parameters->>'id')::BIGINT AND status <> 'DELETED';
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n <> 1 THEN
        RETURN jsonb_build_object('error', 'No rows deleted,', 'id', parameters->'id');
    END IF;
    RETURN jsonb_build_object('id', (parameters->>'id')::BIGINT, 'message', 'file marked as deleted');
END;
$$;

-- Statuses a file is in while a job works on it; file_cron never touches these.
CREATE OR REPLACE FUNCTION locaria_core.in_flight_statuses() RETURNS TEXT[]
LANGUAGE sql STABLE AS $$
    SELECT ARRAY['UPLOADING', 'FARGATE_PROCESSING', 'DOWNLOAD_PROCESSING', 'IMPORTING']
           || COALESCE((SELECT array_agg(running_status) FROM locaria_core.dockers WHERE running_status IS NOT NULL),
                       '{}'::TEXT[])
$$;

-- file_cron: re-register matching rows, never DELETED or in-flight rows (the original revived both).
CREATE OR REPLACE FUNCTION locaria_core.file_cron(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    ids JSONB;
BEGIN
    WITH changed AS (
        UPDATE locaria_core.files f
           SET status = COALESCE(NULLIF(parameters->>'new_status', ''), 'REGISTERED'), last_update = now()
         WHERE f.attributes @> (parameters->'filter')
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

-- ACL: does any of the caller's groups appear in the row's acl list for this action?
CREATE OR REPLACE FUNCTION locaria_core.acl_check(acl JSONB, row_acl JSONB, action TEXT) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE AS $$
    SELECT EXISTS (SELECT 1
                     FROM jsonb_array_elements_text(COALESCE(acl->'_groups', '[]'::jsonb)) g
                    WHERE COALESCE(row_acl->action, '[]'::jsonb) ? g)
$$;

CREATE OR REPLACE FUNCTION locaria_core.get_parameters(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql STABLE AS $$
DECLARE
    ret JSONB;
    wanted TEXT := parameters->>'parameter_name';
BEGIN
    FOR i IN 1..2 LOOP
        SELECT jsonb_object_agg(regexp_replace(p.parameter_name, '_PUBLIC$', ''),
                                jsonb_build_object('data', p.parameter,
                                                   'last_updated', to_char(p.last_updated, 'DD/MM/YYYY HH24:MI')))
          INTO ret
          FROM locaria_core.parameters p
         WHERE (wanted IS NULL OR p.parameter_name = wanted)
           AND p.usage = COALESCE(parameters->>'usage', 'SYSTEM')
           AND locaria_core.acl_check(parameters->'acl', p.acl, 'view');
        EXIT WHEN ret IS NOT NULL OR wanted IS NULL;
        wanted := wanted || '_PUBLIC';
    END LOOP;
    IF ret IS NULL THEN
        RETURN jsonb_build_object('error', 'parameter not found');
    END IF;
    RETURN jsonb_build_object('parameters', ret);
END;
$$;

CREATE OR REPLACE FUNCTION locaria_core.set_parameters(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    existing locaria_core.parameters;
    name TEXT := parameters->>'parameter_name';
    use TEXT := COALESCE(parameters->>'usage', 'SYSTEM');
BEGIN
    IF name IS NULL OR parameters->'parameters' IS NULL THEN
        RETURN jsonb_build_object('error', 'parameter_name and parameters are required');
    END IF;
    SELECT * INTO existing FROM locaria_core.parameters WHERE parameter_name = name AND usage = use FOR UPDATE;
    IF FOUND THEN
        IF NOT locaria_core.acl_check(parameters->'acl', existing.acl, 'update') THEN
            RETURN jsonb_build_object('error', 'no update permission for parameter ' || name);
        END IF;
        UPDATE locaria_core.parameters
           SET parameter = parameters->'parameters', last_updated = now(),
               acl = COALESCE(parameters->'parameter_acl', acl)
         WHERE id = existing.id;
    ELSE
        IF NOT (COALESCE(parameters->'acl'->'_groups', '[]'::jsonb) ? 'Admins') THEN
            RETURN jsonb_build_object('error', 'only Admins may create parameters');
        END IF;
        INSERT INTO locaria_core.parameters (parameter_name, usage, parameter, acl)
        VALUES (name, use, parameters->'parameters',
                COALESCE(parameters->'parameter_acl',
                         '{"update":["Admins"],"delete":["Admins"],"view":["Admins"]}'::jsonb));
    END IF;
    RETURN jsonb_build_object('parameter_name', name, 'message', 'parameter set');
END;
$$;

-- The internal gateway: strips client acl/id_token, injects the server-side acl, routes by method.
CREATE OR REPLACE FUNCTION locaria_core.locaria_internal_gateway(parameters JSONB, acl JSONB DEFAULT '{}'::jsonb)
RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    p JSONB := (COALESCE(parameters, '{}'::jsonb) - 'acl' - 'id_token') || jsonb_build_object('acl', COALESCE(acl, '{}'::jsonb));
    result JSONB;
BEGIN
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
    IF jsonb_typeof(result) = 'object' THEN
        RETURN jsonb_build_object('response_code', 200) || result;
    END IF;
    RETURN jsonb_build_object('response_code', 200, 'result', result);
EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('route', 'internal_api', 'error', 'request could not be completed', 'response_code', 600)
           || locaria_core.log(p - 'acl', SQLERRM);
END;
$$;
