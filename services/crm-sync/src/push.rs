//! Local → CRM through the shared push engine ([`shared::push`]): one engine per entity, all
//! with target `crm`.
//!
//! Input: `outbound.crm.<entity>` (`{entity, id}`), written by the capture trigger in the
//! transaction of every local change that did not come from the CRM. The record key is
//! `<entity>/<id>` and its version `local_version`, which only such changes bump: a change
//! applied from the CRM never reaches this engine, so it is never echoed back.
//!
//! The request: a record without a CRM id is created (an upsert keyed by our key, so a create
//! sent again after a lost answer finds the record it made; the id the CRM returns is written
//! back as `external_id`); a deleted one is archived (`DELETE`); otherwise only the
//! fields that differ from the last synced copy are sent (`PATCH`), leaving out fields held by
//! an open conflict. Properties carry HubSpot's names from the configured field map, every
//! value a string. After delivery the sent fields become the agreed copy and the record's
//! `synced_version` its version. A batch answer (`207 Multi-Status`) that lists the record in
//! its `errors` is that record's failure, not a delivery ([`Connector::answered`]).

use std::collections::HashMap;

use diesel_async::AsyncPgConnection;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};
use shared::{
    bus::outbox::OutboxRow,
    mappers::crm as mapper,
    outbound::{self, OutboundRequest, Outcome},
    push::{Connector, FollowUp, Loaded, RecordKey, Records},
    schemas::{
        Envelope,
        crm::{Entity, RecordChanged},
    },
};

use crate::models::{
    records,
    sync_state::{self, SyncState},
};

/// One entity's records, pushed to the CRM.
pub struct CrmRecords {
    pub entity: Entity,
    /// Which CRM property holds which local column.
    pub map: std::sync::Arc<mapper::FieldMap>,
}

/// A record as the engine pushes it.
#[derive(Clone, Debug, Serialize)]
pub struct Pushed {
    pub id: i64,
    pub external_id: Option<String>,
    pub deleted: bool,
    /// The mapped columns.
    pub data: Map<String, Value>,
    /// The fields that differ from the agreed copy (what an update sends).
    pub changes: Map<String, Value>,
    #[serde(skip)]
    state: Option<SyncState>,
}

/// The local id in a key `<entity>/<id>`.
fn id_of(key: &str) -> Option<i64> {
    RecordKey::parse(key).and_then(|k| k.second.parse().ok())
}

impl CrmRecords {
    fn key(&self, id: i64) -> String {
        RecordKey::new(self.entity.as_str(), &id.to_string()).to_string()
    }
}

/// The fields to send for an update: those differing from the agreed copy, except the ones an
/// open conflict holds.
fn changes(
    entity: Entity,
    data: &Map<String, Value>,
    state: Option<&SyncState>,
) -> Map<String, Value> {
    let Some(state) = state else {
        return data.clone();
    };
    mapper::changed(entity, &state.base, data)
        .into_iter()
        .filter(|f| !state.held.contains_key(*f))
        .map(|f| (f.to_owned(), data.get(f).cloned().unwrap_or(Value::Null)))
        .collect()
}

impl Connector for CrmRecords {
    type Record = Pushed;
    type Message = RecordChanged;
    fn entity(&self) -> &'static str {
        self.entity.as_str()
    }

    fn key(&self, message: &RecordChanged) -> String {
        self.key(message.id)
    }

    fn message(&self, key: &str) -> OutboxRow {
        OutboxRow::new(&Envelope::new(
            crate::SERVICE,
            RecordChanged { entity: self.entity, id: id_of(key).unwrap_or_default() },
        ))
    }

    fn records(&self) -> Records {
        Records::local_changes(self.entity.qualified_table(), self.entity.as_str(), "id")
    }

    async fn load(
        &self,
        conn: &mut AsyncPgConnection,
        keys: &[String],
    ) -> diesel::QueryResult<Vec<Loaded<Pushed>>> {
        let ids: Vec<i64> = keys.iter().filter_map(|k| id_of(k)).collect();
        let locals = records::by_ids(conn, self.entity, &ids, false).await?;
        let mut states: HashMap<i64, SyncState> = sync_state::of(conn, self.entity, &ids).await?;
        Ok(locals
            .into_iter()
            // Deleted before it ever reached the CRM: nothing to do.
            .filter(|l| !(l.deleted_at.is_some() && l.external_id.is_none()))
            .map(|l| {
                let state = states.remove(&l.id);
                Loaded {
                    key: self.key(l.id),
                    version: l.local_version,
                    origin: None,
                    record: Pushed {
                        id: l.id,
                        changes: changes(self.entity, &l.data, state.as_ref()),
                        external_id: l.external_id,
                        deleted: l.deleted_at.is_some(),
                        data: l.data,
                        state,
                    },
                }
            })
            .collect())
    }

    fn request(&self, record: &Loaded<Pushed>) -> OutboundRequest {
        let r = &record.record;
        match &r.external_id {
            Some(external_id) if r.deleted => mapper::archive(self.entity, external_id),
            Some(external_id) => mapper::update(&self.map, self.entity, external_id, &r.changes),
            None => mapper::create(&self.map, self.entity, &record.key, &r.data),
        }
    }

    async fn after_delivered(
        &self,
        ctx: FollowUp<'_>,
        record: &Loaded<Pushed>,
        answer: &Value,
    ) -> anyhow::Result<Outcome> {
        let FollowUp { conn, http, endpoint } = ctx;
        let r = &record.record;
        let mut remote = if r.external_id.is_none() {
            mapper::created(answer)
        } else {
            mapper::remote_record(answer)
        };
        if r.external_id.is_none() && remote.is_none() {
            // A create delivered before whose id was never written back (or an answer without
            // one): the create is an upsert by our key, so asking again finds the record.
            let again = mapper::create(&self.map, self.entity, &record.key, &r.data);
            match outbound::exchange(http, endpoint, &again).await {
                Ok((_, answer)) => remote = mapper::created(&answer),
                Err(outcome) => return Ok(outcome),
            }
            if remote.is_none() {
                anyhow::bail!("the CRM's answer to a create has no id");
            }
        }
        let created_id =
            if r.external_id.is_none() { remote.as_ref().map(|rr| rr.id.clone()) } else { None };
        // The record's row lock orders this with the consumers that change the record and its
        // sync state meanwhile (they hold it while they merge): both are read again under it.
        let current = records::by_ids(conn, self.entity, &[r.id], true).await?.pop();
        let mut state = sync_state::of(conn, self.entity, &[r.id])
            .await?
            .remove(&r.id)
            .unwrap_or_else(|| r.state.clone().unwrap_or_default());
        let sent = if r.external_id.is_none() { &r.data } else { &r.changes };
        let crm_time =
            remote.as_ref().and_then(|rr| rr.updated_at).map(|t| Value::from(t.timestamp_millis()));
        for (field, value) in sent {
            state.base.insert(field.clone(), value.clone());
            // A conflict opened on it while this push was on its way: the CRM holds ours now.
            state.held.remove(field);
            if let Some(at) = &crm_time {
                state.field_times.insert(field.clone(), at.clone());
            }
        }
        if state.held.is_empty() {
            state.conflict_id = None;
        }
        state.synced_version = state.synced_version.max(record.version);
        sync_state::save(conn, self.entity, r.id, &state).await?;
        records::mark_synced(conn, self.entity, r.id, created_id.as_deref()).await?;
        // A newer CRM value applied here while this push was on its way was just overwritten in
        // the CRM by ours: push the record again (it holds the newer value).
        let crossed = current.is_some_and(|now| {
            mapper::changed(self.entity, sent, &now.data).iter().any(|f| sent.contains_key(*f))
        });
        if crossed {
            tracing::info!(entity = %self.entity, id = r.id, "a CRM change crossed this push; pushing again");
            records::request_push(conn, self.entity, r.id).await?;
        }
        Ok(Outcome::Delivered(StatusCode::OK))
    }

    fn answered(&self, record: &Loaded<Pushed>, status: StatusCode, answer: &Value) -> Outcome {
        match mapper::refusal(answer, &record.key) {
            None => Outcome::Delivered(status),
            Some((category, message)) if category == "RATE_LIMITS" => Outcome::Retry {
                status: Some(StatusCode::TOO_MANY_REQUESTS),
                after: None,
                error: format!("{category}: {message}"),
            },
            Some((category, message)) => {
                Outcome::Rejected { status, body: format!("{category}: {message}") }
            }
        }
    }

    fn delivered_anyway(&self, record: &Loaded<Pushed>, status: u16) -> bool {
        // Archiving a record the CRM deleted already.
        record.record.deleted && status == 404
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_update_sends_only_what_changed_and_nothing_held() {
        let data = json!({"first_name": "Ann", "email": "new@x", "title": "CEO"});
        let state = SyncState {
            base: json!({"first_name": "Ann", "email": "old@x", "title": "CTO"})
                .as_object()
                .cloned()
                .unwrap(),
            held: json!({"title": "Chair"}).as_object().cloned().unwrap(),
            ..SyncState::default()
        };
        let sent = changes(Entity::Contact, data.as_object().unwrap(), Some(&state));
        assert_eq!(Value::Object(sent), json!({"email": "new@x"}));
        assert_eq!(id_of("contact/42"), Some(42));
    }
}
