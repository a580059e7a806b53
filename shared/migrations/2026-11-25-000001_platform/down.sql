DROP SCHEMA bulk CASCADE;
DROP SCHEMA monitor CASCADE;
DROP SCHEMA resolver CASCADE;
DROP SCHEMA directory CASCADE;
DROP SCHEMA inventory CASCADE;
DROP SCHEMA erp CASCADE;
DROP SCHEMA crm CASCADE;
DROP FUNCTION public.datasync_platform_tables(text);
DROP FUNCTION public.datasync_notify_outbox();
