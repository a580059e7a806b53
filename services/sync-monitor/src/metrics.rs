//! sync-monitor's Prometheus gauges: every figure of the last health check, per integration.

use std::sync::LazyLock;

use prometheus::{
    IntCounter, IntGauge, IntGaugeVec, register_int_counter, register_int_gauge,
    register_int_gauge_vec,
};

use crate::health::{Overall, Report};

macro_rules! metric {
    ($name:ident: $ty:ty = $init:expr) => {
        pub static $name: LazyLock<$ty> =
            LazyLock::new(|| $init.unwrap_or_else(|e| panic!("metric registration: {e}")));
    };
}

metric!(EVENTS: IntCounter = register_int_counter!(
    "monitor_sync_events_consumed_total", "sync.events messages the monitor consumed"));
metric!(OVERALL: IntGauge = register_int_gauge!(
    "monitor_overall_status", "Platform health: 0 healthy, 1 degraded, 2 unhealthy"));
metric!(STATUS: IntGaugeVec = register_int_gauge_vec!(
    "monitor_integration_status", "Integration health: 0 ok or idle, 1 warning, 2 error",
    &["integration"]));
metric!(LAG: IntGaugeVec = register_int_gauge_vec!(
    "monitor_sync_lag_minutes", "Minutes since the integration's last successful sync (-1: never)",
    &["integration"]));
metric!(MAX_LAG: IntGaugeVec = register_int_gauge_vec!(
    "monitor_max_sync_lag_minutes", "The integration's maximum sync lag", &["integration"]));
metric!(ERRORS: IntGaugeVec = register_int_gauge_vec!(
    "monitor_errors_last_hour", "Failed sync attempts in the last hour", &["integration"]));
metric!(SYNCED: IntGaugeVec = register_int_gauge_vec!(
    "monitor_synced_last_hour", "Successful sync attempts in the last hour", &["integration"]));
metric!(QUEUE: IntGaugeVec = register_int_gauge_vec!(
    "monitor_queue_depth", "Messages waiting in the integration's JetStream consumers",
    &["integration"]));
metric!(DEAD_LETTERS: IntGaugeVec = register_int_gauge_vec!(
    "monitor_dead_letters", "Open dead letters", &["integration"]));
metric!(LEDGER: IntGaugeVec = register_int_gauge_vec!(
    "monitor_ledger_open", "Open error-ledger rows in the services", &["integration"]));
metric!(CONFLICTS: IntGaugeVec = register_int_gauge_vec!(
    "monitor_conflicts", "Open conflicts by state (pending, escalated)",
    &["integration", "state"]));
metric!(BULK: IntGaugeVec = register_int_gauge_vec!(
    "monitor_bulk_jobs", "Bulk jobs by state (running, failed)", &["integration", "state"]));

/// Publishes a check's figures.
pub fn record(report: &Report) {
    OVERALL.set(match report.status {
        Overall::Healthy => 0,
        Overall::Degraded => 1,
        Overall::Unhealthy => 2,
    });
    for i in &report.integrations {
        let f = &i.figures;
        let name = [f.name.as_str()];
        STATUS.with_label_values(&name).set(match i.status {
            "error" => 2,
            "warning" => 1,
            _ => 0,
        });
        LAG.with_label_values(&name).set(i.lag_minutes.unwrap_or(-1));
        MAX_LAG.with_label_values(&name).set(f.max_lag_minutes);
        ERRORS.with_label_values(&name).set(f.error_count_1h);
        SYNCED.with_label_values(&name).set(f.synced_1h);
        QUEUE.with_label_values(&name).set(i64::try_from(f.queue_depth).unwrap_or(i64::MAX));
        DEAD_LETTERS.with_label_values(&name).set(f.dead_letters);
        LEDGER.with_label_values(&name).set(f.ledger_open);
        CONFLICTS.with_label_values(&[&f.name, "pending"]).set(f.pending_conflicts);
        CONFLICTS.with_label_values(&[&f.name, "escalated"]).set(f.escalated_conflicts);
        BULK.with_label_values(&[&f.name, "running"]).set(f.bulk_running);
        BULK.with_label_values(&[&f.name, "failed"]).set(f.bulk_failed);
    }
}
