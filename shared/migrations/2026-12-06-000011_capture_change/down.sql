-- Back to one capture function per schema (their bodies as the earlier migrations made them).
DROP TRIGGER capture_change ON crm.contacts;
DROP TRIGGER capture_change ON crm.accounts;
DROP TRIGGER capture_change ON crm.opportunities;
DROP TRIGGER capture_change ON erp.orders;
DROP TRIGGER capture_change ON erp.customers;
DROP FUNCTION public.datasync_capture_change();

CREATE FUNCTION crm.capture_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    change_origin text := coalesce(nullif(current_setting('datasync.origin', true), ''), 'local');
    meta text[] := ARRAY['origin', 'local_version', 'local_changed_at', 'created_at', 'updated_at',
                         'synced_at', 'external_id', 'external_source'];
    previous bigint := 0;
    message uuid;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.local_version;
    END IF;
    IF TG_OP = 'UPDATE' AND (to_jsonb(NEW) - meta) = (to_jsonb(OLD) - meta) THEN
        NEW.origin := OLD.origin;
        NEW.updated_at := OLD.updated_at;
        NEW.local_changed_at := OLD.local_changed_at;
        NEW.local_version := greatest(NEW.local_version, OLD.local_version);
    ELSE
        NEW.origin := change_origin;
        NEW.updated_at := now();
        IF change_origin <> 'crm' THEN
            NEW.local_version := previous + 1;
            NEW.local_changed_at := now();
        ELSE
            NEW.local_version := previous;
            NEW.local_changed_at := CASE TG_OP WHEN 'UPDATE' THEN OLD.local_changed_at END;
        END IF;
    END IF;
    IF NEW.local_version > previous THEN
        message := gen_random_uuid();
        INSERT INTO crm.outbox (id, subject, payload) VALUES (
            message,
            'outbound.crm.' || TG_ARGV[0],
            jsonb_build_object(
                'id', message,
                'type', 'crm.record_changed',
                'source', 'crm-sync',
                'occurred_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'data', jsonb_build_object('entity', TG_ARGV[0], 'id', NEW.id)));
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER capture_change BEFORE INSERT OR UPDATE ON crm.contacts
    FOR EACH ROW EXECUTE FUNCTION crm.capture_change('contact');
CREATE TRIGGER capture_change BEFORE INSERT OR UPDATE ON crm.accounts
    FOR EACH ROW EXECUTE FUNCTION crm.capture_change('account');
CREATE TRIGGER capture_change BEFORE INSERT OR UPDATE ON crm.opportunities
    FOR EACH ROW EXECUTE FUNCTION crm.capture_change('opportunity');

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
