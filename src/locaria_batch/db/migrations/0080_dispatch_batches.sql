-- A dispatcher that is never the bottleneck: it claims up to its free slots in one statement,
-- records the handles of a whole claim in one, and reports the attempts whose processes ended
-- (failing those that did not report, releasing those that did) in one.  Hung jobs: each docker
-- says how long a running attempt may go without a heartbeat before it is stopped and retried.
--
-- Which writes wait for the disk: the bookkeeping of an attempt (its claim, handle, start and end)
-- commits without waiting for the WAL flush (synchronous_commit off, for that transaction only).
-- Losing one in a server crash is harmless, because every one is fenced by the attempt token and
-- repeated by reconciliation: a lost claim leaves the job queued and its process finds its token
-- stale; a lost start makes the attempt's result be refused, so it is retried; a lost end is seen
-- again as a process that has gone.  The job's verdict and its file's final status (job_finish)
-- wait for the disk, and with them everything the job wrote before.

ALTER TABLE locaria_core.dockers ADD COLUMN IF NOT EXISTS heartbeat_timeout INTEGER NOT NULL DEFAULT 30
    CHECK (heartbeat_timeout > 0);

-- Claim as many due jobs as p_owner has free slots out of p_concurrency.
CREATE OR REPLACE FUNCTION locaria_core.claim_free_slots(p_owner TEXT, p_concurrency INTEGER,
                                                         p_lease_seconds INTEGER, p_runner TEXT)
RETURNS SETOF locaria_core.jobs
LANGUAGE plpgsql AS $$
DECLARE
    n_free INTEGER;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);  -- bookkeeping: see above
    SELECT p_concurrency - count(*) INTO n_free FROM locaria_core.jobs
     WHERE lease_owner = p_owner AND state IN ('launching', 'running');
    IF n_free > 0 THEN
        RETURN QUERY SELECT * FROM locaria_core.claim_jobs(p_owner, n_free, p_lease_seconds, p_runner);
    END IF;
END;
$$;

-- The handles of launched attempts, each fenced by its attempt token (an attempt that already
-- ended keeps its handle too: its log is where the user looks).
CREATE OR REPLACE FUNCTION locaria_core.jobs_launched(p_owner TEXT, p_jobs BIGINT[], p_tokens UUID[],
                                                      p_handles JSONB[])
RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);  -- bookkeeping: see above
    WITH given AS (
        SELECT * FROM unnest(p_jobs, p_tokens, p_handles) AS g(job_id, token, handle)),
    recorded AS (
        UPDATE locaria_core.jobs j SET handle = given.handle, updated_at = clock_timestamp()
          FROM given
         WHERE j.id = given.job_id AND j.attempt_token = given.token AND j.lease_owner = p_owner
        RETURNING j.id, j.attempt, given.handle)
    INSERT INTO locaria_core.job_events (job_id, event, attempt, detail)
    SELECT id, 'launched', attempt, jsonb_build_object('handle', handle) FROM recorded;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- Attempts whose processes ended, as the runner saw them.  One still launching/running ended
-- without reporting: it fails (retried with backoff while attempts remain); a cancelled one has
-- been stopped; one that wrote its own verdict is released.  Returns what changed.
CREATE OR REPLACE FUNCTION locaria_core.jobs_ended(p_owner TEXT, p_jobs BIGINT[], p_tokens UUID[],
                                                   p_exit_codes INTEGER[], p_reasons TEXT[], p_details JSONB[])
RETURNS TABLE (job_id BIGINT, outcome TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    e RECORD;
    j locaria_core.jobs;
    new_state TEXT;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);  -- bookkeeping: see above
    FOR e IN SELECT * FROM unnest(p_jobs, p_tokens, p_exit_codes, p_reasons, p_details)
                         AS g(id, token, exit_code, reason, details) LOOP
        SELECT * INTO j FROM locaria_core.jobs WHERE id = e.id AND attempt_token = e.token;
        CONTINUE WHEN NOT FOUND;
        IF j.state IN ('launching', 'running') THEN
            new_state := locaria_core.job_attempt_failed(e.id, e.token, e.exit_code, e.reason,
                                                         COALESCE(e.details, '{}'::jsonb));
            IF new_state IS NOT NULL THEN
                job_id := e.id;
                outcome := new_state;
                RETURN NEXT;
            END IF;
        ELSIF j.lease_owner = p_owner THEN
            UPDATE locaria_core.jobs SET stop_requested = false, released = true, updated_at = clock_timestamp()
             WHERE id = e.id AND (stop_requested OR NOT released);
            IF j.stop_requested THEN
                job_id := e.id;
                outcome := 'stopped';
                RETURN NEXT;
            END IF;
        END IF;
    END LOOP;
END;
$$;

-- job_start again for the same attempt (its first answer was lost with the connection) returns
-- the same claim instead of calling the attempt stale.
CREATE OR REPLACE FUNCTION locaria_core.job_start(p_job BIGINT, p_token UUID) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    j locaria_core.jobs;
    d locaria_core.dockers;
    f locaria_core.files;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);  -- bookkeeping: see above
    UPDATE locaria_core.jobs
       SET state = 'running', started_at = clock_timestamp(), heartbeat_at = clock_timestamp(),
           updated_at = clock_timestamp()
     WHERE id = p_job AND attempt_token = p_token AND state = 'launching'
    RETURNING * INTO j;
    IF NOT FOUND THEN
        SELECT * INTO j FROM locaria_core.jobs WHERE id = p_job AND attempt_token = p_token AND state = 'running';
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        SELECT * INTO d FROM locaria_core.dockers WHERE name = j.docker;
        SELECT * INTO f FROM locaria_core.files WHERE id = j.file_id;
        RETURN jsonb_build_object('job', to_jsonb(j), 'docker', to_jsonb(d), 'file', to_jsonb(f));
    END IF;
    SELECT * INTO d FROM locaria_core.dockers WHERE name = j.docker;
    SELECT * INTO f FROM locaria_core.files WHERE id = j.file_id FOR UPDATE;
    IF NOT FOUND OR f.status = 'DELETED' THEN
        UPDATE locaria_core.jobs
           SET state = 'cancelled', finished_at = clock_timestamp(), updated_at = clock_timestamp(),
               error = format('file %s was deleted before the job started', j.file_id)
         WHERE id = p_job;
        RETURN NULL;
    END IF;
    IF d.running_status IS NOT NULL THEN
        PERFORM locaria_core.job_file_update(f.id, d.running_status,
            jsonb_build_object('message', format('%s started (job %s, attempt %s of %s)',
                                                 d.name, j.id, j.attempt, j.max_attempts)),
            jsonb_build_object('job_id', j.id));
        SELECT * INTO f FROM locaria_core.files WHERE id = j.file_id;
    END IF;
    RETURN jsonb_build_object('job', to_jsonb(j), 'docker', to_jsonb(d), 'file', to_jsonb(f));
END;
$$;
-- The dispatcher's role calls these as their owner: 0061_grants.sql lists them.
