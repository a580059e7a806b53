//! The working set of a batch of CRM changes: the records they name, loaded once (locked),
//! changed in memory by the three-way merge ([`crate::domain::merge`]) and written back with a
//! few set-based statements per entity. The webhook consumer ([`crate::inbound`]), bulk loads
//! and drift reconciliation apply CRM changes through [`apply_all`]; dry runs read
//! [`preview`]. The events' `data` are local columns: the callers map the CRM's properties
//! with the configured [`mapper::FieldMap`] first.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde_json::Value;
use shared::{
    bus::outbox::OutboxRow,
    ingress::EventStatus,
    mappers::crm as mapper,
    schemas::{
        Envelope,
        conflict::ConflictDetected,
        crm::{ChangeKind, CrmEvent, Entity},
    },
};
use uuid::Uuid;

use crate::{
    SERVICE,
    domain::merge::{self, Agreed, Decision, Incoming, LocalSide},
    models::{
        records::{self, Local},
        sync_state::{self, SyncState},
    },
};

pub use shared::ingress::Outcome;

/// One record of a batch: as loaded (or new), with what its events changed.
pub struct Entry {
    pub local: Local,
    pub state: Option<SyncState>,
    /// Not in the table yet (`local.id` is 0 until flushed).
    new: bool,
    /// The row's data or deletion changed.
    changed: bool,
    /// The sync state changed.
    state_changed: bool,
}

/// The records a batch works on: loaded once (locked), changed in memory as its events apply,
/// and written back with a few set-based statements ([`Working::flush`]).
#[derive(Default)]
pub struct Working {
    records: HashMap<(Entity, String), Entry>,
}

impl Working {
    /// The records `events` name, with their sync states (`lock`: for the transaction).
    pub async fn load(
        conn: &mut AsyncPgConnection,
        events: &[&CrmEvent],
        lock: bool,
    ) -> diesel::QueryResult<Self> {
        let mut wanted: BTreeMap<Entity, Vec<String>> = BTreeMap::new();
        for e in events {
            wanted.entry(e.entity).or_default().push(e.id.clone());
        }
        let mut records = HashMap::new();
        for (entity, mut ids) in wanted {
            ids.sort();
            ids.dedup();
            let locals = records::by_external_ids(conn, entity, &ids, lock).await?;
            let local_ids: Vec<i64> = locals.iter().map(|l| l.id).collect();
            let mut states = sync_state::of(conn, entity, &local_ids).await?;
            for local in locals {
                let state = states.remove(&local.id);
                let key = (entity, local.external_id.clone().unwrap_or_default());
                records.insert(
                    key,
                    Entry { local, state, new: false, changed: false, state_changed: false },
                );
            }
            // A record we created whose announcement arrived before our create's answer: the
            // CRM carries our key of it (`datasync_id`); it is the same record, not a new one.
            let ours: Vec<(String, i64)> = events
                .iter()
                .filter(|e| e.entity == entity && !records.contains_key(&(entity, e.id.clone())))
                .filter_map(|e| {
                    let key = e.data.get(mapper::LOCAL_KEY_PROPERTY)?.as_str()?;
                    let key = shared::push::RecordKey::parse(key)?;
                    (key.first == entity.as_str())
                        .then_some((e.id.clone(), key.second.parse().ok()?))
                })
                .collect();
            if !ours.is_empty() {
                let ids: Vec<i64> = ours.iter().map(|(_, id)| *id).collect();
                let locals = records::by_ids(conn, entity, &ids, lock).await?;
                let mut states = sync_state::of(conn, entity, &ids).await?;
                for (external_id, id) in ours {
                    let Some(local) = locals.iter().find(|l| l.id == id && l.external_id.is_none())
                    else {
                        continue;
                    };
                    let mut local = local.clone();
                    local.external_id = Some(external_id.clone());
                    let state = states.remove(&id);
                    records.insert(
                        (entity, external_id),
                        Entry { local, state, new: false, changed: true, state_changed: false },
                    );
                }
            }
        }
        Ok(Self { records })
    }

    /// Whether `event` shows a CRM state this side never saw (for drift reports): an unknown
    /// record, a delete of a live one, or a field whose value differs from what we believe the
    /// CRM holds, in a change newer than the one we hold of it.
    pub fn missed(&self, event: &CrmEvent) -> bool {
        let known = self.records.get(&(event.entity, event.id.clone()));
        match (event.event, known) {
            (ChangeKind::Deleted, Some(entry)) => entry.local.deleted_at.is_none(),
            (ChangeKind::Deleted, None) => false,
            (_, None) => true,
            (_, Some(entry)) => {
                let Ok(changes) = mapper::local_changes(event.entity, &event.data) else {
                    return false;
                };
                let empty = SyncState::default();
                let state = entry.state.as_ref().unwrap_or(&empty);
                let at = event.timestamp.timestamp_millis();
                mapper::fields(event.entity).iter().any(|f| {
                    let Some(theirs) = changes.get(f.local) else { return false };
                    let newer = state
                        .field_times
                        .get(f.local)
                        .and_then(Value::as_i64)
                        .is_none_or(|seen| seen < at);
                    let agreed = state.base.get(f.local).unwrap_or(&Value::Null);
                    newer && !mapper::same(f.kind, theirs, agreed)
                })
            }
        }
    }

    /// Writes what the events changed: per entity, one insert of the new records, one update
    /// of the changed ones, one upsert of the sync states.
    async fn flush(&mut self, conn: &mut AsyncPgConnection) -> anyhow::Result<()> {
        for entity in Entity::ALL {
            // In CRM-id order, so concurrent batches inserting the same ids cannot deadlock.
            let mut fresh: Vec<&Local> = self
                .records
                .iter()
                .filter(|((e, _), entry)| *e == entity && entry.new)
                .map(|(_, entry)| &entry.local)
                .collect();
            fresh.sort_by(|a, b| a.external_id.cmp(&b.external_id));
            let ids = records::insert_many(conn, entity, &fresh).await?;
            if ids.len() != fresh.len() {
                return Err(shared::ingress::Transient(format!(
                    "{} {entity} records were inserted concurrently",
                    fresh.len() - ids.len()
                ))
                .into());
            }
            for ((e, external_id), entry) in self.records.iter_mut() {
                if *e == entity && entry.new {
                    entry.local.id = *ids.get(external_id).ok_or_else(|| {
                        anyhow::anyhow!("{entity} {external_id} was not inserted")
                    })?;
                    entry.new = false;
                }
            }
            let changed: Vec<&Local> = self
                .records
                .iter()
                .filter(|((e, _), entry)| *e == entity && entry.changed && entry.local.id != 0)
                .map(|(_, entry)| &entry.local)
                .collect();
            records::write_many(conn, entity, &changed).await?;
            let states: Vec<(i64, &SyncState)> = self
                .records
                .iter()
                .filter(|((e, _), entry)| *e == entity && entry.state_changed)
                .filter_map(|(_, entry)| Some((entry.local.id, entry.state.as_ref()?)))
                .collect();
            sync_state::save_many(conn, entity, &states).await?;
        }
        Ok(())
    }
}

/// The reason of an event older than what we hold.
const STALE: &str = "stale: the CRM's newer state of this record is already synced";

/// Applies one event to the working set (in memory; [`Working::flush`] writes it).
fn apply(
    working: &mut Working,
    event: &CrmEvent,
    now: DateTime<Utc>,
) -> anyhow::Result<(Outcome, Vec<OutboxRow>)> {
    let entity = event.entity;
    let key = (entity, event.id.clone());
    let mut changes = mapper::local_changes(entity, &event.data)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.detail))?;
    // A change of some keys of a jsonb column (the billing address) keeps the others.
    let held =
        working.records.get(&key).map(|e| e.state.as_ref().map_or(&e.local.data, |s| &s.base));
    mapper::overlay(entity, held.unwrap_or(&Default::default()), &mut changes);
    let Some(entry) = working.records.get_mut(&key) else {
        if event.event == ChangeKind::Deleted {
            // A delete that overtook its create: kept as a tombstone (a deleted record with
            // the delete's time), so the late create finds it deleted instead of bringing it
            // back.
            let local = Local {
                entity,
                id: 0,
                external_id: Some(event.id.clone()),
                data: Default::default(),
                deleted_at: Some(now),
                deleted_from: Some("crm".into()),
                local_version: 0,
                updated_at: now,
                local_changed_at: None,
            };
            let state =
                SyncState { remote_updated_at: Some(event.timestamp), ..SyncState::default() };
            working.records.insert(
                key,
                Entry { local, state: Some(state), new: true, changed: true, state_changed: true },
            );
            return Ok((
                Outcome::applied(Some("not known here: kept as deleted (tombstone)".into())),
                vec![],
            ));
        }
        let data = mapper::mapped_columns(entity, &changes);
        let at = Value::from(event.timestamp.timestamp_millis());
        let state = SyncState {
            base: data.clone(),
            remote_updated_at: Some(event.timestamp),
            field_times: changes.keys().map(|k| (k.clone(), at.clone())).collect(),
            ..SyncState::default()
        };
        let local = Local {
            entity,
            id: 0,
            external_id: Some(event.id.clone()),
            data,
            deleted_at: None,
            deleted_from: None,
            local_version: 0,
            updated_at: now,
            local_changed_at: None,
        };
        working.records.insert(
            key,
            Entry { local, state: Some(state), new: true, changed: true, state_changed: true },
        );
        return Ok((Outcome::applied(Some("created".into())), vec![]));
    };
    let Entry { local, state, changed, state_changed, .. } = entry;
    let mut state_now = state.clone().unwrap_or_else(|| SyncState {
        base: local.data.clone(),
        synced_version: local.local_version,
        ..SyncState::default()
    });
    if event.event == ChangeKind::Deleted {
        if state_now.remote_updated_at.is_some_and(|seen| event.timestamp < seen) {
            // The CRM changed the record after this delete: it was restored since.
            return Ok((Outcome::applied(Some(STALE.into())), vec![]));
        }
        *state_changed = true;
        if local.deleted_at.is_none() {
            local.deleted_at = Some(now);
            local.deleted_from = Some("crm".into());
            *changed = true;
        }
        state_now.remote_updated_at = Some(event.timestamp);
        *state = Some(state_now);
        return Ok((Outcome::applied(Some("deleted".into())), vec![]));
    }
    let deleted_by_crm = local.deleted_at.is_some() && local.deleted_from.as_deref() == Some("crm");
    if deleted_by_crm
        && state_now.remote_updated_at.is_some_and(|deleted| event.timestamp <= deleted)
    {
        // The CRM deleted the record after this change (a create or update that arrives
        // after the delete that followed it).
        return Ok((Outcome::applied(Some(STALE.into())), vec![]));
    }
    if deleted_by_crm {
        // The CRM restored it.
        local.deleted_at = None;
        local.deleted_from = None;
        *changed = true;
    }
    let side = LocalSide {
        data: &local.data,
        pending: local.local_version > state_now.synced_version,
        changed_at: local.local_changed_at,
    };
    let agreed = Agreed {
        base: &state_now.base,
        field_times: &state_now.field_times,
        held: &state_now.held,
    };
    let incoming = Incoming { changes: &changes, at: event.timestamp };
    let Decision::Apply { set, base, held, times, conflicts } =
        merge::merge(entity, &side, Some(&agreed), &incoming)
    else {
        return Ok((Outcome::applied(Some(STALE.into())), vec![]));
    };
    *state_changed = true;
    let mut messages = Vec::new();
    let outcome = if conflicts.is_empty() {
        Outcome::applied(None)
    } else {
        let conflict_id = Uuid::now_v7();
        let mut remote = state_now.base.clone();
        remote.extend(changes.clone());
        let detected = ConflictDetected {
            conflict_id,
            system: "crm".into(),
            entity: entity.as_str().into(),
            record_id: local.id,
            external_id: event.id.clone(),
            fields: conflicts.iter().map(|f| (*f).to_owned()).collect(),
            base: state_now.base.clone(),
            local: local.data.clone(),
            remote,
            local_updated_at: local.local_changed_at.unwrap_or(local.updated_at),
            remote_updated_at: event.timestamp,
            local_clock: Some("local".into()),
            remote_clock: Some("crm".into()),
            unapplied: None,
        };
        messages.push(OutboxRow::new(&Envelope::new(SERVICE, detected)));
        state_now.conflict_id = Some(conflict_id);
        tracing::warn!(%entity, id = local.id, fields = ?conflicts, "conflict with the CRM");
        Outcome {
            status: EventStatus::Conflict,
            reason: Some(format!("conflict {conflict_id} on {}", conflicts.join(", "))),
        }
    };
    if !set.is_empty() {
        local.data.extend(set);
        local.updated_at = now;
        *changed = true;
    }
    state_now.base = base;
    if held.is_empty() {
        state_now.conflict_id = None;
    }
    state_now.held = held;
    state_now.field_times = times;
    state_now.remote_updated_at = state_now.remote_updated_at.max(Some(event.timestamp));
    *state = Some(state_now);
    Ok((outcome, messages))
}

/// Applies CRM changes in the caller's transaction (whose origin must be `crm`, see
/// [`shared::db::set_origin`]): one outcome per event, in order, and the messages to enqueue with
/// them (conflicts).
pub async fn apply_all(
    conn: &mut AsyncPgConnection,
    events: &[&CrmEvent],
) -> anyhow::Result<(Vec<Outcome>, Vec<OutboxRow>)> {
    let mut working = Working::load(conn, events, true).await?;
    let now = transaction_time(conn).await?;
    let mut outcomes = Vec::with_capacity(events.len());
    let mut messages = Vec::new();
    for event in events {
        let (outcome, more) = apply(&mut working, event, now)?;
        messages.extend(more);
        outcomes.push(outcome);
    }
    working.flush(conn).await?;
    Ok((outcomes, messages))
}

/// What applying `events` would change, from the records as they are (nothing written).
pub async fn preview(
    conn: &mut AsyncPgConnection,
    events: &[&CrmEvent],
) -> anyhow::Result<shared::bulk::Preview> {
    use shared::bulk::{Difference, Preview};
    let working = Working::load(conn, events, false).await?;
    let mut preview = Preview::default();
    for event in events {
        let entity = event.entity;
        let mut changes = mapper::local_changes(entity, &event.data)
            .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.detail))?;
        if let Some(entry) = working.records.get(&(entity, event.id.clone())) {
            mapper::overlay(entity, &entry.local.data, &mut changes);
        } else {
            mapper::overlay(entity, &Default::default(), &mut changes);
        }
        let differences: Vec<(String, Value, Value)> = match working
            .records
            .get(&(entity, event.id.clone()))
        {
            None => {
                preview.create += 1;
                changes
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), Value::Null, v.clone()))
                    .collect()
            }
            Some(Entry { local, state, .. }) => {
                let agreed = state.as_ref().map(|s| Agreed {
                    base: &s.base,
                    field_times: &s.field_times,
                    held: &s.held,
                });
                let side = LocalSide {
                    data: &local.data,
                    pending: state.as_ref().is_some_and(|s| local.local_version > s.synced_version),
                    changed_at: local.local_changed_at,
                };
                match merge::merge(
                    entity,
                    &side,
                    agreed.as_ref(),
                    &Incoming { changes: &changes, at: event.timestamp },
                ) {
                    Decision::Apply { set, .. } if !set.is_empty() => {
                        preview.update += 1;
                        set.into_iter()
                            .map(|(k, v)| {
                                (k.clone(), local.data.get(&k).cloned().unwrap_or(Value::Null), v)
                            })
                            .collect()
                    }
                    _ => {
                        preview.unchanged += 1;
                        Vec::new()
                    }
                }
            }
        };
        preview.differences.extend(differences.into_iter().map(|(field, ours, theirs)| {
            Difference { record_id: format!("{entity}/{}", event.id), field, ours, theirs }
        }));
    }
    Ok(preview)
}

async fn transaction_time(conn: &mut AsyncPgConnection) -> diesel::QueryResult<DateTime<Utc>> {
    #[derive(diesel::QueryableByName)]
    struct Now {
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        now: DateTime<Utc>,
    }
    let now: Now =
        diesel_async::RunQueryDsl::get_result(diesel::sql_query("SELECT now() AS now"), conn)
            .await?;
    Ok(now.now)
}
