-- sync-monitor's own view of the platform, built from the bus (`sync.events.>`,
-- `sync.conflicts.>`, `alerts.>`): it never reads another service's schema.

-- Every sync attempt announced on `sync.events.<system>.<direction>.<entity>`, one row per record
-- (a batch announcement is many rows); `(message_id, seq)` makes a redelivery one set of rows.
CREATE TABLE monitor.sync_events (
    id bigserial PRIMARY KEY,
    message_id uuid NOT NULL,
    seq integer NOT NULL,
    at timestamptz NOT NULL,
    system text NOT NULL,
    direction text NOT NULL,
    entity text NOT NULL,
    record_id text NOT NULL,
    status text NOT NULL,
    http_status integer,
    detail text,
    -- The id after the key's last `/` (`contact/42` -> `42`): a record is found by either.
    record_key text GENERATED ALWAYS AS (substring(record_id from '[^/]*$')) STORED,
    UNIQUE (message_id, seq)
);
CREATE INDEX sync_events_system_at ON monitor.sync_events (system, at DESC);
CREATE INDEX sync_events_failed ON monitor.sync_events (system, at DESC)
    WHERE status IN ('retrying', 'dead_lettered');
CREATE INDEX sync_events_record ON monitor.sync_events (record_id, at);
CREATE INDEX sync_events_record_key ON monitor.sync_events (record_key, at);

-- Sync attempts per integration and hour, kept as events arrive: the dashboard's 24-hour history
-- reads at most 24 rows per integration, however many events are stored.
CREATE TABLE monitor.hourly (
    system text NOT NULL,
    hour timestamptz NOT NULL,
    synced bigint NOT NULL DEFAULT 0,
    errors bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (system, hour)
);

-- The last successful sync per integration, kept as events arrive (the lag check reads one row).
CREATE TABLE monitor.last_success (
    system text PRIMARY KEY,
    at timestamptz NOT NULL
);

-- Dead letters every service announced (its own `dead_letters` table is the monitor's) (`sync.events.<service>.dead_letter.<consumer>`).
CREATE TABLE monitor.service_dead_letters (
    dead_letter_id uuid PRIMARY KEY,
    -- The integration it belongs to (from its service and consumer).
    integration text NOT NULL,
    service text NOT NULL,
    consumer text NOT NULL,
    subject text NOT NULL,
    error text NOT NULL,
    deliveries bigint NOT NULL,
    at timestamptz NOT NULL,
    -- 'open', or what an operator did from the dashboard ('replayed').
    state text NOT NULL DEFAULT 'open'
);

-- Conflicts by their lifecycle on `sync.conflicts.>`.
CREATE TABLE monitor.conflicts (
    conflict_id uuid PRIMARY KEY,
    system text NOT NULL,
    entity text NOT NULL,
    record_id text NOT NULL,
    external_id text,
    status text NOT NULL CHECK (status IN ('pending', 'escalated', 'resolved')),
    review_url text,
    updated_at timestamptz NOT NULL
);
CREATE INDEX conflicts_open ON monitor.conflicts (system) WHERE status <> 'resolved';

-- Bulk jobs as their state changes are announced.
CREATE TABLE monitor.bulk_jobs (
    job_id text PRIMARY KEY,
    service text NOT NULL,
    source text NOT NULL,
    target text NOT NULL,
    entity text NOT NULL,
    status text NOT NULL,
    total_records bigint NOT NULL,
    processed_records bigint NOT NULL,
    error_count bigint NOT NULL,
    error text,
    updated_at timestamptz NOT NULL
);

-- Each health check, with what it found.
CREATE TABLE monitor.health_reports (
    id bigserial PRIMARY KEY,
    checked_at timestamptz NOT NULL DEFAULT now(),
    overall text NOT NULL CHECK (overall IN ('healthy', 'degraded', 'unhealthy')),
    integrations jsonb NOT NULL,
    issues jsonb NOT NULL
);
CREATE INDEX health_reports_checked_at ON monitor.health_reports (checked_at DESC);

-- The state notified last, per integration and for the whole platform ('overall'): a
-- notification goes out only when it changes.
CREATE TABLE monitor.integration_status (
    system text PRIMARY KEY,
    status text NOT NULL CHECK (status IN ('healthy', 'degraded', 'error', 'unhealthy', 'unknown')),
    since timestamptz NOT NULL,
    checked_at timestamptz NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);

-- Alerts other services raised, by their dedup key: routed once per `MONITOR_ALERT_REPEAT_SECS`.
CREATE TABLE monitor.alerts (
    dedup_key text PRIMARY KEY,
    severity text NOT NULL,
    kind text NOT NULL,
    title text NOT NULL,
    first_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL,
    routed_at timestamptz NOT NULL,
    count bigint NOT NULL DEFAULT 1
);

-- Every change of a runtime setting made through the dashboard.
CREATE TABLE monitor.settings_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    who text NOT NULL,
    key text NOT NULL,
    old_value jsonb,
    new_value jsonb NOT NULL
);
