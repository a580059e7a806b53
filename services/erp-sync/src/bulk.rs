//! Bulk (initial) loads of the ERP's customers, orders and products from its list API
//! (`GET /api/{customers,orders,products}?offset=&limit=`, `{data, has_more}`), run by the
//! shared job engine ([`shared::bulk`]) with the offset as the checkpoint.
//!
//! Each listed record is applied exactly as a webhook reporting it would be, through the ERP's
//! inbound path ([`shared::ingress::apply_loaded`], origin `erp`): an upsert fenced by the ERP's `updatedAt`, an order with its lines, pending
//! local changes kept. A page applied twice changes nothing, and a record a webhook brought
//! more recently is left alone. No email is sent for loaded records. A listed record without
//! `updatedAt` counts as older than anything reported. Records that fail validation are the
//! job's record errors, naming the field.
//!
//! A dry run (`POST /admin/bulk/dry-run`) compares each record with the stored row, field by
//! field, and writes nothing. Every request of a load spends the bulk share of the ERP's quota
//! (`ERP_BULK_QUOTA_SHARE`, learnt from `X-RateLimit-*` headers and 429s): at the reserve it
//! pauses until the window ends, leaving the rest to pushes.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Jsonb, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use shared::{
    bulk::{BulkKind, BulkSource, Difference, Job, Page, Preview, PreviewError, RecordError},
    db::PgPool,
    mappers::{erp as mapper, fields},
    outbound::{Endpoint, Outcome, quota::QuotaBudget},
    schemas::erp::ErpWebhook,
};
use tokio_util::sync::CancellationToken;

use crate::{apply, entity::Entity};

/// Differences a dry run reports at most.
const MAX_DIFFERENCES: usize = 50;

/// One list's load from the ERP.
pub struct ErpLoad {
    /// The list (`customers`, `orders`, `products`).
    pub list: &'static str,
    entity: Entity,
    /// The ERP's inbound path, which applies the listed records as its reports.
    inbound: apply::ErpInbound,
    pub http: reqwest::Client,
    pub erp: Endpoint,
    pub db: PgPool,
    pub budget: Arc<QuotaBudget>,
    pub shutdown: CancellationToken,
}

impl ErpLoad {
    pub fn new(
        entity: Entity,
        inbound: apply::ErpInbound,
        http: reqwest::Client,
        erp: Endpoint,
        db: PgPool,
        budget: Arc<QuotaBudget>,
        shutdown: CancellationToken,
    ) -> Option<Self> {
        let list = entity.list?;
        Some(Self { list, entity, inbound, http, erp, db, budget, shutdown })
    }

    pub fn offered(self) -> (BulkKind, Arc<dyn BulkSource>) {
        (BulkKind::new("erp", "erp", self.list), Arc::new(self))
    }

    /// A listed record as the event that reports it, or why it cannot be applied.
    fn event(&self, index: usize, record: &Value) -> Result<ErpWebhook, RecordError> {
        let id = match record.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(RecordError {
                    record_id: format!("#{index}"),
                    error: "id: is required".into(),
                });
            }
        };
        let refuse = |error: String| RecordError { record_id: id.clone(), error };
        let mut payload =
            record.as_object().cloned().ok_or_else(|| refuse("not an object".into()))?;
        payload.remove("id");
        mapper::webhook::check_payload(self.entity.webhook, &payload)
            .map_err(|e| refuse(format!("{}: {}", e.field, e.detail)))?;
        if payload.get("updatedAt").is_none_or(Value::is_null) {
            payload.insert("updatedAt".into(), json!(DateTime::<Utc>::UNIX_EPOCH.to_rfc3339()));
        }
        Ok(ErpWebhook {
            event_type: "updated".into(),
            entity: self.entity.webhook.to_owned(),
            entity_id: id,
            payload: Value::Object(payload),
            retry_of: None,
        })
    }

    fn events(&self, records: &[Value]) -> (Vec<ErpWebhook>, Vec<RecordError>) {
        shared::bulk::split(records, |i, record| self.event(i, record))
    }

    /// The stored rows of these ERP ids (`to_jsonb`), by id.
    async fn stored(
        &self,
        conn: &mut AsyncPgConnection,
        ids: &[&str],
    ) -> anyhow::Result<HashMap<String, Value>> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            id: String,
            #[diesel(sql_type = Jsonb)]
            row: Value,
        }
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT {key} AS id, to_jsonb(t) AS row FROM erp.{table} t WHERE {key} = ANY($1)",
            key = self.entity.key,
            table = self.entity.table
        ))
        .bind::<Array<Text>, _>(ids)
        .load(conn)
        .await?;
        Ok(rows.into_iter().map(|r| (r.id, r.row)).collect())
    }
}

impl BulkSource for ErpLoad {
    fn fetch<'a>(
        &'a self,
        cursor: Option<&'a Value>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, Outcome>> {
        Box::pin(shared::bulk::offset_page(
            &self.http,
            &self.erp,
            |offset, limit| mapper::list_path(self.list, offset, limit),
            mapper::list_page,
            cursor,
            limit,
            Some((&self.budget, &self.shutdown)),
        ))
    }

    fn apply<'a>(
        &'a self,
        job: &'a Job,
        records: &'a [Value],
    ) -> BoxFuture<'a, anyhow::Result<Vec<RecordError>>> {
        Box::pin(shared::ingress::apply_loaded(
            &self.inbound,
            &self.db,
            crate::SCHEMA,
            job,
            self.events(records),
        ))
    }

    fn preview<'a>(
        &'a self,
        records: &'a [Value],
    ) -> BoxFuture<'a, anyhow::Result<Option<Preview>>> {
        Box::pin(async move {
            let (mut events, errors) = self.events(records);
            // A record listed twice ends as its last listing: count it once.
            let mut seen = std::collections::HashSet::new();
            events.reverse();
            events.retain(|e| seen.insert(e.entity_id.clone()));
            events.reverse();
            let ids: Vec<&str> = events.iter().map(|e| e.entity_id.as_str()).collect();
            let mut conn = self.db.get().await?;
            let stored = self.stored(&mut conn, &ids).await?;
            let stored_lines = if self.entity == crate::entity::ORDER {
                stored_lines(&mut conn, &ids).await?
            } else {
                HashMap::new()
            };
            let pushed = self.entity.pushed;
            let table = mapper::webhook::fields(self.entity.webhook).unwrap_or_default();
            let mut preview = Preview {
                errors: errors
                    .into_iter()
                    .map(|e| PreviewError { record_id: e.record_id, error: e.error })
                    .collect(),
                ..Preview::default()
            };
            for event in &events {
                let payload: Map<String, Value> =
                    event.payload.as_object().cloned().unwrap_or_default();
                let theirs = fields::to_local(table, &payload, "payload.").unwrap_or_default();
                let ours = stored.get(&event.entity_id);
                let newer = match ours.and_then(|o| o.get("erp_updated_at")).and_then(Value::as_str)
                {
                    Some(at) => apply_time(&payload) >= parse_time(at),
                    None => true,
                };
                let kept_locally = |column: &str| {
                    let changed = ours
                        .and_then(|o| o.get("local_changed_at"))
                        .and_then(Value::as_str)
                        .and_then(parse_time);
                    pushed.contains(&column) && changed > apply_time(&payload)
                };
                let mut differences: Vec<Difference> = table
                    .iter()
                    .filter(|f| !kept_locally(f.local))
                    .filter_map(|f| {
                        let theirs = theirs.get(f.local)?;
                        let ours =
                            ours.and_then(|o| o.get(f.local)).cloned().unwrap_or(Value::Null);
                        (!fields::same(f.kind, &ours, theirs)).then(|| Difference {
                            record_id: event.entity_id.clone(),
                            field: f.crm.to_owned(),
                            ours,
                            theirs: theirs.clone(),
                        })
                    })
                    .collect();
                // The load replaces an order's lines when the record lists them.
                if payload.contains_key("lineItems") && ours.is_some() {
                    let theirs: Vec<Value> = mapper::webhook::lines(&payload)
                        .unwrap_or_default()
                        .into_iter()
                        .map(Value::Object)
                        .collect();
                    let ours = stored_lines.get(&event.entity_id).cloned().unwrap_or_default();
                    if !same_lines(&ours, &theirs) {
                        differences.push(Difference {
                            record_id: event.entity_id.clone(),
                            field: "lineItems".into(),
                            ours: Value::Array(ours),
                            theirs: Value::Array(theirs),
                        });
                    }
                }
                match ours {
                    None => preview.create += 1,
                    Some(_) if newer && !differences.is_empty() => preview.update += 1,
                    Some(_) => {
                        preview.unchanged += 1;
                        continue;
                    }
                }
                let room = MAX_DIFFERENCES.saturating_sub(preview.differences.len());
                preview.differences.extend(differences.into_iter().take(room));
            }
            Ok(Some(preview))
        })
    }
}

/// The stored lines of these orders (local column names), by the ERP's order id.
async fn stored_lines(
    conn: &mut AsyncPgConnection,
    ids: &[&str],
) -> anyhow::Result<HashMap<String, Vec<Value>>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = Jsonb)]
        lines: Value,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT o.erp_order_id AS id, \
         coalesce(jsonb_agg(to_jsonb(l) - 'order_id' ORDER BY l.line_number) \
                  FILTER (WHERE l.order_id IS NOT NULL), '[]') AS lines \
         FROM erp.orders o LEFT JOIN erp.order_lines l ON l.order_id = o.id \
         WHERE o.erp_order_id = ANY($1) GROUP BY o.erp_order_id",
    )
    .bind::<Array<Text>, _>(ids)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.lines.as_array().cloned().unwrap_or_default())).collect())
}

/// Whether stored lines hold what listed lines say (numbers compared by value).
fn same_lines(ours: &[Value], theirs: &[Value]) -> bool {
    ours.len() == theirs.len()
        && ours.iter().zip(theirs).all(|(o, t)| {
            t.as_object().is_some_and(|t| {
                t.iter().all(|(k, v)| {
                    let stored = o.get(k).unwrap_or(&Value::Null);
                    match (stored.as_f64(), v.as_f64()) {
                        (Some(a), Some(b)) => a == b,
                        _ => stored == v,
                    }
                })
            })
        })
}

fn parse_time(at: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(at).ok().map(|t| t.with_timezone(&Utc))
}

/// The ERP's time of a listed record, as the apply fences it.
fn apply_time(payload: &Map<String, Value>) -> Option<DateTime<Utc>> {
    payload.get("updatedAt").and_then(Value::as_str).and_then(parse_time)
}
