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
use diesel::{
    result::Error as DieselError,
    sql_types::{Array, BigInt, Nullable, Text, Timestamptz},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use serde::Serialize;
use shared::{
    app::Platform,
    bus::outbox::{self, OutboxRow},
    db::{
        PgPool,
        group_commit::{Batch, GroupCommit, GroupCommitConfig},
    },
    schemas::{
        Envelope,
        inventory::{AdjustmentType, StockAdjusted, StockLevelChanged, Target},
    },
    settings::Settings,
};

use super::{
    alerts,
    plan::{self, Level, Plan, Prior, RowKey, Step},
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
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("unknown product {0}")]
    UnknownProduct(String),
    #[error("Inventory cannot be negative")]
    Negative { current_qty: i64, attempted_qty: i64 },
    #[error("on hand is {current_qty}, not the expected {expected_on_hand}")]
    ExpectedMismatch { current_qty: i64, expected_on_hand: i64 },
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

#[derive(diesel::QueryableByName)]
struct ProductRow {
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    reorder_point: i64,
}

#[derive(diesel::QueryableByName)]
struct StockRow {
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = Text)]
    warehouse: String,
    #[diesel(sql_type = BigInt)]
    on_hand: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

#[derive(diesel::QueryableByName)]
struct LedgerRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = Text)]
    reference: String,
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = Text)]
    warehouse: String,
    #[diesel(sql_type = Text)]
    r#type: String,
    #[diesel(sql_type = BigInt)]
    quantity: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    expected_on_hand: Option<i64>,
    #[diesel(sql_type = BigInt)]
    quantity_before: i64,
    #[diesel(sql_type = BigInt)]
    quantity_after: i64,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

impl LedgerRow {
    fn answer(&self, replayed: bool) -> Applied {
        Applied {
            ledger_id: self.id,
            source: self.source.clone(),
            reference: self.reference.clone(),
            sku: self.sku.clone(),
            warehouse: self.warehouse.clone(),
            kind: AdjustmentType::parse(&self.r#type).unwrap_or(AdjustmentType::Adjustment),
            quantity: self.quantity,
            quantity_before: self.quantity_before,
            new_quantity: self.quantity_after,
            reason: self.reason.clone(),
            created_at: self.created_at,
            replayed,
        }
    }

    /// The stored request and its answer.
    fn prior(self) -> Prior {
        let answer = self.answer(false);
        let request = Adjustment {
            source: answer.source.clone(),
            reference: answer.reference.clone(),
            sku: answer.sku.clone(),
            warehouse: answer.warehouse.clone(),
            kind: answer.kind,
            quantity: answer.quantity,
            expected_on_hand: self.expected_on_hand,
            reason: answer.reason.clone(),
        };
        Prior { request, answer }
    }
}

const LEDGER_COLUMNS: &str = "id, source, reference, sku, warehouse, type, quantity, \
    expected_on_hand, quantity_before, quantity_after, reason, created_at";

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
    let products: HashMap<String, ProductRow> = diesel::sql_query(
        "SELECT sku, name, reorder_point FROM inventory.products WHERE sku = ANY($1)",
    )
    .bind::<Array<Text>, _>(&skus)
    .load::<ProductRow>(conn)
    .await?
    .into_iter()
    .map(|p| (p.sku.clone(), p))
    .collect();

    // 2. Lock the stock rows in a fixed order, creating missing ones.
    let keys: BTreeSet<(&str, &str)> = batch
        .iter()
        .filter(|a| products.contains_key(&a.sku))
        .map(|a| (a.sku.as_str(), a.warehouse.as_str()))
        .collect();
    let (key_skus, key_warehouses): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    let mut levels: BTreeMap<RowKey, Level> = BTreeMap::new();
    if !keys.is_empty() {
        diesel::sql_query(
            "INSERT INTO inventory.stock (sku, warehouse) \
             SELECT * FROM unnest($1::text[], $2::text[]) ORDER BY 1, 2 ON CONFLICT DO NOTHING",
        )
        .bind::<Array<Text>, _>(&key_skus)
        .bind::<Array<Text>, _>(&key_warehouses)
        .execute(conn)
        .await?;
        let rows: Vec<StockRow> = diesel::sql_query(
            "SELECT sku, warehouse, on_hand, version FROM inventory.stock \
             WHERE (sku, warehouse) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
             ORDER BY sku, warehouse FOR UPDATE",
        )
        .bind::<Array<Text>, _>(&key_skus)
        .bind::<Array<Text>, _>(&key_warehouses)
        .load(conn)
        .await?;
        levels = rows.into_iter().map(|r| ((r.sku, r.warehouse), (r.on_hand, r.version))).collect();
    }
    // Rows that never changed before this batch (their first receipt is not "back in stock").
    let mut fresh: BTreeSet<(String, String)> =
        levels.iter().filter(|(_, (_, version))| *version == 0).map(|(k, _)| k.clone()).collect();

    // 3. Earlier answers for these idempotency keys.
    let sources: Vec<&str> = batch.iter().map(|a| a.source.as_str()).collect();
    let references: Vec<&str> = batch.iter().map(|a| a.reference.as_str()).collect();
    let existing: HashMap<(String, String), LedgerRow> = diesel::sql_query(format!(
        "SELECT {LEDGER_COLUMNS} FROM inventory.ledger \
         WHERE (source, reference) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
    ))
    .bind::<Array<Text>, _>(&sources)
    .bind::<Array<Text>, _>(&references)
    .load::<LedgerRow>(conn)
    .await?
    .into_iter()
    .map(|r| ((r.source.clone(), r.reference.clone()), r))
    .collect();

    // 4. Walk the batch in order against the running levels (pure: `plan`).
    let existing: HashMap<(String, String), Prior> =
        existing.into_iter().map(|(k, row)| (k, row.prior())).collect();
    let Plan { steps: plans, rows: planned } = plan::plan(batch, &mut levels, &existing);
    struct NewRow<'a> {
        adjustment: &'a Adjustment,
        before: i64,
        after: i64,
    }
    let new_rows: Vec<NewRow> = planned
        .iter()
        .map(|r| NewRow { adjustment: &batch[r.request], before: r.before, after: r.after })
        .collect();

    // 5. Write ledger rows, levels and events.
    let mut inserted: Vec<Applied> = Vec::new();
    if !new_rows.is_empty() {
        let col = |f: fn(&NewRow) -> String| new_rows.iter().map(f).collect::<Vec<String>>();
        let num = |f: fn(&NewRow) -> i64| new_rows.iter().map(f).collect::<Vec<i64>>();
        let rows: Vec<LedgerRow> = diesel::sql_query(format!(
            "INSERT INTO inventory.ledger (source, reference, sku, warehouse, type, quantity, \
                 expected_on_hand, delta, quantity_before, quantity_after, reason) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[]) \
             RETURNING {LEDGER_COLUMNS}"
        ))
        .bind::<Array<Text>, _>(col(|r| r.adjustment.source.clone()))
        .bind::<Array<Text>, _>(col(|r| r.adjustment.reference.clone()))
        .bind::<Array<Text>, _>(col(|r| r.adjustment.sku.clone()))
        .bind::<Array<Text>, _>(col(|r| r.adjustment.warehouse.clone()))
        .bind::<Array<Text>, _>(col(|r| r.adjustment.kind.as_str().to_owned()))
        .bind::<Array<BigInt>, _>(num(|r| r.adjustment.quantity))
        .bind::<Array<Nullable<BigInt>>, _>(new_rows.iter().map(|r| r.adjustment.expected_on_hand).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(num(|r| r.after - r.before))
        .bind::<Array<BigInt>, _>(num(|r| r.before))
        .bind::<Array<BigInt>, _>(num(|r| r.after))
        .bind::<Array<Nullable<Text>>, _>(new_rows.iter().map(|r| r.adjustment.reason.clone()).collect::<Vec<_>>())
        .load(conn)
        .await?;
        let by_key: HashMap<(String, String), LedgerRow> =
            rows.into_iter().map(|r| ((r.source.clone(), r.reference.clone()), r)).collect();
        for row in &new_rows {
            let key = (row.adjustment.source.clone(), row.adjustment.reference.clone());
            let ledger = by_key.get(&key).ok_or(DieselError::NotFound)?;
            inserted.push(ledger.answer(false));
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
        if !changed.is_empty() {
            diesel::sql_query(
                "UPDATE inventory.stock s SET on_hand = v.on_hand, version = v.version, \
                     last_source = v.last_source, updated_at = now() \
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[]) \
                     AS v(sku, warehouse, on_hand, version, last_source) \
                 WHERE s.sku = v.sku AND s.warehouse = v.warehouse",
            )
            .bind::<Array<Text>, _>(
                changed.iter().map(|(k, _, _)| k.0.as_str()).collect::<Vec<_>>(),
            )
            .bind::<Array<Text>, _>(
                changed.iter().map(|(k, _, _)| k.1.as_str()).collect::<Vec<_>>(),
            )
            .bind::<Array<BigInt>, _>(changed.iter().map(|(_, v, _)| v.0).collect::<Vec<_>>())
            .bind::<Array<BigInt>, _>(changed.iter().map(|(_, v, _)| v.1).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(changed.iter().map(|(_, _, c)| *c).collect::<Vec<_>>())
            .execute(conn)
            .await?;
        }
        let changed: BTreeSet<(&str, &str)> =
            changed.iter().map(|(k, _, _)| (k.0.as_str(), k.1.as_str())).collect();

        outbox::enqueue(
            conn,
            SCHEMA,
            &events(&inserted, &products, &mut fresh, &changed, targets, low_stock_alerts),
        )
        .await?;
    }

    // 6. Answers in request order.
    let mut answers: Vec<Result<Applied, Refused>> = Vec::with_capacity(batch.len());
    for plan in plans {
        let answer = match plan {
            Step::Done(answer) => answer,
            Step::Insert(i) => Ok(inserted[i].clone()),
            Step::SameAs(first) => match &answers[first] {
                Ok(applied) => Ok(Applied { replayed: true, ..applied.clone() }),
                Err(_) => Err(Refused::Failed("an identical request in flight was refused".into())),
            },
        };
        answers.push(answer);
    }
    Ok(answers)
}

/// Outbox rows for applied adjustments: one `StockAdjusted` each, one `StockLevelChanged` per
/// sku/warehouse whose level changed when any target is configured (every target's push engine
/// reads it, the system a change came from included: that one is read back and pushed only if
/// a crossing push overwrote its change), and threshold-crossing alerts.
fn events(
    applied: &[Applied],
    products: &HashMap<String, ProductRow>,
    fresh: &mut BTreeSet<(String, String)>,
    changed: &BTreeSet<(&str, &str)>,
    configured: &BTreeSet<Target>,
    low_stock_alerts: bool,
) -> Vec<OutboxRow> {
    let mut rows = Vec::with_capacity(applied.len() + changed.len());
    for a in applied {
        rows.push(OutboxRow::new(&Envelope::new(crate::SERVICE, StockAdjusted::from(a))));
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
