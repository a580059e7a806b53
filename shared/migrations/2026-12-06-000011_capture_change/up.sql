-- One capture trigger for every connector schema (crm-sync's and erp-sync's were near copies).
-- It captures every local change of a synced record, whoever makes it (the service, another
-- application, plain SQL), in the same transaction: `origin` is the transaction's
-- `datasync.origin` (unset: 'local'); a change the system itself did not make bumps
-- `local_version`, stamps `local_changed_at` and queues `outbound.<system>.<entity>` in the
-- schema's outbox, so the system's own changes are never pushed back to it. An explicit
-- `local_version` bump queues a push without a data change.
--
-- Arguments: the system (its schema holds the table and the outbox), the entity, the key column
-- (the message's id), then the pushed columns. Without pushed columns every column but the
-- bookkeeping ones is pushed, and `updated_at` / `local_changed_at` follow data changes only.
CREATE FUNCTION public.datasync_capture_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    system text := TG_ARGV[0];
    change_origin text := coalesce(nullif(current_setting('datasync.origin', true), ''), 'local');
    meta text[] := ARRAY['origin', 'local_version', 'local_changed_at', 'created_at', 'updated_at',
                         'synced_at', 'external_id', 'external_source'];
    whole_row boolean := TG_NARGS <= 3;
    new_row jsonb := to_jsonb(NEW);
    changed boolean := TG_OP = 'INSERT';
    previous bigint := 0;
    message uuid;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.local_version;
        IF whole_row THEN
            changed := (new_row - meta) <> (to_jsonb(OLD) - meta);
        ELSE
            FOR i IN 3 .. TG_NARGS - 1 LOOP
                IF new_row -> TG_ARGV[i] IS DISTINCT FROM to_jsonb(OLD) -> TG_ARGV[i] THEN
                    changed := true;
                END IF;
            END LOOP;
        END IF;
    END IF;
    IF changed THEN
        NEW.origin := change_origin;
        IF whole_row THEN
            NEW.updated_at := now();
        END IF;
        IF change_origin <> system THEN
            NEW.local_version := previous + 1;
            NEW.local_changed_at := now();
        ELSE
            NEW.local_version := previous;
            IF whole_row THEN
                NEW.local_changed_at := CASE TG_OP WHEN 'UPDATE' THEN OLD.local_changed_at END;
            END IF;
        END IF;
    ELSE
        NEW.origin := OLD.origin;
        NEW.local_version := greatest(NEW.local_version, OLD.local_version);
        IF whole_row THEN
            NEW.updated_at := OLD.updated_at;
            NEW.local_changed_at := OLD.local_changed_at;
        END IF;
    END IF;
    IF NEW.local_version > previous THEN
        message := gen_random_uuid();
        EXECUTE format('INSERT INTO %I.outbox (id, subject, payload) VALUES ($1, $2, $3)', system)
        USING message,
            'outbound.' || system || '.' || TG_ARGV[1],
            jsonb_build_object(
                'id', message,
                'type', system || '.record_changed',
                'source', system || '-sync',
                'occurred_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'data', jsonb_build_object('entity', TG_ARGV[1], 'id', new_row -> TG_ARGV[2]));
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER capture_change ON crm.contacts;
DROP TRIGGER capture_change ON crm.accounts;
DROP TRIGGER capture_change ON crm.opportunities;
DROP TRIGGER capture_change ON erp.orders;
DROP TRIGGER capture_change ON erp.customers;
DROP FUNCTION crm.capture_change();
DROP FUNCTION erp.capture_change();

CREATE TRIGGER capture_change BEFORE INSERT OR UPDATE ON crm.contacts
    FOR EACH ROW EXECUTE FUNCTION public.datasync_capture_change('crm', 'contact', 'id');
CREATE TRIGGER capture_change BEFORE INSERT OR UPDATE ON crm.accounts
    FOR EACH ROW EXECUTE FUNCTION public.datasync_capture_change('crm', 'account', 'id');
CREATE TRIGGER capture_change BEFORE INSERT OR UPDATE ON crm.opportunities
    FOR EACH ROW EXECUTE FUNCTION public.datasync_capture_change('crm', 'opportunity', 'id');
CREATE TRIGGER capture_change BEFORE INSERT OR UPDATE ON erp.orders
    FOR EACH ROW EXECUTE FUNCTION public.datasync_capture_change('erp', 'order', 'erp_order_id', 'status');
CREATE TRIGGER capture_change BEFORE INSERT OR UPDATE ON erp.customers
    FOR EACH ROW EXECUTE FUNCTION public.datasync_capture_change('erp', 'customer', 'erp_customer_id', 'name', 'email', 'phone');
