-- One schema per service. Every schema gets the same outbox, inbox and dead-letter tables from
-- datasync_platform_tables(), owned by that service alone; the outbox trigger wakes the service's
-- relay (LISTEN <schema>_outbox).

CREATE FUNCTION public.datasync_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END;
$$;

CREATE FUNCTION public.datasync_platform_tables(schema_name text) RETURNS void LANGUAGE plpgsql AS $$
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
END;
$$;

SELECT public.datasync_platform_tables('crm');
SELECT public.datasync_platform_tables('erp');
SELECT public.datasync_platform_tables('inventory');
SELECT public.datasync_platform_tables('directory');
SELECT public.datasync_platform_tables('resolver');
SELECT public.datasync_platform_tables('monitor');
SELECT public.datasync_platform_tables('bulk');
