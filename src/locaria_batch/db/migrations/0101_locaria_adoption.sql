-- Taking over the rows of a Locaria database (`locaria-batch locaria adopt`) and handing them back
-- (`locaria-batch locaria rollback`).

-- Locaria's files table allows rows without attributes; every function here merges into them.
UPDATE locaria_core.files SET attributes = '{}'::jsonb WHERE attributes IS NULL;
ALTER TABLE locaria_core.files ALTER COLUMN attributes SET DEFAULT '{}'::jsonb;
ALTER TABLE locaria_core.files ALTER COLUMN attributes SET NOT NULL;

-- Enter p_status with a log entry, so that the files trigger queues that status's job even when the
-- row is in it already (it then steps out first, as retry_file does).
CREATE OR REPLACE FUNCTION locaria_core.enter_status(p_file BIGINT, p_status TEXT, p_message TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM locaria_core.files WHERE id = p_file AND status = p_status) THEN
        UPDATE locaria_core.files SET status = 'RETRY_REQUESTED' WHERE id = p_file;
    END IF;
    PERFORM locaria_core.update_file(jsonb_build_object('id', p_file, 'status', p_status, 'message', p_message));
END;
$$;

-- The rows Locaria's batch system left: those stuck in a running status (FARGATE_PROCESSING,
-- DOWNLOAD_PROCESSING: their container died and nothing ever moved them on) go back to their
-- docker's trigger status, which queues a job, or with p_fail to its error status with a message;
-- those waiting in a trigger status (Locaria's next task would have taken them) get their job.
-- Returns {requeued: [{id, from, to}], failed: [...], queued: [{id, status}]}.
CREATE OR REPLACE FUNCTION locaria_core.take_over_files(p_fail BOOLEAN) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    f RECORD;
    requeued JSONB := '[]'::jsonb;
    failed JSONB := '[]'::jsonb;
    queued JSONB := '[]'::jsonb;
    since TEXT;
BEGIN
    FOR f IN SELECT DISTINCT ON (files.id) files.id, files.status, files.last_update, d.trigger_statuses[1] AS entry,
                    d.error_status
               FROM locaria_core.files
               JOIN locaria_core.dockers d ON d.running_status = files.status AND d.enabled
              WHERE files.status IN ('FARGATE_PROCESSING', 'DOWNLOAD_PROCESSING')
                AND NOT EXISTS (SELECT 1 FROM locaria_core.jobs j
                                 WHERE j.file_id = files.id AND j.state IN ('queued', 'launching', 'running'))
              ORDER BY files.id, d.name LOOP
        since := to_char(f.last_update, 'DD/MM/YYYY HH24:MI');
        IF p_fail THEN
            PERFORM locaria_core.update_file(jsonb_build_object('id', f.id, 'status', f.error_status, 'message',
                format('was stuck in %s since %s when Locaria Batch took over; `locaria-batch files retry %s` runs it again',
                       f.status, since, f.id)));
            failed := failed || jsonb_build_object('id', f.id, 'from', f.status, 'to', f.error_status);
        ELSE
            PERFORM locaria_core.enter_status(f.id, f.entry,
                format('was stuck in %s since %s: queued again by Locaria Batch', f.status, since));
            requeued := requeued || jsonb_build_object('id', f.id, 'from', f.status, 'to', f.entry);
        END IF;
    END LOOP;
    FOR f IN SELECT files.id, files.status FROM locaria_core.files
              WHERE files.status IN (SELECT unnest(trigger_statuses) FROM locaria_core.dockers WHERE enabled)
                AND NOT EXISTS (SELECT 1 FROM locaria_core.jobs j
                                 WHERE j.file_id = files.id AND j.state IN ('queued', 'launching', 'running'))
                AND NOT (files.id = ANY (SELECT (r->>'id')::BIGINT FROM jsonb_array_elements(requeued) r))
              ORDER BY files.id LOOP
        PERFORM locaria_core.enter_status(f.id, f.status, 'queued by Locaria Batch, which took over from Locaria');
        queued := queued || jsonb_build_object('id', f.id, 'status', f.status);
    END LOOP;
    RETURN jsonb_build_object('requeued', requeued, 'failed', failed, 'queued', queued);
END;
$$;

-- Before the files go back to Locaria's batch system: their queued jobs end (the files keep their
-- status, which Locaria's next task takes).  Refuses while a job is launching or running.
-- Returns {released: [{id, status}], uploading: [ids]}.
CREATE OR REPLACE FUNCTION locaria_core.hand_back_files() RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    running JSONB;
    released JSONB;
BEGIN
    SELECT jsonb_agg(DISTINCT file_id) INTO running FROM locaria_core.jobs WHERE state IN ('launching', 'running');
    IF running IS NOT NULL THEN
        RETURN jsonb_build_object('error', 'jobs are running', 'running', running);
    END IF;
    WITH ended AS (
        UPDATE locaria_core.jobs SET state = 'cancelled', finished_at = clock_timestamp(),
               error = 'handed back to Locaria''s batch system', updated_at = clock_timestamp()
         WHERE state = 'queued' RETURNING file_id)
    SELECT COALESCE(jsonb_agg(jsonb_build_object('id', f.id, 'status', f.status) ORDER BY f.id), '[]'::jsonb)
      INTO released FROM locaria_core.files f WHERE f.id IN (SELECT file_id FROM ended);
    RETURN jsonb_build_object('released', released, 'uploading', COALESCE(
        (SELECT jsonb_agg(id ORDER BY id) FROM locaria_core.files WHERE status = 'UPLOADING'), '[]'::jsonb));
END;
$$;
