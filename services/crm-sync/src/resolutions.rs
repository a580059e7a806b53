//! Conflict resolutions from `sync.conflicts.resolved.crm` (decided by conflict-resolver, a
//! rule or an operator), applied here: a local update, a push, or both.
//!
//! The resolution names the winning value of each conflicting field. While the conflict was
//! open the CRM held its own values of those fields (kept in `sync_state.held`), so they become
//! the agreed copy; then the local record takes the winning values (a change with origin
//! `resolver`, which the capture trigger queues for pushing), and where the CRM holds something
//! else than the winner a push is queued even when the local record already had it. A
//! resolution for a record that no longer exists comes back as a new conflict, for a person
//! ([`shared::resolutions`]).

use futures::future::BoxFuture;
use shared::{
    mappers::crm as mapper,
    resolutions::{Applied, Resolve},
    schemas::{conflict::ConflictResolved, crm::Entity},
};

use crate::models::{records, sync_state};

/// crm-sync's side of the resolutions ([`shared::resolutions`]).
#[derive(Clone, Copy)]
pub struct CrmResolutions;

impl Resolve for CrmResolutions {
    const SYSTEM: &'static str = "crm";
    const SCHEMA: &'static str = crate::SCHEMA;
    const CONSUMER: &'static str = "crm-resolutions";
    const SERVICE: &'static str = crate::SERVICE;

    fn invalid(&self, resolution: &ConflictResolved) -> Option<String> {
        let Some(entity) = Entity::parse(&resolution.entity) else {
            return Some(format!("crm has no entity {}", resolution.entity));
        };
        resolution
            .values
            .keys()
            .find(|field| !mapper::fields(entity).iter().any(|f| f.local == *field))
            .map(|field| format!("{} has no field {field}", resolution.entity))
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut diesel_async::AsyncPgConnection,
        resolution: &'a ConflictResolved,
    ) -> BoxFuture<'a, anyhow::Result<Applied>> {
        Box::pin(apply(conn, resolution))
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
