//! The health rules, as pure functions: what one integration's figures say about it, and what
//! all of them say about the platform.
//!
//! Per integration (`ok`, `warning`, `error`, or `idle` when nothing was ever synced with it):
//! - the last successful sync older than its maximum lag (`max_sync_lag_secs`, default 30 min)
//!   is a `warning` (`sync_lag`);
//! - more than 5 failed attempts in the last hour is an `error` (`high_error_rate`);
//! - open dead letters are a `warning` (`dead_letters`), and so are open rows of the services'
//!   error ledgers (`record_errors`) and a failed bulk job (`bulk_failed`);
//! - more than 1000 messages waiting in its consumers is a `warning` (`queue_backlog`).
//!
//! Platform-wide, more than 100 open conflicts (pending and escalated) is `degraded`
//! (`pending_conflicts`). Overall: `unhealthy` if an integration is in `error`, else `degraded`
//! if anything is a warning, else `healthy`.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The integrations the platform connects.
pub const INTEGRATIONS: [&str; 6] = ["crm", "erp", "ecommerce", "pos", "wms", "directory"];

/// The limits a check applies.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Failed attempts per hour above which an integration is in `error`.
    pub errors_per_hour: i64,
    /// Open conflicts above which the platform is `degraded`.
    pub open_conflicts: i64,
    /// Waiting messages above which an integration's queue is a backlog.
    pub queue_depth: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { errors_per_hour: 5, open_conflicts: 100, queue_depth: 1000 }
    }
}

/// What the monitor knows of one integration at check time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    pub name: String,
    pub last_sync: Option<DateTime<Utc>>,
    /// The maximum lag for it (the runtime setting, or the default).
    pub max_lag_minutes: i64,
    pub synced_1h: i64,
    pub error_count_1h: i64,
    pub pending_conflicts: i64,
    pub escalated_conflicts: i64,
    pub queue_depth: u64,
    pub dead_letters: i64,
    /// Open rows of the services' error ledgers for it.
    pub ledger_open: i64,
    pub bulk_running: i64,
    pub bulk_failed: i64,
    /// Any sync with it was ever seen.
    pub active: bool,
}

/// One thing a check found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Issue {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration: Option<String>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: String,
}

/// An integration's state with the figures behind it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntegrationStatus {
    #[serde(flatten)]
    pub figures: Figures,
    pub lag_minutes: Option<i64>,
    /// `ok`, `warning`, `error` or `idle`.
    pub status: &'static str,
}

/// The platform's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overall {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Overall {
    pub fn as_str(self) -> &'static str {
        match self {
            Overall::Healthy => "healthy",
            Overall::Degraded => "degraded",
            Overall::Unhealthy => "unhealthy",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub status: Overall,
    pub integrations: Vec<IntegrationStatus>,
    pub issues: Vec<Issue>,
    pub pending_conflicts: i64,
    pub escalated_conflicts: i64,
    pub queue_depth: u64,
}

/// Applies the rules to every integration's figures at time `now`; `unreachable` names the
/// services whose admin API could not be read (each a `warning`: what it holds is unknown).
pub fn evaluate(
    figures: Vec<Figures>,
    unreachable: &[String],
    limits: &Limits,
    now: DateTime<Utc>,
) -> Report {
    let mut issues = Vec::new();
    let mut status = Overall::Healthy;
    let mut integrations = Vec::new();
    for f in figures {
        let lag_minutes = f.last_sync.map(|t| (now - t).num_minutes().max(0));
        let mut state = if f.active { "ok" } else { "idle" };
        let name = f.name.clone();
        let mut raise = |state: &mut &'static str, level: &'static str, kind, message: String| {
            if *state != "error" {
                *state = level;
            }
            issues.push(Issue { integration: Some(name.clone()), kind, message });
        };
        if f.active
            && let Some(lag) = lag_minutes.filter(|lag| *lag > f.max_lag_minutes)
        {
            raise(
                &mut state,
                "warning",
                "sync_lag",
                format!("{} sync lag: {lag} minutes (max: {})", f.name, f.max_lag_minutes),
            );
        }
        if f.error_count_1h > limits.errors_per_hour {
            raise(
                &mut state,
                "error",
                "high_error_rate",
                format!("{} has {} errors in the last hour", f.name, f.error_count_1h),
            );
        }
        if f.dead_letters > 0 {
            raise(
                &mut state,
                "warning",
                "dead_letters",
                format!("{} has {} dead letters waiting", f.name, f.dead_letters),
            );
        }
        if f.ledger_open > 0 {
            raise(
                &mut state,
                "warning",
                "record_errors",
                format!("{} has {} records waiting in the error ledger", f.name, f.ledger_open),
            );
        }
        if f.bulk_failed > 0 {
            raise(
                &mut state,
                "warning",
                "bulk_failed",
                format!("{} has {} failed bulk jobs", f.name, f.bulk_failed),
            );
        }
        if f.queue_depth > limits.queue_depth {
            raise(
                &mut state,
                "warning",
                "queue_backlog",
                format!("{} sync queue backlog: {} items", f.name, f.queue_depth),
            );
        }
        status = status.max(match state {
            "error" => Overall::Unhealthy,
            "warning" => Overall::Degraded,
            _ => Overall::Healthy,
        });
        integrations.push(IntegrationStatus { figures: f, lag_minutes, status: state });
    }
    let pending_conflicts = integrations.iter().map(|i| i.figures.pending_conflicts).sum();
    let escalated_conflicts: i64 = integrations.iter().map(|i| i.figures.escalated_conflicts).sum();
    let open = pending_conflicts + escalated_conflicts;
    if open > limits.open_conflicts {
        status = status.max(Overall::Degraded);
        issues.push(Issue {
            integration: None,
            kind: "pending_conflicts",
            message: format!("{open} sync conflicts pending resolution"),
        });
    }
    for service in unreachable {
        status = status.max(Overall::Degraded);
        issues.push(Issue {
            integration: None,
            kind: "service_unreachable",
            message: format!("{service}: its admin API cannot be read"),
        });
    }
    let queue_depth = integrations.iter().map(|i| i.figures.queue_depth).sum();
    Report { status, integrations, issues, pending_conflicts, escalated_conflicts, queue_depth }
}

/// The Slack text of a state (the seed's wording): a headline, then one bullet per issue.
pub fn slack_text(report: &Report) -> String {
    let headline = match report.status {
        Overall::Unhealthy => "🚨 *Data Sync Unhealthy*".to_owned(),
        Overall::Degraded => "⚠️ *Data Sync Degraded*".to_owned(),
        Overall::Healthy => "✅ *Data Sync Healthy again*".to_owned(),
    };
    let bullets: String = report.issues.iter().map(|i| format!("• {}\n", i.message)).collect();
    if bullets.is_empty() { headline } else { format!("{headline}\n\n{bullets}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluate_all(figures: Vec<Figures>, limits: &Limits, now: DateTime<Utc>) -> Report {
        evaluate(figures, &[], limits, now)
    }

    #[test]
    fn open_ledger_rows_and_an_unreadable_service_degrade() {
        let waiting = Figures { ledger_open: 2, ..active("erp") };
        let report = evaluate(vec![waiting], &["crm-sync".to_owned()], &Limits::default(), now());
        assert_eq!(report.status, Overall::Degraded);
        let messages: Vec<_> = report.issues.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "erp has 2 records waiting in the error ledger",
                "crm-sync: its admin API cannot be read"
            ]
        );
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn active(name: &str) -> Figures {
        Figures {
            name: name.into(),
            last_sync: Some(now() - chrono::Duration::minutes(2)),
            max_lag_minutes: 30,
            active: true,
            ..Figures::default()
        }
    }

    #[test]
    fn quiet_and_idle_integrations_are_healthy() {
        let report = evaluate_all(
            vec![active("crm"), Figures { name: "pos".into(), ..Default::default() }],
            &Limits::default(),
            now(),
        );
        assert_eq!(report.status, Overall::Healthy);
        assert_eq!(report.integrations[0].status, "ok");
        assert_eq!(report.integrations[0].lag_minutes, Some(2));
        assert_eq!(report.integrations[1].status, "idle");
        assert!(report.issues.is_empty());
    }

    #[test]
    fn lag_backlog_and_dead_letters_degrade_errors_make_it_unhealthy() {
        let lagging =
            Figures { last_sync: Some(now() - chrono::Duration::minutes(45)), ..active("erp") };
        let report = evaluate_all(vec![lagging.clone()], &Limits::default(), now());
        assert_eq!(report.status, Overall::Degraded);
        assert_eq!(report.issues[0].message, "erp sync lag: 45 minutes (max: 30)");
        let backlog = Figures { queue_depth: 1001, ..active("wms") };
        assert_eq!(
            evaluate_all(vec![backlog], &Limits::default(), now()).status,
            Overall::Degraded
        );
        let exactly = Figures { queue_depth: 1000, error_count_1h: 5, ..active("wms") };
        assert_eq!(evaluate_all(vec![exactly], &Limits::default(), now()).status, Overall::Healthy);
        let failing = Figures { error_count_1h: 6, dead_letters: 1, ..active("ecommerce") };
        let report = evaluate_all(vec![lagging, failing], &Limits::default(), now());
        assert_eq!(report.status, Overall::Unhealthy);
        assert_eq!(report.integrations[1].status, "error", "a later warning keeps the error");
        let kinds: Vec<_> = report.issues.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, ["sync_lag", "high_error_rate", "dead_letters"]);
        assert!(slack_text(&report).starts_with("🚨 *Data Sync Unhealthy*\n\n• erp sync lag"));
    }

    #[test]
    fn more_than_a_hundred_open_conflicts_degrade_the_platform() {
        let crm = Figures { pending_conflicts: 60, escalated_conflicts: 41, ..active("crm") };
        let report = evaluate_all(vec![crm], &Limits::default(), now());
        assert_eq!(report.status, Overall::Degraded);
        assert_eq!(report.issues[0].message, "101 sync conflicts pending resolution");
        assert_eq!(report.issues[0].integration, None);
    }
}
