ALTER TABLE erp.orders DROP COLUMN synced, DROP COLUMN held, DROP COLUMN conflict_id,
    DROP COLUMN pushed_over, DROP COLUMN pushed_erp_at;
ALTER TABLE erp.customers DROP COLUMN synced, DROP COLUMN held, DROP COLUMN conflict_id,
    DROP COLUMN pushed_over, DROP COLUMN pushed_erp_at;
