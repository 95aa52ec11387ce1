-- Each dispatcher pass looks for finished attempts whose leftovers (a stopped container) it has not
-- removed yet; this partial index holds only those, so the lookup stays cheap as history grows.
CREATE INDEX IF NOT EXISTS jobs_unreleased_idx ON locaria_core.jobs (lease_owner)
    WHERE state IN ('succeeded', 'failed', 'cancelled') AND handle IS NOT NULL AND lease_owner IS NOT NULL
      AND NOT stop_requested AND NOT (handle ? 'released');
