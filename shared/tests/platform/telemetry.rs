use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt;

/// A plain test: the batch exporter's blocking HTTP client must not run inside a runtime.
#[test]
fn spans_are_exported_over_otlp_http_when_an_endpoint_is_configured() {
    let sink = sandbox::OtlpSink::start().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (db, nats) =
        runtime.block_on(async { (harness::TestDb::new().await, harness::TestNats::new()) });
    let mut cfg = harness::common_config("otlp-test", &db, &nats);
    cfg.otlp_endpoint = Some(sink.endpoint());

    let provider = shared::telemetry::tracer_provider(&cfg).unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("otlp-test")));
    tracing::subscriber::with_default(subscriber, || {
        tracing::info_span!("adjustment", sku = "MUG-1").in_scope(|| tracing::info!("applied"));
    });
    provider.shutdown().unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sink.exports().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let exports = sink.exports();
    assert!(!exports.is_empty(), "no OTLP export arrived");
    assert_eq!(exports[0].path, "/v1/traces");
    assert_eq!(exports[0].content_type, "application/x-protobuf");
    assert!(exports[0].bytes > 0);
    drop(runtime);
    drop((db, nats));
}
