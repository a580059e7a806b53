//! What a connector supplies to the push engine: the [`Connector`] trait and the types it
//! works with.

use std::{future::Future, time::Duration};

use diesel_async::AsyncPgConnection;
use serde::Serialize;
use serde_json::Value;

use crate::{
    bus::outbox::OutboxRow,
    outbound::{Endpoint, OutboundRequest, Outcome},
};

/// Where the latest change of a record came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The system's name, as targets are named (`erp`, `pos`, `crm`, ...). That system made the
    /// change itself, so it normally holds the value already, unless a push of ours crossed its
    /// change in the network and overwrote it: the engine reads it back before skipping it.
    pub system: String,
}

/// A record's key in the push engine's tables and messages: two parts joined by `/`, a kind
/// and an id (`contact/42`, `order/SO-1`) or a place and an item (`W1/MUG-1`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    pub first: String,
    pub second: String,
}

impl RecordKey {
    pub fn new(first: &str, second: &str) -> Self {
        Self { first: first.to_owned(), second: second.to_owned() }
    }

    /// The key `key` stands for; `None` without a `/`.
    pub fn parse(key: &str) -> Option<Self> {
        let (first, second) = key.split_once('/')?;
        Some(Self::new(first, second))
    }
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.first, self.second)
    }
}

/// One part of the key of the records of a table: a fixed kind or a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPart {
    /// The same for every record (`contact`): letters, digits and `_` only.
    Kind(&'static str),
    /// A column of the table.
    Column(&'static str),
}

/// Where a connector's records are, for resume, status and anti-entropy: the engine pages
/// through `table`, keyed by the two parts of their [`RecordKey`], with the version column
/// that grows with every change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Records {
    /// `schema.table`.
    pub table: &'static str,
    pub key: (KeyPart, KeyPart),
    pub version: &'static str,
    /// Only rows whose version is above 0 (a record never changed here is no one's to push).
    pub changed_only: bool,
}

impl Records {
    /// The records of a connector table whose local changes are counted in `local_version`
    /// (the push version), keyed `<kind>/<key column>`; rows never changed here are left out.
    pub fn local_changes(table: &'static str, kind: &'static str, key: &'static str) -> Self {
        Self {
            table,
            key: (KeyPart::Kind(kind), KeyPart::Column(key)),
            version: "local_version",
            changed_only: true,
        }
    }

    fn part(part: KeyPart) -> String {
        match part {
            KeyPart::Kind(kind) => {
                debug_assert!(kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                format!("'{kind}'")
            }
            KeyPart::Column(column) => column.to_owned(),
        }
    }

    /// SQL returning `(key text, version bigint)` of every record, ordered by key, after `$1`,
    /// at most `$2`.
    pub(crate) fn page_sql(&self) -> String {
        let key = format!("{} || '/' || {}", Self::part(self.key.0), Self::part(self.key.1));
        let changed =
            if self.changed_only { format!("{} > 0 AND ", self.version) } else { String::new() };
        format!(
            "SELECT {key} AS key, {version} AS version FROM {table} \
             WHERE {changed}{key} > $1 ORDER BY 1 LIMIT $2",
            version = self.version,
            table = self.table
        )
    }
}

/// A record as the connector loaded it.
#[derive(Clone, Debug)]
pub struct Loaded<R> {
    /// The record's key, as in the push message (e.g. `W1/SKU-1`).
    pub key: String,
    /// Increases with every change; targets remember the version they were told.
    pub version: i64,
    pub origin: Option<Origin>,
    pub record: R,
}

/// What the engine may do after a delivered push, inside the batch's transaction.
pub struct FollowUp<'a> {
    pub conn: &'a mut AsyncPgConnection,
    pub http: &'a reqwest::Client,
    pub endpoint: &'a Endpoint,
}

/// A connector: how one kind of record reaches one target system.
pub trait Connector: Send + Sync + 'static {
    /// The record as pushed; serialized into the push log.
    type Record: Serialize + Send + Sync + 'static;
    /// The message that asks for a push.
    type Message: serde::de::DeserializeOwned + Send + 'static;

    /// The entity name in the log, on `sync.events.<target>.outbound.<entity>`, and in the
    /// consumer's name (a service may run one engine per entity for one target).
    fn entity(&self) -> &'static str;

    /// The key of the record a message names.
    fn key(&self, message: &Self::Message) -> String;

    /// The message that asks for a push of `key` (resume, anti-entropy).
    fn message(&self, key: &str) -> OutboxRow;

    /// Where every record this target should hold is.
    fn records(&self) -> Records;

    /// Loads the current state of `keys`; keys without a record are left out.
    fn load(
        &self,
        conn: &mut AsyncPgConnection,
        keys: &[String],
    ) -> impl Future<Output = diesel::QueryResult<Vec<Loaded<Self::Record>>>> + Send;

    /// The request that sets the target to `record`.
    fn request(&self, record: &Loaded<Self::Record>) -> OutboundRequest;

    /// The request that reads the target's figure, where its API has one.
    fn read_request(&self, _record: &Loaded<Self::Record>) -> Option<OutboundRequest> {
        None
    }

    /// One request reading up to [`super::READ_MANY`] records at once, where the target's API has one
    /// (`None`: they are read one by one with [`Connector::read_request`]).
    fn read_many_request(&self, _records: &[&Loaded<Self::Record>]) -> Option<OutboundRequest> {
        None
    }

    /// Whether the target's answer to [`Connector::read_request`] or
    /// [`Connector::read_many_request`] shows exactly `record`.
    fn holds(&self, _record: &Loaded<Self::Record>, _answer: &Value) -> bool {
        false
    }

    /// Work after a delivered push, or on a redelivery of a record the target already has
    /// (for example, write back the id a create returned, or settle a derived state). The
    /// answer is `Null` when nothing was sent. A non-delivered outcome is retried like a push.
    fn after_delivered(
        &self,
        _ctx: FollowUp<'_>,
        _record: &Loaded<Self::Record>,
        _answer: &Value,
    ) -> impl Future<Output = anyhow::Result<Outcome>> + Send {
        async { Ok(Outcome::Delivered(reqwest::StatusCode::OK)) }
    }

    /// The outcome of a push the target answered with a success status: `Delivered`, unless
    /// the answer itself reports this record's failure (a batch endpoint's `207 Multi-Status`
    /// listing the record in its `errors`), which is then retried or refused like a push.
    fn answered(
        &self,
        _record: &Loaded<Self::Record>,
        status: reqwest::StatusCode,
        _answer: &Value,
    ) -> Outcome {
        Outcome::Delivered(status)
    }

    /// Whether a refusal (`4xx` other than 410/429) of the push of `record` means the target
    /// is as we want it anyway (e.g. `404` for deleting a record the target deleted already).
    fn delivered_anyway(&self, _record: &Loaded<Self::Record>, _status: u16) -> bool {
        false
    }

    /// Extra SQL returning `(key text)` of records that are unsettled although their version was
    /// delivered (e.g. a follow-up call that failed); `$3` is the target (`$1` and `$2` belong to
    /// the records' page). Resume re-queues them.
    fn unsettled_sql(&self) -> Option<String> {
        None
    }
}

/// Tuning of one target's engine.
#[derive(Clone, Copy, Debug)]
pub struct PushConfig {
    /// Batches in flight per replica (each holds one connection of the engine's pool).
    pub concurrency: usize,
    /// Most records per batch (one transaction).
    pub batch: usize,
    /// HTTP calls in flight within a batch.
    pub http_concurrency: usize,
    /// Pause between anti-entropy passes (`None`: off).
    pub anti_entropy_every: Option<Duration>,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            concurrency: 1,
            batch: 64,
            http_concurrency: 16,
            anti_entropy_every: Some(Duration::from_secs(300)),
        }
    }
}
