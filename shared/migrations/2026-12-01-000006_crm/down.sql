DO $$
DECLARE s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['crm', 'erp', 'inventory', 'directory', 'resolver', 'monitor'] LOOP
        EXECUTE format('DROP TABLE %I.record_errors', s);
    END LOOP;
END;
$$;
DROP FUNCTION public.datasync_error_ledger(text);
DROP TABLE crm.contacts, crm.accounts, crm.opportunities, crm.sync_state, crm.reconcile_cursors;
DROP FUNCTION crm.capture_change();
