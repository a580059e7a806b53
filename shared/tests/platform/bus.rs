use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, RunQueryDsl};
use futures::StreamExt;
use harness::{TestDb, TestNats};
use serde::{Deserialize, Serialize};
use shared::{
    bus::{
        Bus, ConsumerSpec, HandlerError,
        dead_letter::DeadLetters,
        inbox,
        outbox::{self, OutboxRelay, OutboxRow},
        streams,
    },
    config::NatsConfig,
    schemas::{Envelope, Event},
};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Pinged {
    n: i64,
}

impl Event for Pinged {
    const TYPE: &'static str = "test.pinged";
    fn subject(&self) -> String {
        format!("sync.events.test.inbound.ping{}", self.n)
    }
}

async fn setup() -> (TestDb, TestNats, Bus, shared::db::PgPool) {
    let db = TestDb::new().await;
    let nats = TestNats::new();
    shared::db::migrate(&db.url).await.unwrap();
    let pool = shared::db::pool(&harness::common_config("test", &db, &nats).db, "main").unwrap();
    let bus = Bus::connect(
        &NatsConfig {
            url: nats.url.clone(),
            prefix: nats.prefix.clone(),
            streams: shared::config::StreamTopology { max_bytes: 0, ..Default::default() },
            auth: Default::default(),
            tls: Default::default(),
        },
        "test",
    )
    .await
    .unwrap();
    bus.ensure_stream(&streams::SYNC_EVENTS).await.unwrap();
    (db, nats, bus, pool)
}

async fn stored(bus: &Bus) -> Vec<Envelope<Pinged>> {
    let stream = bus.js.get_stream(bus.name("SYNC_EVENTS")).await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config { deliver_policy: DeliverPolicy::All, ..Default::default() })
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(Ok(m)) = batch.next().await {
        out.push(serde_json::from_slice(&m.payload).unwrap());
    }
    out
}

#[tokio::test]
async fn outbox_rows_are_published_only_if_their_transaction_commits_and_survive_a_relay_restart() {
    let (db, _nats, bus, pool) = setup().await;
    let mut conn = db.connect().await;
    let committed = Envelope::new("test", Pinged { n: 1 });
    let rolled_back = Envelope::new("test", Pinged { n: 2 });
    conn.transaction::<_, diesel::result::Error, _>(async |c| {
        outbox::enqueue(c, "crm", &[OutboxRow::new(&committed)]).await
    })
    .await
    .unwrap();
    let _ = conn
        .transaction::<(), diesel::result::Error, _>(async |c| {
            outbox::enqueue(c, "crm", &[OutboxRow::new(&rolled_back)]).await?;
            Err(diesel::result::Error::RollbackTransaction)
        })
        .await;

    // No relay was running: the row waits. A relay started now (as after a crash) sends it.
    let relay =
        OutboxRelay { pool: pool.clone(), db_url: db.url.clone(), bus: bus.clone(), schema: "crm" };
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.clone().run(stop.clone()));
    let published = harness::eventually(Duration::from_secs(10), || async {
        let s = stored(&bus).await;
        (!s.is_empty()).then_some(s)
    })
    .await
    .unwrap();
    assert_eq!(published, vec![committed.clone()]);

    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let pending = async || {
        let mut c = db.connect().await;
        diesel::sql_query("SELECT count(*) AS n FROM crm.outbox")
            .get_result::<N>(&mut c)
            .await
            .unwrap()
            .n
    };
    assert!(
        harness::eventually(Duration::from_secs(5), || async {
            (pending().await == 0).then_some(())
        })
        .await
        .is_some(),
        "published rows are removed"
    );

    // Woken by NOTIFY: a new row goes out well before the 1 s poll would find it... and a
    // re-send of an already published id is dropped by JetStream's duplicate window.
    let again = OutboxRow::new(&committed);
    outbox::enqueue(&mut conn, "crm", &[again]).await.unwrap();
    let fresh = Envelope::new("test", Pinged { n: 3 });
    outbox::enqueue(&mut conn, "crm", &[OutboxRow::new(&fresh)]).await.unwrap();
    assert!(
        harness::eventually(Duration::from_secs(5), || async {
            (stored(&bus).await.len() == 2).then_some(())
        })
        .await
        .is_some()
    );
    stop.cancel();
    task.await.unwrap();

    assert_eq!(pending().await, 0);
    assert_eq!(stored(&bus).await.len(), 2);
}

#[tokio::test]
async fn the_inbox_reports_a_redelivered_message() {
    let db = TestDb::new().await;
    shared::db::migrate(&db.url).await.unwrap();
    let mut conn = db.connect().await;

    assert!(inbox::first_delivery(&mut conn, "erp", "orders", "m-1").await.unwrap());
    assert!(!inbox::first_delivery(&mut conn, "erp", "orders", "m-1").await.unwrap());
    assert!(inbox::first_delivery(&mut conn, "erp", "invoices", "m-1").await.unwrap());
}

#[tokio::test]
async fn consumers_ack_retry_and_dead_letter_according_to_the_handler() {
    let (db, nats, bus, pool) = setup().await;
    for n in 1..=3 {
        bus.publish(&Pinged { n }.subject(), &Envelope::new("test", Pinged { n })).await.unwrap();
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "garbage-1");
    bus.js
        .publish_with_headers(
            bus.subject("sync.events.test.inbound.garbage"),
            headers,
            "not json".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let stop = CancellationToken::new();
    let dead_letters = DeadLetters::new(pool.clone(), "crm", "test");
    let spec = ConsumerSpec {
        max_deliver: 3,
        ..ConsumerSpec::new("test-consumer", &streams::SYNC_EVENTS, "sync.events.test.>")
    };
    let task = tokio::spawn(shared::bus::run_consumer(
        bus.clone(),
        spec,
        dead_letters.clone(),
        stop.clone(),
        move |d: shared::bus::Delivery<Pinged>| {
            seen.lock().unwrap().push((d.envelope.data.n, d.delivered));
            async move {
                match d.envelope.data.n {
                    1 => Ok(()),
                    2 if d.delivered < 2 => Err(HandlerError::Retry {
                        error: anyhow::anyhow!("flaky"),
                        after: Some(Duration::from_millis(100)),
                    }),
                    2 => Ok(()),
                    _ => Err(HandlerError::Permanent(anyhow::anyhow!("never"))),
                }
            }
        },
    ));

    let dead = harness::eventually(Duration::from_secs(15), || async {
        let rows = dead_letters.list(true, 10).await.ok()?;
        (rows.len() == 2 && attempts.lock().unwrap().contains(&(2, 2))).then_some(rows)
    })
    .await
    .expect("two dead letters and a retried message");
    stop.cancel();
    task.await.unwrap();

    let mut errors: Vec<&str> = dead.iter().map(|d| d.error.as_str()).collect();
    errors.sort();
    assert!(errors[0] == "never", "{errors:?}");
    assert!(errors[1].starts_with("undecodable message"), "{errors:?}");
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(
        attempts.iter().filter(|(n, _)| *n == 1).count(),
        1,
        "acked messages are not redelivered: {attempts:?}"
    );
    assert_eq!(
        attempts.iter().filter(|(n, _)| *n == 3).count(),
        1,
        "permanent failures are not retried: {attempts:?}"
    );
    // Nothing left undelivered or unacknowledged; the two dead letters are the only ones. (No
    // relay runs here, so the dead letters' announcements stay in the outbox.)
    let left = harness::pending(&db, &nats, "crm").await;
    assert_eq!((left.consumers, left.dead_letters), (vec![], 2));
    drop(db);
}

#[tokio::test]
async fn the_trace_context_crosses_a_nats_hop() {
    let (db, nats, bus, pool) = setup().await;
    let mut cfg = harness::common_config("trace-test", &db, &nats);
    cfg.log_format = shared::config::LogFormat::Pretty;
    let _guard = shared::telemetry::init(&cfg).unwrap();
    let producer = tracing::info_span!("producer");
    let sent_trace = {
        let _entered = producer.enter();
        shared::telemetry::current_trace_id().expect("the producer span is traced")
    };
    let envelope = {
        let _entered = producer.enter();
        Envelope::new("test", Pinged { n: 7 })
    };
    assert!(
        envelope.trace.as_deref().unwrap().contains(&sent_trace),
        "the envelope records the trace"
    );
    tracing::Instrument::instrument(bus.publish(&envelope.subject(), &envelope), producer.clone())
        .await
        .unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let dead_letters = DeadLetters::new(pool, "crm", "test");
    let spec = ConsumerSpec::new("trace-consumer", &streams::SYNC_EVENTS, "sync.events.test.>");
    let task = tokio::spawn(shared::bus::run_consumer(
        bus.clone(),
        spec,
        dead_letters,
        stop.clone(),
        move |_: shared::bus::Delivery<Pinged>| {
            let _ = tx.send(shared::telemetry::current_trace_id());
            async { Ok(()) }
        },
    ));
    let received = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    stop.cancel();
    task.await.unwrap();

    assert_eq!(
        received.as_deref(),
        Some(sent_trace.as_str()),
        "the consumer's span continues the producer's trace"
    );
}

#[tokio::test]
async fn a_message_whose_handler_never_answers_is_dead_lettered_after_its_budget() {
    let (_db, _nats, bus, pool) = setup().await;
    let poison = Envelope::new("test", Pinged { n: 66 });
    bus.publish(&poison.data.subject(), &poison).await.unwrap();
    let stop = CancellationToken::new();
    let dead_letters = DeadLetters::new(pool, "crm", "test");
    let spec = ConsumerSpec {
        max_deliver: 1,
        ack_wait: Duration::from_secs(1),
        max_in_progress: Duration::from_secs(1),
        ..ConsumerSpec::new("stuck-consumer", &streams::SYNC_EVENTS, "sync.events.test.>")
    };
    // Stands in for a handler whose process dies mid-message: it never acks in time.
    let task = tokio::spawn(shared::bus::run_consumer(
        bus.clone(),
        spec,
        dead_letters.clone(),
        stop.clone(),
        |_: shared::bus::Delivery<Pinged>| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        },
    ));

    let dead = harness::eventually(Duration::from_secs(20), || async {
        let rows = dead_letters.list(true, 10).await.ok()?;
        (!rows.is_empty()).then_some(rows)
    })
    .await
    .expect("the stuck message becomes a dead letter");
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), task).await;

    assert!(dead[0].error.contains("without an answer"), "{}", dead[0].error);
    assert_eq!(dead[0].payload["id"], poison.id.to_string());
}

#[tokio::test]
async fn a_handler_slower_than_ack_wait_keeps_its_message_and_runs_once() {
    let (db, nats, bus, pool) = setup().await;
    let slow = Envelope::new("test", Pinged { n: 5 });
    bus.publish(&slow.data.subject(), &slow).await.unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let stop = CancellationToken::new();
    let dead_letters = DeadLetters::new(pool, "crm", "test");
    let spec = ConsumerSpec {
        ack_wait: Duration::from_secs(1),
        ..ConsumerSpec::new("slow-consumer", &streams::SYNC_EVENTS, "sync.events.test.>")
    };
    // A send that takes four ack_waits (an SMTP relay that answers slowly).
    let task = tokio::spawn(shared::bus::run_consumer(
        bus.clone(),
        spec,
        dead_letters,
        stop.clone(),
        move |d: shared::bus::Delivery<Pinged>| {
            seen.lock().unwrap().push(d.delivered);
            async {
                tokio::time::sleep(Duration::from_secs(4)).await;
                Ok(())
            }
        },
    ));
    harness::eventually(Duration::from_secs(15), || async {
        let left = harness::pending(&db, &nats, "crm").await;
        (!calls.lock().unwrap().is_empty() && left.consumers.is_empty()).then_some(())
    })
    .await
    .expect("the slow message is acknowledged");
    // Long enough for a redelivery to show if the message had been given up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(*calls.lock().unwrap(), vec![1], "handled once, on its first delivery");
}

#[tokio::test]
async fn a_batch_consumer_hands_over_ready_messages_together_and_continues_the_first_trace() {
    let (db, nats, bus, pool) = setup().await;
    let mut cfg = harness::common_config("batch-test", &db, &nats);
    cfg.log_format = shared::config::LogFormat::Pretty;
    let _guard = shared::telemetry::init(&cfg).unwrap();
    let mut sent = Vec::new();
    for n in 1..=5 {
        let producer = tracing::info_span!("producer", n);
        let envelope = {
            let _entered = producer.enter();
            sent.push(shared::telemetry::current_trace_id().unwrap());
            Envelope::new("test", Pinged { n })
        };
        tracing::Instrument::instrument(bus.publish(&envelope.subject(), &envelope), producer)
            .await
            .unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let dead_letters = DeadLetters::new(pool, "crm", "test");
    let spec = ConsumerSpec {
        batch: 10,
        concurrency: 1,
        ..ConsumerSpec::new("batch-consumer", &streams::SYNC_EVENTS, "sync.events.test.>")
    };
    let task = tokio::spawn(shared::bus::run_batch_consumer(
        bus.clone(),
        spec,
        dead_letters,
        stop.clone(),
        move |batch: Vec<shared::bus::Delivery<Pinged>>| {
            let ns: Vec<i64> = batch.iter().map(|d| d.envelope.data.n).collect();
            let _ = tx.send((ns, shared::telemetry::current_trace_id()));
            let outcomes = batch.iter().map(|_| Ok(())).collect::<Vec<_>>();
            async move { outcomes }
        },
    ));

    let mut seen = Vec::new();
    let mut first_trace = None;
    while seen.len() < 5 {
        let (ns, trace) =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        first_trace.get_or_insert(trace);
        seen.extend(ns);
    }
    stop.cancel();
    task.await.unwrap();

    seen.sort();
    assert_eq!(seen, [1, 2, 3, 4, 5], "every message handed over once");
    assert_eq!(
        first_trace.flatten().as_deref(),
        Some(sent[0].as_str()),
        "the batch continues the first message's trace"
    );
    let left = harness::pending(&db, &nats, "crm").await;
    assert_eq!((left.consumers, left.dead_letters), (vec![], 0));
}

#[tokio::test]
async fn work_queues_get_limits_and_a_running_streams_larger_limits_are_never_lowered() {
    let nats = TestNats::new();
    let connect = |max_bytes: i64| {
        let nats = (nats.url.clone(), nats.prefix.clone());
        async move {
            let topology = shared::config::StreamTopology {
                replicas: 1,
                max_bytes,
                work_queue_max_age: std::time::Duration::from_secs(14 * 24 * 3600),
            };
            let config = NatsConfig {
                url: nats.0,
                prefix: nats.1,
                streams: topology,
                auth: Default::default(),
                tls: Default::default(),
            };
            Bus::connect(&config, "test").await.unwrap()
        }
    };
    let bus = connect(8 << 20).await;
    bus.ensure_stream(&streams::WEBHOOKS).await.unwrap();
    let config = |bus: Bus| async move {
        let mut stream = bus.js.get_stream(bus.name("WEBHOOKS")).await.unwrap();
        stream.info().await.unwrap().config.clone()
    };
    let declared = config(bus.clone()).await;
    assert_eq!(declared.max_bytes, 8 << 20);
    assert_eq!(
        declared.max_age,
        std::time::Duration::from_secs(14 * 24 * 3600),
        "a work item nobody takes expires"
    );
    assert_eq!(
        declared.discard,
        async_nats::jetstream::stream::DiscardPolicy::New,
        "a full queue refuses, the outbox waits"
    );
    assert_eq!(declared.num_replicas, 1);

    // An operator raises the limits; a restart with smaller ones keeps them.
    let mut raised = declared.clone();
    raised.max_bytes = 32 << 20;
    raised.max_age = std::time::Duration::from_secs(30 * 24 * 3600);
    bus.js.update_stream(raised).await.unwrap();
    let restarted = connect(4 << 20).await;
    restarted.ensure_stream(&streams::WEBHOOKS).await.unwrap();
    let kept = config(restarted.clone()).await;
    assert_eq!(
        (kept.max_bytes, kept.max_age),
        (32 << 20, std::time::Duration::from_secs(30 * 24 * 3600))
    );

    // How full it is, for the metrics.
    restarted
        .js
        .publish(restarted.subject("webhooks.crm.contact"), "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let usage = restarted.stream_usage(&[&streams::WEBHOOKS]).await;
    assert_eq!((usage[0].0, usage[0].2, usage[0].3), ("WEBHOOKS", 1, 32 << 20));
    assert!(usage[0].1 > 0);
}
