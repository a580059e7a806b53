//! Durable pull consumers: one loop, owned here, for every consumer of the platform.
//!
//! Delivery semantics: at-least-once. While a handler works, its messages get in-progress acks
//! every third of `ack_wait` (for up to `max_in_progress`, ten minutes by default), so a long
//! batch or a slow send (an SMTP relay) keeps its messages and is never delivered a second time
//! meanwhile, and a crashed process's messages come back after one short `ack_wait`. A handler's `Ok` acks
//! the message; a retryable error naks
//! it with a jittered exponential backoff (or the delay the handler asks for, e.g. a target's
//! `Retry-After`); a permanent error, an undecodable message, or a failure on the last allowed
//! delivery becomes a dead-letter row and the message is terminated. If the dead letter cannot
//! be written (database down) the message is nak'ed instead, so nothing is dropped silently.
//! Handlers must therefore be idempotent (inbox, unique keys, or version checks).
//!
//! The delivery budget is enforced here, not by the server: JetStream consumers are declared
//! with unlimited deliveries, because a server-side `MaxDeliver` drops a message whose last
//! attempt died with its process (crash, ack timeout) and leaves only an advisory. Here such a
//! message is simply delivered again; once it is past the budget without an answer (a poison
//! message that kills or stalls its consumer) it is dead-lettered without running the handler.

use std::{future::Future, time::Duration};

use async_nats::jetstream::{
    AckKind,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Bus, StreamSpec, dead_letter::DeadLetters};
use crate::schemas::Envelope;

/// A durable consumer declaration.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// Durable name without prefix; replicas of a service share it and split the work.
    pub durable: String,
    pub stream: &'static StreamSpec,
    /// Filter subjects without prefix.
    pub filter_subject: String,
    /// Delivery budget: a retryable failure on this delivery is dead-lettered.
    pub max_deliver: i64,
    /// Longer than the slowest handler (outbound HTTP has a 10 s total timeout).
    pub ack_wait: Duration,
    /// Longest a handler keeps its messages with in-progress acks: one stuck longer loses them
    /// as if it had crashed (they are delivered again after `ack_wait`).
    pub max_in_progress: Duration,
    /// Handler calls (single messages, or batches) running at once per replica.
    pub concurrency: usize,
    /// Most messages handed to a batch handler at once ([`run_batch_consumer`]); 1 otherwise.
    pub batch: usize,
    /// A durable of an earlier release that this one replaces on an overlapping filter (a
    /// work-queue stream allows only one): deleted before each attempt to declare this one, so
    /// a replica of the earlier release that declares it again during a rolling upgrade only
    /// delays this consumer. Its unacknowledged messages stay in the stream for this one.
    pub replaces: Option<&'static str>,
}

impl ConsumerSpec {
    pub fn new(durable: &str, stream: &'static StreamSpec, filter_subject: &str) -> Self {
        Self {
            durable: durable.to_owned(),
            stream,
            filter_subject: filter_subject.to_owned(),
            max_deliver: 10,
            ack_wait: Duration::from_secs(30),
            max_in_progress: Duration::from_secs(600),
            concurrency: 16,
            batch: 1,
            replaces: None,
        }
    }
}

/// One received message, decoded.
#[derive(Debug)]
pub struct Delivery<T> {
    /// Subject without the installation prefix.
    pub subject: String,
    pub envelope: Envelope<T>,
    /// 1 on first delivery.
    pub delivered: i64,
}

/// How a handler failed.
#[derive(Debug)]
pub enum HandlerError {
    /// Try again later (after `after`, or the consumer's backoff).
    Retry { error: anyhow::Error, after: Option<Duration> },
    /// Will never succeed: dead-letter now.
    Permanent(anyhow::Error),
}

impl From<anyhow::Error> for HandlerError {
    fn from(error: anyhow::Error) -> Self {
        Self::Retry { error, after: None }
    }
}

impl From<diesel::result::Error> for HandlerError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Retry { error: error.into(), after: None }
    }
}

/// Exponential backoff with ±20% jitter: 1 s, 2 s, 4 s ... capped at 5 minutes.
pub fn backoff(delivered: i64) -> Duration {
    let exp = delivered.clamp(1, 20) as u32 - 1;
    let base = Duration::from_secs(1).saturating_mul(2u32.saturating_pow(exp));
    let base = base.min(Duration::from_secs(300));
    let jitter = rand::random_range(0.8..1.2);
    base.mul_f64(jitter)
}

/// Runs `handler` for every message of the consumer until `shutdown` fires; in-flight messages
/// are finished (acked or nak'ed) before it returns. Reconnects by itself after NATS outages.
pub async fn run_consumer<T, F, Fut>(
    bus: Bus,
    spec: ConsumerSpec,
    dead_letters: DeadLetters,
    shutdown: CancellationToken,
    handler: F,
) where
    T: DeserializeOwned,
    F: Fn(Delivery<T>) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let spec = ConsumerSpec { batch: 1, ..spec };
    let handler = &handler;
    run_batch_consumer(
        bus,
        spec,
        dead_letters,
        shutdown,
        move |batch: Vec<Delivery<T>>| async move {
            let mut outcomes = Vec::with_capacity(batch.len());
            for delivery in batch {
                outcomes.push(handler(delivery).await);
            }
            outcomes
        },
    )
    .await
}

/// Like [`run_consumer`], but hands the handler every message that is ready at once, up to
/// `spec.batch`, so it can apply them in one transaction (group commit). The handler returns
/// one outcome per delivery, in order; each message is then acked, nak'ed or dead-lettered on
/// its own, exactly as with [`run_consumer`]. Up to `spec.concurrency` batches run at once.
pub async fn run_batch_consumer<T, F, Fut>(
    bus: Bus,
    spec: ConsumerSpec,
    dead_letters: DeadLetters,
    shutdown: CancellationToken,
    handler: F,
) where
    T: DeserializeOwned,
    F: Fn(Vec<Delivery<T>>) -> Fut,
    Fut: Future<Output = Vec<Result<(), HandlerError>>>,
{
    let mut failures = 0;
    while !shutdown.is_cancelled() {
        match consume(&bus, &spec, &dead_letters, &shutdown, &handler).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(consumer = %spec.durable, error = %e, "consumer interrupted, restarting");
            }
        }
        let pause = backoff(failures).min(Duration::from_secs(5));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!(consumer = %spec.durable, "consumer stopped");
}

async fn consume<T, F, Fut>(
    bus: &Bus,
    spec: &ConsumerSpec,
    dead_letters: &DeadLetters,
    shutdown: &CancellationToken,
    handler: &F,
) -> anyhow::Result<()>
where
    T: DeserializeOwned,
    F: Fn(Vec<Delivery<T>>) -> Fut,
    Fut: Future<Output = Vec<Result<(), HandlerError>>>,
{
    let batch = spec.batch.max(1);
    if let Some(old) = spec.replaces {
        bus.retire_consumer(spec.stream, old).await?;
    }
    let stream = bus.js.get_stream(bus.name(spec.stream.name)).await?;
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(bus.name(&spec.durable)),
            filter_subject: bus.subject(&spec.filter_subject),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: spec.ack_wait,
            max_deliver: -1,
            max_ack_pending: (spec.concurrency * batch * 2).max(spec.concurrency * 4) as i64,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("declaring consumer {}: {e}", spec.durable))?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(spec.concurrency * batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    tracing::info!(consumer = %spec.durable, "consuming");
    let mut first_error = None;
    messages
        .take_until(shutdown.cancelled())
        .take_while(|m| {
            let ok = m.is_ok();
            if let Err(e) = m {
                first_error = Some(anyhow::anyhow!("message stream: {e}"));
            }
            futures::future::ready(ok)
        })
        .filter_map(|m| futures::future::ready(m.ok()))
        .ready_chunks(batch)
        .for_each_concurrent(spec.concurrency, |msgs| {
            process(bus, spec, dead_letters, handler, msgs)
        })
        .await;
    first_error.map_or(Ok(()), Err)
}

/// A received message with what the consumer knows of it.
struct Received {
    msg: async_nats::jetstream::Message,
    subject: String,
    delivered: i64,
    span: tracing::Span,
}

async fn process<T, F, Fut>(
    bus: &Bus,
    spec: &ConsumerSpec,
    dead_letters: &DeadLetters,
    handler: &F,
    msgs: Vec<async_nats::jetstream::Message>,
) where
    T: DeserializeOwned,
    F: Fn(Vec<Delivery<T>>) -> Fut,
    Fut: Future<Output = Vec<Result<(), HandlerError>>>,
{
    let mut settled: Vec<(Received, Result<(), HandlerError>)> = Vec::with_capacity(msgs.len());
    let mut handled: Vec<Received> = Vec::with_capacity(msgs.len());
    let mut deliveries: Vec<Delivery<T>> = Vec::with_capacity(msgs.len());
    for msg in msgs {
        let subject = bus.strip_prefix(msg.subject.as_str()).to_owned();
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let span = tracing::info_span!(
            "consume",
            consumer = %spec.durable,
            %subject,
            delivered,
            trace_id = tracing::field::Empty
        );
        crate::telemetry::set_parent_from_nats(&span, msg.headers.as_ref());
        crate::telemetry::record_trace_id(&span);
        let decoded = serde_json::from_slice::<Envelope<T>>(&msg.payload);
        let received = Received { msg, subject, delivered, span };
        match decoded {
            Err(e) => settled.push((
                received,
                Err(HandlerError::Permanent(anyhow::anyhow!("undecodable message: {e}"))),
            )),
            Ok(_) if delivered > spec.max_deliver + 1 => settled.push((
                received,
                Err(HandlerError::Permanent(anyhow::anyhow!(
                    "delivered {delivered} times without an answer (the handler crashed or timed out)"
                ))),
            )),
            Ok(envelope) => {
                deliveries.push(Delivery {
                    subject: received.subject.clone(),
                    envelope,
                    delivered,
                });
                handled.push(received);
            }
        }
    }
    if !deliveries.is_empty() {
        // A single message runs in its own span; a batch in a span of its own, child of its
        // first message's trace and linked to every other message's.
        let span = match handled.as_slice() {
            [one] => one.span.clone(),
            [first, rest @ ..] => {
                let span = tracing::info_span!(
                    "consume_batch",
                    consumer = %spec.durable,
                    messages = handled.len(),
                    trace_id = tracing::field::Empty
                );
                crate::telemetry::set_parent_from_nats(&span, first.msg.headers.as_ref());
                for received in rest {
                    crate::telemetry::link_from_nats(&span, received.msg.headers.as_ref());
                }
                crate::telemetry::record_trace_id(&span);
                span
            }
            [] => tracing::Span::none(),
        };
        let count = deliveries.len();
        // The handler is called inside the span too (a closure may read the context before
        // its future runs).
        let call = {
            let _entered = span.enter();
            handler(deliveries)
        };
        // While a handler works, tell the server its messages are in progress, so a long batch
        // or a slow send keeps them without a long `ack_wait` (which would delay redelivery
        // after a crash), for at most `max_in_progress`: a handler stuck longer loses them as
        // if it had crashed.
        let progress = async {
            let started = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(spec.ack_wait / 3).await;
                if started.elapsed() >= spec.max_in_progress {
                    return futures::future::pending().await;
                }
                for received in &handled {
                    let _ = received.msg.ack_with(AckKind::Progress).await;
                }
            }
        };
        let outcomes = tokio::select! {
            outcomes = call.instrument(span) => outcomes,
            () = progress => Vec::new(),
        };
        let mut outcomes = outcomes.into_iter();
        for received in handled {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(HandlerError::Retry {
                    error: anyhow::anyhow!("the handler answered fewer than {count} outcomes"),
                    after: None,
                })
            });
            settled.push((received, outcome));
        }
    }
    for (received, outcome) in settled {
        let span = received.span.clone();
        settle(spec, dead_letters, received, outcome).instrument(span).await;
    }
}

/// Acks, naks or dead-letters one message according to its outcome.
async fn settle(
    spec: &ConsumerSpec,
    dead_letters: &DeadLetters,
    received: Received,
    outcome: Result<(), HandlerError>,
) {
    let Received { msg, subject, delivered, .. } = received;
    let ack = match outcome {
        Ok(()) => {
            crate::metrics::consumed(&spec.durable, "ok");
            AckKind::Ack
        }
        Err(HandlerError::Retry { error, after }) if delivered < spec.max_deliver => {
            let delay = after.unwrap_or_else(|| backoff(delivered));
            tracing::warn!(
                error = format!("{error:#}"),
                retry_in_ms = delay.as_millis() as u64,
                "handler failed, will retry"
            );
            crate::metrics::consumed(&spec.durable, "retry");
            AckKind::Nak(Some(delay))
        }
        Err(HandlerError::Retry { error, .. } | HandlerError::Permanent(error)) => {
            let reason = format!("{error:#}");
            match dead_letters
                .record(&spec.durable, &subject, &msg.payload, &reason, delivered)
                .await
            {
                Ok(id) => {
                    tracing::error!(error = %reason, dead_letter = %id, "message dead-lettered");
                    crate::metrics::consumed(&spec.durable, "dead_letter");
                    AckKind::Term
                }
                Err(e) => {
                    tracing::error!(error = %reason, dead_letter_error = %e, "cannot write dead letter, will retry");
                    AckKind::Nak(Some(backoff(delivered)))
                }
            }
        }
    };
    if let Err(e) = msg.ack_with(ack).await {
        // The message will be redelivered after ack_wait; handlers are idempotent.
        tracing::warn!(error = %e, "ack failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(1200));
        assert!(backoff(3) >= Duration::from_millis(3200));
        assert!(backoff(100) <= Duration::from_secs(360));
    }
}
