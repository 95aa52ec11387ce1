-- The launcher Lambda dispatches under one shared owner name, so each invocation renews and
-- reconciles what earlier ones launched.  An invocation that died between RunTask and recording
-- the task left a job with no handle that the shared name would keep renewing for ever: hand such
-- jobs (older than the grace period, longer than any invocation lives) to a lapsed owner with an
-- expired lease, so that the ordinary adoption looks the task up before anything is relaunched.
CREATE OR REPLACE FUNCTION locaria_core.release_lost_launches(p_owner TEXT, p_grace_seconds INTEGER)
RETURNS SETOF BIGINT
LANGUAGE sql AS $$
    UPDATE locaria_core.jobs
       SET lease_owner = p_owner || ' (invocation lost)', lease_expires = clock_timestamp(),
           updated_at = clock_timestamp()
     WHERE lease_owner = p_owner AND state IN ('launching', 'running') AND handle IS NULL
       AND launched_at < clock_timestamp() - make_interval(secs => p_grace_seconds)
    RETURNING id
$$;
