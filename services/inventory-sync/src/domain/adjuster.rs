//! Applying stock adjustments: atomically, never below zero, idempotently, and fast on a hot sku.
//!
//! Requests go through the platform's group commit ([`shared::db::group_commit`]): each batch
//! of concurrent requests is applied in ONE transaction by [`apply_batch`], which locks the affected
//! stock rows in a fixed order (no deadlocks between executors or replicas), reads their
//! current levels, then walks the requests in arrival order, validating each against the running
//! level (so each keeps its own validation and ledger row), and writes all ledger rows, the new
//! levels and the outbox events with a few set-based statements. Concurrent adjustments on one
//! sku therefore share a transaction and a commit instead of queueing on the row lock one by one.
//!
//! Idempotency: `(source, reference)` is unique in the ledger. Rows are locked before the ledger
//! is consulted, so a concurrent retry of the same adjustment waits for the first and then finds
//! its answer. The rare conflict left (the same key used for a different sku at the same moment)
//! aborts the transaction with a unique violation; the batch is then retried and the key reuse is
//! reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use diesel::result::Error as DieselError;
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use serde::Serialize;
use shared::{
    bus::outbox::{self, OutboxRow},
    db::{
        PgPool,
        group_commit::{Batch, GroupCommit, GroupCommitConfig},
    },
    platform::Platform,
    schemas::{
        Envelope,
        inventory::{
            AdjustmentType, LoadedCount, StockAdjusted, StockLevelChanged, StockPageLoaded, Target,
        },
    },
    settings::Settings,
};

use crate::models::{
    count_mark::CountMark,
    ledger::{LedgerRow, NewLedgerRow},
    product::ReorderData,
    stock::{NewLevel, StockRow},
};

use super::{
    alerts,
    plan::{self, Level, MarkKey, Plan, Prior, RowKey, Stamp, Step},
};
use crate::SCHEMA;

/// A validated adjustment request.
#[derive(Clone, Debug, PartialEq)]
pub struct Adjustment {
    pub source: String,
    pub reference: String,
    pub sku: String,
    pub warehouse: String,
    pub kind: AdjustmentType,
    pub quantity: i64,
    pub expected_on_hand: Option<i64>,
    pub reason: Option<String>,
    /// A count reported by a system, with that system's time (and version) of it: applied
    /// only if newer than the last count applied from that source for the sku and warehouse.
    pub stamp: Option<Stamp>,
    /// A record of a bulk load's page: announced with its page, not on its own.
    pub loaded: Option<Loaded>,
}

/// What a bulk page's record carries besides its count.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The bulk job.
    pub job_id: String,
    /// The target the page was read from, when it is one: the page is its read-back, so it
    /// holds the levels the page set and its engine neither pushes nor reads them back.
    pub told: Option<Target>,
}

/// The answer to an adjustment (stored in the ledger; replayed on retries).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Applied {
    pub ledger_id: i64,
    pub source: String,
    pub reference: String,
    pub sku: String,
    pub warehouse: String,
    #[serde(rename = "type")]
    pub kind: AdjustmentType,
    pub quantity: i64,
    pub quantity_before: i64,
    pub new_quantity: i64,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// True when this is the stored answer of an earlier identical request (said in the
    /// `Idempotent-Replayed` header, not the body: a replay answers with the same body).
    #[serde(skip)]
    pub replayed: bool,
}

/// The bus event of an applied adjustment (the HTTP answer keeps the seed's `new_quantity`
/// name; the event says `quantity_after`).
impl From<&Applied> for StockAdjusted {
    fn from(a: &Applied) -> Self {
        Self {
            ledger_id: a.ledger_id,
            source: a.source.clone(),
            reference: a.reference.clone(),
            sku: a.sku.clone(),
            warehouse: a.warehouse.clone(),
            kind: a.kind,
            quantity: a.quantity,
            quantity_before: a.quantity_before,
            quantity_after: a.new_quantity,
            reason: a.reason.clone(),
        }
    }
}

/// Why an adjustment was refused. Nothing was written for it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Refused {
    #[error("unknown product {0}")]
    UnknownProduct(String),
    #[error("Inventory cannot be negative")]
    Negative { current_qty: i64, attempted_qty: i64 },
    #[error("on hand is {current_qty}, not the expected {expected_on_hand}")]
    ExpectedMismatch { current_qty: i64, expected_on_hand: i64 },
    #[error("a newer count from {origin} is already applied (counted {last:?}, this one {this:?})")]
    Stale { origin: String, last: Stamp, this: Stamp },
    #[error("reference {reference} of source {origin} was already used for a different adjustment")]
    KeyReused { origin: String, reference: String },
    #[error("adjustment could not be applied: {0}")]
    Failed(String),
}

/// Handle to the group commit that applies adjustments. Cheap to clone.
#[derive(Clone)]
pub struct Adjuster {
    commit: GroupCommit<Adjustments>,
}

/// How adjustments are applied in one transaction (see [`apply_batch`]).
pub struct Adjustments {
    settings: Settings,
    /// The systems levels fan out to (the configured ones): no level message is produced for a
    /// system nothing pushes to.
    targets: BTreeSet<Target>,
}

impl Batch for Adjustments {
    type Request = Adjustment;
    type Response = Result<Applied, Refused>;

    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        batch: &'a [Adjustment],
    ) -> BoxFuture<'a, diesel::QueryResult<Vec<Result<Applied, Refused>>>> {
        let low_stock_alerts =
            self.settings.own::<crate::config::InventorySettings>().low_stock_alerts;
        Box::pin(apply_batch(conn, batch, &self.targets, low_stock_alerts))
    }
}

impl Adjuster {
    /// Starts the executors (`ADJUST_WORKERS` transactions in flight, `ADJUST_MAX_BATCH`
    /// adjustments each), tracked by the platform's shutdown path.
    ///
    /// Requests are sharded by sku: all adjustments of one sku meet in the same executor's
    /// queue, so a hot sku forms one large batch instead of several executors queueing on its
    /// row lock, while different skus still commit in parallel.
    pub fn start(
        platform: &Platform,
        pool: PgPool,
        config: GroupCommitConfig,
        targets: BTreeSet<Target>,
    ) -> Self {
        let batch = Adjustments { settings: platform.settings.clone(), targets };
        Self { commit: platform.group_commit("inventory_adjustments", pool, config, batch) }
    }

    /// Applies a batch that arrives whole (a bulk load's page) in one transaction; one answer
    /// per adjustment, in order.
    pub async fn apply_all(&self, adjustments: Vec<Adjustment>) -> Vec<Result<Applied, Refused>> {
        self.commit
            .apply_all(adjustments)
            .await
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|e| Err(Refused::Failed(e.0))))
            .collect()
    }

    /// Applies one adjustment (possibly batched with concurrent ones).
    pub async fn apply(&self, adjustment: Adjustment) -> Result<Applied, Refused> {
        let sku = adjustment.sku.clone();
        self.commit.submit(sku, adjustment).await.map_err(|e| Refused::Failed(e.0))?
    }
}

/// The answer a ledger row stands for.
fn answer(row: &LedgerRow, replayed: bool) -> Applied {
    Applied {
        ledger_id: row.id,
        source: row.source.clone(),
        reference: row.reference.clone(),
        sku: row.sku.clone(),
        warehouse: row.warehouse.clone(),
        kind: AdjustmentType::parse(&row.r#type).unwrap_or(AdjustmentType::Adjustment),
        quantity: row.quantity,
        quantity_before: row.quantity_before,
        new_quantity: row.quantity_after,
        reason: row.reason.clone(),
        created_at: row.created_at,
        replayed,
    }
}

/// The stored request and its answer.
fn prior(row: LedgerRow) -> Prior {
    let answer = answer(&row, false);
    let request = Adjustment {
        source: answer.source.clone(),
        reference: answer.reference.clone(),
        sku: answer.sku.clone(),
        warehouse: answer.warehouse.clone(),
        kind: answer.kind,
        quantity: answer.quantity,
        expected_on_hand: row.expected_on_hand,
        reason: answer.reason.clone(),
        stamp: None,
        loaded: None,
    };
    Prior { request, answer }
}

/// One transaction for a batch; returns one answer per adjustment, in order.
async fn apply_batch(
    conn: &mut AsyncPgConnection,
    batch: &[Adjustment],
    targets: &BTreeSet<Target>,
    low_stock_alerts: bool,
) -> Result<Vec<Result<Applied, Refused>>, DieselError> {
    // 1. Products (reorder points for alerts; unknown skus are refused).
    let skus: Vec<&str> =
        batch.iter().map(|a| a.sku.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    let products: HashMap<String, ReorderData> =
        ReorderData::of(conn, &skus).await?.into_iter().map(|p| (p.sku.clone(), p)).collect();

    // 2. Lock the stock rows in a fixed order, creating missing ones.
    let keys: BTreeSet<(&str, &str)> = batch
        .iter()
        .filter(|a| products.contains_key(&a.sku))
        .map(|a| (a.sku.as_str(), a.warehouse.as_str()))
        .collect();
    let keys: Vec<(&str, &str)> = keys.into_iter().collect();
    let mut levels: BTreeMap<RowKey, Level> = BTreeMap::new();
    if !keys.is_empty() {
        levels = StockRow::lock(conn, &keys)
            .await?
            .into_iter()
            .map(|r| ((r.sku, r.warehouse), (r.on_hand, r.version)))
            .collect();
    }
    // Rows that never changed before this batch (their first receipt is not "back in stock").
    let mut fresh: BTreeSet<(String, String)> =
        levels.iter().filter(|(_, (_, version))| *version == 0).map(|(k, _)| k.clone()).collect();

    // 3. Earlier answers for these idempotency keys.
    let idempotency_keys: Vec<(&str, &str)> =
        batch.iter().map(|a| (a.source.as_str(), a.reference.as_str())).collect();
    let existing: HashMap<(String, String), Prior> = LedgerRow::by_keys(conn, &idempotency_keys)
        .await?
        .into_iter()
        .map(|r| ((r.source.clone(), r.reference.clone()), prior(r)))
        .collect();

    // 4. The last applied count of each stamped count's source (the stock row locks above
    //    serialise these too).
    let stamped: Vec<(&str, &str, &str)> = batch
        .iter()
        .filter(|a| a.stamp.is_some())
        .map(|a| (a.source.as_str(), a.sku.as_str(), a.warehouse.as_str()))
        .collect();
    let mut marks: HashMap<MarkKey, Stamp> = HashMap::new();
    if !stamped.is_empty() {
        marks = CountMark::of(conn, &stamped).await?;
    }

    // 5. Walk the batch in order against the running levels (pure: `plan`).
    let Plan { steps: plans, rows: planned } =
        plan::plan(batch, &mut levels, &existing, &mut marks);
    struct NewRow<'a> {
        adjustment: &'a Adjustment,
        before: i64,
        after: i64,
    }
    let new_rows: Vec<NewRow> = planned
        .iter()
        .map(|r| NewRow { adjustment: &batch[r.request], before: r.before, after: r.after })
        .collect();

    // 6. Write ledger rows, count marks, levels and events.
    let mut inserted: Vec<Applied> = Vec::new();
    if !new_rows.is_empty() {
        let rows: Vec<NewLedgerRow> = new_rows
            .iter()
            .map(|r| NewLedgerRow {
                source: &r.adjustment.source,
                reference: &r.adjustment.reference,
                sku: &r.adjustment.sku,
                warehouse: &r.adjustment.warehouse,
                kind: r.adjustment.kind.as_str(),
                quantity: r.adjustment.quantity,
                expected_on_hand: r.adjustment.expected_on_hand,
                before: r.before,
                after: r.after,
                reason: r.adjustment.reason.as_deref(),
            })
            .collect();
        let rows = LedgerRow::insert(conn, &rows).await?;
        let applied_marks: BTreeMap<MarkKey, (&Stamp, &str)> = new_rows
            .iter()
            .filter_map(|r| {
                let a = r.adjustment;
                let key = (a.source.clone(), a.sku.clone(), a.warehouse.clone());
                a.stamp.as_ref().map(|s| (key, (s, a.reference.as_str())))
            })
            .collect();
        if !applied_marks.is_empty() {
            CountMark::save(conn, &applied_marks).await?;
        }
        let by_key: HashMap<(String, String), LedgerRow> =
            rows.into_iter().map(|r| ((r.source.clone(), r.reference.clone()), r)).collect();
        for row in &new_rows {
            let key = (row.adjustment.source.clone(), row.adjustment.reference.clone());
            let ledger = by_key.get(&key).ok_or(DieselError::NotFound)?;
            inserted.push(answer(ledger, false));
        }

        // Each row whose level changed, with its new level and the source of its last change.
        let last_change: BTreeMap<(&str, &str), &str> = new_rows
            .iter()
            .filter(|r| r.after != r.before)
            .map(|r| {
                let a = r.adjustment;
                ((a.sku.as_str(), a.warehouse.as_str()), a.source.as_str())
            })
            .collect();
        let changed: Vec<(&RowKey, &Level, &str)> = levels
            .iter()
            .filter_map(|(k, v)| last_change.get(&(k.0.as_str(), k.1.as_str())).map(|c| (k, v, *c)))
            .collect();
        let new_levels: Vec<NewLevel> = changed
            .iter()
            .map(|(k, v, source)| NewLevel {
                sku: &k.0,
                warehouse: &k.1,
                on_hand: v.0,
                version: v.1,
                last_source: source,
            })
            .collect();
        StockRow::update_levels(conn, &new_levels).await?;
        // A row a bulk page set last: the target the page came from holds its new level.
        let told_by: BTreeMap<(&str, &str), Target> = new_rows
            .iter()
            .map(|r| {
                let a = r.adjustment;
                let told = a.loaded.as_ref().and_then(|l| l.told);
                ((a.sku.as_str(), a.warehouse.as_str()), told)
            })
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .filter_map(|(k, told)| told.map(|t| (k, t)))
            .collect();
        let mut told: BTreeMap<Target, Vec<(String, i64)>> = BTreeMap::new();
        for (k, v, _) in &changed {
            if let Some(target) = told_by.get(&(k.0.as_str(), k.1.as_str())) {
                told.entry(*target).or_default().push((crate::push::key(&k.1, &k.0), v.1));
            }
        }
        for (target, versions) in told.iter().filter(|(t, _)| targets.contains(*t)) {
            shared::push::told(conn, SCHEMA, target.as_str(), versions).await?;
        }
        // Each changed row with the targets it is pushed to (not the one a page told it).
        let changed: Vec<(&str, &str)> = changed
            .iter()
            .map(|(k, _, _)| (k.0.as_str(), k.1.as_str()))
            .filter(|k| targets.iter().any(|t| told_by.get(k) != Some(t)))
            .collect();

        outbox::enqueue(
            conn,
            SCHEMA,
            &events(
                &inserted,
                batch_loaded(&new_rows.iter().map(|r| r.adjustment).collect::<Vec<_>>()),
                &products,
                &mut fresh,
                &changed,
                targets,
                low_stock_alerts,
            ),
        )
        .await?;
    }

    // 7. Answers in request order.
    let mut answers: Vec<Result<Applied, Refused>> = Vec::with_capacity(batch.len());
    for plan in plans {
        let answer = match plan {
            Step::Done(answer) => answer,
            Step::Insert(i) => Ok(inserted[i].clone()),
            Step::SameAs(first) => match &answers[first] {
                Ok(applied) => Ok(Applied { replayed: true, ..applied.clone() }),
                // The identical request is refused the same way.
                Err(refused) => Err(refused.clone()),
            },
        };
        answers.push(answer);
    }
    Ok(answers)
}

/// The bulk job of each applied adjustment (`None`: not from a bulk page), in order.
fn batch_loaded<'a>(adjustments: &[&'a Adjustment]) -> Vec<Option<&'a str>> {
    adjustments.iter().map(|a| a.loaded.as_ref().map(|l| l.job_id.as_str())).collect()
}

/// Outbox rows for applied adjustments: one `StockAdjusted` each, except the records of a bulk
/// page, announced together by one `StockPageLoaded` per job; one `StockLevelChanged` per
/// sku/warehouse whose level changed and that some target is told of (every target's push
/// engine reads it, the system a change came from included: that one is read back and pushed
/// only if a crossing push overwrote its change); and threshold-crossing alerts.
fn events(
    applied: &[Applied],
    loaded: Vec<Option<&str>>,
    products: &HashMap<String, ReorderData>,
    fresh: &mut BTreeSet<(String, String)>,
    changed: &[(&str, &str)],
    configured: &BTreeSet<Target>,
    low_stock_alerts: bool,
) -> Vec<OutboxRow> {
    let mut rows = Vec::with_capacity(applied.len() + changed.len());
    let mut pages: BTreeMap<&str, StockPageLoaded> = BTreeMap::new();
    for (a, job) in applied.iter().zip(loaded) {
        match job {
            None => {
                rows.push(OutboxRow::new(&Envelope::new(crate::SERVICE, StockAdjusted::from(a))))
            }
            Some(job) if a.quantity_before != a.new_quantity => pages
                .entry(job)
                .or_insert_with(|| StockPageLoaded {
                    source: a.source.clone(),
                    job_id: job.to_owned(),
                    records: Vec::new(),
                })
                .records
                .push(LoadedCount {
                    ledger_id: a.ledger_id,
                    sku: a.sku.clone(),
                    warehouse: a.warehouse.clone(),
                    quantity_before: a.quantity_before,
                    quantity_after: a.new_quantity,
                }),
            Some(_) => {}
        }
        let first_change = fresh.remove(&(a.sku.clone(), a.warehouse.clone()));
        if let Some(product) = products.get(&a.sku)
            && !first_change
        {
            for alert in
                alerts::crossings(a, &product.name, product.reorder_point, low_stock_alerts)
            {
                rows.push(OutboxRow::new(&Envelope::new(crate::SERVICE, alert)));
            }
        }
    }
    for page in pages.into_values().filter(|p| !p.records.is_empty()) {
        rows.push(OutboxRow::new(&Envelope::new(crate::SERVICE, page)));
    }
    if !configured.is_empty() {
        for (sku, warehouse) in changed {
            rows.push(OutboxRow::new(&Envelope::new(
                crate::SERVICE,
                StockLevelChanged { sku: (*sku).to_owned(), warehouse: (*warehouse).to_owned() },
            )));
        }
    }
    rows
}
