//! Conflict resolutions from `sync.conflicts.resolved.crm` (decided by conflict-resolver, a
//! rule or an operator), applied here: a local update, a push, or both.
//!
//! The resolution names the winning value of each conflicting field. While the conflict was
//! open the CRM held its own values of those fields (kept in `sync_state.held`), so they become
//! the agreed copy; then the local record takes the winning values (a change with origin
//! `resolver`, which the capture trigger queues for pushing), and where the CRM holds something
//! else than the winner a push is queued even when the local record already had it. A
//! resolution for a record that no longer exists comes back as a new conflict
//! (`ConflictDetected::unapplied`), for a person.

use diesel_async::AsyncConnection;
use shared::{
    bus::{
        Delivery, HandlerError, inbox,
        outbox::{self, OutboxRow},
    },
    db::PgPool,
    mappers::crm as mapper,
    schemas::{
        Envelope,
        conflict::{ConflictDetected, ConflictResolved},
        crm::Entity,
    },
};

use crate::{
    SCHEMA, SERVICE,
    models::{records, sync_state},
};

pub const CONSUMER: &str = "crm-resolutions";

/// What applying a resolution did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Already applied (a redelivery).
    Again,
    /// The record no longer exists here.
    Gone,
    /// None of its fields is in conflict any more (a later change settled them).
    Superseded,
    Done {
        local_update: bool,
        push: bool,
    },
}

pub async fn handle(db: &PgPool, delivery: Delivery<ConflictResolved>) -> Result<(), HandlerError> {
    let resolution = &delivery.envelope.data;
    if resolution.system != "crm" {
        return Ok(());
    }
    let entity = Entity::parse(&resolution.entity).ok_or_else(|| {
        HandlerError::Permanent(anyhow::anyhow!(
            "resolution {}: crm has no entity {}",
            resolution.conflict_id,
            resolution.entity
        ))
    })?;
    for field in resolution.values.keys() {
        if !mapper::fields(entity).iter().any(|f| f.local == field) {
            return Err(HandlerError::Permanent(anyhow::anyhow!(
                "resolution {}: {} has no field {field}",
                resolution.conflict_id,
                resolution.entity
            )));
        }
    }
    let mut conn = db.get().await.map_err(|e| anyhow::anyhow!("database: {e}"))?;
    let message_id = delivery.envelope.id.to_string();
    let applied = conn
        .transaction::<_, anyhow::Error, _>(async |conn| {
            if !inbox::first_delivery(conn, SCHEMA, CONSUMER, &message_id).await? {
                return Ok(Applied::Again);
            }
            let applied = apply(conn, resolution).await?;
            if applied == Applied::Gone {
                // Never dropped silently: it comes back as a conflict for a person.
                let again = unapplied(resolution, "the record no longer exists here");
                outbox::enqueue(conn, SCHEMA, &[OutboxRow::new(&Envelope::new(SERVICE, again))])
                    .await?;
            }
            Ok(applied)
        })
        .await?;
    tracing::info!(conflict = %resolution.conflict_id, entity = %resolution.entity, id = resolution.record_id, ?applied, "conflict resolution applied");
    Ok(())
}

/// A resolution that cannot be applied, as a new conflict: what was decided is the remote side
/// (`base` too, so no rule reads a change into it), the local side is empty.
fn unapplied(resolution: &ConflictResolved, why: &str) -> ConflictDetected {
    let now = chrono::Utc::now();
    ConflictDetected {
        conflict_id: uuid::Uuid::now_v7(),
        system: resolution.system.clone(),
        entity: resolution.entity.clone(),
        record_id: resolution.record_id,
        external_id: String::new(),
        fields: resolution.values.keys().cloned().collect(),
        base: resolution.values.clone(),
        local: Default::default(),
        remote: resolution.values.clone(),
        local_updated_at: now,
        remote_updated_at: now,
        local_clock: Some("local".into()),
        remote_clock: Some("local".into()),
        unapplied: Some(format!(
            "the resolution of conflict {} could not be applied: {why}",
            resolution.conflict_id
        )),
    }
}

/// Applies a resolution in the caller's transaction.
pub async fn apply(
    conn: &mut diesel_async::AsyncPgConnection,
    resolution: &ConflictResolved,
) -> anyhow::Result<Applied> {
    let entity = Entity::parse(&resolution.entity)
        .ok_or_else(|| anyhow::anyhow!("crm has no entity {}", resolution.entity))?;
    let id = resolution.record_id;
    let Some(local) = records::by_ids(conn, entity, &[id], true).await?.pop() else {
        return Ok(Applied::Gone);
    };
    let mut state = sync_state::of(conn, entity, &[id]).await?.remove(&id).unwrap_or_default();
    // Only fields still in conflict are decided: a field a later change settled (a newer CRM
    // value, or a push that went through) keeps that outcome. An undo of an automatic
    // resolution decides its fields whatever is held now.
    let values: serde_json::Map<String, serde_json::Value> = resolution
        .values
        .iter()
        .filter(|(field, _)| resolution.undo || state.held.contains_key(*field))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if values.is_empty() {
        return Ok(Applied::Superseded);
    }
    // What the CRM holds of the decided fields becomes the agreed copy.
    for field in values.keys() {
        if let Some(theirs) = state.held.remove(field) {
            state.base.insert(field.clone(), theirs);
        }
    }
    if state.held.is_empty() {
        state.conflict_id = None;
    }
    sync_state::save(conn, entity, id, &state).await?;
    let to_set: serde_json::Map<String, serde_json::Value> = values
        .iter()
        .filter(|(k, v)| local.data.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let local_update = !to_set.is_empty();
    shared::db::set_origin(conn, "resolver").await?;
    records::update_columns(conn, entity, id, &to_set).await?;
    let crm_differs = !mapper::changed(entity, &state.base, &values)
        .into_iter()
        .filter(|f| values.contains_key(*f))
        .collect::<Vec<_>>()
        .is_empty();
    if crm_differs && !local_update {
        // The local values won: the CRM must get them although nothing changed here.
        records::request_push(conn, entity, id).await?;
    }
    Ok(Applied::Done { local_update, push: crm_differs })
}
