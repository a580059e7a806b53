-- Local changes of ERP records that are pushed back to the ERP: an order's status and a
-- customer's name, email and phone.
--   origin            who made the latest change of the pushed fields ('erp', 'local', ...)
--   local_version     bumped by every such change not made by the ERP; the push engine's version
--   synced_version    the local version the ERP is known to hold
--   local_changed_at  when that change was made (an older ERP event does not undo it)
ALTER TABLE erp.orders
    ADD COLUMN origin text NOT NULL DEFAULT 'erp',
    ADD COLUMN local_version bigint NOT NULL DEFAULT 0,
    ADD COLUMN synced_version bigint NOT NULL DEFAULT 0,
    ADD COLUMN local_changed_at timestamptz;
ALTER TABLE erp.customers
    ADD COLUMN origin text NOT NULL DEFAULT 'erp',
    ADD COLUMN local_version bigint NOT NULL DEFAULT 0,
    ADD COLUMN synced_version bigint NOT NULL DEFAULT 0,
    ADD COLUMN local_changed_at timestamptz;

-- Captures every change of the pushed fields, whoever makes it (erp-sync, another application,
-- plain SQL). The origin comes from the transaction setting `datasync.origin` (unset: 'local');
-- erp-sync sets 'erp' when it applies the ERP's events, so those are never pushed back. A change
-- from elsewhere bumps local_version and queues `outbound.erp.<entity>` in the same
-- transaction. An explicit local_version bump queues a push without a data change.
-- Arguments: entity, key column, pushed columns...
CREATE FUNCTION erp.capture_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    change_origin text := coalesce(nullif(current_setting('datasync.origin', true), ''), 'local');
    new_row jsonb := to_jsonb(NEW);
    changed boolean := TG_OP = 'INSERT';
    previous bigint := 0;
    message uuid;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.local_version;
        FOR i IN 2 .. TG_NARGS - 1 LOOP
            IF new_row -> TG_ARGV[i] IS DISTINCT FROM to_jsonb(OLD) -> TG_ARGV[i] THEN
                changed := true;
            END IF;
        END LOOP;
    END IF;
    IF changed THEN
        NEW.origin := change_origin;
        IF change_origin <> 'erp' THEN
            NEW.local_version := previous + 1;
            NEW.local_changed_at := now();
        ELSE
            NEW.local_version := previous;
        END IF;
    ELSE
        NEW.origin := OLD.origin;
        NEW.local_version := greatest(NEW.local_version, OLD.local_version);
    END IF;
    IF NEW.local_version > previous THEN
        message := gen_random_uuid();
        INSERT INTO erp.outbox (id, subject, payload) VALUES (
            message,
            'outbound.erp.' || TG_ARGV[0],
            jsonb_build_object(
                'id', message,
                'type', 'erp.record_changed',
                'source', 'erp-sync',
                'occurred_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'data', jsonb_build_object('entity', TG_ARGV[0], 'id', new_row ->> TG_ARGV[1])));
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER capture_change BEFORE INSERT OR UPDATE ON erp.orders
    FOR EACH ROW EXECUTE FUNCTION erp.capture_change('order', 'erp_order_id', 'status');
CREATE TRIGGER capture_change BEFORE INSERT OR UPDATE ON erp.customers
    FOR EACH ROW EXECUTE FUNCTION erp.capture_change('customer', 'erp_customer_id', 'name', 'email', 'phone');
