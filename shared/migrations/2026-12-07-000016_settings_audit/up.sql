-- The settings audit now comes from the bus (sync.events.<service>.settings): every service's
-- changes, not only the dashboard's. The message id makes a redelivery harmless.
ALTER TABLE monitor.settings_audit
    ADD COLUMN message_id uuid UNIQUE,
    ADD COLUMN service text;
