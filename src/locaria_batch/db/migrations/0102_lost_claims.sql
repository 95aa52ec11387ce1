-- A worker whose claim committed but whose answer never arrived (the database restarted in between)
-- owns jobs it does not know of: they stay in 'launching' with no handle, and its lease timer renews
-- them for ever.  Such a worker names the jobs it does know of; the others of its own, older than the
-- grace, go to a lapsed owner with an expired lease as a lost Lambda invocation's do, so that the
-- ordinary adoption looks for a process before it queues them again (without spending an attempt).
DROP FUNCTION IF EXISTS locaria_core.release_lost_launches(TEXT, INTEGER);

CREATE OR REPLACE FUNCTION locaria_core.release_lost_launches(p_owner TEXT, p_grace_seconds INTEGER,
                                                              p_known BIGINT[] DEFAULT '{}')
RETURNS SETOF BIGINT
LANGUAGE sql AS $$
    UPDATE locaria_core.jobs
       SET lease_owner = p_owner || ' (launch lost)', lease_expires = clock_timestamp(),
           updated_at = clock_timestamp()
     WHERE lease_owner = p_owner AND state IN ('launching', 'running') AND handle IS NULL
       AND launched_at < clock_timestamp() - make_interval(secs => p_grace_seconds)
       AND NOT id = ANY (p_known)
    RETURNING id
$$;
