DROP TABLE monitor.settings_audit, monitor.alerts, monitor.integration_status,
    monitor.health_reports, monitor.bulk_jobs, monitor.conflicts, monitor.service_dead_letters,
    monitor.last_success, monitor.hourly, monitor.sync_events;
