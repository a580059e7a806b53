//! What a person hears of an escalated conflict: one email to the data admins and one Slack
//! message, each with the link to the conflict, each sent once (`Mailer::send_once`,
//! `Slack::post_once`) by its own durable consumer of `sync.conflicts.escalated.>`.

use shared::{
    bus::{Delivery, HandlerError},
    db::PgPool,
    notify::{Mailer, Slack, escape_html},
    schemas::{Email, conflict::ConflictEscalated},
};

use crate::SCHEMA;

/// The durable consumers.
pub const MAIL_CONSUMER: &str = "resolver-escalation-mail";
pub const SLACK_CONSUMER: &str = "resolver-escalation-slack";

/// `field: value, ...` of one side's changes.
fn summary(changes: &serde_json::Map<String, serde_json::Value>) -> String {
    if changes.is_empty() {
        return "none".into();
    }
    changes.iter().map(|(f, v)| format!("{f}: {v}")).collect::<Vec<_>>().join(", ")
}

/// The email for an escalated conflict.
pub fn email(conflict: &ConflictEscalated, to: Vec<String>) -> Email {
    let record = format!("{} #{}", conflict.entity, conflict.record_id);
    let lines = [
        "A sync conflict requires manual resolution.".to_owned(),
        String::new(),
        format!("Record: {record} ({} id {})", conflict.system, conflict.external_id),
        format!("Local changes: {}", summary(&conflict.local_changes)),
        format!("Remote changes: {}", summary(&conflict.remote_changes)),
        String::new(),
        format!("Please review at: {}", conflict.review_url),
    ];
    let html =
        lines.iter().map(|l| format!("<p>{}</p>", escape_html(l))).collect::<String>().replace(
            &escape_html(&conflict.review_url),
            &format!("<a href=\"{0}\">{0}</a>", escape_html(&conflict.review_url)),
        );
    Email {
        to,
        subject: format!("Sync Conflict: {record}"),
        text: lines.join("\n"),
        html: Some(format!("<html><body>{html}</body></html>")),
        message_id: Some(format!("{}@conflict-resolver.datasync", conflict.conflict_id)),
    }
}

/// The Slack message (mrkdwn) for an escalated conflict.
pub fn slack_text(conflict: &ConflictEscalated) -> String {
    format!(
        "\u{26a0}\u{fe0f} *Sync Conflict Requires Review*\n\nRecord: {} #{} ({})\n<{}|Review Now>",
        conflict.entity, conflict.record_id, conflict.system, conflict.review_url
    )
}

/// Emails the data admins once.
pub async fn mail(
    db: &PgPool,
    mailer: &Mailer,
    to: &[String],
    delivery: Delivery<ConflictEscalated>,
) -> Result<(), HandlerError> {
    if to.is_empty() {
        tracing::warn!(conflict = %delivery.envelope.data.conflict_id, "no RESOLVER_ADMIN_EMAIL: escalation not emailed");
        return Ok(());
    }
    let email = email(&delivery.envelope.data, to.to_vec());
    let id = delivery.envelope.id.to_string();
    mailer.send_once(db, SCHEMA, MAIL_CONSUMER, &id, &email).await.map(|_| ())
}

/// Posts to Slack once.
pub async fn slack(
    db: &PgPool,
    http: &reqwest::Client,
    slack: &Slack,
    delivery: Delivery<ConflictEscalated>,
) -> Result<(), HandlerError> {
    let id = delivery.envelope.id.to_string();
    let text = slack_text(&delivery.envelope.data);
    slack.post_once(http, db, SCHEMA, SLACK_CONSUMER, &id, &text).await.map(|_| ())
}
