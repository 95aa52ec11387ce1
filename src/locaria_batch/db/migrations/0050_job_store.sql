-- The job store: the writes dispatchers made with inline statements become named functions,
-- a finished attempt's leftovers are marked released in a column of their own (not a key inside the
-- runner's handle), and each serving dispatcher registers itself, holding an advisory lock for as
-- long as its session lives, so "is a worker attached?" has an exact answer.

ALTER TABLE locaria_core.jobs ADD COLUMN IF NOT EXISTS released BOOLEAN NOT NULL DEFAULT false;
UPDATE locaria_core.jobs SET released = true, handle = handle - 'released' WHERE handle ? 'released';
DROP INDEX IF EXISTS locaria_core.jobs_unreleased_idx;
CREATE INDEX IF NOT EXISTS jobs_unreleased_idx ON locaria_core.jobs (lease_owner)
    WHERE state IN ('succeeded', 'failed', 'cancelled') AND handle IS NOT NULL AND lease_owner IS NOT NULL
      AND NOT stop_requested AND NOT released;

-- A new attempt starts with nothing to release.
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
                   handle = NULL, released = false, exit_code = NULL, stop_requested = false,
                   updated_at = clock_timestamp()
              FROM picked
             WHERE j.id = picked.id
            RETURNING j.*;
        GET DIAGNOSTICS n_got = ROW_COUNT;
        remaining := remaining - n_got;
    END LOOP;
END;
$$;

-- The runner removed what these finished attempts left behind (a stopped container): one statement
-- for all of them.  Only the dispatcher that held them may say so.
CREATE OR REPLACE FUNCTION locaria_core.jobs_released(p_owner TEXT, p_jobs BIGINT[]) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
BEGIN
    UPDATE locaria_core.jobs SET released = true
     WHERE id = ANY (p_jobs) AND lease_owner = p_owner AND state IN ('succeeded', 'failed', 'cancelled')
       AND NOT released;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- A cancelled attempt's process/container/task has been stopped.
CREATE OR REPLACE FUNCTION locaria_core.job_stop_done(p_job BIGINT, p_owner TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE locaria_core.jobs SET stop_requested = false, updated_at = clock_timestamp()
     WHERE id = p_job AND lease_owner = p_owner AND stop_requested;
    RETURN FOUND;
END;
$$;

-- A dispatcher that stops hands its in-flight jobs over at once instead of making others wait out
-- the lease.
CREATE OR REPLACE FUNCTION locaria_core.release_leases(p_owner TEXT) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
BEGIN
    UPDATE locaria_core.jobs SET lease_expires = clock_timestamp()
     WHERE lease_owner = p_owner AND (state IN ('launching', 'running') OR stop_requested);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- The dispatchers serving this database.  A row says who it is and when it last beat; it is alive
-- while its session holds the advisory lock (class 0x10CA7) it took when it attached.
CREATE TABLE IF NOT EXISTS locaria_core.dispatchers (
    owner        TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    runner       TEXT NOT NULL,
    concurrency  INTEGER NOT NULL,
    backend_pid  INTEGER NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    stopped_at   TIMESTAMPTZ
);

CREATE OR REPLACE FUNCTION locaria_core.dispatcher_attach(p_owner TEXT, p_host TEXT, p_pid INTEGER, p_runner TEXT,
                                                          p_concurrency INTEGER) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_lock(68775, hashtext(p_owner));
    INSERT INTO locaria_core.dispatchers (owner, host, pid, runner, concurrency, backend_pid)
    VALUES (p_owner, p_host, p_pid, p_runner, p_concurrency, pg_backend_pid())
    ON CONFLICT (owner) DO UPDATE
       SET backend_pid = pg_backend_pid(), heartbeat_at = clock_timestamp(), stopped_at = NULL,
           runner = EXCLUDED.runner, concurrency = EXCLUDED.concurrency;
END;
$$;

CREATE OR REPLACE FUNCTION locaria_core.dispatcher_beat(p_owner TEXT) RETURNS VOID
LANGUAGE sql AS $$
    UPDATE locaria_core.dispatchers SET heartbeat_at = clock_timestamp() WHERE owner = p_owner
$$;

CREATE OR REPLACE FUNCTION locaria_core.dispatcher_detach(p_owner TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE locaria_core.dispatchers SET stopped_at = clock_timestamp() WHERE owner = p_owner;
    PERFORM pg_advisory_unlock(68775, hashtext(p_owner));
END;
$$;

CREATE OR REPLACE VIEW locaria_core.dispatchers_alive AS
    SELECT d.* FROM locaria_core.dispatchers d
     WHERE d.stopped_at IS NULL
       AND EXISTS (SELECT 1 FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.granted AND l.pid = d.backend_pid
                      AND l.classid = 68775 AND l.objsubid = 2
                      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()));
