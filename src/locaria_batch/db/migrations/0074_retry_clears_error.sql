-- A successful attempt clears the error and exit code an earlier one left on the file row.  (The
-- loader's, importer's and categories' functions are in grant_roles' lists, 0061.)


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
