//! Push targets: which are stopped (they answered 410 Gone), how many levels each is behind,
//! and resuming a stopped target.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;
use shared::{
    bus::outbox::{self, OutboxRow},
    http::{Admin, ApiError, Reader},
    schemas::{
        Envelope,
        inventory::{StockLevelChanged, Target},
    },
};

use crate::{AppState, SCHEMA};

/// `(sku, warehouse)` of the stock rows the target (`$1`) has not been told: never pushed, or
/// pushed an older version. For the shop also the products whose availability there differs
/// from their stock (one row each), since a failed availability call leaves the level current.
fn behind(target: Target) -> String {
    const LEVELS: &str = "SELECT s.sku, s.warehouse FROM inventory.stock s \
         LEFT JOIN inventory.target_state t \
             ON t.target = $1 AND t.sku = s.sku AND t.warehouse = s.warehouse \
         WHERE s.version > COALESCE(t.pushed_version, 0)";
    match target {
        Target::Ecommerce => format!(
            "{LEVELS} UNION \
             SELECT p.sku, min(s.warehouse) FROM inventory.products p \
                 JOIN inventory.stock s ON s.sku = p.sku \
             GROUP BY p.sku, p.shop_available \
             HAVING p.shop_available IS DISTINCT FROM (SUM(s.on_hand) > 0)"
        ),
        _ => LEVELS.to_owned(),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TargetStatus {
    pub target: String,
    /// Whether an endpoint is configured for it (unconfigured targets are not pushed to).
    pub configured: bool,
    /// Why pushes are stopped, if they are.
    pub stopped_reason: Option<String>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Stock rows whose current level the target has not been told (this includes changes
    /// that came from the target itself and need no push), and for the shop the products
    /// whose availability there is not settled; `null` for a target that is not configured.
    pub behind: Option<i64>,
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    stopped_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = BigInt)]
    behind: i64,
}

#[derive(diesel::QueryableByName)]
struct Key {
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = Text)]
    warehouse: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Resumed {
    pub target: String,
    /// Whether the target was stopped before this call.
    pub was_stopped: bool,
    /// Levels queued for pushing.
    pub queued: usize,
}

fn parse_target(name: &str) -> Result<Target, ApiError> {
    Target::parse(name).ok_or_else(|| ApiError::NotFound(format!("target {name}")))
}

/// Every push target with its state.
#[utoipa::path(get, path = "/targets", tag = "inventory", security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "state of each target", body = [TargetStatus])))]
#[get("/targets")]
pub async fn list_targets(_: Reader, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.platform.db.get().await?;
    let mut out = Vec::with_capacity(Target::ALL.len());
    for target in Target::ALL {
        let configured = state.targets.contains_key(&target);
        let row: Row = diesel::sql_query(format!(
            "SELECT st.reason, st.stopped_at, (SELECT count(*) FROM ({}) b) AS behind \
             FROM (SELECT 1) one LEFT JOIN inventory.stopped_targets st ON st.target = $1",
            behind(target)
        ))
        .bind::<Text, _>(target.as_str())
        .get_result(&mut conn)
        .await?;
        out.push(TargetStatus {
            target: target.as_str().to_owned(),
            configured,
            stopped_reason: row.reason,
            stopped_at: row.stopped_at,
            behind: configured.then_some(row.behind),
        });
    }
    Ok(HttpResponse::Ok().json(out))
}

/// Resumes pushes to a target (admin): clears its stop, then queues every level it has not been
/// told. Safe to call on a running target (it re-queues what is behind), e.g. after configuring
/// a new one.
///
/// Two transactions on purpose: a push that still saw the stop before the first commits skips
/// a version that the second one, reading after that commit, then finds behind and queues;
/// every push after the commit goes through. (One transaction would miss a version committed
/// between its read and its commit.)
#[utoipa::path(post, path = "/admin/targets/{target}/resume", tag = "inventory", params(("target" = String, Path, description = "erp, ecommerce, pos or wms")), security(("admin_token" = [])),
    responses((status = 200, description = "resumed", body = Resumed), (status = 404, description = "unknown target"), (status = 409, description = "the target is not configured")))]
#[post("/admin/targets/{target}/resume")]
pub async fn resume_target(
    _: Admin,
    state: web::Data<AppState>,
    target: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let target = parse_target(&target)?;
    if !state.targets.contains_key(&target) {
        return Err(ApiError::Conflict {
            detail: format!("target {} is not configured", target.as_str()),
            extra: serde_json::json!({}),
        });
    }
    let mut conn = state.platform.db.get().await?;
    let was_stopped = diesel::sql_query("DELETE FROM inventory.stopped_targets WHERE target = $1")
        .bind::<Text, _>(target.as_str())
        .execute(&mut conn)
        .await?
        > 0;
    let queued = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let behind: Vec<Key> = diesel::sql_query(format!("{} ORDER BY 1, 2", behind(target)))
                .bind::<Text, _>(target.as_str())
                .load(conn)
                .await?;
            let rows: Vec<OutboxRow> = behind
                .into_iter()
                .map(|k| {
                    OutboxRow::new(&Envelope::new(
                        crate::SERVICE,
                        StockLevelChanged { target, sku: k.sku, warehouse: k.warehouse },
                    ))
                })
                .collect();
            for chunk in rows.chunks(1000) {
                outbox::enqueue(conn, SCHEMA, chunk).await?;
            }
            Ok(rows.len())
        })
        .await?;
    tracing::info!(target = target.as_str(), was_stopped, queued, "target resumed");
    Ok(HttpResponse::Ok().json(Resumed { target: target.as_str().to_owned(), was_stopped, queued }))
}
