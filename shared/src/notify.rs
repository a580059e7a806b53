//! Notifications to people: email over SMTP (lettre), Slack incoming webhooks and PagerDuty
//! Events API v2. Each call either delivers or returns an [`Outcome`] telling the caller (a
//! consumer, so retries and dead letters come from the bus) whether to retry.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::{
    config::{ConfigError, var, var_parsed},
    outbound::{self, Endpoint, OutboundRequest, Outcome, TargetAuth},
    schemas::{Email, sync::Severity},
};

/// How the SMTP connection is secured (`SMTP_TLS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection (local relays, Mailpit, the sandbox).
    None,
    /// STARTTLS upgrade, required.
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// SMTP settings.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    /// `SMTP_HOST` (default `127.0.0.1`) and `SMTP_PORT` (default 1025, Mailpit's).
    pub host: String,
    pub port: u16,
    /// `SMTP_TLS`: `none` (default), `starttls` or `tls`.
    pub security: SmtpSecurity,
    /// `SMTP_USERNAME` / `SMTP_PASSWORD`, both or neither.
    pub credentials: Option<(String, SecretString)>,
    /// `SMTP_FROM`, default `datasync <datasync@localhost>`.
    pub from: Mailbox,
}

impl Default for SmtpConfig {
    /// What `from_env` gives with no `SMTP_*` set: a plain local relay on port 1025.
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1025,
            security: SmtpSecurity::None,
            credentials: None,
            from: "datasync <datasync@localhost>"
                .parse()
                .unwrap_or_else(|_| unreachable!("a valid mailbox")),
        }
    }
}

impl SmtpConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let invalid =
            |name: &str, reason: String| ConfigError::Invalid { name: name.into(), reason };
        let security = match var("SMTP_TLS").as_deref() {
            None | Some("none") => SmtpSecurity::None,
            Some("starttls") => SmtpSecurity::StartTls,
            Some("tls") => SmtpSecurity::Tls,
            Some(other) => {
                return Err(invalid(
                    "SMTP_TLS",
                    format!("expected none, starttls or tls, got {other:?}"),
                ));
            }
        };
        let credentials = match (var("SMTP_USERNAME"), var("SMTP_PASSWORD")) {
            (Some(user), Some(password)) => Some((user, SecretString::from(password))),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "SMTP_PASSWORD",
                    "set SMTP_USERNAME and SMTP_PASSWORD together".into(),
                ));
            }
        };
        let from = var("SMTP_FROM").unwrap_or_else(|| "datasync <datasync@localhost>".into());
        Ok(Self {
            host: var("SMTP_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            port: var_parsed("SMTP_PORT", 1025)?,
            security,
            credentials,
            from: from.parse().map_err(|e| invalid("SMTP_FROM", format!("{e}")))?,
        })
    }
}

/// `text` escaped for an email's HTML part.
pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Sends email through one SMTP relay. Cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(cfg: &SmtpConfig) -> anyhow::Result<Self> {
        crate::tls::install_crypto_provider();
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            .port(cfg.port)
            .timeout(Some(Duration::from_secs(10)));
        builder = match cfg.security {
            SmtpSecurity::None => builder.tls(Tls::None),
            SmtpSecurity::StartTls => {
                builder.tls(Tls::Required(TlsParameters::new(cfg.host.clone())?))
            }
            SmtpSecurity::Tls => builder.tls(Tls::Wrapper(TlsParameters::new(cfg.host.clone())?)),
        };
        if let Some((user, password)) = &cfg.credentials {
            builder = builder
                .credentials(Credentials::new(user.clone(), password.expose_secret().to_owned()));
        }
        Ok(Self { transport: builder.build(), from: cfg.from.clone() })
    }

    /// Sends `email`; invalid addresses are permanent failures, SMTP errors are retried unless
    /// the server refused permanently (5xx).
    pub async fn send(&self, email: &Email) -> Outcome {
        let message = match self.build(email) {
            Ok(m) => m,
            Err(e) => {
                return Outcome::Rejected {
                    status: reqwest::StatusCode::UNPROCESSABLE_ENTITY,
                    body: e.to_string(),
                };
            }
        };
        match self.transport.send(message).await {
            Ok(_) => Outcome::Delivered(reqwest::StatusCode::OK),
            Err(e) if e.is_permanent() => Outcome::Rejected {
                status: reqwest::StatusCode::UNPROCESSABLE_ENTITY,
                body: e.to_string(),
            },
            Err(e) => Outcome::Retry { status: None, after: None, error: format!("SMTP: {e}") },
        }
    }

    /// Sends `email` once for the message `id` a durable `consumer` received: a redelivery
    /// after the send was recorded in the schema's inbox sends nothing (a crash between the send
    /// and its record sends it again: at least once, and a `Message-ID` derived from the
    /// request lets the copy be told apart). Whether it was sent now.
    pub async fn send_once(
        &self,
        db: &crate::db::PgPool,
        schema: &'static str,
        consumer: &str,
        id: &str,
        email: &Email,
    ) -> Result<bool, crate::bus::HandlerError> {
        let sent = once(db, schema, consumer, id, "email", self.send(email)).await?;
        if sent {
            tracing::info!(subject = %email.subject, consumer, "email sent");
        }
        Ok(sent)
    }

    fn build(&self, email: &Email) -> anyhow::Result<Message> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(&email.subject)
            .message_id(email.message_id.as_ref().map(|id| format!("<{id}>")));
        if email.to.is_empty() {
            anyhow::bail!("email has no recipient");
        }
        for to in &email.to {
            builder = builder.to(to.parse()?);
        }
        Ok(match &email.html {
            Some(html) => builder
                .multipart(MultiPart::alternative_plain_html(email.text.clone(), html.clone()))?,
            None => builder.body(email.text.clone())?,
        })
    }
}

/// Runs `send` once for the message `id` a durable `consumer` received: a redelivery after the
/// send was recorded in the schema's inbox sends nothing (a crash between the send and its
/// record sends it again: at least once). No pooled connection is held while `send` talks to
/// the other system: a slow relay must not take the connections traffic and readiness need.
async fn once(
    db: &crate::db::PgPool,
    schema: &'static str,
    consumer: &str,
    id: &str,
    what: &str,
    send: impl std::future::Future<Output = Outcome>,
) -> Result<bool, crate::bus::HandlerError> {
    let database = |e| anyhow::anyhow!("database: {e}");
    {
        let mut conn = db.get().await.map_err(database)?;
        if crate::bus::inbox::seen(&mut conn, schema, consumer, id).await? {
            return Ok(false);
        }
    }
    match send.await {
        Outcome::Delivered(_) => {
            let mut conn = db.get().await.map_err(database)?;
            crate::bus::inbox::first_delivery(&mut conn, schema, consumer, id).await?;
            Ok(true)
        }
        failed => Err(failed.into_handler_error(what)),
    }
}

/// A Slack incoming webhook (the URL is the secret).
#[derive(Clone, Debug)]
pub struct Slack {
    pub webhook_url: SecretString,
}

impl Slack {
    /// Posts `text` once for the message `id` a durable `consumer` received (as
    /// [`Mailer::send_once`] sends an email); whether it was posted now.
    pub async fn post_once(
        &self,
        client: &reqwest::Client,
        db: &crate::db::PgPool,
        schema: &'static str,
        consumer: &str,
        id: &str,
        text: &str,
    ) -> Result<bool, crate::bus::HandlerError> {
        once(db, schema, consumer, id, "Slack", self.post(client, text)).await
    }

    /// Posts `text` (Slack mrkdwn) to the channel.
    pub async fn post(&self, client: &reqwest::Client, text: &str) -> Outcome {
        let endpoint = Endpoint {
            base_url: self.webhook_url.expose_secret().to_owned(),
            auth: TargetAuth::InRequest,
        };
        let request = OutboundRequest {
            method: Method::POST,
            path: String::new(),
            body: json!({"text": text}),
        };
        outbound::send(client, &endpoint, &request).await
    }
}

/// PagerDuty Events API v2.
#[derive(Clone, Debug)]
pub struct PagerDuty {
    /// Base URL, `https://events.pagerduty.com` in production.
    pub events_url: String,
    pub routing_key: SecretString,
}

/// What to tell PagerDuty.
#[derive(Clone, Debug, PartialEq)]
pub enum Incident<'a> {
    Trigger { summary: &'a str, source: &'a str, severity: Severity },
    Resolve,
}

impl PagerDuty {
    /// [`PagerDuty::send`] once for the message `id` a durable `consumer` received (as
    /// [`Mailer::send_once`] sends an email); whether it was sent now.
    #[allow(clippy::too_many_arguments, reason = "the once-key, then the event")]
    pub async fn send_once(
        &self,
        client: &reqwest::Client,
        db: &crate::db::PgPool,
        schema: &'static str,
        consumer: &str,
        id: &str,
        dedup_key: &str,
        incident: Incident<'_>,
    ) -> Result<bool, crate::bus::HandlerError> {
        once(db, schema, consumer, id, "PagerDuty", self.send(client, dedup_key, incident)).await
    }

    /// Triggers or resolves the incident identified by `dedup_key` (the same condition always
    /// uses the same key, so repeated triggers update one incident instead of paging again).
    pub async fn send(
        &self,
        client: &reqwest::Client,
        dedup_key: &str,
        incident: Incident<'_>,
    ) -> Outcome {
        let body = match incident {
            Incident::Trigger { summary, source, severity } => json!({
                "routing_key": self.routing_key.expose_secret(),
                "event_action": "trigger",
                "dedup_key": dedup_key,
                "payload": {
                    "summary": summary,
                    "source": source,
                    "severity": match severity {
                        Severity::Critical => "critical",
                        Severity::Warning => "warning",
                        Severity::Info => "info",
                    },
                },
            }),
            Incident::Resolve => json!({
                "routing_key": self.routing_key.expose_secret(),
                "event_action": "resolve",
                "dedup_key": dedup_key,
            }),
        };
        let endpoint = Endpoint { base_url: self.events_url.clone(), auth: TargetAuth::InRequest };
        let request = OutboundRequest { method: Method::POST, path: "/v2/enqueue".into(), body };
        outbound::send(client, &endpoint, &request).await
    }
}
