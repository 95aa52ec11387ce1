-- Dispatch: the files trigger writes an outbox row (a job) in the user's own transaction;
-- dispatchers claim, launch, lease and reconcile jobs through the functions below.
-- Every write made on behalf of one attempt names the job id AND its attempt token (fencing).

-- job_events is append-only.
CREATE OR REPLACE FUNCTION locaria_core.job_events_append_only() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'locaria_core.job_events is append-only';
END;
$$;
DROP TRIGGER IF EXISTS job_events_append_only ON locaria_core.job_events;
CREATE TRIGGER job_events_append_only BEFORE UPDATE OR DELETE ON locaria_core.job_events
    FOR EACH ROW EXECUTE FUNCTION locaria_core.job_events_append_only();

-- Every state change of a job is recorded in job_events and wakes the dispatchers.
CREATE OR REPLACE FUNCTION locaria_core.jobs_audit() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO locaria_core.job_events (job_id, event, attempt, detail)
        VALUES (NEW.id, NEW.state, NEW.attempt, jsonb_strip_nulls(jsonb_build_object(
            'from', CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END,
            'file_id', NEW.file_id, 'docker', NEW.docker, 'owner', NEW.lease_owner,
            'exit_code', NEW.exit_code, 'error', NEW.error, 'handle', NEW.handle)));
        -- a queued job wants a dispatcher; a finished one frees a slot of its docker's concurrency
        IF NEW.state IN ('queued', 'succeeded', 'failed', 'cancelled') THEN
            PERFORM pg_notify('locaria_jobs', jsonb_build_object(
                'job_id', NEW.id, 'docker', NEW.docker, 'file_id', NEW.file_id, 'state', NEW.state,
                'run_after', NEW.run_after)::text);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS jobs_audit ON locaria_core.jobs;
CREATE TRIGGER jobs_audit AFTER INSERT OR UPDATE ON locaria_core.jobs
    FOR EACH ROW EXECUTE FUNCTION locaria_core.jobs_audit();

-- files_trigger: on insert and on every status change, notify {id, status}; when the row
-- enters a docker's trigger status, enqueue that docker's job.  A problem here is logged,
-- never raised: dispatch must not fail the user's write.
CREATE OR REPLACE FUNCTION locaria_core.files_trigger() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
DECLARE
    d RECORD;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('locaria_file_status', jsonb_build_object('id', NEW.id, 'status', NEW.status)::text);
    BEGIN
        FOR d IN SELECT name, max_attempts FROM locaria_core.dockers
                  WHERE enabled AND NEW.status = ANY (trigger_statuses) LOOP
            INSERT INTO locaria_core.jobs (file_id, docker, trigger_status, max_attempts)
            VALUES (NEW.id, d.name, NEW.status, d.max_attempts)
            ON CONFLICT (file_id, docker) WHERE state IN ('queued', 'launching', 'running') DO NOTHING;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        PERFORM locaria_core.log(jsonb_build_object('method', 'file_trigger', 'file_id', NEW.id,
                                                    'status', NEW.status, 'sql_error', SQLERRM || ':' || SQLSTATE),
                                 'job enqueue failed');
    END;
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS files_trigger ON locaria_core.files;
CREATE TRIGGER files_trigger AFTER INSERT OR UPDATE OF status ON locaria_core.files
    FOR EACH ROW EXECUTE FUNCTION locaria_core.files_trigger();

-- Claim up to p_max due jobs for p_owner, honouring each docker's concurrency across all
-- dispatchers (a per-docker advisory lock serialises the count-then-claim).
CREATE OR REPLACE FUNCTION locaria_core.claim_jobs(p_owner TEXT, p_max INTEGER, p_lease_seconds INTEGER,
                                                   p_runner TEXT)
RETURNS SETOF locaria_core.jobs
LANGUAGE plpgsql AS $$
DECLARE
    d RECORD;
    n_active INTEGER;
    n_take INTEGER;
    n_got INTEGER;
    remaining INTEGER := p_max;
BEGIN
    FOR d IN SELECT k.name, k.concurrency FROM locaria_core.dockers k
              WHERE k.enabled AND (k.runner IS NULL OR k.runner = p_runner)
                AND EXISTS (SELECT 1 FROM locaria_core.jobs j
                             WHERE j.docker = k.name AND j.state = 'queued' AND j.run_after <= clock_timestamp())
              ORDER BY k.name LOOP
        EXIT WHEN remaining <= 0;
        PERFORM pg_advisory_xact_lock(hashtext('locaria_batch.docker'), hashtext(d.name));
        SELECT count(*) INTO n_active FROM locaria_core.jobs
         WHERE docker = d.name AND state IN ('launching', 'running');
        n_take := LEAST(remaining, d.concurrency - n_active);
        CONTINUE WHEN n_take <= 0;
        RETURN QUERY
            WITH picked AS (
                SELECT id FROM locaria_core.jobs
                 WHERE docker = d.name AND state = 'queued' AND run_after <= clock_timestamp()
                 ORDER BY run_after, id
                 LIMIT n_take
                   FOR UPDATE SKIP LOCKED)
            UPDATE locaria_core.jobs j
               SET state = 'launching', attempt = j.attempt + 1, attempt_token = gen_random_uuid(),
                   lease_owner = p_owner, lease_expires = clock_timestamp() + make_interval(secs => p_lease_seconds),
                   runner = p_runner, launched_at = clock_timestamp(), started_at = NULL, heartbeat_at = NULL,
                   handle = NULL, exit_code = NULL, stop_requested = false, updated_at = clock_timestamp()
              FROM picked
             WHERE j.id = picked.id
            RETURNING j.*;
        GET DIAGNOSTICS n_got = ROW_COUNT;
        remaining := remaining - n_got;
    END LOOP;
END;
$$;

-- The dispatcher records what it launched (pid / container id / task ARN).
CREATE OR REPLACE FUNCTION locaria_core.job_launched(p_job BIGINT, p_token UUID, p_handle JSONB) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE locaria_core.jobs SET handle = p_handle, updated_at = clock_timestamp()
     WHERE id = p_job AND attempt_token = p_token AND state IN ('launching', 'running', 'cancelled');
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO locaria_core.job_events (job_id, event, attempt, detail)
    SELECT id, 'launched', attempt, jsonb_build_object('handle', p_handle) FROM locaria_core.jobs WHERE id = p_job;
    RETURN true;
END;
$$;

CREATE OR REPLACE FUNCTION locaria_core.renew_leases(p_owner TEXT, p_lease_seconds INTEGER) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
BEGIN
    UPDATE locaria_core.jobs SET lease_expires = clock_timestamp() + make_interval(secs => p_lease_seconds)
     WHERE lease_owner = p_owner AND (state IN ('launching', 'running') OR stop_requested);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- Take over in-flight jobs whose dispatcher stopped renewing its lease.
CREATE OR REPLACE FUNCTION locaria_core.adopt_expired_jobs(p_owner TEXT, p_lease_seconds INTEGER, p_max INTEGER,
                                                           p_runner TEXT)
RETURNS SETOF locaria_core.jobs
LANGUAGE sql AS $$
    WITH picked AS (
        SELECT id FROM locaria_core.jobs
         WHERE (state IN ('launching', 'running') OR stop_requested)
           AND lease_expires < clock_timestamp()
           AND runner = p_runner
         ORDER BY id
         LIMIT p_max
           FOR UPDATE SKIP LOCKED),
    adopted AS (
        UPDATE locaria_core.jobs j
           SET lease_owner = p_owner, lease_expires = clock_timestamp() + make_interval(secs => p_lease_seconds),
               updated_at = clock_timestamp()
          FROM picked
         WHERE j.id = picked.id
        RETURNING j.*),
    logged AS (
        INSERT INTO locaria_core.job_events (job_id, event, attempt, detail)
        SELECT id, 'adopted', attempt, jsonb_build_object('owner', p_owner) FROM adopted)
    SELECT * FROM adopted
$$;

-- Write the file's status with a log entry.  A file row that has gone stays gone, and a
-- DELETED one stays DELETED (a job finishing late must not bring it back).
CREATE OR REPLACE FUNCTION locaria_core.job_file_update(p_file BIGINT, p_status TEXT, p_log JSONB,
                                                        p_attributes JSONB DEFAULT NULL) RETURNS VOID
LANGUAGE sql AS $$
    SELECT locaria_core.update_file(COALESCE(p_log, '{}'::jsonb)
                                    || jsonb_strip_nulls(jsonb_build_object(
                                           'id', p_file, 'attributes', p_attributes,
                                           'status', CASE WHEN f.status = 'DELETED' THEN NULL ELSE p_status END)))
      FROM locaria_core.files f WHERE f.id = p_file
$$;

-- The job process claims its attempt.  Returns NULL for a stale, cancelled or orphaned attempt
-- (the process must then exit without touching anything).
CREATE OR REPLACE FUNCTION locaria_core.job_start(p_job BIGINT, p_token UUID) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    j locaria_core.jobs;
    d locaria_core.dockers;
    f locaria_core.files;
BEGIN
    UPDATE locaria_core.jobs
       SET state = 'running', started_at = clock_timestamp(), heartbeat_at = clock_timestamp(),
           updated_at = clock_timestamp()
     WHERE id = p_job AND attempt_token = p_token AND state = 'launching'
    RETURNING * INTO j;
    IF NOT FOUND THEN
        RETURN NULL;
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

-- Heartbeat and progress from a running attempt.  FALSE tells the job it has been cancelled
-- or superseded and must stop.
CREATE OR REPLACE FUNCTION locaria_core.job_heartbeat(p_job BIGINT, p_token UUID, p_progress JSONB DEFAULT NULL)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    f_id BIGINT;
BEGIN
    UPDATE locaria_core.jobs
       SET heartbeat_at = clock_timestamp(), progress = COALESCE(p_progress, progress)
     WHERE id = p_job AND attempt_token = p_token AND state = 'running'
    RETURNING file_id INTO f_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_progress IS NOT NULL THEN
        -- progress is a live value, not an audit entry: merge it without a log_messages line
        UPDATE locaria_core.files SET attributes = attributes || jsonb_build_object('progress', p_progress)
         WHERE id = f_id;
    END IF;
    RETURN true;
END;
$$;

-- Backoff before attempt n+1: base * 2^(n-1), capped at an hour, with 50-100 % jitter.
CREATE OR REPLACE FUNCTION locaria_core.retry_delay(p_base DOUBLE PRECISION, p_attempt INTEGER) RETURNS INTERVAL
LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => LEAST(3600, p_base * power(2, GREATEST(p_attempt - 1, 0)))
                                 * (0.5 + random() * 0.5))
$$;

-- An attempt ended without success (crash, kill, timeout, failed launch, retryable error):
-- retry with backoff while attempts remain, else fail the job and its file.  Returns the new state.
CREATE OR REPLACE FUNCTION locaria_core.job_attempt_failed(p_job BIGINT, p_token UUID, p_exit_code INTEGER,
                                                           p_reason TEXT, p_details JSONB DEFAULT '{}'::jsonb)
RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    j locaria_core.jobs;
    d locaria_core.dockers;
    delay INTERVAL;
    detail TEXT := p_reason || CASE WHEN p_exit_code IS NOT NULL THEN format(' (exit code %s)', p_exit_code) ELSE '' END;
BEGIN
    SELECT * INTO j FROM locaria_core.jobs
     WHERE id = p_job AND attempt_token = p_token AND state IN ('launching', 'running') FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO d FROM locaria_core.dockers WHERE name = j.docker;
    IF j.attempt < j.max_attempts THEN
        delay := locaria_core.retry_delay(d.retry_base_seconds, j.attempt);
        UPDATE locaria_core.jobs
           SET state = 'queued', run_after = clock_timestamp() + delay, attempt_token = NULL,
               lease_owner = NULL, lease_expires = NULL, exit_code = p_exit_code, error = p_reason,
               updated_at = clock_timestamp()
         WHERE id = p_job;
        PERFORM locaria_core.job_file_update(j.file_id, j.trigger_status,
            jsonb_build_object('message', format('%s attempt %s of %s failed: %s; retrying in %s s',
                                                 d.name, j.attempt, j.max_attempts, detail,
                                                 round(extract(epoch FROM delay)::numeric, 1)))
            || p_details);
        RETURN 'queued';
    END IF;
    UPDATE locaria_core.jobs
       SET state = 'failed', finished_at = clock_timestamp(), exit_code = p_exit_code, error = p_reason,
           updated_at = clock_timestamp()
     WHERE id = p_job;
    PERFORM locaria_core.job_file_update(j.file_id, d.error_status,
        jsonb_build_object('message', format('%s failed after %s attempt(s): %s', d.name, j.attempt, detail))
        || p_details,
        jsonb_strip_nulls(jsonb_build_object('error', detail, 'exit_code', p_exit_code)));
    RETURN 'failed';
END;
$$;

-- A launch that never started anything (capacity, a lost launch): requeue without spending an attempt.
CREATE OR REPLACE FUNCTION locaria_core.job_requeue(p_job BIGINT, p_token UUID, p_reason TEXT,
                                                    p_delay_seconds DOUBLE PRECISION DEFAULT 0) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE locaria_core.jobs
       SET state = 'queued', attempt = GREATEST(attempt - 1, 0), attempt_token = NULL, lease_owner = NULL,
           lease_expires = NULL, handle = NULL, error = p_reason,
           run_after = clock_timestamp() + make_interval(secs => p_delay_seconds), updated_at = clock_timestamp()
     WHERE id = p_job AND attempt_token = p_token AND state = 'launching';
    RETURN FOUND;
END;
$$;

-- The job's own verdict, in one transaction with the file's final status and result attributes.
-- p_outcome: {state: succeeded|failed|retry, status, log: {...}, attributes: {...}, error, exit_code}
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
    PERFORM locaria_core.job_file_update(
        j.file_id,
        COALESCE(p_outcome->>'status', CASE WHEN verdict = 'succeeded' THEN d.success_status ELSE d.error_status END),
        COALESCE(p_outcome->'log', '{}'::jsonb),
        (COALESCE(p_outcome->'attributes', '{}'::jsonb) - 'progress')
            || CASE WHEN verdict = 'succeeded' THEN '{"error": null}'::jsonb ELSE '{}'::jsonb END);
    RETURN true;
END;
$$;

-- Cancel every active job of a file.  Queued jobs end at once; launched ones are flagged
-- so that their dispatcher stops the process/container/task.
CREATE OR REPLACE FUNCTION locaria_core.cancel_file_jobs(p_file BIGINT, p_reason TEXT DEFAULT 'cancelled by user')
RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    j RECORD;
    ids JSONB := '[]'::jsonb;
BEGIN
    FOR j IN UPDATE locaria_core.jobs SET stop_requested = (state IN ('launching', 'running')),
                    state = 'cancelled', finished_at = clock_timestamp(), error = p_reason,
                    updated_at = clock_timestamp()
              WHERE file_id = p_file AND state IN ('queued', 'launching', 'running')
          RETURNING id, docker LOOP
        ids := ids || to_jsonb(j.id);
        PERFORM locaria_core.job_file_update(p_file, d.cancelled_status,
                                             jsonb_build_object('message', format('%s cancelled: %s', j.docker, p_reason)))
           FROM locaria_core.dockers d WHERE d.name = j.docker;
    END LOOP;
    RETURN jsonb_build_object('id', p_file, 'cancelled_jobs', ids);
END;
$$;

-- Re-run a file: put it back into the trigger status of the docker that last worked on it.
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
