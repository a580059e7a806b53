//! The ledger arithmetic of a batch of adjustments, as a pure function: given the current
//! levels of the rows the batch touches and what the ledger already holds for its idempotency
//! keys, decide each request's answer and the ledger rows to write. [`super::adjuster`] reads
//! the inputs and persists the plan in one transaction.
//!
//! Properties (tested below for any batch): the sum of the planned ledger changes equals the
//! change of every level, no level ever goes below zero, and replaying the applied requests
//! plans nothing new.

use std::collections::{BTreeMap, HashMap};

use shared::schemas::inventory::AdjustmentType;

use super::adjuster::{Adjustment, Applied, Refused};

/// A stock row: (sku, warehouse).
pub type RowKey = (String, String);
/// A stock row's (on_hand, version).
pub type Level = (i64, i64);
/// Whose count of which stock row: (source, sku, warehouse).
pub type MarkKey = (String, String, String);

/// A system's own time of a count, and its version of the record when it has one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Stamp {
    pub at: chrono::DateTime<chrono::Utc>,
    pub version: Option<i64>,
}

impl Stamp {
    /// Whether a count stamped `self` is newer than one stamped `last`: by version when both
    /// carry one (a system's clock may step back, its versions do not), else by time. An equal
    /// stamp is not newer: the same count reported twice applies once.
    pub fn is_newer_than(&self, last: &Stamp) -> bool {
        match (self.version, last.version) {
            (Some(this), Some(last)) => this > last,
            _ => self.at > last.at,
        }
    }
}

/// The level after applying `quantity` of `kind` to `before` (negative means refused).
pub fn level_after(kind: AdjustmentType, before: i64, quantity: i64) -> i64 {
    match kind {
        AdjustmentType::Receipt | AdjustmentType::TransferIn => before.saturating_add(quantity),
        AdjustmentType::Shipment | AdjustmentType::TransferOut => before.saturating_sub(quantity),
        AdjustmentType::Adjustment | AdjustmentType::Count => quantity,
    }
}

/// What the ledger already holds for an idempotency key: the request and its answer.
#[derive(Clone, Debug)]
pub struct Prior {
    pub request: Adjustment,
    pub answer: Applied,
}

/// Each request's fate.
#[derive(Debug)]
pub enum Step {
    Done(Result<Applied, Refused>),
    /// Write `Plan::rows[i]`.
    Insert(usize),
    /// Same key and parameters as request `i` of this batch: its answer, replayed.
    SameAs(usize),
}

/// A ledger row to write.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRow {
    /// Index of the request in the batch.
    pub request: usize,
    pub before: i64,
    pub after: i64,
}

#[derive(Debug)]
pub struct Plan {
    /// One per request, in order.
    pub steps: Vec<Step>,
    pub rows: Vec<NewRow>,
}

/// Whether two requests with the same idempotency key ask for the same thing.
pub fn same_request(a: &Adjustment, b: &Adjustment) -> bool {
    a.sku == b.sku
        && a.warehouse == b.warehouse
        && a.kind == b.kind
        && a.quantity == b.quantity
        && a.expected_on_hand == b.expected_on_hand
}

/// Walks `batch` in order against the running `levels` (updated in place: on hand, and the
/// version, which counts changes of the level). A request for a row missing from `levels` is an
/// unknown product. A stamped count that is not newer than its source's last applied count
/// (`marks`, updated in place) is refused as stale.
pub fn plan(
    batch: &[Adjustment],
    levels: &mut BTreeMap<RowKey, Level>,
    existing: &HashMap<(String, String), Prior>,
    marks: &mut HashMap<MarkKey, Stamp>,
) -> Plan {
    let mut steps = Vec::with_capacity(batch.len());
    let mut rows: Vec<NewRow> = Vec::new();
    let mut batch_keys: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, a) in batch.iter().enumerate() {
        let reused =
            || Refused::KeyReused { origin: a.source.clone(), reference: a.reference.clone() };
        if let Some(prior) = existing.get(&(a.source.clone(), a.reference.clone())) {
            steps.push(Step::Done(if same_request(&prior.request, a) {
                Ok(Applied { replayed: true, ..prior.answer.clone() })
            } else {
                Err(reused())
            }));
            continue;
        }
        if let Some(&first) = batch_keys.get(&(a.source.as_str(), a.reference.as_str())) {
            steps.push(if same_request(&batch[first], a) {
                Step::SameAs(first)
            } else {
                Step::Done(Err(reused()))
            });
            continue;
        }
        batch_keys.insert((a.source.as_str(), a.reference.as_str()), i);
        let Some((on_hand, version)) = levels.get_mut(&(a.sku.clone(), a.warehouse.clone())) else {
            steps.push(Step::Done(Err(Refused::UnknownProduct(a.sku.clone()))));
            continue;
        };
        if let Some(stamp) = &a.stamp {
            let key = (a.source.clone(), a.sku.clone(), a.warehouse.clone());
            if let Some(last) = marks.get(&key)
                && !stamp.is_newer_than(last)
            {
                steps.push(Step::Done(Err(Refused::Stale {
                    origin: a.source.clone(),
                    last: last.clone(),
                    this: stamp.clone(),
                })));
                continue;
            }
        }
        if let Some(expected) = a.expected_on_hand
            && expected != *on_hand
        {
            steps.push(Step::Done(Err(Refused::ExpectedMismatch {
                current_qty: *on_hand,
                expected_on_hand: expected,
            })));
            continue;
        }
        let after = level_after(a.kind, *on_hand, a.quantity);
        if after < 0 {
            steps.push(Step::Done(Err(Refused::Negative {
                current_qty: *on_hand,
                attempted_qty: after,
            })));
            continue;
        }
        rows.push(NewRow { request: i, before: *on_hand, after });
        if let Some(stamp) = &a.stamp {
            marks.insert((a.source.clone(), a.sku.clone(), a.warehouse.clone()), stamp.clone());
        }
        // A change that leaves the level as it was (a count confirming it) is in the ledger but
        // is no new version: nothing is pushed for it, so a system that reports our own push
        // back to us cannot start a loop.
        if after != *on_hand {
            *version += 1;
        }
        *on_hand = after;
        steps.push(Step::Insert(rows.len() - 1));
    }
    Plan { steps, rows }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use proptest::prelude::*;

    use super::*;

    const KINDS: [AdjustmentType; 6] = [
        AdjustmentType::Receipt,
        AdjustmentType::TransferIn,
        AdjustmentType::Shipment,
        AdjustmentType::TransferOut,
        AdjustmentType::Adjustment,
        AdjustmentType::Count,
    ];

    fn adjustment() -> impl Strategy<Value = Adjustment> {
        (0..3usize, 0..2usize, 0..6usize, 0..50i64, 0..12u32, prop::option::of(0..60i64)).prop_map(
            |(sku, wh, kind, quantity, reference, expected)| Adjustment {
                source: "pos".into(),
                reference: format!("r{reference}"),
                sku: format!("S{sku}"),
                warehouse: format!("W{wh}"),
                kind: KINDS[kind],
                quantity,
                expected_on_hand: expected.filter(|_| reference % 4 == 0),
                reason: None,
                stamp: None,
                loaded: None,
            },
        )
    }

    fn start() -> impl Strategy<Value = BTreeMap<RowKey, Level>> {
        prop::collection::vec(0..40i64, 6).prop_map(|levels| {
            let keys = (0..3).flat_map(|s| (0..2).map(move |w| (format!("S{s}"), format!("W{w}"))));
            keys.zip(levels).map(|(k, l)| (k, (l, 0))).collect()
        })
    }

    /// The answers an applied plan stores in the ledger (what a replay finds).
    fn stored(batch: &[Adjustment], plan: &Plan) -> HashMap<(String, String), Prior> {
        plan.rows
            .iter()
            .enumerate()
            .map(|(id, row)| {
                let a = &batch[row.request];
                let answer = Applied {
                    ledger_id: id as i64,
                    source: a.source.clone(),
                    reference: a.reference.clone(),
                    sku: a.sku.clone(),
                    warehouse: a.warehouse.clone(),
                    kind: a.kind,
                    quantity: a.quantity,
                    quantity_before: row.before,
                    new_quantity: row.after,
                    reason: None,
                    created_at: Utc::now(),
                    replayed: false,
                };
                ((a.source.clone(), a.reference.clone()), Prior { request: a.clone(), answer })
            })
            .collect()
    }

    proptest! {
        #[test]
        fn the_ledger_sum_moves_every_level_and_none_goes_negative(
            initial in start(),
            batch in prop::collection::vec(adjustment(), 0..40),
        ) {
            let mut levels = initial.clone();
            let plan = plan(&batch, &mut levels, &HashMap::new(), &mut HashMap::new());
            prop_assert_eq!(plan.steps.len(), batch.len());
            for (key, (before, _)) in &initial {
                let delta: i64 = plan
                    .rows
                    .iter()
                    .filter(|r| batch[r.request].sku == key.0 && batch[r.request].warehouse == key.1)
                    .map(|r| r.after - r.before)
                    .sum();
                prop_assert_eq!(before + delta, levels[key].0, "ledger sum of {:?}", key);
            }
            for row in &plan.rows {
                prop_assert!(row.after >= 0);
            }
            // Each row starts where the previous one of its stock row ended.
            let mut running = initial.clone();
            for row in &plan.rows {
                let a = &batch[row.request];
                let level = running.get_mut(&(a.sku.clone(), a.warehouse.clone())).map(|l| &mut l.0);
                prop_assert_eq!(level.as_deref().copied(), Some(row.before));
                if let Some(level) = level {
                    *level = row.after;
                }
            }
        }

        #[test]
        fn replaying_what_was_applied_plans_nothing(
            initial in start(),
            batch in prop::collection::vec(adjustment(), 1..40),
        ) {
            let mut levels = initial.clone();
            let first = plan(&batch, &mut levels, &HashMap::new(), &mut HashMap::new());
            let ledger = stored(&batch, &first);
            let applied: Vec<Adjustment> = first.rows.iter().map(|r| batch[r.request].clone()).collect();
            let after_first = levels.clone();

            let replay = plan(&applied, &mut levels, &ledger, &mut HashMap::new());

            prop_assert!(replay.rows.is_empty());
            prop_assert_eq!(&levels, &after_first);
            for step in replay.steps {
                let Step::Done(Ok(answer)) = step else {
                    return Err(TestCaseError::fail("a replay is answered from the ledger"));
                };
                prop_assert!(answer.replayed);
            }
        }

        #[test]
        fn a_version_counts_only_changes_of_the_level(
            initial in start(),
            batch in prop::collection::vec(adjustment(), 0..40),
        ) {
            let mut levels = initial.clone();
            let plan = plan(&batch, &mut levels, &HashMap::new(), &mut HashMap::new());
            for (key, (_, version)) in &levels {
                let changes = plan
                    .rows
                    .iter()
                    .filter(|r| batch[r.request].sku == key.0 && batch[r.request].warehouse == key.1)
                    .filter(|r| r.after != r.before)
                    .count() as i64;
                prop_assert_eq!(*version, initial[key].1 + changes);
            }
        }
    }

    /// ERP-style counts of one stock row, each with a time (minutes) and maybe a version.
    fn stamped_count() -> impl Strategy<Value = Adjustment> {
        (0..2usize, 0..100i64, 0..20i64, prop::option::of(0..20i64), 0..30u32).prop_map(
            |(wh, quantity, minute, version, reference)| Adjustment {
                source: "erp".into(),
                reference: format!("c{reference}"),
                sku: "S0".into(),
                warehouse: format!("W{wh}"),
                kind: AdjustmentType::Count,
                quantity,
                expected_on_hand: None,
                reason: None,
                stamp: Some(Stamp {
                    at: chrono::DateTime::UNIX_EPOCH + chrono::Duration::minutes(minute),
                    version,
                }),
                loaded: None,
            },
        )
    }

    proptest! {
        #[test]
        fn a_count_applies_only_after_older_ones_whatever_the_order(
            initial in start(),
            counts in prop::collection::vec(stamped_count(), 1..30),
            split in 0..30usize,
        ) {
            // Any order, in any batches: each applied count is newer than the count applied
            // before it for its row, and each row ends at its last applied count.
            let mut levels = initial.clone();
            let mut marks = HashMap::new();
            let split = split.min(counts.len());
            let mut ledger = HashMap::new();
            let mut applied: Vec<&Adjustment> = Vec::new();
            for part in [&counts[..split], &counts[split..]] {
                let planned = plan(part, &mut levels, &ledger, &mut marks);
                ledger.extend(stored(part, &planned));
                applied.extend(planned.rows.iter().map(|r| &part[r.request]));
            }
            for (i, a) in applied.iter().enumerate() {
                if let Some(before) = applied[..i].iter().rev().find(|e| e.warehouse == a.warehouse) {
                    prop_assert!(
                        a.stamp.as_ref().unwrap().is_newer_than(before.stamp.as_ref().unwrap())
                    );
                }
            }
            for wh in ["W0", "W1"] {
                if let Some(last) = applied.iter().rev().find(|a| a.warehouse == wh) {
                    prop_assert_eq!(levels[&("S0".to_owned(), wh.to_owned())].0, last.quantity);
                    prop_assert_eq!(
                        marks.get(&("erp".to_owned(), "S0".to_owned(), wh.to_owned())),
                        last.stamp.as_ref()
                    );
                }
            }
        }
    }

    #[test]
    fn a_version_decides_before_the_time() {
        let at = |m| chrono::DateTime::UNIX_EPOCH + chrono::Duration::minutes(m);
        let stamp = |m, version| Stamp { at: at(m), version };
        assert!(
            stamp(1, Some(3)).is_newer_than(&stamp(5, Some(2))),
            "the ERP's clock stepped back"
        );
        assert!(!stamp(9, Some(2)).is_newer_than(&stamp(5, Some(2))));
        assert!(stamp(9, None).is_newer_than(&stamp(5, Some(2))));
        assert!(!stamp(5, None).is_newer_than(&stamp(5, None)), "the same count is not newer");
    }

    #[test]
    fn each_type_moves_the_level_its_way() {
        assert_eq!(level_after(AdjustmentType::Receipt, 5, 3), 8);
        assert_eq!(level_after(AdjustmentType::TransferOut, 5, 7), -2);
        assert_eq!(level_after(AdjustmentType::Count, 5, 2), 2);
        assert_eq!(level_after(AdjustmentType::Receipt, i64::MAX, 1), i64::MAX);
    }
}
