-- Locaria-compatible core schema: files, parameters, logs, search data,
-- plus the job machinery (dockers, jobs outbox/ledger, append-only job_events).

CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE SCHEMA IF NOT EXISTS locaria_core;
CREATE SCHEMA IF NOT EXISTS locaria_uploads;
CREATE SCHEMA IF NOT EXISTS locaria_data;

-- Locaria's own tables ------------------------------------------------------

CREATE TABLE IF NOT EXISTS locaria_core.files (
    id          BIGSERIAL PRIMARY KEY,
    status      TEXT NOT NULL DEFAULT 'REGISTERED',
    attributes  JSONB NOT NULL DEFAULT '{}'::jsonb,
    created     TIMESTAMP NOT NULL DEFAULT now(),
    last_update TIMESTAMP NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS files_status_idx ON locaria_core.files (status);
CREATE INDEX IF NOT EXISTS files_attributes_idx ON locaria_core.files USING gin (attributes jsonb_path_ops);

CREATE TABLE IF NOT EXISTS locaria_core.parameters (
    id             BIGSERIAL PRIMARY KEY,
    parameter_name TEXT NOT NULL,
    usage          TEXT NOT NULL DEFAULT 'SYSTEM',
    parameter      JSONB,
    acl            JSONB NOT NULL DEFAULT '{"update":["Admins"],"delete":["Admins"],"view":["Admins"]}'::jsonb,
    last_updated   TIMESTAMP NOT NULL DEFAULT now(),
    UNIQUE (parameter_name, usage)
);

CREATE TABLE IF NOT EXISTS locaria_core.logs (
    id            BIGSERIAL PRIMARY KEY,
    log_type      TEXT NOT NULL DEFAULT 'internal',
    log_message   JSONB,
    log_timestamp TIMESTAMP NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS locaria_core.categories (
    id         BIGSERIAL PRIMARY KEY,
    category   TEXT NOT NULL UNIQUE,
    attributes JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE IF NOT EXISTS locaria_data.items (
    id           BIGSERIAL PRIMARY KEY,
    category_id  BIGINT NOT NULL REFERENCES locaria_core.categories (id) ON DELETE CASCADE,
    title        TEXT,
    attributes   JSONB NOT NULL DEFAULT '{}'::jsonb,
    wkb_geometry geometry(Geometry, 4326),
    created      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS items_category_idx ON locaria_data.items (category_id);
CREATE INDEX IF NOT EXISTS items_geometry_idx ON locaria_data.items USING gist (wkb_geometry);

-- Job machinery ---------------------------------------------------------------

-- One row per job type, loaded from docker/dockers.json by `locaria-batch docker sync`.
CREATE TABLE IF NOT EXISTS locaria_core.dockers (
    name             TEXT PRIMARY KEY,
    description      TEXT NOT NULL DEFAULT '',
    trigger_statuses TEXT[] NOT NULL DEFAULT '{}',
    running_status   TEXT,
    success_status   TEXT,
    error_status     TEXT NOT NULL DEFAULT 'ERROR',
    cancelled_status TEXT NOT NULL DEFAULT 'CANCELLED',
    runner           TEXT,  -- NULL: any dispatcher's runner; else only dispatchers using this one
    command          TEXT[],
    handler          TEXT,
    image            TEXT,
    cpu              INTEGER NOT NULL DEFAULT 256,
    memory           INTEGER NOT NULL DEFAULT 512,
    timeout_seconds  INTEGER NOT NULL DEFAULT 3600 CHECK (timeout_seconds > 0),
    max_attempts     INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
    retry_base_seconds DOUBLE PRECISION NOT NULL DEFAULT 10 CHECK (retry_base_seconds >= 0),
    concurrency      INTEGER NOT NULL DEFAULT 4 CHECK (concurrency > 0),
    enabled          BOOLEAN NOT NULL DEFAULT true,
    settings         JSONB NOT NULL DEFAULT '{}'::jsonb,
    updated          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The outbox and the attempts ledger.  No foreign key to files: a file row may be
-- deleted outright while its history stays; the job SDK treats a vanished file as cancelled.
CREATE TABLE IF NOT EXISTS locaria_core.jobs (
    id             BIGSERIAL PRIMARY KEY,
    file_id        BIGINT NOT NULL,
    docker         TEXT NOT NULL REFERENCES locaria_core.dockers (name) ON UPDATE CASCADE,
    trigger_status TEXT,
    state          TEXT NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued', 'launching', 'running', 'succeeded', 'failed', 'cancelled')),
    attempt        INTEGER NOT NULL DEFAULT 0,
    max_attempts   INTEGER NOT NULL,
    run_after      TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempt_token  UUID,
    lease_owner    TEXT,
    lease_expires  TIMESTAMPTZ,
    heartbeat_at   TIMESTAMPTZ,
    runner         TEXT,
    handle         JSONB,
    exit_code      INTEGER,
    error          TEXT,
    progress       JSONB,
    stop_requested BOOLEAN NOT NULL DEFAULT false,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    launched_at    TIMESTAMPTZ,
    started_at     TIMESTAMPTZ,
    finished_at    TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_active_idx ON locaria_core.jobs (file_id, docker)
    WHERE state IN ('queued', 'launching', 'running');
CREATE INDEX IF NOT EXISTS jobs_queue_idx ON locaria_core.jobs (run_after, id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_in_flight_idx ON locaria_core.jobs (lease_owner, lease_expires)
    WHERE state IN ('launching', 'running');
CREATE INDEX IF NOT EXISTS jobs_file_idx ON locaria_core.jobs (file_id);

CREATE TABLE IF NOT EXISTS locaria_core.job_events (
    id      BIGSERIAL PRIMARY KEY,
    job_id  BIGINT NOT NULL,
    at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    event   TEXT NOT NULL,
    attempt INTEGER,
    detail  JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS job_events_job_idx ON locaria_core.job_events (job_id, id);
