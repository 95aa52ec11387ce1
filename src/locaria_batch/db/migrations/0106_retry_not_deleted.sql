-- retry_file brought a deleted file back: it registered the upload (or requested the download) again,
-- from the CLI, the console and jobs_retry alike, where file_cron has always passed DELETED rows by.
-- A deleted file now stays deleted; jobs_retry reports it among the skipped.
CREATE OR REPLACE FUNCTION locaria_core.retry_file(p_file BIGINT) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    f locaria_core.files;
    target TEXT;
BEGIN
    SELECT * INTO f FROM locaria_core.files WHERE id = p_file FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('error', format('file %s does not exist', p_file));
    END IF;
    IF f.status = 'DELETED' THEN
        RETURN jsonb_build_object('error', format('file %s is deleted; upload the file again to load it', p_file));
    END IF;
    IF EXISTS (SELECT 1 FROM locaria_core.jobs WHERE file_id = p_file AND state IN ('queued', 'launching', 'running')) THEN
        RETURN jsonb_build_object('error', format('file %s already has a job in progress', p_file));
    END IF;
    SELECT trigger_status INTO target FROM locaria_core.jobs WHERE file_id = p_file ORDER BY id DESC LIMIT 1;
    target := COALESCE(target, CASE WHEN f.attributes @> '{"download": true}' THEN 'DOWNLOAD_REQUESTED'
                                    ELSE 'REGISTERED' END);
    IF f.status = target THEN
        -- entering the same status fires nothing; step out of it first so the trigger sees an entry
        UPDATE locaria_core.files SET status = 'RETRY_REQUESTED' WHERE id = p_file;
    END IF;
    PERFORM locaria_core.update_file(jsonb_build_object('id', p_file, 'status', target, 'message', 'Retry requested'));
    RETURN jsonb_build_object('id', p_file, 'status', target);
END;
$$;
