//! Local → ERP through the shared push engine ([`shared::push`]): an order's status and a
//! customer's name, email and phone, one engine per entity, target `erp`.
//!
//! Input: `outbound.erp.<entity>` (`{entity, id}`), written by the capture trigger
//! (`erp.capture_change`) in the transaction of every change of those fields that did not come
//! from the ERP. The record key is `<entity>/<ERP id>` and its version `local_version`, which
//! only such changes bump: what erp-sync applies from the ERP runs with origin `erp`, so it is
//! never pushed back (loop-free), and the ERP reporting our own push back changes nothing.
//!
//! Requests: `PATCH /api/orders/{id}` with `{status}`, `PUT /api/customers/{id}` with
//! `{name, email, phone}` (a customer created here is created in the ERP by the same `PUT`).
//! A record whose latest change came from the ERP (a local change lost to a newer ERP event) is
//! read back first and pushed only when the ERP holds another value and no newer state of its
//! own (`updatedAt` later than the ERP time stored here: its webhook is on its way).
//! After delivery the record's `synced_version` becomes the pushed version; if the ERP's own
//! change of the same fields was applied here while the push was on its way, the push just
//! overwrote it in the ERP, so the record (now holding that change) is pushed again.

use crate::entity::Entity;
use chrono::{DateTime, Utc};
use diesel::{
    QueryableByName,
    sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use serde_json::{Map, Value};
use shared::{
    bus::outbox::OutboxRow,
    mappers::erp as mapper,
    outbound::{OutboundRequest, Outcome},
    push::{Connector, FollowUp, Loaded, Origin, RecordKey, Records},
    schemas::{Envelope, erp::RecordChanged},
};

/// One entity's records, pushed to the ERP.
pub struct ErpRecords {
    pub entity: Entity,
}

/// A record as the engine pushes it: its ERP id, the pushed columns, and the ERP's time of the
/// ERP state stored here.
#[derive(Clone, Debug, Serialize)]
pub struct Pushed {
    pub id: String,
    pub data: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erp_updated_at: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Text)]
    origin: String,
    #[diesel(sql_type = Jsonb)]
    data: Value,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    erp_updated_at: Option<DateTime<Utc>>,
    /// The agreed copy and the fields an open conflict holds ([`crate::conflicts`]).
    #[diesel(sql_type = Jsonb)]
    synced: Value,
    #[diesel(sql_type = Jsonb)]
    held: Value,
}

impl Row {
    /// Every pushed field is held by an open conflict: nothing to push until it is resolved.
    fn all_held(&self, entity: Entity) -> bool {
        entity.pushed.iter().all(|c| self.held.get(*c).is_some())
    }
}

impl ErpRecords {
    fn key(&self, id: &str) -> String {
        RecordKey::new(self.entity.name, id).to_string()
    }

    /// The pushed columns of the records with these ERP ids (`lock`: for the transaction); a
    /// field an open conflict holds has the ERP's value (the ERP keeps it until it is resolved).
    async fn rows(
        &self,
        conn: &mut AsyncPgConnection,
        ids: &[&str],
        lock: bool,
    ) -> diesel::QueryResult<Vec<Row>> {
        let Entity { table, key, pushed: columns, .. } = self.entity;
        let data: String = columns.iter().map(|c| format!("'{c}', {c}, ")).collect();
        diesel::sql_query(format!(
            "SELECT {key} AS id, local_version AS version, origin, erp_updated_at, synced, held, \
             jsonb_build_object({data}) || held AS data FROM erp.{table} \
             WHERE {key} = ANY($1) ORDER BY {key}{lock}",
            data = data.trim_end_matches(", "),
            lock = if lock { " FOR UPDATE" } else { "" },
        ))
        .bind::<Array<Text>, _>(ids)
        .load(conn)
        .await
    }
}

impl Connector for ErpRecords {
    type Record = Pushed;
    type Message = RecordChanged;

    fn entity(&self) -> &'static str {
        self.entity.name
    }

    fn key(&self, message: &RecordChanged) -> String {
        self.key(&message.id)
    }

    fn message(&self, key: &str) -> OutboxRow {
        let id = RecordKey::parse(key).map_or(key.to_owned(), |k| k.second);
        OutboxRow::new(&Envelope::new(
            crate::SERVICE,
            RecordChanged { entity: self.entity.name.to_owned(), id },
        ))
    }

    fn records(&self) -> Records {
        Records::local_changes(self.entity.qualified_table, self.entity.name, self.entity.key)
    }

    async fn load(
        &self,
        conn: &mut AsyncPgConnection,
        keys: &[String],
    ) -> diesel::QueryResult<Vec<Loaded<Pushed>>> {
        let ids: Vec<String> =
            keys.iter().filter_map(|k| RecordKey::parse(k).map(|k| k.second)).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        Ok(self
            .rows(conn, &ids, false)
            .await?
            .into_iter()
            .filter(|row| !row.all_held(self.entity))
            .map(|row| Loaded {
                key: self.key(&row.id),
                version: row.version,
                // The ERP's own value won over a local change still queued: the engine reads
                // the ERP back and pushes only if it holds something else.
                origin: (row.origin == "erp").then(|| Origin { system: "erp".into() }),
                record: Pushed {
                    id: row.id,
                    data: row.data.as_object().cloned().unwrap_or_default(),
                    erp_updated_at: row.erp_updated_at,
                },
            })
            .collect())
    }

    fn request(&self, record: &Loaded<Pushed>) -> OutboundRequest {
        let r = &record.record;
        if self.entity == crate::entity::ORDER {
            let status = r.data.get("status").and_then(Value::as_str).unwrap_or_default();
            mapper::order_status(&r.id, status)
        } else {
            mapper::customer(&r.id, &r.data)
        }
    }

    fn read_request(&self, record: &Loaded<Pushed>) -> Option<OutboundRequest> {
        Some(mapper::read_record(self.entity.list?, &record.record.id))
    }

    /// The ERP shows our value, or a state newer than the one stored here: its own later
    /// change, whose webhook is on its way and will bring it here (pushing our older value
    /// would overwrite it in the ERP, and its webhook, applied with origin `erp`, would never
    /// be pushed back).
    fn holds(&self, record: &Loaded<Pushed>, answer: &Value) -> bool {
        let theirs = answer
            .get("updatedAt")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        if let (Some(theirs), Some(ours)) = (theirs, record.record.erp_updated_at)
            && theirs > ours
        {
            tracing::info!(id = %record.record.id, %theirs, %ours, "the ERP holds a newer change of its own; not pushing over it");
            return true;
        }
        let fields = mapper::webhook::fields(self.entity.webhook).unwrap_or_default();
        self.entity.pushed.iter().all(|c| {
            let ours = record.record.data.get(*c).unwrap_or(&Value::Null);
            let name = fields.iter().find(|f| f.local == *c).map_or(*c, |f| f.crm);
            answer.get(name).unwrap_or(&Value::Null) == ours
        })
    }

    async fn after_delivered(
        &self,
        ctx: FollowUp<'_>,
        record: &Loaded<Pushed>,
        answer: &Value,
    ) -> anyhow::Result<Outcome> {
        let r = &record.record;
        let Entity { table, key, .. } = self.entity;
        let fields = mapper::webhook::fields(self.entity.webhook).unwrap_or_default();
        let theirs = |c: &str| {
            let name = fields.iter().find(|f| f.local == c).map_or(c, |f| f.crm);
            answer.get(name).cloned().unwrap_or(Value::Null)
        };
        // Under the record's row lock, which the inbound consumer also takes when it applies
        // the ERP's events: the pushed columns as they are now.
        let Some(now) = self.rows(ctx.conn, &[r.id.as_str()], true).await?.pop() else {
            return Ok(Outcome::Delivered(reqwest::StatusCode::OK));
        };
        // A conflict opened while this push was on its way: the ERP holds what it answered
        // (`Null`: nothing was sent now).
        let sent = !answer.is_null();
        let pushed_at = answer
            .get("updatedAt")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        // ...unless an ERP change applied here is newer than the push (by the ERP's clock).
        let landed_last = sent && now.erp_updated_at.is_none_or(|t| t <= pushed_at);
        let held: Map<String, Value> = now
            .held
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(c, v)| (c.clone(), if landed_last { theirs(c) } else { v.clone() }))
                    .collect()
            })
            .unwrap_or_default();
        let mut data = now.data.as_object().cloned().unwrap_or_default();
        data.extend(held.clone());
        let crossed = data != r.data;
        // The pushed values are agreed now; the agreed ones they replaced (every field sent:
        // a `PUT` sets them all), and when, tell an ERP change older than this push that it
        // was overwritten ([`crate::conflicts`]).
        let mut synced = now.synced.as_object().cloned().unwrap_or_default();
        let over: Map<String, Value> = r
            .data
            .keys()
            .filter(|_| sent)
            .filter_map(|c| synced.get(c).map(|b| (c.clone(), b.clone())))
            .collect();
        synced.extend(r.data.clone());
        diesel::sql_query(format!(
            "UPDATE erp.{table} SET synced_version = greatest(synced_version, $2), \
             local_version = local_version + $3, synced = $4, held = $5, \
             pushed_over = CASE WHEN $6 = '{{}}'::jsonb THEN pushed_over ELSE $6 END, \
             pushed_erp_at = CASE WHEN $6 = '{{}}'::jsonb THEN pushed_erp_at ELSE $7 END \
             WHERE {key} = $1"
        ))
        .bind::<Text, _>(&r.id)
        .bind::<BigInt, _>(record.version)
        .bind::<BigInt, _>(i64::from(crossed))
        .bind::<Jsonb, _>(Value::Object(synced))
        .bind::<Jsonb, _>(Value::Object(held))
        .bind::<Jsonb, _>(Value::Object(over))
        .bind::<Timestamptz, _>(pushed_at)
        .execute(ctx.conn)
        .await?;
        if crossed {
            tracing::info!(entity = self.entity.name, id = %r.id, "the record changed while it was pushed; pushing again");
        }
        Ok(Outcome::Delivered(reqwest::StatusCode::OK))
    }
}
