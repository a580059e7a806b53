//! Notifications leave through the outbox: a change of state (or a routed alert) writes one
//! [`Notification`] per channel in the same transaction, on `outbound.monitor.<channel>`, and the
//! `monitor-notify` consumer delivers it: retried with backoff, dead-lettered when a channel
//! keeps refusing, and never sent twice for one message (`send_once`: the schema's inbox).
//!
//! - `slack`: Slack's incoming webhook (`SLACK_WEBHOOK_URL`), `{"text": ...}` in mrkdwn;
//! - `pagerduty`: PagerDuty Events API v2 (`PAGERDUTY_ROUTING_KEY`, `PAGERDUTY_EVENTS_URL`):
//!   `trigger` with a stable `dedup_key`, `resolve` with the same key;
//! - `email`: to the `alert_email_to` setting over `SMTP_*`.
//!
//! A channel that is not configured is logged and skipped: the notification is not retried
//! forever for a channel nobody set up.

use serde::{Deserialize, Serialize};
use shared::{
    bus::{Delivery, HandlerError},
    db::PgPool,
    notify::{Incident, Mailer, PagerDuty, Slack},
    schemas::{Event, sync::Severity},
    settings::Settings,
};

pub const CONSUMER: &str = "monitor-notify";

/// One notification for one channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `slack`, `pagerduty` or `email`.
    pub channel: String,
    pub severity: Severity,
    /// One line: email subject, PagerDuty summary.
    pub title: String,
    /// Slack mrkdwn / email text.
    pub text: String,
    /// The incident's stable key (PagerDuty).
    pub dedup_key: String,
    /// Resolves the incident `dedup_key` instead of triggering it.
    #[serde(default)]
    pub resolve: bool,
}

impl Event for Notification {
    const TYPE: &'static str = "monitor.notification";
    fn subject(&self) -> String {
        format!("outbound.monitor.{}", self.channel)
    }
}

/// The configured channels.
#[derive(Clone)]
pub struct Channels {
    pub slack: Option<Slack>,
    pub pagerduty: Option<PagerDuty>,
    pub mailer: Option<Mailer>,
    /// Where the dashboard is (links in messages).
    pub dashboard_url: String,
}

/// Delivers one notification once.
pub async fn deliver(
    db: &PgPool,
    http: &reqwest::Client,
    channels: &Channels,
    settings: &Settings,
    delivery: Delivery<Notification>,
) -> Result<(), HandlerError> {
    let n = &delivery.envelope.data;
    let id = delivery.envelope.id.to_string();
    let schema = crate::SCHEMA;
    let sent = match n.channel.as_str() {
        "slack" => match &channels.slack {
            Some(slack) => {
                let text = format!("{}\n<{}|Open the dashboard>", n.text, channels.dashboard_url);
                slack.post_once(http, db, schema, CONSUMER, &id, &text).await?
            }
            None => return skipped(n, "SLACK_WEBHOOK_URL"),
        },
        "pagerduty" => match &channels.pagerduty {
            Some(pd) => {
                let incident = if n.resolve {
                    Incident::Resolve
                } else {
                    Incident::Trigger {
                        summary: &n.title,
                        source: crate::SERVICE,
                        severity: n.severity,
                    }
                };
                pd.send_once(http, db, schema, CONSUMER, &id, &n.dedup_key, incident).await?
            }
            None => return skipped(n, "PAGERDUTY_ROUTING_KEY"),
        },
        "email" => {
            let to = settings.current().alert_email_to.clone();
            match (&channels.mailer, to.is_empty()) {
                (Some(mailer), false) => {
                    let email = shared::schemas::Email {
                        to,
                        subject: n.title.clone(),
                        text: format!("{}\n\nDashboard: {}", n.text, channels.dashboard_url),
                        html: None,
                        message_id: Some(format!("{id}@datasync.monitor")),
                    };
                    mailer.send_once(db, schema, CONSUMER, &id, &email).await?
                }
                _ => return skipped(n, "SMTP_HOST and the alert_email_to setting"),
            }
        }
        other => {
            return Err(HandlerError::Permanent(anyhow::anyhow!("unknown channel {other:?}")));
        }
    };
    if sent {
        tracing::info!(channel = %n.channel, title = %n.title, resolve = n.resolve, "notification sent");
    }
    Ok(())
}

fn skipped(n: &Notification, missing: &str) -> Result<(), HandlerError> {
    tracing::warn!(channel = %n.channel, title = %n.title, "not configured ({missing}): notification skipped");
    Ok(())
}
