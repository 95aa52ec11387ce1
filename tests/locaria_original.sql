-- A Locaria database as Locaria's own batch system left it, for the `locaria adopt` tests: the
-- tables, the file API, aws_lambda_interface and the files trigger as Locaria defines them, its
-- bugs included (every insert launches both tasks; the trigger's error path has no RETURN), plus
-- stand-ins for Aurora's aws_commons / aws_lambda extensions that record each invocation.

CREATE EXTENSION IF NOT EXISTS postgis;

-- Aurora's extensions: the ARN type and an invoke that records what it was asked ---------------------
CREATE SCHEMA aws_commons;
CREATE TYPE aws_commons._lambda_function_arn_1 AS (function_name TEXT, region TEXT);
CREATE FUNCTION aws_commons.create_lambda_function_arn(function_name TEXT, region TEXT DEFAULT NULL)
RETURNS aws_commons._lambda_function_arn_1 LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(function_name, region)::aws_commons._lambda_function_arn_1
$$;
CREATE SCHEMA aws_lambda;
CREATE TABLE aws_lambda.invocations (
    id BIGSERIAL PRIMARY KEY, function_name TEXT, region TEXT, payload JSONB, invocation_type TEXT,
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION aws_lambda.invoke(function_name aws_commons._lambda_function_arn_1, request JSONB,
                                  invocation_type TEXT DEFAULT 'RequestResponse', log_type TEXT DEFAULT 'None',
                                  OUT status_code INTEGER, OUT payload JSONB, OUT executed_version TEXT,
                                  OUT log_result TEXT)
LANGUAGE plpgsql AS $$
BEGIN
    IF (function_name).function_name IS NULL THEN
        RAISE EXCEPTION 'invalid Lambda function ARN';
    END IF;
    INSERT INTO aws_lambda.invocations (function_name, region, payload, invocation_type)
    VALUES ((function_name).function_name, (function_name).region, request, invocation_type);
    status_code := CASE WHEN invocation_type = 'Event' THEN 202 ELSE 200 END;
    executed_version := '$LATEST';
END;
$$;

-- Tables -------------------------------------------------------------------------------------------
CREATE SCHEMA locaria_core;
CREATE SCHEMA locaria_data;
CREATE SCHEMA locaria_uploads;

CREATE TABLE locaria_core.files (
    id          BIGSERIAL PRIMARY KEY,
    status      TEXT DEFAULT 'REGISTERED',
    attributes  JSONB,
    created     TIMESTAMP DEFAULT NOW(),
    last_update TIMESTAMP DEFAULT NOW()
);

CREATE TABLE locaria_core.parameters (
    id             BIGSERIAL PRIMARY KEY,
    parameter_name TEXT,
    usage          TEXT DEFAULT 'SYSTEM',
    parameter      JSONB,
    acl            JSONB DEFAULT '{"update":["Admins"],"delete":["Admins"],"view":["Admins"]}'::jsonb,
    last_updated   TIMESTAMP DEFAULT NOW(),
    UNIQUE (parameter_name, usage)
);

-- partitioned by month through pg_partman in production; one default partition here
CREATE TABLE locaria_core.logs (
    id            BIGSERIAL,
    log_type      TEXT DEFAULT 'search',
    log_message   JSONB,
    log_timestamp TIMESTAMP DEFAULT NOW(),
    CONSTRAINT logs_pk PRIMARY KEY (id, log_timestamp)
) PARTITION BY RANGE (log_timestamp);
CREATE TABLE locaria_core.logs_default PARTITION OF locaria_core.logs DEFAULT;

CREATE TABLE locaria_core.categories (
    id         BIGSERIAL PRIMARY KEY,
    category   TEXT UNIQUE NOT NULL,
    attributes JSONB
);

-- Utilities ----------------------------------------------------------------------------------------
CREATE FUNCTION locaria_core.log(parameters JSONB, message TEXT DEFAULT '') RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    ret_var JSONB;
BEGIN
    SET SEARCH_PATH = 'locaria_core', 'public';
    INSERT INTO locaria_core.logs (log_type, log_message)
    SELECT COALESCE(parameters->>'method', 'internal'), parameters || jsonb_build_object('_message', message)
    RETURNING jsonb_build_object('logid', id) INTO ret_var;
    RETURN ret_var;
END;
$$;

-- what the caller's acl (_groups, _userID) may do with a row whose acl is MASK
CREATE FUNCTION locaria_core.acl_check(acl JSONB, mask JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    groups TEXT[] := ARRAY(SELECT jsonb_array_elements_text(COALESCE(acl->'_groups', '[]'::jsonb)));
BEGIN
    acl := COALESCE(acl, '{}'::jsonb);
    RETURN jsonb_build_object(
        'owner', acl->>'_userID' IS NOT NULL AND acl->>'_userID' = mask->>'owner',
        'view', mask->'view' IS NULL OR mask->'view' ?| groups,
        'update', COALESCE(mask->'update' ?| groups, false),
        'delete', COALESCE(mask->'delete' ?| groups, false));
END;
$$;

CREATE FUNCTION locaria_core.get_parameters(parameters_var JSONB DEFAULT '{}'::jsonb) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    ret_var JSONB;
    wanted TEXT := parameters_var->>'parameter_name';
BEGIN
    SET SEARCH_PATH = 'locaria_core', 'public';
    FOR attempt IN 1..2 LOOP
        SELECT jsonb_object_agg(regexp_replace(parameter_name, '_PUBLIC$', ''),
                                jsonb_build_object('data', parameter,
                                                   'last_updated', to_char(last_updated, 'DD/MM/YYYY HH24:MI')))
          INTO ret_var
          FROM parameters
         WHERE (acl_check(parameters_var->'acl', acl)->>'view')::BOOLEAN
           AND parameter_name = COALESCE(wanted, parameter_name)
           AND usage = COALESCE(parameters_var->>'usage', 'SYSTEM');
        EXIT WHEN ret_var IS NOT NULL OR wanted IS NULL;
        wanted := wanted || '_PUBLIC';
    END LOOP;
    IF ret_var IS NULL THEN
        RETURN jsonb_build_object('error', 'parameter not found');
    END IF;
    RETURN jsonb_build_object('parameters', ret_var);
END;
$$;

CREATE FUNCTION locaria_core.set_parameters(parameters_var JSONB DEFAULT '{}'::jsonb) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    id_var BIGINT;
BEGIN
    SET SEARCH_PATH = 'locaria_core', 'public';
    INSERT INTO parameters (parameter_name, parameter, usage, last_updated)
    VALUES (parameters_var->>'parameter_name', parameters_var->'parameters',
            COALESCE(parameters_var->>'usage', 'SYSTEM'), now())
    ON CONFLICT (parameter_name, usage)
    DO UPDATE SET parameter = EXCLUDED.parameter, last_updated = EXCLUDED.last_updated
     WHERE (acl_check(parameters_var->'acl', parameters.acl)->>'update')::BOOLEAN
    RETURNING id INTO id_var;
    RETURN jsonb_build_object('id', id_var);
END;
$$;

-- The file API -------------------------------------------------------------------------------------
CREATE FUNCTION locaria_core.add_file(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    ret_var JSONB;
BEGIN
    INSERT INTO locaria_core.files (attributes, status)
    VALUES (COALESCE(parameters->'file_attributes', '{}'::jsonb)
                || jsonb_build_object('log_messages', jsonb_build_array(jsonb_build_object(
                       'message', 'File created', 'timestamp', to_char(now(), 'DD/MM/YYYY HH24:MI:SS')))),
            COALESCE(parameters->>'status', 'REGISTERED'))
    RETURNING jsonb_build_object('id', id, 'status', status) INTO ret_var;
    RETURN ret_var;
END;
$$;

CREATE FUNCTION locaria_core.update_file(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    ret_var JSONB;
BEGIN
    UPDATE locaria_core.files
       SET attributes = attributes
                        || jsonb_build_object('log_messages', COALESCE(attributes->'log_messages', '[]'::jsonb)
                               || jsonb_build_array((parameters - 'status' - 'id' - 'method' - 'attributes' - 'acl')
                                      || jsonb_build_object('timestamp', to_char(now(), 'DD/MM/YYYY HH24:MI:SS'))))
                        || COALESCE(parameters->'attributes', '{}'::jsonb),
           status = COALESCE(parameters->>'status', status),
           last_update = now()
     WHERE id = (parameters->>'id')::BIGINT
    RETURNING attributes || jsonb_build_object('id', id, 'status', status) INTO ret_var;
    RETURN ret_var;
END;
$$;

CREATE FUNCTION locaria_core.get_files(parameters JSONB) RETURNS JSONB
LANGUAGE sql AS $$
    SELECT jsonb_build_object('files', COALESCE(jsonb_agg(jsonb_build_object(
               'id', id, 'status', status, 'attributes', attributes,
               'created', to_char(created, 'DD/MM/YYYY HH24:MI'),
               'last_updated', to_char(created, 'DD/MM/YYYY HH24:MI'))), '[]'::jsonb))
      FROM locaria_core.files
     WHERE (parameters->>'id' IS NULL OR id = (parameters->>'id')::BIGINT)
       AND (CASE WHEN COALESCE(parameters->>'status', '*') = '*' THEN status <> 'DELETED'
                 ELSE status = parameters->>'status' END)
       AND (parameters->'filter' IS NULL OR attributes @> (parameters->'filter'))
$$;

CREATE FUNCTION locaria_core.delete_file(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
BEGIN
    UPDATE locaria_core.files SET status = 'DELETED' WHERE id = (parameters->>'id')::BIGINT;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n <> 1 THEN
        RETURN jsonb_build_object('error', 'No rows deleted,', 'id', parameters->'id');
    END IF;
    RETURN jsonb_build_object('id', parameters->'id', 'message', 'file marked as deleted');
END;
$$;

CREATE FUNCTION locaria_core.file_cron(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    ids JSONB;
BEGIN
    WITH changed AS (
        UPDATE locaria_core.files SET status = COALESCE(parameters->>'new_status', 'REGISTERED')
         WHERE attributes @> (parameters->'filter') RETURNING id)
    SELECT jsonb_agg(id) INTO ids FROM changed;
    PERFORM locaria_core.log(parameters || jsonb_build_object('method', 'file_cron', 'ids', ids));
    RETURN ids;
EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('route', 'file_cron', 'error', 'request could not be completed', 'response_code', 2000)
           || locaria_core.log(parameters, SQLERRM);
END;
$$;

-- The launch path: the files trigger invokes the ecsRunner Lambda through aws_lambda_interface -----
CREATE FUNCTION locaria_core.aws_lambda_interface(lambda_parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    config JSONB;
    fn TEXT := lambda_parameters->>'function';
    res RECORD;
BEGIN
    SET SEARCH_PATH = 'locaria_core', 'public';
    SELECT parameter INTO config FROM parameters
     WHERE parameter_name = CASE WHEN COALESCE(lambda_parameters->>'fargate', '') <> '' THEN 'fargate_config'
                                 ELSE COALESCE(lambda_parameters->>'config', 'lambda_config') END;
    SELECT * INTO res FROM aws_lambda.invoke(
        aws_commons.create_lambda_function_arn(config->fn->>'arn', config->fn->>'region'),
        COALESCE(lambda_parameters->'parameters', config->fn, '{}'::jsonb),
        COALESCE(lambda_parameters->>'mode', config->fn->>'mode', 'Event'),
        COALESCE(lambda_parameters->>'log_type', config->fn->>'log', 'None'));
    RETURN jsonb_build_object('status_code', res.status_code, 'payload', res.payload,
                              'executed_version', res.executed_version, 'log_result', res.log_result);
EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('error', 'aws_lambda_interface error', 'debug', lambda_parameters,
                              'debug1', config->fn->>'arn', 'sql_error', SQLERRM || ':' || SQLSTATE);
END;
$$;

CREATE FUNCTION locaria_core.files_trigger() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
DECLARE
    ret_var JSONB;
    params JSONB := jsonb_build_object('function', 'file_loader', 'fargate', 'true', 'mode', 'Event');
    ws_params JSONB := jsonb_build_object('function', 'ws_broadcast', 'parameters', jsonb_build_object(
        'group', 'Admins', 'packet', jsonb_build_object('queue', 'fileStatus',
                                                         'packet', jsonb_build_object('message', 'statusChange'))));
BEGIN
    -- as written: AND binds first, so every INSERT (OLD.status IS NULL) launches both tasks
    IF NEW.status = 'REGISTERED' AND OLD.status != 'REGISTERED' OR OLD.status IS NULL THEN
        IF (SELECT 1 FROM locaria_core.parameters WHERE parameter_name = 'fargate_config'
                                                    AND parameter->>'file_loader' IS NOT NULL) IS NOT NULL THEN
            ret_var := locaria_core.aws_lambda_interface(params);
            PERFORM locaria_core.log(ret_var || jsonb_build_object('type', 'file_trigger_fargate'), 'fargate_triggered');
        END IF;
    END IF;
    IF NEW.status = 'DOWNLOAD_REQUESTED' AND OLD.status != 'DOWNLOAD_REQUESTED' OR OLD.status IS NULL THEN
        IF (SELECT 1 FROM locaria_core.parameters WHERE parameter_name = 'fargate_config'
                                                    AND parameter->>'file_download' IS NOT NULL) IS NOT NULL THEN
            params := params || jsonb_build_object('function', 'file_download');
            ret_var := locaria_core.aws_lambda_interface(params);
            PERFORM locaria_core.log(ret_var || jsonb_build_object('type', 'file_download_trigger_fargate'),
                                     'fargate_triggered');
        END IF;
    END IF;
    IF NEW.status != OLD.status OR OLD.status IS NULL THEN
        IF EXISTS (SELECT 1 FROM locaria_core.parameters WHERE parameter_name = 'lambda_config') THEN
            ws_params := jsonb_set(ws_params, '{parameters,packet,packet}',
                                   jsonb_build_object('message', 'statusChange', 'status', NEW.status));
            PERFORM locaria_core.aws_lambda_interface(ws_params);
        END IF;
    END IF;
    RETURN NEW;
EXCEPTION WHEN OTHERS THEN
    PERFORM locaria_core.log(params, SQLERRM);
END;
$$;

CREATE TRIGGER files_trigger AFTER INSERT OR UPDATE ON locaria_core.files
    FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE PROCEDURE locaria_core.files_trigger();

-- The internal gateway the CMS calls for everything (files, parameters, and its own methods) -------
CREATE FUNCTION locaria_core.locaria_internal_gateway(parameters JSONB, acl JSONB DEFAULT '{}'::jsonb)
RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    p JSONB := (parameters - 'acl' - 'id_token') || jsonb_build_object('acl', acl);
    result JSONB;
BEGIN
    result := CASE p->>'method'
        WHEN 'add_file' THEN locaria_core.add_file(p)
        WHEN 'request_download_data' THEN locaria_core.add_file(p)
        WHEN 'update_file' THEN locaria_core.update_file(p)
        WHEN 'get_files' THEN locaria_core.get_files(p)
        WHEN 'delete_file' THEN locaria_core.delete_file(p)
        WHEN 'file_cron' THEN locaria_core.file_cron(p)
        WHEN 'get_parameters' THEN locaria_core.get_parameters(p)
        WHEN 'set_parameters' THEN locaria_core.set_parameters(p)
        WHEN 'list_categories' THEN (SELECT jsonb_build_object('categories', COALESCE(jsonb_agg(category ORDER BY id),
                                                                                     '[]'::jsonb))
                                       FROM locaria_core.categories)
    END;
    RETURN jsonb_build_object('response_code', 200) || COALESCE(result, '{}'::jsonb);
EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('route', 'internal_api', 'error', 'request could not be completed',
                              'response_code', 600) || locaria_core.log(p, SQLERRM);
END;
$$;

-- What a deployment wrote: fargate_config (docker_parameters.sql), lambda_config, loader settings ---
INSERT INTO locaria_core.parameters (parameter_name, parameter) VALUES
('fargate_config', '{
  "file_loader": {"task": "arn:aws:ecs:eu-west-2:123456789012:task-definition/locaria-fargate-maindev-taskFileLoader:7",
                  "vpcPrivateSubnetA": "subnet-0a1b2c3d4e5f60001", "vpcPrivateSubnetB": "subnet-0a1b2c3d4e5f60002",
                  "ServerlessSecurityGroup": "sg-0feedfacecafe0001",
                  "ecrRepositoryUri": "123456789012.dkr.ecr.eu-west-2.amazonaws.com/locaria-repo-fileloader-maindev",
                  "ecsName": "locaria-cluster-fileloader-maindev",
                  "arn": "arn:aws:lambda:eu-west-2:123456789012:function:locaria-fargate-maindev-dev-ecsRunner:1",
                  "region": "eu-west-2"},
  "file_download": {"task": "arn:aws:ecs:eu-west-2:123456789012:task-definition/locaria-fargate-maindev-taskFileDownload:4",
                    "vpcPrivateSubnetA": "subnet-0a1b2c3d4e5f60001", "vpcPrivateSubnetB": "subnet-0a1b2c3d4e5f60002",
                    "ServerlessSecurityGroup": "sg-0feedfacecafe0001",
                    "ecrRepositoryUri": "123456789012.dkr.ecr.eu-west-2.amazonaws.com/locaria-repo-download-maindev",
                    "ecsName": "locaria-cluster-fileloader-maindev",
                    "arn": "arn:aws:lambda:eu-west-2:123456789012:function:locaria-fargate-maindev-dev-ecsRunner:1",
                    "region": "eu-west-2"},
  "openactive": {"task": "arn:aws:ecs:eu-west-2:123456789012:task-definition/locaria-openactive:2",
                 "ecsName": "locaria-cluster-fileloader-maindev",
                 "arn": "arn:aws:lambda:eu-west-2:123456789012:function:locaria-fargate-maindev-dev-ecsRunner:1"}
}'),
('lambda_config', '{"ws_broadcast": {"arn": "arn:aws:lambda:eu-west-2:123456789012:function:locaria-ae-maindev-dev-eventWS",
                                     "region": "eu-west-2"}}'),
('file_upload', '{}'),
('crime_loader', '{"crime_loader": {"url": "https://data.police.uk/api/"}}');

INSERT INTO locaria_core.categories (category, attributes) VALUES ('Parks', '{}'), ('Events', '{}');

-- Rows as Locaria left them -------------------------------------------------------------------------
-- 1 loaded; 2 stuck in FARGATE_PROCESSING (its container died); 3 and 4 waiting for a task;
-- 5 stuck in DOWNLOAD_PROCESSING; 6 a finished download; 7 deleted; 8 failed
SELECT locaria_core.add_file('{"file_attributes": {"name": "parks.csv", "ext": "csv", "file_type": "text/csv",
    "upload": true, "bucket": "locaria-dev-maindev", "path": "incoming/", "id_as_filename": true}}');
SELECT locaria_core.update_file('{"id": 1, "status": "FARGATE_PROCESSING",
    "message": "Loading locaria-dev-maindev/incoming/1.csv to locaria_uploads.upload_file_1"}');
CREATE TABLE locaria_uploads.upload_file_1 (ogc_fid SERIAL PRIMARY KEY, name VARCHAR, wkb_geometry geometry(Point, 4326));
INSERT INTO locaria_uploads.upload_file_1 (name, wkb_geometry)
VALUES ('Hyde Park', 'SRID=4326;POINT(-0.1657 51.5073)'), ('Richmond Park', 'SRID=4326;POINT(-0.276 51.4424)');
SELECT locaria_core.update_file('{"id": 1, "status": "FARGATE_PROCESSED", "result": "Loading complete",
    "attributes": {"imported_table_name": "locaria_uploads.upload_file_1", "record_count": 2, "processing_time": 0.41,
                   "tables": ["locaria_uploads.upload_file_1"],
                   "result": {"schema": "locaria_uploads", "layers": ["parks"], "message": "OGR SUCCESS"}}}');
SELECT locaria_core.add_file('{"file_attributes": {"name": "roads.geojson", "ext": "geojson", "upload": true,
    "bucket": "locaria-dev-maindev", "path": "incoming/", "id_as_filename": true}}');
SELECT locaria_core.update_file('{"id": 2, "status": "FARGATE_PROCESSING",
    "message": "Loading locaria-dev-maindev/incoming/2.geojson to locaria_uploads.upload_file_2"}');
SELECT locaria_core.add_file('{"file_attributes": {"name": "parks.csv", "ext": "csv", "file_type": "text/csv",
    "upload": true, "bucket": "locaria-dev-maindev", "path": "incoming/", "id_as_filename": true}}');
SELECT locaria_core.locaria_internal_gateway('{"method": "request_download_data", "status": "DOWNLOAD_REQUESTED",
    "file_attributes": {"format": "geojson", "table": "locaria_uploads.upload_file_1", "type": "all_data",
                        "download": true, "name": "parks export"}}', '{"_groups": ["Admins"]}');
SELECT locaria_core.add_file('{"status": "DOWNLOAD_PROCESSING", "file_attributes": {"format": "csv",
    "table": "locaria_uploads.upload_file_1", "download": true, "name": "parks table"}}');
SELECT locaria_core.add_file('{"status": "DOWNLOAD_REQUESTED", "file_attributes": {"format": "xlsx",
    "categories": ["Parks"], "type": "all_data", "download": true, "name": "all parks"}}');
SELECT locaria_core.update_file('{"id": 6, "status": "DOWNLOAD_COMPLETED", "message": "Download Completed",
    "attributes": {"name": "all parks", "fileName": "6.xlsx"}}');
SELECT locaria_core.add_file('{"file_attributes": {"name": "old.csv", "ext": "csv", "upload": true}}');
SELECT locaria_core.delete_file('{"id": 7}');
SELECT locaria_core.add_file('{"file_attributes": {"name": "broken.csv", "ext": "csv", "upload": true}}');
SELECT locaria_core.update_file('{"id": 8, "status": "ERROR", "message": "OGR2OGR Error in execution"}');
UPDATE locaria_core.files SET last_update = '2025-06-02 09:15' WHERE id IN (2, 5);
