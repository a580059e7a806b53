//! The JetStream streams of the platform, declared idempotently at start-up by each service
//! that uses them. File storage everywhere: a stream is the durable hand-off between services.

use std::time::Duration;

use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};

use super::Bus;

/// Duplicate window for `Nats-Msg-Id`: longer than the outbox relay's retry horizon (a row
/// stays in the outbox until its PubAck arrives, so a re-send after a crash happens within
/// minutes; two hours leaves room for a long NATS outage).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60 * 60);

const WEEK: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A stream declaration.
#[derive(Debug)]
pub struct StreamSpec {
    pub name: &'static str,
    /// Subject patterns, without the installation prefix.
    pub subjects: &'static [&'static str],
    pub retention: RetentionPolicy,
    /// Messages kept per subject (`-1` = unlimited); `1` turns a stream into a
    /// "latest value per key" table, which is how per-target stock levels coalesce.
    pub max_messages_per_subject: i64,
    /// Age after which messages are dropped (`ZERO` = never).
    pub max_age: Duration,
}

/// Verified raw inbound webhooks; each message is work for exactly one consumer.
pub const WEBHOOKS: StreamSpec = StreamSpec {
    name: "WEBHOOKS",
    subjects: &["webhooks.>"],
    retention: RetentionPolicy::WorkQueue,
    max_messages_per_subject: -1,
    max_age: Duration::ZERO,
};

/// Audit trail of every sync in either direction; the monitor's input.
pub const SYNC_EVENTS: StreamSpec = StreamSpec {
    name: "SYNC_EVENTS",
    subjects: &["sync.events.>"],
    retention: RetentionPolicy::Limits,
    max_messages_per_subject: -1,
    max_age: WEEK,
};

/// Conflict lifecycle.
pub const SYNC_CONFLICTS: StreamSpec = StreamSpec {
    name: "SYNC_CONFLICTS",
    subjects: &["sync.conflicts.>"],
    retention: RetentionPolicy::Limits,
    max_messages_per_subject: -1,
    max_age: WEEK,
};

/// Stock ledger events: `inventory.adjusted.<sku>`, one per applied adjustment, and
/// `inventory.loaded.<source>`, one per applied bulk page.
pub const INVENTORY: StreamSpec = StreamSpec {
    name: "INVENTORY",
    subjects: &["inventory.adjusted.>", "inventory.loaded.>"],
    retention: RetentionPolicy::Limits,
    max_messages_per_subject: -1,
    max_age: WEEK,
};

/// "This sku/warehouse changed, push it": `inventory.level.<warehouse>.<sku>`, read by one
/// durable consumer per target. One message per subject, so a burst of changes leaves one
/// pending push per record and target. (A separate stream from `INVENTORY` because the
/// per-subject limit is stream-wide and must not truncate the ledger events.)
pub const INVENTORY_LEVELS: StreamSpec = StreamSpec {
    name: "INVENTORY_LEVELS",
    subjects: &["inventory.level.>"],
    retention: RetentionPolicy::Limits,
    max_messages_per_subject: 1,
    max_age: Duration::ZERO,
};

/// Counts reported by the systems that own them (`inventory.count.<source>`), for
/// inventory-sync: work for exactly one consumer, shared by its replicas.
pub const INVENTORY_COUNTS: StreamSpec = StreamSpec {
    name: "INVENTORY_COUNTS",
    subjects: &["inventory.count.>"],
    retention: RetentionPolicy::WorkQueue,
    max_messages_per_subject: -1,
    max_age: Duration::ZERO,
};

/// Local changes to push to an external system.
pub const OUTBOUND: StreamSpec = StreamSpec {
    name: "OUTBOUND",
    subjects: &["outbound.>"],
    retention: RetentionPolicy::WorkQueue,
    max_messages_per_subject: -1,
    max_age: Duration::ZERO,
};

/// Alerts for sync-monitor to route (`alerts.<severity>`).
pub const ALERTS: StreamSpec = StreamSpec {
    name: "ALERTS",
    subjects: &["alerts.>"],
    retention: RetentionPolicy::Limits,
    max_messages_per_subject: -1,
    max_age: WEEK,
};

/// The local directory's changes (`directory.user.<change>`, `directory.group.<change>`),
/// published by user-sync for whoever keeps accounts in step with it.
pub const DIRECTORY: StreamSpec = StreamSpec {
    name: "DIRECTORY",
    subjects: &["directory.>"],
    retention: RetentionPolicy::Limits,
    max_messages_per_subject: -1,
    max_age: WEEK,
};

/// The larger of two limits where zero (or less) means "none", the largest of all.
fn larger_limit(a: i64, b: i64) -> i64 {
    if a <= 0 || b <= 0 { -1 } else { a.max(b) }
}

fn larger_age(a: Duration, b: Duration) -> Duration {
    if a.is_zero() || b.is_zero() { Duration::ZERO } else { a.max(b) }
}

impl Bus {
    /// The stream as this release declares it, with the installation's topology: replicas,
    /// a size limit, and for a work queue an age limit and `DiscardPolicy::New` (a full queue
    /// refuses new messages, which then wait in their outbox, instead of dropping old ones).
    fn declared(&self, spec: &StreamSpec) -> stream::Config {
        let work_queue = spec.retention == RetentionPolicy::WorkQueue;
        stream::Config {
            name: self.name(spec.name),
            subjects: spec.subjects.iter().map(|s| self.subject(s)).collect(),
            retention: spec.retention,
            storage: StorageType::File,
            num_replicas: self.topology.replicas.max(1),
            max_messages_per_subject: spec.max_messages_per_subject,
            max_age: if work_queue && spec.max_age.is_zero() {
                self.topology.work_queue_max_age
            } else {
                spec.max_age
            },
            max_bytes: if self.topology.max_bytes > 0 { self.topology.max_bytes } else { -1 },
            duplicate_window: DUPLICATE_WINDOW,
            discard: if work_queue { DiscardPolicy::New } else { DiscardPolicy::Old },
            ..Default::default()
        }
    }

    /// Creates the stream, or updates it to this declaration ([`Bus::declare_stream`]).
    pub async fn ensure_stream(&self, spec: &StreamSpec) -> anyhow::Result<()> {
        self.declare_stream(self.declared(spec)).await
    }

    /// Creates a stream (one of ours, or the settings bucket's), or updates it, with at least
    /// the installation's replicas and without ever lowering what the running stream has: its
    /// replicas, age and size limits stay when larger (an operator's change to 3 replicas
    /// survives every restart), and its storage type is kept.
    pub async fn declare_stream(&self, mut config: stream::Config) -> anyhow::Result<()> {
        let name = config.name.clone();
        let declaring = |e: &dyn std::fmt::Display| anyhow::anyhow!("declaring stream {name}: {e}");
        config.num_replicas = config.num_replicas.max(self.topology.replicas.max(1));
        match self.js.get_stream(&config.name).await {
            Ok(mut existing) => {
                let current = existing.info().await.map_err(|e| declaring(&e))?.config.clone();
                config.num_replicas = config.num_replicas.max(current.num_replicas);
                config.max_age = larger_age(config.max_age, current.max_age);
                config.max_bytes = larger_limit(config.max_bytes, current.max_bytes);
                config.storage = current.storage;
                self.js.update_stream(config).await.map_err(|e| declaring(&e))?;
            }
            Err(_) => {
                self.js.create_stream(config).await.map_err(|e| declaring(&e))?;
            }
        }
        Ok(())
    }

    /// How full each of `specs` is: `(name, bytes, messages, max_bytes)` (`max_bytes` -1: no
    /// limit).
    pub async fn stream_usage(&self, specs: &[&StreamSpec]) -> Vec<(&'static str, u64, u64, i64)> {
        let mut out = Vec::new();
        for spec in specs {
            if let Ok(mut stream) = self.js.get_stream(self.name(spec.name)).await
                && let Ok(info) = stream.info().await
            {
                out.push((spec.name, info.state.bytes, info.state.messages, info.config.max_bytes));
            }
        }
        out
    }

    /// Deletes a durable consumer an earlier release declared, if it is still there. Its
    /// unacknowledged messages stay in a work-queue stream for the consumer that replaces it.
    pub async fn retire_consumer(&self, spec: &StreamSpec, durable: &str) -> anyhow::Result<()> {
        let stream = match self.js.get_stream(self.name(spec.name)).await {
            Ok(stream) => stream,
            Err(e) => anyhow::bail!("reading stream {}: {e}", spec.name),
        };
        let name = self.name(durable);
        if stream.consumer_info(&name).await.is_ok() {
            stream
                .delete_consumer(&name)
                .await
                .map_err(|e| anyhow::anyhow!("deleting consumer {durable}: {e}"))?;
            tracing::info!(consumer = durable, stream = spec.name, "retired an obsolete consumer");
        }
        Ok(())
    }
}
