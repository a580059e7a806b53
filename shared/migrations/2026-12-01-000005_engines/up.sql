-- The engines' tables, in every service schema:
--   push_state       what each target was last told, per record (version fencing)  shared::push
--   push_log         every push attempt, read-back and drift correction
--   stopped_targets  targets that answered 410 Gone (nothing is pushed until resumed)
--   webhook_events   what became of every accepted inbound event                   shared::ingress
--   record_errors    the per-record error ledger                                   shared::record_errors
-- inventory's own target_state / target_sync_log move into the push tables (record key
-- `warehouse/sku`).

CREATE FUNCTION public.datasync_engine_tables(schema_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($sql$
        CREATE TABLE %1$I.push_state (
            target text NOT NULL,
            record_key text NOT NULL,
            pushed_version bigint NOT NULL,
            pushed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (target, record_key)
        );

        CREATE TABLE %1$I.push_log (
            id bigserial PRIMARY KEY,
            target text NOT NULL,
            entity text NOT NULL,
            record_key text NOT NULL,
            version bigint NOT NULL,
            -- The record as it was pushed (or found, for read-backs and drift).
            value jsonb NOT NULL,
            status text NOT NULL CHECK (status IN ('synced', 'skipped', 'retrying', 'dead_lettered', 'drifted')),
            http_status integer,
            error text,
            attempt bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX push_log_record_idx ON %1$I.push_log (target, record_key, created_at);

        CREATE TABLE IF NOT EXISTS %1$I.stopped_targets (
            target text PRIMARY KEY,
            reason text NOT NULL,
            stopped_at timestamptz NOT NULL DEFAULT now()
        );

        -- `received` once the event is durably in JetStream; the consumer that applies it moves
        -- it to `applied`, `conflict` or `failed` (with the reason) in the transaction of its
        -- effect; a dead-lettered event becomes `failed` with the dead letter's error.
        CREATE TABLE %1$I.webhook_events (
            id uuid PRIMARY KEY,
            system text NOT NULL,
            entity text NOT NULL,
            -- The sender's id of the event (delivery id or event id): the dedupe key.
            delivery_id text NOT NULL,
            status text NOT NULL CHECK (status IN ('received', 'applied', 'conflict', 'failed')),
            reason text,
            received_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
    $sql$, schema_name);
END;
$$;

-- Schemas created by later migrations get the engine tables with the other platform tables.
CREATE OR REPLACE FUNCTION public.datasync_platform_tables(schema_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE SCHEMA %I', schema_name);
    EXECUTE format($sql$
        CREATE TABLE %1$I.outbox (
            id uuid PRIMARY KEY,
            seq bigserial NOT NULL,
            subject text NOT NULL,
            payload jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX outbox_seq_idx ON %1$I.outbox (seq);
        CREATE TRIGGER outbox_notify AFTER INSERT ON %1$I.outbox
            FOR EACH STATEMENT EXECUTE FUNCTION public.datasync_notify_outbox();

        CREATE TABLE %1$I.inbox (
            consumer text NOT NULL,
            message_id text NOT NULL,
            processed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, message_id)
        );

        CREATE TABLE %1$I.dead_letters (
            id uuid PRIMARY KEY,
            consumer text NOT NULL,
            subject text NOT NULL,
            payload jsonb NOT NULL,
            error text NOT NULL,
            deliveries bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            replayed_at timestamptz
        );
        CREATE INDEX dead_letters_open_idx ON %1$I.dead_letters (created_at) WHERE replayed_at IS NULL;
    $sql$, schema_name);
    PERFORM public.datasync_engine_tables(schema_name);
END;
$$;

SELECT public.datasync_engine_tables(s)
FROM unnest(ARRAY['crm', 'erp', 'inventory', 'directory', 'resolver', 'monitor']) AS s;

INSERT INTO inventory.push_state (target, record_key, pushed_version, pushed_at)
SELECT target, warehouse || '/' || sku, pushed_version, pushed_at FROM inventory.target_state;

INSERT INTO inventory.push_log (target, entity, record_key, version, value, status, http_status, error, attempt, created_at)
SELECT target, 'stock_level', warehouse || '/' || sku, version,
       jsonb_build_object('sku', sku, 'warehouse', warehouse, 'on_hand', quantity),
       status, http_status, error, attempt, created_at
FROM inventory.target_sync_log ORDER BY id;

DROP TABLE inventory.target_state;
DROP TABLE inventory.target_sync_log;

-- Loop prevention no longer trusts the kind of a target's own change: the engine reads the
-- target back instead (a push of ours may have crossed its change).
ALTER TABLE inventory.stock DROP COLUMN last_change_absolute;

-- The per-record error ledger (shared::record_errors): one open row per failing record and
-- direction, kept until an operator retries, requeues or ignores it.
CREATE FUNCTION public.datasync_error_ledger(schema_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($sql$
        CREATE TABLE %1$I.record_errors (
            id bigserial PRIMARY KEY,
            system text NOT NULL,
            entity text NOT NULL,
            record_id text NOT NULL,
            direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
            error text NOT NULL,
            attempts bigint NOT NULL DEFAULT 1,
            last_payload jsonb NOT NULL,
            status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'ignored', 'resolved')),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX record_errors_open_idx ON %1$I.record_errors (system, entity, record_id, direction)
            WHERE status = 'open';
    $sql$, schema_name);
END;
$$;

SELECT public.datasync_error_ledger(s)
FROM unnest(ARRAY['crm', 'erp', 'inventory', 'directory', 'resolver', 'monitor']) AS s;
