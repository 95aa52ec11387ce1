-- Operating the queue: retry and cancel many jobs at once, and prune finished history.
--
-- job_events stays append-only for everyone, with one fenced way through: prune_jobs deletes the
-- events of jobs it has itself just deleted, inside its own transaction (a transaction-local flag
-- plus "the job row is gone"; an UPDATE of an event is never allowed).

CREATE OR REPLACE FUNCTION locaria_core.job_events_append_only() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('locaria_core.pruning', true) = 'on'
       AND NOT EXISTS (SELECT 1 FROM locaria_core.jobs WHERE id = OLD.job_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'locaria_core.job_events is append-only';
END;
$$;

-- Finding what to prune walks finished jobs by age; the console's and the metrics' "last hour"
-- figures walk the same index.
CREATE INDEX IF NOT EXISTS jobs_finished_idx ON locaria_core.jobs (finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
-- The console's files page filters by status and pages by id (keyset, newest first).
CREATE INDEX IF NOT EXISTS files_status_id_idx ON locaria_core.files (status, id);

-- Re-run the files of these jobs (each file once, through retry_file).  A file that has a job in
-- progress, or no longer exists, is reported and skipped; the others are retried.
CREATE OR REPLACE FUNCTION locaria_core.jobs_retry(p_jobs BIGINT[]) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    f BIGINT;
    outcome JSONB;
    retried JSONB := '[]'::jsonb;
    skipped JSONB := '[]'::jsonb;
BEGIN
    FOR f IN SELECT DISTINCT file_id FROM locaria_core.jobs WHERE id = ANY (p_jobs) ORDER BY file_id LOOP
        outcome := locaria_core.retry_file(f);
        IF outcome ? 'error' THEN
            skipped := skipped || jsonb_build_object('file_id', f, 'reason', outcome->>'error');
        ELSE
            retried := retried || jsonb_build_object('file_id', f, 'status', outcome->>'status');
        END IF;
    END LOOP;
    RETURN jsonb_build_object('retried', retried, 'skipped', skipped);
END;
$$;

-- Cancel these jobs: queued ones end at once, launched ones are flagged for their dispatcher to
-- stop (cancel_file_jobs of each of their files).  Finished jobs are reported and skipped.
CREATE OR REPLACE FUNCTION locaria_core.jobs_cancel(p_jobs BIGINT[], p_reason TEXT DEFAULT 'cancelled by user')
RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    f BIGINT;
    cancelled JSONB := '[]'::jsonb;
BEGIN
    FOR f IN SELECT DISTINCT file_id FROM locaria_core.jobs
              WHERE id = ANY (p_jobs) AND state IN ('queued', 'launching', 'running') ORDER BY file_id LOOP
        cancelled := cancelled || (locaria_core.cancel_file_jobs(f, p_reason)->'cancelled_jobs');
    END LOOP;
    RETURN jsonb_build_object(
        'cancelled', cancelled,
        'skipped', COALESCE((SELECT jsonb_agg(id ORDER BY id) FROM locaria_core.jobs
                              WHERE id = ANY (p_jobs) AND NOT (to_jsonb(id) <@ cancelled)), '[]'::jsonb));
END;
$$;

-- Delete up to p_batch finished jobs older than p_older_than, with their events, in one short
-- transaction; returns each deleted job with the handles of its attempts (so that the caller can
-- remove their log files).  Kept: the newest job of every file (retry_file and `files show` read
-- it), jobs still flagged for their dispatcher to stop, and finished containers a living
-- dispatcher has yet to remove.  Rows someone holds are skipped (SKIP LOCKED) and a lock that
-- cannot be had quickly ends the batch instead of waiting: a dispatcher never waits on a prune.
CREATE OR REPLACE FUNCTION locaria_core.prune_jobs(p_older_than INTERVAL, p_batch INTEGER)
RETURNS TABLE (job_id BIGINT, handles JSONB)
LANGUAGE plpgsql
SET lock_timeout = '1s'
AS $$
DECLARE
    ids BIGINT[];
BEGIN
    SELECT array_agg(picked.id) INTO ids FROM (
        SELECT j.id
          FROM locaria_core.jobs j
         WHERE j.state IN ('succeeded', 'failed', 'cancelled')
           AND j.finished_at < clock_timestamp() - p_older_than
           AND NOT j.stop_requested
           AND (j.released OR j.handle IS NULL
                OR NOT EXISTS (SELECT 1 FROM locaria_core.dispatchers_alive a WHERE a.owner = j.lease_owner))
           AND EXISTS (SELECT 1 FROM locaria_core.jobs newer WHERE newer.file_id = j.file_id AND newer.id > j.id)
         ORDER BY j.finished_at
         LIMIT p_batch
           FOR UPDATE OF j SKIP LOCKED) picked;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT j.id,
               COALESCE((SELECT jsonb_agg(DISTINCT h.handle) FROM (
                             SELECT e.detail->'handle' AS handle FROM locaria_core.job_events e
                              WHERE e.job_id = j.id AND e.detail ? 'handle'
                             UNION SELECT j.handle) h
                          WHERE jsonb_typeof(h.handle) = 'object'), '[]'::jsonb)
          FROM locaria_core.jobs j WHERE j.id = ANY (ids);
    DELETE FROM locaria_core.jobs j WHERE j.id = ANY (ids);
    PERFORM set_config('locaria_core.pruning', 'on', true);
    DELETE FROM locaria_core.job_events e WHERE e.job_id = ANY (ids);
    PERFORM set_config('locaria_core.pruning', 'off', true);
END;
$$;
