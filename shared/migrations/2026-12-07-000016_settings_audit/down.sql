ALTER TABLE monitor.settings_audit DROP COLUMN message_id, DROP COLUMN service;
