-- One schema per service; each gets the same outbox, inbox and dead-letter tables, owned by
-- that service alone. The outbox trigger wakes the service's relay (LISTEN <schema>_outbox).

CREATE FUNCTION public.datasync_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END;
$$;

CREATE SCHEMA crm;

CREATE TABLE crm.outbox (
    id uuid PRIMARY KEY,
    seq bigserial NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_seq_idx ON crm.outbox (seq);
CREATE TRIGGER outbox_notify AFTER INSERT ON crm.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION public.datasync_notify_outbox();

CREATE TABLE crm.inbox (
    consumer text NOT NULL,
    message_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE crm.dead_letters (
    id uuid PRIMARY KEY,
    consumer text NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    error text NOT NULL,
    deliveries bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX dead_letters_open_idx ON crm.dead_letters (created_at) WHERE replayed_at IS NULL;

CREATE SCHEMA erp;

CREATE TABLE erp.outbox (
    id uuid PRIMARY KEY,
    seq bigserial NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_seq_idx ON erp.outbox (seq);
CREATE TRIGGER outbox_notify AFTER INSERT ON erp.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION public.datasync_notify_outbox();

CREATE TABLE erp.inbox (
    consumer text NOT NULL,
    message_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE erp.dead_letters (
    id uuid PRIMARY KEY,
    consumer text NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    error text NOT NULL,
    deliveries bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX dead_letters_open_idx ON erp.dead_letters (created_at) WHERE replayed_at IS NULL;

CREATE SCHEMA inventory;

CREATE TABLE inventory.outbox (
    id uuid PRIMARY KEY,
    seq bigserial NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_seq_idx ON inventory.outbox (seq);
CREATE TRIGGER outbox_notify AFTER INSERT ON inventory.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION public.datasync_notify_outbox();

CREATE TABLE inventory.inbox (
    consumer text NOT NULL,
    message_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE inventory.dead_letters (
    id uuid PRIMARY KEY,
    consumer text NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    error text NOT NULL,
    deliveries bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX dead_letters_open_idx ON inventory.dead_letters (created_at) WHERE replayed_at IS NULL;

CREATE SCHEMA directory;

CREATE TABLE directory.outbox (
    id uuid PRIMARY KEY,
    seq bigserial NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_seq_idx ON directory.outbox (seq);
CREATE TRIGGER outbox_notify AFTER INSERT ON directory.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION public.datasync_notify_outbox();

CREATE TABLE directory.inbox (
    consumer text NOT NULL,
    message_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE directory.dead_letters (
    id uuid PRIMARY KEY,
    consumer text NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    error text NOT NULL,
    deliveries bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX dead_letters_open_idx ON directory.dead_letters (created_at) WHERE replayed_at IS NULL;

CREATE SCHEMA resolver;

CREATE TABLE resolver.outbox (
    id uuid PRIMARY KEY,
    seq bigserial NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_seq_idx ON resolver.outbox (seq);
CREATE TRIGGER outbox_notify AFTER INSERT ON resolver.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION public.datasync_notify_outbox();

CREATE TABLE resolver.inbox (
    consumer text NOT NULL,
    message_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE resolver.dead_letters (
    id uuid PRIMARY KEY,
    consumer text NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    error text NOT NULL,
    deliveries bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX dead_letters_open_idx ON resolver.dead_letters (created_at) WHERE replayed_at IS NULL;

CREATE SCHEMA monitor;

CREATE TABLE monitor.outbox (
    id uuid PRIMARY KEY,
    seq bigserial NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_seq_idx ON monitor.outbox (seq);
CREATE TRIGGER outbox_notify AFTER INSERT ON monitor.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION public.datasync_notify_outbox();

CREATE TABLE monitor.inbox (
    consumer text NOT NULL,
    message_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE monitor.dead_letters (
    id uuid PRIMARY KEY,
    consumer text NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    error text NOT NULL,
    deliveries bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX dead_letters_open_idx ON monitor.dead_letters (created_at) WHERE replayed_at IS NULL;

CREATE SCHEMA bulk;

CREATE TABLE bulk.outbox (
    id uuid PRIMARY KEY,
    seq bigserial NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_seq_idx ON bulk.outbox (seq);
CREATE TRIGGER outbox_notify AFTER INSERT ON bulk.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION public.datasync_notify_outbox();

CREATE TABLE bulk.inbox (
    consumer text NOT NULL,
    message_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE bulk.dead_letters (
    id uuid PRIMARY KEY,
    consumer text NOT NULL,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    error text NOT NULL,
    deliveries bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX dead_letters_open_idx ON bulk.dead_letters (created_at) WHERE replayed_at IS NULL;
