//! The NATS JetStream bus: connection, stream declarations, publishing with `Nats-Msg-Id`,
//! durable pull consumers, the transactional outbox relay, the inbox and dead letters.
//!
//! Every name on the bus (stream, subject, consumer, KV bucket) goes through [`Bus`], which
//! applies the installation prefix (`NATS_PREFIX`), so parallel tests and several installations
//! can share one NATS server without seeing each other's messages.

pub mod consumer;
pub mod dead_letter;
pub mod events;
pub mod inbox;
pub mod outbox;
pub mod streams;

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;

use crate::{
    config::{NatsAuth, NatsConfig},
    schemas::Envelope,
};

pub use consumer::{ConsumerSpec, Delivery, HandlerError, run_batch_consumer, run_consumer};
pub use streams::StreamSpec;

/// How long a publish may wait for its PubAck before it counts as failed (and is retried).
const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a failed connect is a refusal that waiting cannot heal: credentials the server
/// refused, or a TLS mismatch (an untrusted or wrong certificate, TLS required on one side
/// only), however the client classifies it.
fn refused(e: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    if matches!(e.kind(), Kind::Authentication | Kind::AuthorizationViolation | Kind::Tls) {
        return true;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    let text = text.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "unknownissuer"].iter().any(|t| text.contains(t))
}

/// The connection's options: name, timeouts, credentials and TLS ([`NatsConfig`]).
async fn options(cfg: &NatsConfig, service: &str) -> anyhow::Result<async_nats::ConnectOptions> {
    use secrecy::ExposeSecret;
    let mut opts = match &cfg.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::CredsFile(path) => {
            async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| anyhow::anyhow!("NATS_CREDS_FILE {}: {e}", path.display()))?
        }
        NatsAuth::Nkey(seed) => {
            async_nats::ConnectOptions::with_nkey(seed.expose_secret().to_owned())
        }
        NatsAuth::UserPassword(user, password) => {
            async_nats::ConnectOptions::with_user_and_password(
                user.clone(),
                password.expose_secret().to_owned(),
            )
        }
        NatsAuth::Token(token) => {
            async_nats::ConnectOptions::with_token(token.expose_secret().to_owned())
        }
    };
    if cfg.tls.required {
        crate::tls::install_crypto_provider();
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &cfg.tls.ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &cfg.tls.client_cert {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    // Replies come to `_INBOX_<service>.*`: with per-service NATS users (deploy/nats/auth.conf)
    // each may subscribe to its own inbox only, never to another service's replies.
    Ok(opts
        .name(service)
        .custom_inbox_prefix(format!("_INBOX_{service}"))
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(None))
}

/// A connected bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    prefix: String,
    /// How streams are declared.
    topology: crate::config::StreamTopology,
}

impl Bus {
    /// Connects to NATS, waiting as long as it takes for a NATS that is not reachable yet
    /// (services started together with NATS, or before it); refused credentials and TLS
    /// mismatches fail at once. Once connected the client reconnects by itself forever.
    pub async fn connect(cfg: &NatsConfig, service: &str) -> anyhow::Result<Self> {
        let mut attempt = 0u32;
        let client = loop {
            let opts = options(cfg, service).await?;
            match opts.connect(cfg.url.as_str()).await {
                Ok(client) => break client,
                // Refused credentials or a TLS mismatch do not heal by waiting.
                Err(e) if refused(&e) => {
                    anyhow::bail!(
                        "NATS refused the connection (NATS_URL={}, {:?}): {e}",
                        crate::config::redact_url(&cfg.url),
                        cfg.auth
                    )
                }
                // Not reachable (yet): a service started before NATS waits for it, not ready.
                Err(e) => {
                    attempt += 1;
                    let pause = Duration::from_secs(u64::from(attempt.min(10)));
                    tracing::warn!(attempt, error = %e, url = %crate::config::redact_url(&cfg.url), "NATS not reachable yet, waiting");
                    tokio::time::sleep(pause).await;
                }
            }
        };
        let mut js = jetstream::new(client.clone());
        js.set_timeout(PUBLISH_ACK_TIMEOUT);
        Ok(Self { client, js, prefix: cfg.prefix.clone(), topology: cfg.streams })
    }

    /// The installation prefix ("" in production).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A subject with the installation prefix applied.
    pub fn subject(&self, subject: &str) -> String {
        if self.prefix.is_empty() {
            subject.to_owned()
        } else {
            format!("{}.{subject}", self.prefix)
        }
    }

    /// A stream, consumer or bucket name with the installation prefix applied.
    pub fn name(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_owned() } else { format!("{}_{name}", self.prefix) }
    }

    /// The subject without the installation prefix (for routing on received messages).
    pub fn strip_prefix<'a>(&self, subject: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            return subject;
        }
        subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(subject)
    }

    /// Sends one message with `Nats-Msg-Id` = `msg_id` (JetStream drops a duplicate within the
    /// stream's duplicate window) and the current trace context; returns the PubAck future so
    /// callers can pipeline several publishes before awaiting their acks.
    pub async fn send(
        &self,
        subject: &str,
        msg_id: &str,
        traceparent: Option<&str>,
        payload: Bytes,
    ) -> anyhow::Result<PublishAckFuture> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        match traceparent {
            Some(tp) => headers.insert("traceparent", tp),
            None => crate::telemetry::inject_nats(&mut headers),
        }
        let ack = self
            .js
            .send_publish(
                self.subject(subject),
                jetstream::message::PublishMessage::build().payload(payload).headers(headers),
            )
            .await?;
        Ok(ack)
    }

    /// Publishes an envelope on `subject` and waits for its PubAck. The envelope id is the
    /// message id, so publishing the same envelope twice stores it once.
    pub async fn publish<T: serde::Serialize>(
        &self,
        subject: &str,
        envelope: &Envelope<T>,
    ) -> anyhow::Result<()> {
        let payload = Bytes::from(serde_json::to_vec(envelope)?);
        let ack = self
            .send(subject, &envelope.id.to_string(), envelope.trace.as_deref(), payload)
            .await?
            .await?;
        if ack.duplicate {
            tracing::debug!(subject, msg_id = %envelope.id, "duplicate publish dropped by JetStream");
        }
        Ok(())
    }

    /// Round trip to the server and a JetStream request: used by `/readyz`.
    pub async fn check(&self, stream: &str) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(2), async {
            self.client.flush().await?;
            self.js.get_stream_no_info(self.name(stream)).await?;
            anyhow::Ok(())
        })
        .await
        .map_err(|_| anyhow::anyhow!("NATS did not answer within 2s"))?
    }
}
