//! erp-sync's emails: what they say and where they go, and the consumer that sends them from
//! the outbox over SMTP, once per request.

use shared::{
    bus::{Delivery, HandlerError},
    db::PgPool,
    notify::{Mailer, escape_html},
    schemas::Email,
    schemas::erp::EmailRequested,
};

use crate::SCHEMA;

/// What the emails say and where they go.
#[derive(Clone, Debug)]
pub struct MailSettings {
    /// `ERP_SALES_EMAIL`: who hears of new orders (unset: nobody).
    pub sales: Option<String>,
    /// `ERP_TRACKING_URL`: the tracking link, `{tracking}` replaced by the tracking number.
    pub tracking_url: String,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self { sales: None, tracking_url: "https://track.carrier.com/{tracking}".into() }
    }
}

/// The durable consumer that sends erp-sync's emails.
pub const MAIL_CONSUMER: &str = "erp-email";

/// An email with its text part, and an HTML part of the same lines.
pub(crate) fn email(to: String, subject: String, lines: &[String]) -> Email {
    let html = lines.iter().map(|l| format!("<p>{}</p>", escape_html(l))).collect::<String>();
    Email {
        to: vec![to],
        subject,
        text: lines.join("\n"),
        html: Some(format!("<html><body>{html}</body></html>")),
        message_id: None,
    }
}

/// Sends one email once: a redelivery after the send was recorded sends nothing; the
/// `Message-ID` is the request's id, so a copy sent again after a crash between the send and
/// its record carries the same id.
pub async fn send(
    db: &PgPool,
    mailer: &Mailer,
    delivery: Delivery<EmailRequested>,
) -> Result<(), HandlerError> {
    let id = delivery.envelope.id.to_string();
    let mut email = delivery.envelope.data.email;
    email.message_id = Some(format!("{id}@erp-sync.datasync"));
    mailer.send_once(db, SCHEMA, MAIL_CONSUMER, &id, &email).await.map(|_| ())
}
