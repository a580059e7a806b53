DROP TABLE crm.contacts, crm.accounts, crm.opportunities, crm.sync_state, crm.reconcile_cursors;
DROP FUNCTION crm.capture_change();
