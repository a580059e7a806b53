//! Telemetry in one call: structured logs through `tracing`, OpenTelemetry spans exported over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace context carried across
//! NATS hops in message headers (and in the envelope's `trace` field for outbox events, whose
//! publication happens later, in another task).

use std::collections::HashMap;

use opentelemetry::{
    global,
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{CommonConfig, LogFormat};

/// Keeps the tracer provider alive; [`TelemetryGuard::shutdown`] flushes pending spans.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Flushes and stops the span exporter (called last during graceful shutdown).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "telemetry shutdown failed");
        }
    }
}

/// Installs the global subscriber: `EnvFilter` from `RUST_LOG` (default `info`), JSON or pretty
/// output, and the OpenTelemetry layer. Spans always get OpenTelemetry contexts (so trace ids
/// travel across NATS even without a collector); they are exported only when an endpoint is set.
/// Calling it twice (as tests do) keeps the first subscriber.
pub fn init(cfg: &CommonConfig) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = tracer_provider(cfg)?;
    let tracer = provider.tracer(cfg.service);
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = match cfg.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer()).try_init(),
    };
    if result.is_ok() {
        global::set_tracer_provider(provider.clone());
    }
    Ok(TelemetryGuard { provider })
}

/// The tracer provider: spans always get OpenTelemetry contexts; a batch exporter sends them
/// over OTLP/HTTP (protobuf) to `<endpoint>/v1/traces` when an endpoint is configured.
pub fn tracer_provider(cfg: &CommonConfig) -> anyhow::Result<SdkTracerProvider> {
    // The exporter's HTTP client is rustls-based: the process-wide provider must exist first.
    crate::tls::install_crypto_provider();
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(cfg.service).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &cfg.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Serialises the current span's context as a W3C `traceparent` (plus `tracestate`) map.
pub fn current_context_headers() -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier
}

/// The current `traceparent`, if the current span is being traced.
pub fn current_traceparent() -> Option<String> {
    current_context_headers().remove("traceparent")
}

/// Writes the current trace context into NATS headers.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut NatsInjector(headers)));
}

/// Makes `span` a child of the trace context found in NATS headers (no-op when absent).
pub fn set_parent_from_nats(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    let Some(headers) = headers else { return };
    let cx = global::get_text_map_propagator(|p| p.extract(&NatsExtractor(headers)));
    let _ = span.set_parent(cx);
}

/// Links `span` to the trace context found in NATS message headers (a batch span names every
/// message it handled besides its parent).
pub fn link_from_nats(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    let Some(headers) = headers else { return };
    let cx = global::get_text_map_propagator(|p| p.extract(&NatsExtractor(headers)));
    let linked = opentelemetry::trace::TraceContextExt::span(&cx).span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// Makes `span` a child of the trace context found in HTTP request headers.
pub fn set_parent_from_http(span: &tracing::Span, headers: &actix_web::http::header::HeaderMap) {
    let cx = global::get_text_map_propagator(|p| p.extract(&HttpExtractor(headers)));
    let _ = span.set_parent(cx);
}

/// The trace id of the current span as hex.
pub fn current_trace_id() -> Option<String> {
    trace_id(&tracing::Span::current())
}

/// The trace id of `span` as hex, if it is traced.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// Records the span's trace id in its `trace_id` field, so every log line inside it (JSON logs
/// include the current span) can be joined with the trace.
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id);
    }
}

struct NatsInjector<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsExtractor<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

struct HttpExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for HttpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
