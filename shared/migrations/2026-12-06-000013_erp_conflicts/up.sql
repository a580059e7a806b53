-- Conflicts between local changes and the ERP's own (order status; customer name, email,
-- phone), raised instead of letting the later clock win silently.
--   synced         the pushed fields as both sides last agreed on them: the base a crossing
--                  edit is measured against ({}: not known yet)
--   held           fields of an open conflict, with the ERP's values: the ERP keeps them (they
--                  are not pushed) until the conflict is resolved
--   conflict_id    the open conflict
--   pushed_over    the agreed values the latest delivered push replaced in the ERP, and
--   pushed_erp_at  the ERP's time of that push: an ERP change older than the push that set a
--                  field to a third value was overwritten by it, which is a conflict too
ALTER TABLE erp.orders
    ADD COLUMN synced jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN held jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN conflict_id uuid,
    ADD COLUMN pushed_over jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN pushed_erp_at timestamptz;
ALTER TABLE erp.customers
    ADD COLUMN synced jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN held jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN conflict_id uuid,
    ADD COLUMN pushed_over jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN pushed_erp_at timestamptz;

-- Records without a local change on its way agree with the ERP now.
UPDATE erp.orders SET synced = jsonb_build_object('status', status)
    WHERE local_version = synced_version;
UPDATE erp.customers SET synced = jsonb_build_object('name', name, 'email', email, 'phone', phone)
    WHERE local_version = synced_version;
