-- jobs_audit writes only when a job's state changes, yet it ran for every update of a job's row (its
-- handle recorded, its heartbeat, its lease renewed, its release: three or four per attempt).  The
-- trigger now fires only when the state changes, and PL/pgSQL is not entered for the rest.
DROP TRIGGER IF EXISTS jobs_audit ON locaria_core.jobs;
CREATE TRIGGER jobs_audit AFTER INSERT ON locaria_core.jobs
    FOR EACH ROW EXECUTE FUNCTION locaria_core.jobs_audit();
CREATE TRIGGER jobs_audit_state AFTER UPDATE OF state ON locaria_core.jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION locaria_core.jobs_audit();
