-- delete_file changed a file's status without a word in its log_messages, where every other change
-- writes one: the deletion is now logged like them (through update_file).
CREATE OR REPLACE FUNCTION locaria_core.delete_file(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    v_id BIGINT := (parameters->>'id')::BIGINT;
BEGIN
    PERFORM 1 FROM locaria_core.files WHERE id = v_id AND status <> 'DELETED' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('error', 'No rows deleted,', 'id', parameters->'id');
    END IF;
    IF to_regprocedure('locaria_core.cancel_file_jobs(bigint,text)') IS NOT NULL THEN
        -- a deleted file's job has nothing left to do
        PERFORM locaria_core.cancel_file_jobs(v_id, 'the file was deleted');
    END IF;
    PERFORM locaria_core.update_file(jsonb_build_object('id', v_id, 'status', 'DELETED', 'message', 'File deleted'));
    RETURN jsonb_build_object('id', v_id, 'message', 'file marked as deleted');
END;
$$;
