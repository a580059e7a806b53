//! Crossing edits of the pushed fields (an order's status; a customer's name, email and phone):
//! a local change and the ERP's own change of the same field to different values is a conflict
//! (`sync.conflicts.detected.erp`), never settled silently by whichever clock is later.
//!
//! Each record keeps `synced`, the pushed fields as both sides last agreed on them (the base).
//! When an ERP event changes a pushed field ([`settle`]):
//! - the same value as ours: agreed;
//! - a local change on its way (`local_version > synced_version`) of that field, from the same
//!   base: a conflict. The local value stays, the ERP's is `held` (the ERP keeps it: it is not
//!   pushed) until conflict-resolver decides;
//! - an ERP change older (by the ERP's clock) than our latest delivered push of that field,
//!   which replaced the agreed value (`pushed_over`, `pushed_erp_at`): if it is another value,
//!   the push overwrote the ERP user's change: a conflict too, while the ERP holds ours;
//! - an ERP change older than the latest local change, otherwise: stale for that field;
//! - else the ERP's value applies and becomes the base.
//!
//! Resolutions (`sync.conflicts.resolved.erp`, [`ErpResolutions`]) set the decided values
//! locally; what the ERP held becomes the base, and where it holds something else than the
//! decision a push is queued.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Bool, Jsonb};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use shared::{
    resolutions::{Applied, Resolve},
    schemas::conflict::{ConflictDetected, ConflictResolved},
};
use uuid::Uuid;

use crate::entity::Entity;

/// A stored row (`to_jsonb`) read as JSON: its bookkeeping of the pushed fields.
fn object(row: &Map<String, Value>, name: &str) -> Map<String, Value> {
    row.get(name).and_then(Value::as_object).cloned().unwrap_or_default()
}

fn time(row: &Map<String, Value>, name: &str) -> Option<DateTime<Utc>> {
    row.get(name)
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn int(row: &Map<String, Value>, name: &str) -> i64 {
    row.get(name).and_then(Value::as_i64).unwrap_or_default()
}

/// A conflict an ERP event raised.
#[derive(Debug, PartialEq)]
pub struct Raised {
    pub detected: ConflictDetected,
}

/// Decides the pushed fields of an ERP event against the stored row (`to_jsonb`; `None`: a new
/// record) and writes the decisions into `incoming` (local column names): each pushed field's
/// value to store, and `synced`, `held` and `conflict_id`. Returns the conflict it raises.
pub fn settle(
    entity: Entity,
    stored: Option<&Map<String, Value>>,
    incoming: &mut Map<String, Value>,
    external_id: &str,
    at: DateTime<Utc>,
) -> Option<Raised> {
    if entity.pushed.is_empty() {
        return None;
    }
    let Some(row) = stored else {
        let synced: Map<String, Value> = entity
            .pushed
            .iter()
            .map(|c| ((*c).to_owned(), incoming.get(*c).cloned().unwrap_or(Value::Null)))
            .collect();
        incoming.insert("synced".into(), Value::Object(synced));
        return None;
    };
    let mut synced = object(row, "synced");
    let mut held = object(row, "held");
    let over = object(row, "pushed_over");
    let pending = int(row, "local_version") > int(row, "synced_version");
    let local_at = time(row, "local_changed_at");
    let pushed_at = time(row, "pushed_erp_at");
    let older_than = |t: Option<DateTime<Utc>>| t.is_some_and(|t| t > at);
    let mut base = synced.clone();
    let mut conflicts = Vec::new();
    // The ERP's values of fields our push overwrote (it holds ours now).
    let mut overwritten = Map::new();
    for &c in entity.pushed {
        let Some(theirs) = incoming.get(c).cloned() else { continue };
        let ours = row.get(c).cloned().unwrap_or(Value::Null);
        let keep = if theirs == ours {
            // Agreed, whatever happened before.
            held.remove(c);
            synced.insert(c.into(), theirs);
            false
        } else if held.contains_key(c) {
            // A conflict is open on it: the ERP's newest value is what it holds.
            held.insert(c.into(), theirs);
            true
        } else if let Some(b) = synced.get(c).filter(|_| pending).cloned() {
            let (we_changed, they_changed) = (b != ours, b != theirs);
            if we_changed && they_changed {
                held.insert(c.into(), theirs);
                conflicts.push(c.to_owned());
            } else if !we_changed {
                synced.insert(c.into(), theirs);
            }
            we_changed
        } else if let Some(b) = over.get(c).filter(|_| older_than(pushed_at)) {
            // An ERP state from before our latest push landed there (the ERP's clock): the
            // push replaced it. If the ERP's user had changed the field, the push overwrote
            // that change: a conflict, while the ERP holds ours.
            if *b != theirs {
                base.insert(c.into(), b.clone());
                held.insert(c.into(), ours.clone());
                overwritten.insert(c.to_owned(), theirs);
                conflicts.push(c.to_owned());
            }
            true
        } else if older_than(local_at) {
            // An ERP state from before the latest local change, which reached the ERP since.
            true
        } else {
            synced.insert(c.into(), theirs);
            false
        };
        if keep {
            incoming.insert(c.into(), ours);
        }
    }
    let raised = (!conflicts.is_empty()).then(|| {
        let pick = |from: &Map<String, Value>| -> Map<String, Value> {
            entity
                .pushed
                .iter()
                .filter_map(|c| from.get(*c).map(|v| ((*c).to_owned(), v.clone())))
                .collect()
        };
        let local = pick(row);
        let mut remote = local.clone();
        remote.extend(pick(&base));
        for c in entity.pushed {
            if let Some(v) = incoming.get(*c).filter(|_| !conflicts.iter().any(|f| f == c)) {
                remote.insert((*c).to_owned(), v.clone());
            }
        }
        for c in &conflicts {
            let theirs = overwritten.get(c).unwrap_or(&held[c]);
            remote.insert(c.clone(), theirs.clone());
        }
        Raised {
            detected: ConflictDetected {
                conflict_id: Uuid::now_v7(),
                system: "erp".into(),
                entity: entity.name.into(),
                record_id: int(row, "id"),
                external_id: external_id.to_owned(),
                fields: conflicts,
                base: pick(&base),
                local,
                remote,
                local_updated_at: local_at.unwrap_or(at),
                remote_updated_at: at,
                local_clock: Some("local".into()),
                remote_clock: Some("erp".into()),
                unapplied: None,
            },
        }
    });
    let conflict_id = match &raised {
        Some(r) => Value::from(r.detected.conflict_id.to_string()),
        None if held.is_empty() => Value::Null,
        None => row.get("conflict_id").cloned().unwrap_or(Value::Null),
    };
    incoming.insert("synced".into(), Value::Object(synced));
    incoming.insert("held".into(), Value::Object(held));
    incoming.insert("conflict_id".into(), conflict_id);
    raised
}

/// erp-sync's side of the resolutions ([`shared::resolutions`]).
#[derive(Clone, Copy)]
pub struct ErpResolutions;

impl Resolve for ErpResolutions {
    const SYSTEM: &'static str = "erp";
    const SCHEMA: &'static str = crate::SCHEMA;
    const CONSUMER: &'static str = "erp-resolutions";
    const SERVICE: &'static str = crate::SERVICE;

    fn invalid(&self, resolution: &ConflictResolved) -> Option<String> {
        let Some(entity) = Entity::pushed().find(|e| e.name == resolution.entity) else {
            return Some(format!("erp has no conflicts on {}", resolution.entity));
        };
        resolution
            .values
            .keys()
            .find(|field| !entity.pushed.contains(&field.as_str()))
            .map(|field| format!("{} has no pushed field {field}", resolution.entity))
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        resolution: &'a ConflictResolved,
    ) -> BoxFuture<'a, anyhow::Result<Applied>> {
        Box::pin(apply(conn, resolution))
    }
}

/// Applies a resolution in the caller's transaction.
pub async fn apply(
    conn: &mut AsyncPgConnection,
    resolution: &ConflictResolved,
) -> anyhow::Result<Applied> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Jsonb)]
        row: Value,
    }
    let entity = Entity::pushed()
        .find(|e| e.name == resolution.entity)
        .ok_or_else(|| anyhow::anyhow!("erp has no conflicts on {}", resolution.entity))?;
    let table = entity.qualified_table;
    let Some(row) = diesel::sql_query(format!(
        "SELECT to_jsonb(t) AS row FROM {table} t WHERE id = $1 FOR UPDATE"
    ))
    .bind::<BigInt, _>(resolution.record_id)
    .load::<Row>(conn)
    .await?
    .pop()
    .and_then(|r| r.row.as_object().cloned()) else {
        return Ok(Applied::Gone);
    };
    let mut synced = object(&row, "synced");
    let mut held = object(&row, "held");
    // Only fields still in conflict are decided (a later agreement settled the others); an
    // undo decides its fields whatever is held now.
    let values: BTreeMap<&str, &Value> = resolution
        .values
        .iter()
        .filter(|(c, _)| resolution.undo || held.contains_key(*c))
        .map(|(c, v)| (c.as_str(), v))
        .collect();
    if values.is_empty() {
        return Ok(Applied::Superseded);
    }
    let mut push = false;
    let mut set = Map::new();
    for (&c, &decided) in &values {
        // What the ERP holds becomes the agreed copy; if that is not the decision, it is
        // pushed.
        match held.remove(c).or_else(|| synced.get(c).cloned()) {
            Some(theirs) => {
                push |= theirs != *decided;
                synced.insert(c.into(), theirs);
            }
            None => push = true,
        }
        if row.get(c) != Some(decided) {
            set.insert(c.into(), decided.clone());
        }
    }
    let local_update = !set.is_empty();
    // Every pushed field as it will be, against the agreed copy: nothing else on its way means
    // the record is in agreement.
    let agreed = !push
        && entity.pushed.iter().all(|c| {
            let now = set.get(*c).or_else(|| row.get(*c)).unwrap_or(&Value::Null);
            held.contains_key(*c) || synced.get(*c) == Some(now)
        });
    // A change pushed only when the ERP holds something else (the capture trigger queues it).
    shared::db::set_origin(conn, if push { "resolver" } else { "erp" }).await?;
    let assignments: String =
        set.keys().map(|c| format!("{c} = ($1::jsonb ->> '{c}'), ")).collect::<String>();
    let conflict_id = if held.is_empty() { None } else { row.get("conflict_id").cloned() };
    diesel::sql_query(format!(
        "UPDATE {table} SET {assignments}synced = $2, held = $3, \
         conflict_id = ($4::jsonb ->> 0)::uuid, \
         local_version = local_version + CASE WHEN $5 THEN 1 ELSE 0 END, \
         synced_version = CASE WHEN $6 THEN local_version ELSE synced_version END \
         WHERE id = $7"
    ))
    .bind::<Jsonb, _>(Value::Object(set))
    .bind::<Jsonb, _>(Value::Object(synced))
    .bind::<Jsonb, _>(Value::Object(held))
    .bind::<Jsonb, _>(Value::Array(conflict_id.into_iter().collect()))
    .bind::<Bool, _>(push && !local_update)
    .bind::<Bool, _>(agreed)
    .bind::<BigInt, _>(resolution.record_id)
    .execute(conn)
    .await?;
    Ok(Applied::Done { local_update, push })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::{CUSTOMER, ORDER, PRODUCT};
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// An order stored as `open` and agreed, then changed here to `status` (pending push).
    fn order(status: &str, pending: bool) -> Map<String, Value> {
        map(json!({"id": 7, "status": status, "synced": {"status": "open"}, "held": {},
            "local_version": if pending { 2 } else { 1 }, "synced_version": 1,
            "local_changed_at": "2026-01-01T10:00:00+00:00"}))
    }

    #[test]
    fn a_crossing_edit_of_the_same_field_is_a_conflict_and_keeps_ours() {
        let row = order("cancelled", true);
        for when in ["2026-01-01T09:00:00Z", "2026-01-01T11:00:00Z"] {
            let mut incoming = map(json!({"status": "shipped", "total": 3}));
            let raised = settle(ORDER, Some(&row), &mut incoming, "SO-1", at(when)).unwrap();
            let d = raised.detected;
            assert_eq!(d.fields, ["status"]);
            assert_eq!(d.base, map(json!({"status": "open"})));
            assert_eq!(d.local, map(json!({"status": "cancelled"})));
            assert_eq!(d.remote, map(json!({"status": "shipped"})));
            assert_eq!((d.record_id, d.external_id.as_str()), (7, "SO-1"));
            assert_eq!(d.remote_clock.as_deref(), Some("erp"));
            assert_eq!(incoming["status"], "cancelled", "ours stays while it is open");
            assert_eq!(incoming["held"], json!({"status": "shipped"}));
            assert_eq!(incoming["synced"], json!({"status": "open"}));
            assert_eq!(incoming["conflict_id"], json!(d.conflict_id.to_string()));
        }
    }

    #[test]
    fn one_sided_changes_are_no_conflict() {
        // Only the ERP changed it: applied, and agreed.
        let mut incoming = map(json!({"status": "shipped"}));
        assert!(
            settle(
                ORDER,
                Some(&order("open", false)),
                &mut incoming,
                "SO-1",
                at("2026-02-01T00:00:00Z")
            )
            .is_none()
        );
        assert_eq!(incoming["status"], "shipped");
        assert_eq!(incoming["synced"], json!({"status": "shipped"}));
        // Only we changed it (the ERP's event carries the base): ours stays, on its way.
        let mut incoming = map(json!({"status": "open"}));
        assert!(
            settle(
                ORDER,
                Some(&order("cancelled", true)),
                &mut incoming,
                "SO-1",
                at("2026-02-01T00:00:00Z")
            )
            .is_none()
        );
        assert_eq!(incoming["status"], "cancelled");
        assert_eq!(incoming["synced"], json!({"status": "open"}));
        // Both to the same value: agreed.
        let mut incoming = map(json!({"status": "cancelled"}));
        assert!(
            settle(
                ORDER,
                Some(&order("cancelled", true)),
                &mut incoming,
                "SO-1",
                at("2026-02-01T00:00:00Z")
            )
            .is_none()
        );
        assert_eq!(incoming["synced"], json!({"status": "cancelled"}));
        assert_eq!(incoming["conflict_id"], Value::Null);
        // Records never pushed have no conflicts and no bookkeeping.
        let mut incoming = map(json!({"name": "x"}));
        assert!(settle(PRODUCT, None, &mut incoming, "P", at("2026-02-01T00:00:00Z")).is_none());
        assert!(!incoming.contains_key("synced"));
    }

    #[test]
    fn a_customer_conflict_names_only_the_fields_both_changed() {
        let row = map(json!({"id": 3, "name": "Ada L", "email": "a@x", "phone": "1",
            "synced": {"name": "Ada", "email": "a@x", "phone": "1"}, "held": {},
            "local_version": 5, "synced_version": 4, "local_changed_at": "2026-01-01T10:00:00Z"}));
        let mut incoming = map(json!({"name": "Ada Lovelace", "email": "a@x", "phone": "2"}));
        let d = settle(CUSTOMER, Some(&row), &mut incoming, "C-1", at("2026-01-01T10:00:30Z"))
            .unwrap()
            .detected;
        assert_eq!(d.fields, ["name"]);
        assert_eq!(d.remote, map(json!({"name": "Ada Lovelace", "email": "a@x", "phone": "2"})));
        assert_eq!(incoming["phone"], "2", "the ERP's own change applies");
        assert_eq!(incoming["name"], "Ada L");
        assert_eq!(incoming["synced"], json!({"name": "Ada", "email": "a@x", "phone": "2"}));
        // The ERP changes the held field again: still one open conflict, holding its newest.
        let mut row = row;
        row.insert("held".into(), json!({"name": "Ada Lovelace"}));
        row.insert("conflict_id".into(), json!(d.conflict_id.to_string()));
        let mut incoming = map(json!({"name": "A. Lovelace"}));
        assert!(
            settle(CUSTOMER, Some(&row), &mut incoming, "C-1", at("2026-01-01T10:01:00Z"))
                .is_none()
        );
        assert_eq!(incoming["held"], json!({"name": "A. Lovelace"}));
        assert_eq!(incoming["conflict_id"], json!(d.conflict_id.to_string()));
        // And to ours: agreed, the conflict is settled.
        let mut incoming = map(json!({"name": "Ada L"}));
        assert!(
            settle(CUSTOMER, Some(&row), &mut incoming, "C-1", at("2026-01-01T10:02:00Z"))
                .is_none()
        );
        assert_eq!(incoming["held"], json!({}));
        assert_eq!(incoming["conflict_id"], Value::Null);
    }

    #[test]
    fn an_erp_change_our_delivered_push_overwrote_is_a_conflict() {
        // Delivered: cancelled replaced open in the ERP at 10:00:05.
        let mut row = order("cancelled", false);
        row.insert("synced".into(), json!({"status": "cancelled"}));
        row.insert("pushed_over".into(), json!({"status": "open"}));
        row.insert("pushed_erp_at".into(), json!("2026-01-01T10:00:05+00:00"));
        // The ERP's user had shipped it at 09:59:59; the webhook arrives now.
        let mut incoming = map(json!({"status": "shipped"}));
        let d = settle(ORDER, Some(&row), &mut incoming, "SO-1", at("2026-01-01T09:59:59Z"))
            .unwrap()
            .detected;
        assert_eq!(d.base, map(json!({"status": "open"})));
        assert_eq!(
            (d.local["status"].as_str(), d.remote["status"].as_str()),
            (Some("cancelled"), Some("shipped"))
        );
        assert_eq!(incoming["held"], json!({"status": "cancelled"}), "the ERP holds ours");
        // Even when the ERP's user changed it after our local change, before the push landed.
        let mut incoming = map(json!({"status": "shipped"}));
        assert!(
            settle(ORDER, Some(&row), &mut incoming, "SO-1", at("2026-01-01T10:00:02Z")).is_some()
        );
        // A late report of the state before both changes is just stale.
        let mut incoming = map(json!({"status": "open"}));
        assert!(
            settle(ORDER, Some(&row), &mut incoming, "SO-1", at("2026-01-01T09:59:00Z")).is_none()
        );
        assert_eq!(incoming["status"], "cancelled");
    }
}
