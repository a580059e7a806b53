-- conflict-resolver's queue: every conflict a connector detected, as it was detected, and what
-- became of it (the rule or person that decided, why, and the values sent back).
CREATE TABLE resolver.conflicts (
    -- The connector's conflict id (`sync.conflicts.detected.<system>`): a redelivery is one row.
    id uuid PRIMARY KEY,
    system text NOT NULL,
    entity text NOT NULL,
    record_id bigint NOT NULL,
    external_id text NOT NULL,
    fields jsonb NOT NULL,
    base jsonb NOT NULL,
    local jsonb NOT NULL,
    remote jsonb NOT NULL,
    -- Each side's time and the clock it was read from.
    local_at timestamptz NOT NULL,
    local_clock text NOT NULL,
    remote_at timestamptz NOT NULL,
    remote_clock text NOT NULL,
    -- Set for an earlier resolution that could not be applied: why (a person decides it).
    unapplied text,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'escalated', 'resolved')),
    rule text,
    winner text CHECK (winner IN ('local', 'remote', 'merged', 'fields', 'dismissed')),
    explanation text,
    resolution jsonb,
    resolved_by text,
    detected_at timestamptz NOT NULL DEFAULT now(),
    tried_at timestamptz,
    escalated_at timestamptz,
    resolved_at timestamptz,
    -- An automatic resolution an administrator undid (the other side was sent back then).
    undone_at timestamptz
);
CREATE INDEX conflicts_open_idx ON resolver.conflicts (detected_at) WHERE status <> 'resolved';
CREATE INDEX conflicts_record_idx ON resolver.conflicts (system, entity, record_id);
