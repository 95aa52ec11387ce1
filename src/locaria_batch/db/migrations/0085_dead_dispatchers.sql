-- A dispatcher that died hands its jobs over without waiting out their leases.  It is dead when its
-- session no longer holds its advisory lock (dispatchers_alive) and it has not beaten for 10 s, the
-- margin a dispatcher reconnecting after a database restart or a cut connection needs to attach
-- again.  Every lease renewal is also the dispatcher's beat.

CREATE OR REPLACE FUNCTION locaria_core.renew_leases(p_owner TEXT, p_lease_seconds INTEGER) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
BEGIN
    UPDATE locaria_core.dispatchers SET heartbeat_at = clock_timestamp() WHERE owner = p_owner;
    UPDATE locaria_core.jobs SET lease_expires = clock_timestamp() + make_interval(secs => p_lease_seconds)
     WHERE lease_owner = p_owner AND (state IN ('launching', 'running') OR stop_requested);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- Four missed heartbeats (of 5 s) make a hung job: found within 25 s with the 5 s maintenance timer.
ALTER TABLE locaria_core.dockers ALTER COLUMN heartbeat_timeout SET DEFAULT 20;

CREATE OR REPLACE FUNCTION locaria_core.dead_dispatchers() RETURNS SETOF TEXT
LANGUAGE sql STABLE AS $$
    SELECT d.owner FROM locaria_core.dispatchers d
     WHERE d.heartbeat_at < clock_timestamp() - interval '10 seconds'
       AND NOT EXISTS (SELECT 1 FROM locaria_core.dispatchers_alive a WHERE a.owner = d.owner)
$$;

CREATE OR REPLACE FUNCTION locaria_core.adopt_expired_jobs(p_owner TEXT, p_lease_seconds INTEGER, p_max INTEGER,
                                                           p_runner TEXT)
RETURNS SETOF locaria_core.jobs
LANGUAGE sql AS $$
    WITH picked AS (
        SELECT id FROM locaria_core.jobs
         WHERE (state IN ('launching', 'running') OR stop_requested)
           AND (lease_expires < clock_timestamp()
                OR lease_owner IN (SELECT locaria_core.dead_dispatchers()))
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
