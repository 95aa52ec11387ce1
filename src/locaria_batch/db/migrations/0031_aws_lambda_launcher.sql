-- Optional, for Aurora/RDS PostgreSQL with the aws_lambda extension: wake the launcher Lambda as
-- soon as a job is queued instead of waiting for its one-minute schedule.  The invocation is
-- asynchronous ('Event') and carries only the job's identity; the launcher reads everything else
-- from the database, and copes with running before this transaction commits (it waits for the
-- job to become visible; the schedule catches anything it misses).  Nothing here ever fails the
-- user's write.

-- The original's aws_lambda_interface: config row parameters.fargate_config (when `fargate` is
-- set) or parameters.<config> (default lambda_config); ARN and region from config[function].
-- Returns {status_code, payload, executed_version, log_result}, or {error, debug, debug1, sql_error}.
CREATE OR REPLACE FUNCTION locaria_core.aws_lambda_interface(lambda_parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    config_name TEXT := CASE WHEN COALESCE(lambda_parameters->>'fargate', '') <> '' THEN 'fargate_config'
                             ELSE COALESCE(lambda_parameters->>'config', 'lambda_config') END;
    target JSONB;
    arn TEXT;
    res RECORD;
BEGIN
    SELECT parameter->(lambda_parameters->>'function') INTO target
      FROM locaria_core.parameters WHERE parameter_name = config_name AND usage = 'SYSTEM';
    arn := target->>'arn';
    IF arn IS NULL THEN
        RAISE EXCEPTION 'parameters.%.% has no arn', config_name, lambda_parameters->>'function';
    END IF;
    SELECT * INTO res FROM aws_lambda.invoke(
        aws_commons.create_lambda_function_arn(arn, target->>'region'),
        COALESCE(lambda_parameters->'parameters', target, '{}'::jsonb),
        COALESCE(lambda_parameters->>'mode', target->>'mode', 'Event'),
        COALESCE(lambda_parameters->>'log_type', target->>'log', 'None'));
    RETURN jsonb_build_object('status_code', res.status_code, 'payload', res.payload,
                              'executed_version', res.executed_version, 'log_result', res.log_result);
EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('error', 'aws_lambda_interface error', 'debug', lambda_parameters, 'debug1', arn,
                              'sql_error', SQLERRM || ':' || SQLSTATE);
END;
$$;

-- AFTER INSERT on jobs: invoke the launcher named by parameters.fargate_config.<docker>.arn.
CREATE OR REPLACE FUNCTION locaria_core.jobs_wake_launcher() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
DECLARE
    ret JSONB;
BEGIN
    IF EXISTS (SELECT 1 FROM locaria_core.parameters
                WHERE parameter_name = 'fargate_config' AND usage = 'SYSTEM'
                  AND parameter->NEW.docker->>'arn' IS NOT NULL) THEN
        ret := locaria_core.aws_lambda_interface(jsonb_build_object(
            'fargate', 'true', 'function', NEW.docker, 'mode', 'Event',
            'parameters', jsonb_build_object('source', 'locaria_core.jobs', 'job_id', NEW.id,
                                             'file_id', NEW.file_id, 'docker', NEW.docker)));
        IF ret ? 'error' THEN
            PERFORM locaria_core.log(ret || jsonb_build_object('method', 'launcher_hook', 'job_id', NEW.id),
                                     'launcher not invoked; the schedule will launch the job');
        END IF;
    END IF;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    PERFORM locaria_core.log(jsonb_build_object('method', 'launcher_hook', 'job_id', NEW.id,
                                                'sql_error', SQLERRM || ':' || SQLSTATE),
                             'launcher not invoked; the schedule will launch the job');
    RETURN NULL;
END;
$$;

-- Creates the trigger when aws_lambda.invoke exists; returns whether it did.
CREATE OR REPLACE FUNCTION locaria_core.install_launcher_hook() RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    DROP TRIGGER IF EXISTS jobs_wake_launcher ON locaria_core.jobs;
    IF NOT EXISTS (
        SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'aws_lambda' AND p.proname = 'invoke') THEN
        RETURN false;
    END IF;
    CREATE TRIGGER jobs_wake_launcher AFTER INSERT ON locaria_core.jobs
        FOR EACH ROW EXECUTE FUNCTION locaria_core.jobs_wake_launcher();
    RETURN true;
END;
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'aws_lambda') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS aws_lambda CASCADE;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'aws_lambda is available but could not be created (%); the launcher runs on its schedule only',
                SQLERRM;
        END;
    END IF;
    PERFORM locaria_core.install_launcher_hook();
END;
$$;
