-- The three roles of the trust boundaries (ARCHITECTURE.md): the dispatchers', the jobs' and the
-- console's (read-only).  Created without LOGIN: a deployment gives each a password (the embedded
-- cluster does it itself) or grants it to login roles of its own.  Only migrations run as the owner.
DO $$
DECLARE
    wanted TEXT;
BEGIN
    FOREACH wanted IN ARRAY ARRAY['locaria_dispatcher', 'locaria_job', 'locaria_console'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = wanted) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', wanted);
        END IF;
    END LOOP;
END;
$$;
