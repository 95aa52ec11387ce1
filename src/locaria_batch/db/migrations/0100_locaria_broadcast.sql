-- Locaria's admin pages refresh a file's line when the ws_broadcast Lambda (parameters.lambda_config)
-- sends them a "fileStatus" packet, which Locaria's own files trigger did on every insert and status
-- change.  Where that Lambda is configured (a Locaria database taken over by `locaria adopt`), the
-- same packet goes out, now with the file's id; anywhere else this does nothing.  The invocation is
-- asynchronous ('Event') but made inside the writing transaction, as Locaria made it; a failure is
-- logged (type files_broadcast), never raised: a broadcast must not fail the user's write.
CREATE OR REPLACE FUNCTION locaria_core.files_broadcast() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
DECLARE
    ret JSONB;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM locaria_core.parameters
                WHERE parameter_name = 'lambda_config' AND usage = 'SYSTEM'
                  AND parameter->'ws_broadcast'->>'arn' IS NOT NULL) THEN
        ret := locaria_core.aws_lambda_interface(jsonb_build_object(
            'function', 'ws_broadcast', 'mode', 'Event',
            'parameters', jsonb_build_object('group', 'Admins', 'packet', jsonb_build_object(
                'queue', 'fileStatus',
                'packet', jsonb_build_object('message', 'statusChange', 'status', NEW.status, 'id', NEW.id)))));
        IF ret ? 'error' THEN
            PERFORM locaria_core.log(ret || jsonb_build_object('method', 'files_broadcast', 'file_id', NEW.id),
                                     'status broadcast not sent');
        END IF;
    END IF;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    PERFORM locaria_core.log(jsonb_build_object('method', 'files_broadcast', 'file_id', NEW.id,
                                                'sql_error', SQLERRM || ':' || SQLSTATE),
                             'status broadcast not sent');
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS files_broadcast ON locaria_core.files;
CREATE TRIGGER files_broadcast AFTER INSERT OR UPDATE OF status ON locaria_core.files
    FOR EACH ROW EXECUTE FUNCTION locaria_core.files_broadcast();
