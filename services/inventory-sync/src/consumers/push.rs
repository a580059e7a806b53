//! Pushes stock levels to one target (ERP, e-commerce, POS or WMS).
//!
//! Input: `inventory.level.<target>.<warehouse>.<sku>` (latest message per subject only). The
//! message carries no quantity: the level is read from `stock` when the push runs, so bursts
//! coalesce into one push of the final level and reordered messages are harmless. A
//! transaction-scoped advisory lock per (target, sku, warehouse) serialises pushes of the same
//! record across replicas, and `target_state` remembers the version the target already has,
//! so a redelivered or duplicate message does not push again.
//!
//! Failures: 5xx, 429 (honouring `Retry-After`) and transport errors are retried with backoff
//! up to the `push_max_attempts` setting, then dead-lettered (replayable); other 4xx are
//! dead-lettered at once. A 410 also stops the target (`stopped_targets`, a critical alert):
//! later pushes are skipped until an operator resumes it, which queues every level it missed.
//! Every attempt is written to `target_sync_log` and announced on
//! `sync.events.<target>.outbound.stock_level`.

use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use shared::{
    bus::{Delivery, HandlerError, outbox},
    mappers,
    outbound::{self, Endpoint, OutboundRequest, Outcome},
    schemas::{
        Envelope,
        inventory::{StockLevel, StockLevelChanged, Target},
        sync::{AlertRaised, Direction, Severity, SyncRecorded, SyncStatus},
    },
};

use crate::{AppState, SCHEMA};

#[derive(diesel::QueryableByName)]
struct Current {
    #[diesel(sql_type = BigInt)]
    on_hand: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pushed_version: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    last_source: Option<String>,
    #[diesel(sql_type = Bool)]
    last_change_absolute: bool,
    /// Why the target is stopped (it answered 410), if it is.
    #[diesel(sql_type = Nullable<Text>)]
    stopped: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct Availability {
    #[diesel(sql_type = Bool)]
    in_stock: bool,
    #[diesel(sql_type = Nullable<Bool>)]
    shop_available: Option<bool>,
}

fn request_for(target: Target, level: &StockLevel) -> OutboundRequest {
    match target {
        Target::Erp => mappers::erp::stock_level(level),
        Target::Ecommerce => mappers::shop::stock_level(level),
        Target::Pos => mappers::pos::stock_level(level),
        Target::Wms => mappers::wms::stock_level(level),
    }
}

#[tracing::instrument(skip_all, fields(target = %delivery.envelope.data.target.as_str(), sku = %delivery.envelope.data.sku, warehouse = %delivery.envelope.data.warehouse))]
pub async fn handle(
    state: &AppState,
    delivery: Delivery<StockLevelChanged>,
) -> Result<(), HandlerError> {
    let msg = delivery.envelope.data;
    let Some(endpoint) = state.targets.get(&msg.target) else {
        return Ok(());
    };
    let budget = i64::from(state.platform.settings.current().push_max_attempts.max(1));
    let mut conn = state.push_db.get().await.map_err(anyhow::Error::from)?;
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        push_locked(state, conn, endpoint, &msg, delivery.delivered, budget).await
    })
    .await?
}

/// Runs inside a transaction holding the record's advisory lock; returns the consumer outcome
/// (the transaction commits either way so the sync log keeps failed attempts too).
async fn push_locked(
    state: &AppState,
    conn: &mut AsyncPgConnection,
    endpoint: &Endpoint,
    msg: &StockLevelChanged,
    attempt: i64,
    budget: i64,
) -> anyhow::Result<Result<(), HandlerError>> {
    let target = msg.target.as_str();
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind::<Text, _>(format!("push/{target}/{}/{}", msg.warehouse, msg.sku))
        .execute(conn)
        .await?;
    let current: Current = diesel::sql_query(
        "SELECT s.on_hand, s.version, s.last_source, s.last_change_absolute, t.pushed_version, \
             (SELECT reason FROM inventory.stopped_targets WHERE target = $1) AS stopped \
         FROM inventory.stock s \
         LEFT JOIN inventory.target_state t ON t.target = $1 AND t.sku = s.sku AND t.warehouse = s.warehouse \
         WHERE s.sku = $2 AND s.warehouse = $3",
    )
    .bind::<Text, _>(target)
    .bind::<Text, _>(&msg.sku)
    .bind::<Text, _>(&msg.warehouse)
    .get_result(conn)
    .await?;
    if let Some(reason) = &current.stopped {
        // Acked, not lost: resuming the target queues every level it has not been told.
        tracing::info!(%reason, "target stopped; not pushed");
        let detail = format!("target stopped: {reason}");
        record(conn, msg, &current, SyncStatus::Skipped, None, Some(detail), attempt).await?;
        return Ok(Ok(()));
    }
    // A duplicate or redelivered message: the target already has this version. The shop's
    // availability may still be unsettled (its call failed after the level was pushed), so it
    // is settled on every delivery until it succeeds.
    let level_current = current.pushed_version.is_some_and(|v| v >= current.version);
    // Loop prevention: the target already has this level when the latest change is its own
    // count or correction (it set the level outright). After its own relative change (a sale)
    // the level is pushed: the target may have applied that change to a value our earlier push
    // had overwritten, so the absolute level is the only safe answer.
    let own_change = current.last_source.as_deref() == Some(target) && current.last_change_absolute;
    let level = StockLevel {
        sku: msg.sku.clone(),
        warehouse: msg.warehouse.clone(),
        on_hand: current.on_hand,
    };
    let mut what = "level push";
    let mut outcome = if level_current || own_change {
        Outcome::Delivered(reqwest::StatusCode::NO_CONTENT)
    } else {
        outbound::send(&state.platform.http, endpoint, &request_for(msg.target, &level)).await
    };
    if matches!(outcome, Outcome::Delivered(_)) && !level_current {
        diesel::sql_query(
            "INSERT INTO inventory.target_state (target, sku, warehouse, pushed_version, pushed_quantity) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target, sku, warehouse) DO UPDATE \
             SET pushed_version = excluded.pushed_version, pushed_quantity = excluded.pushed_quantity, pushed_at = now()",
        )
        .bind::<Text, _>(target)
        .bind::<Text, _>(&msg.sku)
        .bind::<Text, _>(&msg.warehouse)
        .bind::<BigInt, _>(current.version)
        .bind::<BigInt, _>(current.on_hand)
        .execute(&mut *conn)
        .await?;
    }
    if matches!(outcome, Outcome::Delivered(_)) && msg.target == Target::Ecommerce {
        what = "shop availability";
        outcome = sync_shop_availability(state, conn, endpoint, &msg.sku).await?;
    }
    if level_current && matches!(outcome, Outcome::Delivered(_)) {
        tracing::debug!("target already has this version");
        return Ok(Ok(()));
    }
    let status = match &outcome {
        Outcome::Delivered(_) if own_change => SyncStatus::Skipped,
        Outcome::Delivered(_) => SyncStatus::Synced,
        Outcome::Retry { .. } if attempt < budget => SyncStatus::Failed,
        _ => SyncStatus::DeadLettered,
    };
    let error = match &outcome {
        Outcome::Delivered(_) if own_change => {
            Some("latest change came from this target".to_owned())
        }
        Outcome::Delivered(_) => None,
        Outcome::Retry { error, .. } => Some(format!("{what}: {error}")),
        Outcome::Gone => Some(format!("{what}: 410 Gone")),
        Outcome::Rejected { status, body } => Some(format!("{what}: {status}: {body}")),
    };
    if matches!(outcome, Outcome::Gone) {
        stop_target(conn, msg.target, &format!("{what} answered 410 Gone")).await?;
    }
    record(conn, msg, &current, status, outcome.status(), error, attempt).await?;
    Ok(match outcome {
        Outcome::Delivered(_) if own_change => {
            tracing::debug!("latest change came from the target itself; not pushed back");
            Ok(())
        }
        Outcome::Delivered(_) => {
            tracing::info!(quantity = current.on_hand, "level pushed");
            Ok(())
        }
        Outcome::Retry { .. } if attempt >= budget => Err(HandlerError::Permanent(
            anyhow::anyhow!("{what}: retry budget of {budget} attempts exhausted"),
        )),
        other => Err(other.into_handler_error(&format!("{what} to {target}"))),
    })
}

/// Writes one push attempt to `target_sync_log` and announces it on `sync.events`.
async fn record(
    conn: &mut AsyncPgConnection,
    msg: &StockLevelChanged,
    current: &Current,
    status: SyncStatus,
    http_status: Option<u16>,
    error: Option<String>,
    attempt: i64,
) -> anyhow::Result<()> {
    let target = msg.target.as_str();
    diesel::sql_query(
        "INSERT INTO inventory.target_sync_log (target, sku, warehouse, quantity, version, status, http_status, error, attempt) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind::<Text, _>(target)
    .bind::<Text, _>(&msg.sku)
    .bind::<Text, _>(&msg.warehouse)
    .bind::<BigInt, _>(current.on_hand)
    .bind::<BigInt, _>(current.version)
    .bind::<Text, _>(match status {
        SyncStatus::Synced => "synced",
        SyncStatus::Skipped => "skipped",
        SyncStatus::DeadLettered => "dead_lettered",
        _ => "retrying",
    })
    .bind::<Nullable<Integer>, _>(http_status.map(i32::from))
    .bind::<Nullable<Text>, _>(error.clone())
    .bind::<BigInt, _>(attempt)
    .execute(&mut *conn)
    .await?;
    let event = Envelope::new(
        crate::SERVICE,
        SyncRecorded {
            system: target.to_owned(),
            direction: Direction::Outbound,
            entity: "stock_level".into(),
            record_id: format!("{}/{}", msg.warehouse, msg.sku),
            status,
            http_status,
            detail: error,
        },
    );
    outbox::enqueue(conn, SCHEMA, &[outbox::OutboxRow::new(&event)]).await?;
    Ok(())
}

/// Stops pushing to a target that answered 410 Gone, raising a critical alert the first time.
async fn stop_target(
    conn: &mut AsyncPgConnection,
    target: Target,
    reason: &str,
) -> anyhow::Result<()> {
    let stopped = diesel::sql_query(
        "INSERT INTO inventory.stopped_targets (target, reason) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind::<Text, _>(target.as_str())
    .bind::<Text, _>(reason)
    .execute(&mut *conn)
    .await?;
    if stopped == 0 {
        return Ok(());
    }
    tracing::warn!(target = target.as_str(), reason, "target stopped");
    let alert = AlertRaised {
        severity: Severity::Critical,
        kind: "target_stopped".into(),
        title: format!("Stock pushes to {} stopped", target.as_str()),
        text: format!(
            "🚨 *Target stopped*\n\nTarget: {}\nReason: {reason}\nResume with POST /admin/targets/{}/resume",
            target.as_str(),
            target.as_str()
        ),
        dedup_key: format!("target_stopped/{}", target.as_str()),
        fields: [
            ("target".to_owned(), serde_json::json!(target.as_str())),
            ("reason".to_owned(), serde_json::json!(reason)),
        ]
        .into(),
    };
    outbox::enqueue(conn, SCHEMA, &[outbox::OutboxRow::new(&Envelope::new(crate::SERVICE, alert))])
        .await?;
    Ok(())
}

/// Disables the product on the shop when it is out of stock everywhere, re-enables it when
/// stock returns; no request when the shop already has the right state.
async fn sync_shop_availability(
    state: &AppState,
    conn: &mut AsyncPgConnection,
    endpoint: &Endpoint,
    sku: &str,
) -> anyhow::Result<Outcome> {
    // Availability is per product while pushes lock per warehouse: lock the product row so
    // two warehouses' pushes cannot decide on stale totals and leave the wrong state.
    diesel::sql_query("SELECT 1 FROM inventory.products WHERE sku = $1 FOR NO KEY UPDATE")
        .bind::<Text, _>(sku)
        .execute(conn)
        .await?;
    let availability: Availability = diesel::sql_query(
        "SELECT COALESCE(SUM(s.on_hand), 0) > 0 AS in_stock, p.shop_available \
         FROM inventory.products p LEFT JOIN inventory.stock s ON s.sku = p.sku \
         WHERE p.sku = $1 GROUP BY p.shop_available",
    )
    .bind::<Text, _>(sku)
    .get_result(conn)
    .await?;
    if availability.shop_available == Some(availability.in_stock) {
        return Ok(Outcome::Delivered(reqwest::StatusCode::OK));
    }
    let request = mappers::shop::product_availability(sku, availability.in_stock);
    let outcome = outbound::send(&state.platform.http, endpoint, &request).await;
    if matches!(outcome, Outcome::Delivered(_)) {
        diesel::sql_query(
            "UPDATE inventory.products SET shop_available = $2, updated_at = now() WHERE sku = $1",
        )
        .bind::<Text, _>(sku)
        .bind::<Bool, _>(availability.in_stock)
        .execute(conn)
        .await?;
        tracing::info!(available = availability.in_stock, "shop availability changed");
    }
    Ok(outcome)
}
