//! The three-way merge of a CRM change into a local record. Pure: the consumer loads the
//! record and its sync state, asks [`merge`], and writes what it decides.
//!
//! - A CRM change older than the CRM state we already hold (a late or reordered webhook, or
//!   one our own later push superseded in the CRM's history) is stale: nothing changes.
//! - Without unpushed local changes the CRM's values are applied. With them, only fields the
//!   CRM changed (against the agreed copy) count as its changes: a webhook carrying the whole
//!   record must not undo a local change still on its way to the CRM. When the CRM's change
//!   is newer than the local one, its changes win.
//! - When the local record changed since the last sync and the CRM's change is older, nothing
//!   local is overwritten: the CRM's changes to fields the local side did not touch are
//!   applied, and fields both sides changed to different values are a conflict. Their CRM
//!   values are held (not pushed over) until the conflict is resolved.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use shared::{mappers::crm as mapper, schemas::crm::Entity};

/// What the local side knows of a record.
#[derive(Clone, Debug)]
pub struct LocalSide<'a> {
    /// The mapped columns.
    pub data: &'a Map<String, Value>,
    /// Whether local changes wait to be pushed (`local_version > synced_version`).
    pub pending: bool,
    /// When the data last changed other than from the CRM.
    pub changed_at: Option<DateTime<Utc>>,
}

/// The agreed state, as in `crm.sync_state`.
#[derive(Clone, Debug)]
pub struct Agreed<'a> {
    pub base: &'a Map<String, Value>,
    /// Per field, the CRM's time (epoch ms) of its value in `base`.
    pub field_times: &'a Map<String, Value>,
    /// Fields of an open conflict, with the CRM's values.
    pub held: &'a Map<String, Value>,
}

/// A change from the CRM: the columns it sent (mapped) and the CRM's time of it.
#[derive(Clone, Debug)]
pub struct Incoming<'a> {
    pub changes: &'a Map<String, Value>,
    pub at: DateTime<Utc>,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Every field it carries is older than what we hold of it: nothing.
    Stale,
    Apply {
        /// Local columns to set.
        set: Map<String, Value>,
        /// The new agreed copy.
        base: Map<String, Value>,
        /// The new held fields (open conflicts, with the CRM's values).
        held: Map<String, Value>,
        /// The new per-field CRM times.
        times: Map<String, Value>,
        /// Fields newly in conflict (both sides changed them differently).
        conflicts: Vec<&'static str>,
    },
}

fn get<'a>(map: &'a Map<String, Value>, column: &str) -> &'a Value {
    map.get(column).unwrap_or(&Value::Null)
}

/// Decides how `incoming` changes a record of `entity` (see the module doc).
pub fn merge(
    entity: Entity,
    local: &LocalSide<'_>,
    agreed: Option<&Agreed<'_>>,
    incoming: &Incoming<'_>,
) -> Decision {
    let empty = Map::new();
    let base = agreed.map_or(local.data, |a| a.base);
    let old_times = agreed.map_or(&empty, |a| a.field_times);
    let old_held = agreed.map_or(&empty, |a| a.held);
    let at = incoming.at.timestamp_millis();
    let remote_wins = !local.pending || local.changed_at.is_none_or(|c| incoming.at >= c);
    let mut held = old_held.clone();
    let mut times = old_times.clone();
    let mut set = Map::new();
    let mut new_base = base.clone();
    let mut conflicts = Vec::new();
    let mut fresh = 0;
    for field in mapper::fields(entity) {
        let Some(theirs) = incoming.changes.get(field.local) else {
            continue;
        };
        if old_times.get(field.local).and_then(Value::as_i64).is_some_and(|seen| at < seen) {
            // We hold a newer CRM value of this field (a reordered or late event).
            continue;
        }
        fresh += 1;
        times.insert(field.local.to_owned(), Value::from(at));
        let ours = get(local.data, field.local);
        // The CRM's previous value: the one an open conflict holds, or the agreed one.
        let was = old_held.get(field.local).unwrap_or_else(|| get(base, field.local));
        // A webhook may carry the whole record: a field equal to the CRM's previous value is no
        // change of the CRM's (and must not undo a local change that is still on its way).
        let they_changed = !mapper::same(field.kind, theirs, was);
        let we_changed = local.pending && !mapper::same(field.kind, ours, get(base, field.local));
        let differs = !mapper::same(field.kind, theirs, ours);
        if !they_changed && (we_changed || old_held.contains_key(field.local)) {
            // Ours is newer than what the CRM shows (pushed soon), or a conflict still waits
            // for its resolution.
            continue;
        }
        if they_changed && we_changed && differs && !remote_wins {
            // Both changed it, differently, and ours is newer: a conflict; the CRM holds
            // `theirs` meanwhile.
            held.insert(field.local.to_owned(), theirs.clone());
            conflicts.push(field.local);
            continue;
        }
        if differs {
            set.insert(field.local.to_owned(), theirs.clone());
        }
        new_base.insert(field.local.to_owned(), theirs.clone());
        held.remove(field.local);
    }
    if fresh == 0 && !incoming.changes.is_empty() {
        return Decision::Stale;
    }
    Decision::Apply { set, base: new_base, held, times, conflicts }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const ENTITY: Entity = Entity::Contact;

    /// Records over three contact fields with values from a small set, so sides often agree.
    fn record() -> impl Strategy<Value = Map<String, Value>> {
        let value =
            prop_oneof![Just(Value::Null), Just(json!("a")), Just(json!("b")), Just(json!("c"))];
        proptest::collection::vec(value, 3).prop_map(|values| {
            ["first_name", "email", "title"].into_iter().map(String::from).zip(values).collect()
        })
    }

    fn changes() -> impl Strategy<Value = Map<String, Value>> {
        (record(), proptest::collection::vec(any::<bool>(), 3)).prop_map(|(r, keep)| {
            r.into_iter().zip(keep).filter(|(_, k)| *k).map(|(kv, _)| kv).collect()
        })
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(1_000_000 + secs)
    }

    /// Every field's CRM time at `t(secs)`.
    fn times_at(secs: i64) -> Map<String, Value> {
        ["first_name", "email", "title"]
            .into_iter()
            .map(|f| (f.to_owned(), Value::from(t(secs).timestamp_millis())))
            .collect()
    }

    fn apply(local: &Map<String, Value>, decision: &Decision) -> Map<String, Value> {
        let mut out = local.clone();
        if let Decision::Apply { set, .. } = decision {
            out.extend(set.clone());
        }
        out
    }

    proptest! {
        #[test]
        fn without_pending_local_changes_the_crm_values_are_applied(
            local in record(), base in record(), incoming in changes()
        ) {
            let side = LocalSide { data: &local, pending: false, changed_at: Some(t(0)) };
            let (held, times) = (Map::new(), times_at(-10));
            let agreed = Agreed { base: &base, field_times: &times, held: &held };
            let d = merge(ENTITY, &side, Some(&agreed), &Incoming { changes: &incoming, at: t(-5) });
            let after = apply(&local, &d);
            for (k, v) in &incoming {
                prop_assert_eq!(after.get(k), Some(v));
            }
            let Decision::Apply { conflicts, base: new_base, .. } = d else { panic!("not stale") };
            prop_assert!(conflicts.is_empty());
            for (k, v) in &incoming {
                prop_assert_eq!(new_base.get(k), Some(v));
            }
        }

        #[test]
        fn a_newer_crm_change_wins_but_unchanged_fields_keep_pending_local_changes(
            local in record(), base in record(), incoming in changes()
        ) {
            let side = LocalSide { data: &local, pending: true, changed_at: Some(t(0)) };
            let (held, times) = (Map::new(), times_at(-10));
            let agreed = Agreed { base: &base, field_times: &times, held: &held };
            let d = merge(ENTITY, &side, Some(&agreed), &Incoming { changes: &incoming, at: t(5) });
            let after = apply(&local, &d);
            for (k, theirs) in &incoming {
                let they_changed = base.get(k) != Some(theirs);
                let expected = if they_changed { theirs } else { &local[k] };
                prop_assert_eq!(after.get(k), Some(expected));
            }
            let Decision::Apply { conflicts, .. } = d else { panic!("not stale") };
            prop_assert!(conflicts.is_empty());
        }

        #[test]
        fn an_older_crm_change_never_overwrites_a_local_change(
            local in record(), base in record(), incoming in changes()
        ) {
            let side = LocalSide { data: &local, pending: true, changed_at: Some(t(0)) };
            let (held, times) = (Map::new(), times_at(-10));
            let agreed = Agreed { base: &base, field_times: &times, held: &held };
            let d = merge(ENTITY, &side, Some(&agreed), &Incoming { changes: &incoming, at: t(-5) });
            let after = apply(&local, &d);
            let Decision::Apply { conflicts, held, .. } = &d else { panic!("not stale") };
            for (k, ours) in &local {
                let we_changed = base.get(k) != Some(ours);
                if we_changed {
                    // Ours stays.
                    prop_assert_eq!(after.get(k), Some(ours));
                } else if let Some(theirs) = incoming.get(k) {
                    // Untouched here: the CRM's value is applied.
                    prop_assert_eq!(after.get(k), Some(theirs));
                }
                // A conflict is exactly: both changed, to different values.
                let conflict = we_changed
                    && incoming.get(k).is_some_and(|theirs| base.get(k) != Some(theirs) && theirs != ours);
                prop_assert_eq!(conflicts.contains(&k.as_str()), conflict);
                prop_assert_eq!(held.contains_key(k), conflict);
            }
        }

        #[test]
        fn a_change_older_than_the_known_crm_state_is_stale(
            local in record(), base in record(), incoming in changes(), pending in any::<bool>()
        ) {
            let side = LocalSide { data: &local, pending, changed_at: Some(t(0)) };
            let (held, times) = (Map::new(), times_at(10));
            let agreed = Agreed { base: &base, field_times: &times, held: &held };
            let d = merge(ENTITY, &side, Some(&agreed), &Incoming { changes: &incoming, at: t(9) });
            if incoming.is_empty() {
                let nothing = matches!(d, Decision::Apply { ref set, .. } if set.is_empty());
                prop_assert!(nothing);
            } else {
                prop_assert_eq!(d, Decision::Stale);
            }
        }
    }

    #[test]
    fn a_newer_crm_value_settles_a_held_conflict() {
        let local = json!({"title": "ours"}).as_object().cloned().unwrap();
        let base = json!({"title": "old"}).as_object().cloned().unwrap();
        let held = json!({"title": "theirs"}).as_object().cloned().unwrap();
        let incoming = json!({"title": "newest"}).as_object().cloned().unwrap();
        let side = LocalSide { data: &local, pending: true, changed_at: Some(t(0)) };
        let times = times_at(-10);
        let agreed = Agreed { base: &base, field_times: &times, held: &held };
        let Decision::Apply { set, held, conflicts, .. } =
            merge(ENTITY, &side, Some(&agreed), &Incoming { changes: &incoming, at: t(5) })
        else {
            panic!("stale")
        };
        assert_eq!(set["title"], "newest");
        assert!(held.is_empty() && conflicts.is_empty());
    }
}
