//! The platform's own Prometheus metrics, registered once per process in the default
//! registry and served at `/metrics`.

use std::sync::LazyLock;

use prometheus::{
    HistogramVec, IntCounterVec, IntGauge, register_histogram_vec, register_int_counter_vec,
    register_int_gauge,
};

macro_rules! metric {
    ($name:ident: $ty:ty = $init:expr) => {
        pub static $name: LazyLock<$ty> =
            LazyLock::new(|| $init.unwrap_or_else(|e| panic!("metric registration: {e}")));
    };
}

metric!(HTTP_REQUESTS: IntCounterVec = register_int_counter_vec!(
    "http_requests_total", "HTTP requests by route, method and status", &["route", "method", "status"]));
metric!(HTTP_DURATION: HistogramVec = register_histogram_vec!(
    "http_request_duration_seconds", "HTTP request latency by route", &["route", "method"],
    vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]));
metric!(MESSAGES: IntCounterVec = register_int_counter_vec!(
    "bus_messages_total", "Consumed messages by consumer and outcome (ok, retry, dead_letter)",
    &["consumer", "outcome"]));
metric!(OUTBOX: IntCounterVec = register_int_counter_vec!(
    "outbox_published_total", "Outbox rows published by schema", &["schema"]));
metric!(PUSH_DRIFT: IntCounterVec = register_int_counter_vec!(
    "push_drift_total", "Records anti-entropy found different on a target (and pushed again)",
    &["target"]));
metric!(GROUP_COMMIT: HistogramVec = register_histogram_vec!(
    "group_commit_batch_size", "Requests applied per transaction by a group commit", &["name"],
    vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]));
metric!(PRUNED: IntCounterVec = register_int_counter_vec!(
    "retention_pruned_rows_total", "History rows removed by retention, by table", &["table"]));
metric!(READY: IntGauge = register_int_gauge!(
    "ready", "1 when the last readiness check passed"));
metric!(STREAM_BYTES: prometheus::IntGaugeVec = prometheus::register_int_gauge_vec!(
    "nats_stream_bytes", "Bytes a JetStream stream holds", &["stream"]));
metric!(STREAM_MESSAGES: prometheus::IntGaugeVec = prometheus::register_int_gauge_vec!(
    "nats_stream_messages", "Messages a JetStream stream holds", &["stream"]));
metric!(STREAM_MAX_BYTES: prometheus::IntGaugeVec = prometheus::register_int_gauge_vec!(
    "nats_stream_max_bytes", "A JetStream stream's size limit (-1: none)", &["stream"]));
metric!(DB_POOL_MAX: prometheus::IntGaugeVec = prometheus::register_int_gauge_vec!(
    "db_pool_max_connections",
    "PostgreSQL connections a pool may open (summed over pools of one name; listen and \
     readiness: the one connection each keeps outside the pools)", &["pool"]));
metric!(DB_POOL_OPEN: prometheus::IntGaugeVec = prometheus::register_int_gauge_vec!(
    "db_pool_connections", "PostgreSQL connections a pool holds now", &["pool"]));

/// How full a stream is (`nats_stream_bytes` against `nats_stream_max_bytes`).
pub fn stream_usage(stream: &str, bytes: u64, messages: u64, max_bytes: i64) {
    STREAM_BYTES.with_label_values(&[stream]).set(i64::try_from(bytes).unwrap_or(i64::MAX));
    STREAM_MESSAGES.with_label_values(&[stream]).set(i64::try_from(messages).unwrap_or(i64::MAX));
    STREAM_MAX_BYTES.with_label_values(&[stream]).set(max_bytes);
}

pub fn consumed(consumer: &str, outcome: &str) {
    MESSAGES.with_label_values(&[consumer, outcome]).inc();
}

pub fn pruned(table: &str, rows: u64) {
    PRUNED.with_label_values(&[table]).inc_by(rows);
}

pub fn push_drift(target: &str) {
    PUSH_DRIFT.with_label_values(&[target]).inc();
}

pub fn outbox_published(schema: &str, n: usize) {
    OUTBOX.with_label_values(&[schema]).inc_by(n as u64);
}

pub fn group_commit(name: &str, batch: usize) {
    GROUP_COMMIT.with_label_values(&[name]).observe(batch as f64);
}
