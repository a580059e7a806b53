DO $$
DECLARE s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['crm', 'erp', 'inventory', 'directory', 'resolver', 'monitor'] LOOP
        EXECUTE format('DROP TABLE %I.record_errors', s);
    END LOOP;
END;
$$;
DROP FUNCTION public.datasync_error_ledger(text);
ALTER TABLE inventory.stock ADD COLUMN last_change_absolute boolean NOT NULL DEFAULT false;

CREATE TABLE inventory.target_state (
    target text NOT NULL,
    sku text NOT NULL,
    warehouse text NOT NULL,
    pushed_version bigint NOT NULL,
    pushed_quantity bigint NOT NULL,
    pushed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, sku, warehouse)
);
CREATE TABLE inventory.target_sync_log (
    id bigserial PRIMARY KEY,
    target text NOT NULL,
    sku text NOT NULL,
    warehouse text NOT NULL,
    quantity bigint NOT NULL,
    version bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('synced', 'skipped', 'retrying', 'dead_lettered')),
    http_status integer,
    error text,
    attempt bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX target_sync_log_sku_idx ON inventory.target_sync_log (sku, warehouse, created_at);

DO $$
DECLARE s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['crm', 'erp', 'inventory', 'directory', 'resolver', 'monitor'] LOOP
        EXECUTE format('DROP TABLE %I.push_state, %I.push_log, %I.webhook_events', s, s, s);
        IF s <> 'inventory' THEN
            EXECUTE format('DROP TABLE %I.stopped_targets', s);
        END IF;
    END LOOP;
END;
$$;
DROP FUNCTION public.datasync_engine_tables(text);
