//! Conflict rules as pure functions: what each side changed against the last agreed copy, the
//! three-way merge of two sides, and the automatic rules that decide a conflict (or leave it to
//! a person). No I/O: conflict-resolver stores and announces what these decide.
//!
//! Records are maps of local column names to JSON values; a field missing from a map is `null`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The fields whose value in `side` differs from `base` (a missing field is `null`).
pub fn changed(base: &Map<String, Value>, side: &Map<String, Value>) -> BTreeSet<String> {
    base.keys().chain(side.keys()).filter(|f| field(base, f) != field(side, f)).cloned().collect()
}

fn field<'a>(record: &'a Map<String, Value>, name: &str) -> &'a Value {
    record.get(name).unwrap_or(&Value::Null)
}

/// The outcome of a three-way merge.
#[derive(Clone, Debug, PartialEq)]
pub enum Merge {
    /// Both sides' changes fit together: the base with every change of either side.
    Merged(Map<String, Value>),
    /// Fields both sides changed, to different values.
    Overlap(BTreeSet<String>),
}

/// Merges `local` and `remote` against `base`: when no field was changed by both to different
/// values, the result is the base with each side's changes (a field both changed alike takes
/// that value); otherwise the fields in dispute.
pub fn three_way(
    base: &Map<String, Value>,
    local: &Map<String, Value>,
    remote: &Map<String, Value>,
) -> Merge {
    let ours = changed(base, local);
    let theirs = changed(base, remote);
    let disputed: BTreeSet<String> = ours
        .intersection(&theirs)
        .filter(|f| field(local, f) != field(remote, f))
        .cloned()
        .collect();
    if !disputed.is_empty() {
        return Merge::Overlap(disputed);
    }
    let mut merged = base.clone();
    for f in &ours {
        merged.insert(f.clone(), field(local, f).clone());
    }
    for f in &theirs {
        merged.insert(f.clone(), field(remote, f).clone());
    }
    Merge::Merged(merged)
}

/// A time and the clock it was read from (`local`: ours; `crm`, `erp`: that system's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clocked {
    pub at: DateTime<Utc>,
    pub clock: String,
}

/// A conflict as the rules see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispute<'a> {
    /// The system on the remote side (`crm`, `erp`).
    pub system: &'a str,
    pub base: &'a Map<String, Value>,
    pub local: &'a Map<String, Value>,
    pub remote: &'a Map<String, Value>,
    pub local_at: &'a Clocked,
    pub remote_at: &'a Clocked,
}

/// How the rules are set.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// Rule 1: times further apart than this make the newer side win (60 s by default).
    pub newer_wins_after: chrono::Duration,
    /// Two clocks may disagree by this much: a difference between times of different clocks is
    /// trusted only beyond it.
    pub clock_skew: chrono::Duration,
    /// Rule 3: the runtime setting `sync_priority_source`: the system whose side wins
    /// (`local` for ours); `None`: no priority.
    pub priority_source: Option<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            newer_wins_after: chrono::Duration::seconds(60),
            clock_skew: chrono::Duration::seconds(5),
            priority_source: None,
        }
    }
}

/// Which rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    NewerWins,
    FieldMerge,
    SourcePriority,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NewerWins => "newer_wins",
            Rule::FieldMerge => "field_merge",
            Rule::SourcePriority => "source_priority",
        }
    }
}

/// Which side a decision took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    Local,
    Remote,
    Merged,
}

/// What the rules decided: the record's values for every field either side changed, the rule,
/// and why, in words.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub rule: Rule,
    pub winner: Winner,
    pub values: Map<String, Value>,
    pub explanation: String,
}

/// The values of the fields either side changed, taken from `winner`'s record.
fn taken(dispute: &Dispute<'_>, from: &Map<String, Value>) -> Map<String, Value> {
    let mut fields = changed(dispute.base, dispute.local);
    fields.extend(changed(dispute.base, dispute.remote));
    fields.into_iter().map(|f| (f.clone(), field(from, &f).clone())).collect()
}

/// Tries the rules in order: the newer side when the times are far apart (and further apart than
/// the clocks may disagree), a merge of disjoint changes, the priority source. `None`: no rule
/// decides, a person must.
pub fn decide(dispute: &Dispute<'_>, rules: &Rules) -> Option<Decision> {
    // 1. The newer side, when the difference means something.
    let difference = dispute.local_at.at - dispute.remote_at.at;
    let mut trusted = rules.newer_wins_after;
    if dispute.local_at.clock != dispute.remote_at.clock {
        trusted = trusted.max(rules.clock_skew);
    }
    if difference.abs() > trusted {
        let (winner, record, newer, older) = if difference > chrono::Duration::zero() {
            (Winner::Local, dispute.local, dispute.local_at, dispute.remote_at)
        } else {
            (Winner::Remote, dispute.remote, dispute.remote_at, dispute.local_at)
        };
        return Some(Decision {
            rule: Rule::NewerWins,
            winner,
            values: taken(dispute, record),
            explanation: format!(
                "{} is {} s newer ({} by the {} clock, against {} by the {} clock)",
                match winner {
                    Winner::Local => "the local change",
                    _ => "the remote change",
                },
                difference.num_seconds().abs(),
                newer.at.to_rfc3339(),
                newer.clock,
                older.at.to_rfc3339(),
                older.clock
            ),
        });
    }
    // 2. Changes to different fields merge.
    if let Merge::Merged(merged) = three_way(dispute.base, dispute.local, dispute.remote) {
        let ours = changed(dispute.base, dispute.local);
        let theirs = changed(dispute.base, dispute.remote);
        return Some(Decision {
            rule: Rule::FieldMerge,
            winner: Winner::Merged,
            values: taken(dispute, &merged),
            explanation: format!(
                "field-level merge: local changed {ours:?}, {} changed {theirs:?}",
                dispute.system
            ),
        });
    }
    // 3. The priority source.
    let priority = rules.priority_source.as_deref()?;
    let winner = if priority == dispute.system {
        Winner::Remote
    } else if priority == "local" {
        Winner::Local
    } else {
        return None;
    };
    let record = if winner == Winner::Remote { dispute.remote } else { dispute.local };
    Some(Decision {
        rule: Rule::SourcePriority,
        winner,
        values: taken(dispute, record),
        explanation: format!("priority source rule: {priority} wins"),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn record(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn at(clock: &str, secs: i64) -> Clocked {
        Clocked { at: DateTime::UNIX_EPOCH + chrono::Duration::seconds(secs), clock: clock.into() }
    }

    /// A record over fields `a`..`e`, each absent, null or a small number.
    fn any_record() -> impl Strategy<Value = Map<String, Value>> {
        proptest::collection::btree_map(
            "[a-e]",
            prop_oneof![Just(Value::Null), (0..3i64).prop_map(Value::from)],
            0..5,
        )
        .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn a_merge_of_disjoint_changes_keeps_both(
            base in any_record(), local in any_record(), remote in any_record()
        ) {
            let ours = changed(&base, &local);
            let theirs = changed(&base, &remote);
            prop_assume!(ours.is_disjoint(&theirs));
            let Merge::Merged(merged) = three_way(&base, &local, &remote) else {
                return Err(TestCaseError::fail("disjoint changes must merge"));
            };
            for f in &ours {
                prop_assert_eq!(field(&merged, f), field(&local, f));
            }
            for f in &theirs {
                prop_assert_eq!(field(&merged, f), field(&remote, f));
            }
        }

        #[test]
        fn a_merge_is_deterministic_and_symmetric(
            base in any_record(), local in any_record(), remote in any_record()
        ) {
            let once = three_way(&base, &local, &remote);
            prop_assert_eq!(&once, &three_way(&base, &local, &remote));
            match (once, three_way(&base, &remote, &local)) {
                (Merge::Merged(a), Merge::Merged(b)) => prop_assert_eq!(a, b),
                (Merge::Overlap(a), Merge::Overlap(b)) => prop_assert_eq!(a, b),
                (a, b) => return Err(TestCaseError::fail(format!("{a:?} against {b:?}"))),
            }
        }

        #[test]
        fn no_field_or_value_from_neither_side_appears(
            base in any_record(), local in any_record(), remote in any_record()
        ) {
            if let Merge::Merged(merged) = three_way(&base, &local, &remote) {
                for (f, v) in &merged {
                    let known = [&base, &local, &remote].iter().any(|r| field(r, f) == v);
                    prop_assert!(known, "{f} = {v} comes from nowhere");
                    prop_assert!(base.contains_key(f) || local.contains_key(f) || remote.contains_key(f));
                }
            }
            let dispute = Dispute {
                system: "crm", base: &base, local: &local, remote: &remote,
                local_at: &at("local", 0), remote_at: &at("crm", 1),
            };
            let rules = Rules { priority_source: Some("crm".into()), ..Rules::default() };
            if let Some(decision) = decide(&dispute, &rules) {
                for (f, v) in &decision.values {
                    prop_assert!(field(&local, f) == v || field(&remote, f) == v, "{f} = {v}");
                }
            }
        }
    }

    #[test]
    fn the_rules_apply_in_order_and_explain_themselves() {
        let base = record(json!({"email": "a@x", "phone": "1"}));
        let local = record(json!({"email": "b@x", "phone": "1"}));
        let remote = record(json!({"email": "c@x", "phone": "1"}));
        let rules = Rules::default();
        // 1. Far apart: the newer side wins.
        let dispute = Dispute {
            system: "crm",
            base: &base,
            local: &local,
            remote: &remote,
            local_at: &at("local", 0),
            remote_at: &at("crm", 120),
        };
        let d = decide(&dispute, &rules).unwrap();
        assert_eq!((d.rule, d.winner), (Rule::NewerWins, Winner::Remote));
        assert_eq!(Value::Object(d.values), json!({"email": "c@x"}));
        assert!(d.explanation.contains("120 s newer") && d.explanation.contains("crm clock"));
        // Close together, same fields: nothing decides without a priority.
        let close = Dispute { remote_at: &at("crm", 30), ..dispute.clone() };
        assert_eq!(decide(&close, &rules), None);
        // 3. A priority source decides.
        let crm_first = Rules { priority_source: Some("crm".into()), ..Rules::default() };
        assert_eq!(decide(&close, &crm_first).unwrap().winner, Winner::Remote);
        let local_first = Rules { priority_source: Some("local".into()), ..Rules::default() };
        let d = decide(&close, &local_first).unwrap();
        assert_eq!((d.rule, d.winner), (Rule::SourcePriority, Winner::Local));
        assert_eq!(Value::Object(d.values), json!({"email": "b@x"}));
        // 2. Different fields merge.
        let phone = record(json!({"email": "a@x", "phone": "2"}));
        let merge = Dispute { remote: &phone, ..close.clone() };
        let d = decide(&merge, &rules).unwrap();
        assert_eq!((d.rule, d.winner), (Rule::FieldMerge, Winner::Merged));
        assert_eq!(Value::Object(d.values), json!({"email": "b@x", "phone": "2"}));
    }

    #[test]
    fn a_difference_within_the_clock_skew_is_never_trusted() {
        let base = record(json!({"status": "open"}));
        let local = record(json!({"status": "held"}));
        let remote = record(json!({"status": "shipped"}));
        let rules = Rules {
            newer_wins_after: chrono::Duration::seconds(60),
            clock_skew: chrono::Duration::seconds(300),
            priority_source: None,
        };
        let dispute = Dispute {
            system: "erp",
            base: &base,
            local: &local,
            remote: &remote,
            local_at: &at("local", 0),
            remote_at: &at("erp", 200),
        };
        assert_eq!(
            decide(&dispute, &rules),
            None,
            "200 s apart on two clocks that may be 300 s off"
        );
        let same_clock = Clocked { clock: "local".into(), ..at("local", 200) };
        let d = decide(&Dispute { remote_at: &same_clock, ..dispute }, &rules).unwrap();
        assert_eq!(d.winner, Winner::Remote, "one clock: 200 s is beyond the 60 s rule");
    }
}
