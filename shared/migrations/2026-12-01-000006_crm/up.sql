-- crm-sync's tables: contacts, accounts and opportunities, the last synced copy of each record
-- (sync_state), and the capture trigger that turns every local change into a push message.

CREATE TABLE crm.contacts (
    id bigserial PRIMARY KEY,
    external_id text UNIQUE,
    external_source text,
    first_name text,
    last_name text,
    email text,
    phone text,
    company text,
    title text,
    source text,
    status text,
    deleted_at timestamptz,
    deleted_from text,
    -- Who made the latest change of the data: 'crm' (applied from the CRM) or anyone else.
    origin text NOT NULL DEFAULT 'local',
    -- Counts the changes that did not come from the CRM: the version the push engine sends.
    local_version bigint NOT NULL DEFAULT 0,
    -- When the data last changed other than from the CRM (what a CRM change is compared with).
    local_changed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    synced_at timestamptz
);

CREATE TABLE crm.accounts (
    id bigserial PRIMARY KEY,
    external_id text UNIQUE,
    external_source text,
    company_name text,
    industry text,
    website text,
    annual_revenue numeric,
    employee_count integer,
    billing_address jsonb,
    deleted_at timestamptz,
    deleted_from text,
    origin text NOT NULL DEFAULT 'local',
    local_version bigint NOT NULL DEFAULT 0,
    -- When the data last changed other than from the CRM (what a CRM change is compared with).
    local_changed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    synced_at timestamptz
);

CREATE TABLE crm.opportunities (
    id bigserial PRIMARY KEY,
    external_id text UNIQUE,
    external_source text,
    name text,
    -- The CRM's id of the account.
    account_id text,
    amount numeric,
    stage text,
    probability integer,
    close_date date,
    deleted_at timestamptz,
    deleted_from text,
    origin text NOT NULL DEFAULT 'local',
    local_version bigint NOT NULL DEFAULT 0,
    -- When the data last changed other than from the CRM (what a CRM change is compared with).
    local_changed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    synced_at timestamptz
);

-- The last copy both sides agreed on (local column names), the base of three-way merges.
CREATE TABLE crm.sync_state (
    entity text NOT NULL,
    record_id bigint NOT NULL,
    base jsonb NOT NULL,
    -- The local_version the CRM holds (pushed, or agreed by a merge).
    synced_version bigint NOT NULL DEFAULT 0,
    -- The CRM's own time of the newest state in `base` (deletes older than it are stale).
    remote_updated_at timestamptz,
    -- Per field, the CRM's time of the value in `base` (epoch ms): an older change of that
    -- field is stale, whatever other fields it carries.
    field_times jsonb NOT NULL DEFAULT '{}',
    synced_at timestamptz NOT NULL DEFAULT now(),
    -- An open conflict: the conflicting fields with the CRM's values (they are not pushed
    -- until the conflict is resolved), and the conflict's id.
    held jsonb NOT NULL DEFAULT '{}',
    conflict_id uuid,
    PRIMARY KEY (entity, record_id)
);

-- Drift reconciliation's cursor per entity: the CRM time up to which changes were compared.
CREATE TABLE crm.reconcile_cursors (
    entity text PRIMARY KEY,
    modified_after timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every insert or update, by anyone (this service, another application, plain SQL): a change
-- of the data columns bumps `updated_at` and records its origin (the transaction setting
-- `datasync.origin`, 'local' when unset); a change that did not come from the CRM also bumps
-- `local_version` and queues a push message (`outbound.crm.<entity>`) in the outbox, in the
-- same transaction. Bookkeeping-only updates (external_id, synced_at) change nothing else; an
-- explicit `local_version` bump queues a push without a data change (a resolution's push).
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
