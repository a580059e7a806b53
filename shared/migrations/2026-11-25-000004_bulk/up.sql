-- The bulk-sync job engine (shared::bulk). Every connector service runs the jobs whose
-- `service` is its own; the checkpoint is the source's cursor after the last applied page, so
-- a job resumes there after a crash, a restart or a failure.

CREATE TABLE bulk.jobs (
    id text PRIMARY KEY,
    service text NOT NULL,
    source text NOT NULL,
    target text NOT NULL,
    entity text NOT NULL,
    batch_size integer NOT NULL CHECK (batch_size BETWEEN 1 AND 1000),
    status text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    checkpoint jsonb,
    pages bigint NOT NULL DEFAULT 0,
    total_records bigint NOT NULL DEFAULT 0,
    processed_records bigint NOT NULL DEFAULT 0,
    error_count bigint NOT NULL DEFAULT 0,
    -- Why the job failed (the last error), when it did.
    error text,
    -- The worker holding the job and until when; an expired lease is taken over.
    lease_owner text,
    lease_until timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
-- One active job per (service, source, target, entity).
CREATE UNIQUE INDEX jobs_one_active_idx ON bulk.jobs (service, source, target, entity)
    WHERE status IN ('queued', 'running');
CREATE INDEX jobs_claim_idx ON bulk.jobs (service, created_at) WHERE status IN ('queued', 'running');

-- Records a job could not apply (the job goes on with the next record).
CREATE TABLE bulk.job_errors (
    id bigserial PRIMARY KEY,
    job_id text NOT NULL REFERENCES bulk.jobs (id),
    record_id text NOT NULL,
    error text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_errors_job_idx ON bulk.job_errors (job_id, id);
