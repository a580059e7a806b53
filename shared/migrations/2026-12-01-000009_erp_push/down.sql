DROP TRIGGER capture_change ON erp.orders;
DROP TRIGGER capture_change ON erp.customers;
DROP FUNCTION erp.capture_change();
ALTER TABLE erp.orders DROP COLUMN origin, DROP COLUMN local_version, DROP COLUMN synced_version, DROP COLUMN local_changed_at;
ALTER TABLE erp.customers DROP COLUMN origin, DROP COLUMN local_version, DROP COLUMN synced_version, DROP COLUMN local_changed_at;
