//! Service bootstrap: everything between "config is loaded" and "serving", identical for the
//! six services. A service gets a connected [`Platform`] (see [`crate::platform`]), spawns
//! its work on it, and wraps its routes in an [`Application`].
//!
//! One shutdown path: [`Application::run_until_stopped`] waits for the stop signal, stops the
//! HTTP server (in-flight requests finish), cancels the token every background task watches,
//! waits for them (consumers ack or nak what they hold, the outbox relay flushes) within the
//! grace period, then returns so `main` can flush telemetry.

use std::{future::Future, time::Instant};

use actix_web::{
    App, Error, HttpServer,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::{Next, from_fn},
    web,
};
use tracing::Instrument;

use crate::{
    config::CommonConfig,
    http::AuthConfig,
    platform::{Platform, ServiceSpec},
    settings::split_defaults,
};

/// A built, listening service.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    platform: Platform,
}

impl Application {
    /// Binds the HTTP server with the operator and admin routes, `routes`, and `state`
    /// registered as the one `web::Data<S>`.
    pub fn build<S>(
        platform: Platform,
        state: S,
        auth: AuthConfig,
        routes: fn(&mut web::ServiceConfig),
    ) -> anyhow::Result<Self>
    where
        S: Send + Sync + 'static,
    {
        let cfg = platform.config.clone();
        let listener = std::net::TcpListener::bind((cfg.http_host.as_str(), cfg.http_port))
            .map_err(|e| {
                anyhow::anyhow!("cannot bind {}:{} (HTTP_PORT): {e}", cfg.http_host, cfg.http_port)
            })?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(state);
        let platform_data = web::Data::new(platform.clone());
        let bulk_data = web::Data::new(platform.bulk.clone());
        let ingress_data = web::Data::new(platform.ingress.clone());
        let ledger_data = web::Data::new(platform.record_errors.clone());
        let auth = web::Data::new(AuthConfig {
            admin_token: Some(cfg.admin_token.clone()),
            max_body: cfg.max_body,
            public_url: cfg.public_url.clone(),
            ..auth
        });
        // The body extractor's own limit is the same, so an oversized chunked body is refused
        // while it is read (and answered 413 by the extractors).
        let payload_limit = web::PayloadConfig::new(cfg.max_body);
        let throttle = web::Data::new(Throttle::new(
            cfg.auth_failures_per_minute,
            cfg.trusted_proxies.clone(),
        ));
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(throttle_refusals))
                .wrap(from_fn(problems))
                .wrap(from_fn(observe))
                .app_data(state.clone())
                .app_data(platform_data.clone())
                .app_data(bulk_data.clone())
                .app_data(ingress_data.clone())
                .app_data(ledger_data.clone())
                .app_data(auth.clone())
                .app_data(payload_limit.clone())
                .app_data(throttle.clone())
                .configure(crate::health::configure)
                .configure(crate::admin::configure)
                .configure(routes)
        })
        .disable_signals()
        .shutdown_timeout(cfg.shutdown_grace.as_secs())
        .listen(listener)?
        .run();
        tracing::info!(service = cfg.service, port, "listening");
        Ok(Self { port, server, platform })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Serves until `stop` completes (or the server fails), then shuts down gracefully.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let result = tokio::select! {
            r = &mut server => r.map_err(anyhow::Error::from).and_then(|r| r.map_err(Into::into)),
            () = stop => Ok(()),
        };
        tracing::info!("shutting down");
        handle.stop(true).await;
        let platform = self.platform;
        platform.shutdown.cancel();
        platform.tasks.close();
        let deadline = tokio::time::Instant::now() + platform.config.shutdown_grace;
        if tokio::time::timeout_at(deadline, platform.tasks.wait()).await.is_err() {
            tracing::warn!("background tasks did not finish within the grace period");
        }
        // Group commits last: the tasks above (consumers, bulk pages) may still have submitted
        // work to them while finishing.
        platform.commits_shutdown.cancel();
        platform.commit_tasks.close();
        if tokio::time::timeout_at(deadline, platform.commit_tasks.wait()).await.is_err() {
            tracing::warn!("group commits did not finish within the grace period");
        }
        platform.db.close();
        tracing::info!("stopped");
        result
    }
}

/// An OpenAPI document with only a description (for services without routes of their own).
pub fn described(description: &str) -> utoipa::openapi::OpenApi {
    let mut openapi = utoipa::openapi::OpenApi::default();
    openapi.info.description = Some(description.to_owned());
    openapi
}

/// A service whose domain is not built yet: the platform (its schema, streams, settings and
/// outbox relay) and the operator and admin endpoints, with no routes that pretend to work.
pub async fn build_platform_only(
    config: &CommonConfig,
    spec: ServiceSpec,
) -> anyhow::Result<Application> {
    let platform = Platform::start(config, spec).await?;
    Application::build(platform, (), AuthConfig::default(), |_| {})
}

/// Builds the application, then serves until SIGTERM/SIGINT.
/// The `migrate` command: the pending migrations, then the grants to `DATABASE_APP_ROLE`.
async fn migrate(db: &crate::config::DbConfig) -> anyhow::Result<()> {
    let applied = crate::db::migrate(&db.url).await?;
    tracing::info!(applied, "migrations done");
    if let Some(role) = &db.app_role {
        crate::db::grant_app_role(&db.url, role).await?;
        tracing::info!(role = %role, "the services' role may read and write, without DDL");
    }
    Ok(())
}

pub async fn serve(app: impl Future<Output = anyhow::Result<Application>>) -> anyhow::Result<()> {
    app.await?.run_until_stopped(shutdown_signal()).await
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Per-request span (child of the caller's `traceparent`) and HTTP metrics.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let span = tracing::info_span!(
        "http",
        %method,
        %route,
        status = tracing::field::Empty,
        trace_id = tracing::field::Empty
    );
    crate::telemetry::set_parent_from_http(&span, req.headers());
    crate::telemetry::record_trace_id(&span);
    let started = Instant::now();
    let response = next.call(req).instrument(span.clone()).await;
    let status = match &response {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    span.record("status", status);
    crate::metrics::HTTP_REQUESTS
        .with_label_values(&[route.as_str(), method.as_str(), &status.to_string()])
        .inc();
    crate::metrics::HTTP_DURATION
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Refused credentials per client address within the current minute. The client is the
/// connection's peer, or behind a trusted proxy (`TRUSTED_PROXIES`) the address it forwarded.
pub struct Throttle {
    limit: u32,
    trusted: Vec<crate::config::Cidr>,
    refusals: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (Instant, u32)>>,
}

/// Most client addresses remembered at once (older windows are dropped first).
const THROTTLE_CLIENTS: usize = 10_000;

impl Throttle {
    pub fn new(limit: u32, trusted: Vec<crate::config::Cidr>) -> Self {
        Self { limit, trusted, refusals: std::sync::Mutex::new(std::collections::HashMap::new()) }
    }

    /// The client of `req`: its peer, unless the peer is a trusted proxy; then the nearest
    /// address in `X-Forwarded-For` (read from the right) that is not a trusted proxy.
    fn client(&self, req: &ServiceRequest) -> Option<std::net::IpAddr> {
        let peer = req.peer_addr()?.ip();
        let trusted = |ip: std::net::IpAddr| self.trusted.iter().any(|c| c.contains(ip));
        if !trusted(peer) {
            return Some(peer);
        }
        let forwarded = req.headers().get_all("x-forwarded-for").filter_map(|v| v.to_str().ok());
        let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).map(str::trim).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.parse::<std::net::IpAddr>() {
                Ok(ip) if trusted(ip) => client = ip,
                Ok(ip) => return Some(ip),
                // Garbage from beyond the proxies: the last trusted hop answers for it.
                Err(_) => return Some(client),
            }
        }
        Some(client)
    }

    /// Seconds until `client` may try again, when it is over the limit.
    fn blocked(&self, client: std::net::IpAddr) -> Option<u64> {
        let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let (start, count) = refusals.get(&client)?;
        let elapsed = start.elapsed();
        (self.limit > 0 && *count >= self.limit && elapsed < std::time::Duration::from_secs(60))
            .then(|| 60 - elapsed.as_secs())
    }

    fn refused(&self, client: std::net::IpAddr) {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if refusals.len() >= THROTTLE_CLIENTS {
            refusals.retain(|_, (start, _)| start.elapsed() < std::time::Duration::from_secs(60));
        }
        let entry = refusals.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= std::time::Duration::from_secs(60) {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// Repeated 401s from one client are rate-limited: past `AUTH_FAILURES_PER_MINUTE` refusals
/// within a minute, its requests get 429 (with `Retry-After`) without being looked at.
async fn throttle_refusals(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, Error> {
    let throttle = req.app_data::<web::Data<Throttle>>().cloned();
    let client = throttle.as_ref().and_then(|t| t.client(&req));
    if let (Some(throttle), Some(client)) = (&throttle, client)
        && let Some(wait) = throttle.blocked(client)
    {
        let body = serde_json::json!({
            "type": "https://datasync.dev/problems/too-many-requests",
            "title": "Too Many Requests",
            "status": 429,
            "detail": "too many refused credentials from this client: wait before trying again",
        });
        let response = actix_web::HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", wait.max(1).to_string()))
            .content_type("application/problem+json")
            .body(body.to_string());
        return Ok(req.into_response(response).map_into_boxed_body());
    }
    let res = next.call(req).await?;
    if res.status() == actix_web::http::StatusCode::UNAUTHORIZED
        && let (Some(throttle), Some(client)) = (throttle, client)
    {
        throttle.refused(client);
    }
    Ok(res.map_into_boxed_body())
}

/// Every error is a problem document: an error response that is not JSON already (or an HTML
/// page's) — an unknown route, a method a route does not take, a query or path that does not
/// parse, a body over `MAX_BODY_BYTES` — becomes `application/problem+json` naming what was
/// wrong.
async fn problems(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, Error> {
    use actix_web::http::{StatusCode, header::CONTENT_TYPE};
    let max_body = req.app_data::<web::Data<AuthConfig>>().map(|a| a.max_body);
    let (method, path) = (req.method().to_string(), req.path().to_owned());
    let res = next.call(req).await?;
    let status = res.status();
    let content_type = res.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !(status.is_client_error() || status.is_server_error())
        || content_type.contains("json")
        || content_type.starts_with("text/html")
    {
        return Ok(res.map_into_boxed_body());
    }
    let (kind, detail) = match status {
        StatusCode::NOT_FOUND => ("not-found", format!("no route for {method} {path}")),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method-not-allowed", format!("{path} does not take {method}"))
        }
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload-too-large",
            match max_body {
                Some(max) => format!("the body is larger than {max} bytes (MAX_BODY_BYTES)"),
                None => "the body is too large".to_owned(),
            },
        ),
        _ => (
            if status.is_client_error() { "bad-request" } else { "internal" },
            match res.response().error() {
                Some(e) if status.is_client_error() => e.to_string(),
                _ => status.canonical_reason().unwrap_or("error").to_owned(),
            },
        ),
    };
    let (req, _) = res.into_parts();
    let body = serde_json::json!({
        "type": format!("https://datasync.dev/problems/{kind}"),
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let response = actix_web::HttpResponse::build(status)
        .content_type("application/problem+json")
        .body(body.to_string());
    Ok(ServiceResponse::new(req, response).map_into_boxed_body())
}

/// The command line every service binary accepts: `serve` (default), `migrate`, or
/// `healthcheck` (asks the running service's `/readyz` on 127.0.0.1:`HTTP_PORT`: exit 0 when
/// ready; compose's healthcheck, the image having no HTTP client of its own).
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    Migrate,
    Healthcheck,
}

impl Command {
    /// Parses `std::env::args()` (after the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let args: Vec<String> = args.into_iter().collect();
        match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            [] | ["serve"] => Ok(Self::Serve),
            ["migrate"] => Ok(Self::Migrate),
            ["healthcheck"] => Ok(Self::Healthcheck),
            other => Err(format!("usage: <service> [serve|migrate|healthcheck], got {other:?}")),
        }
    }
}

/// The whole of a service's `main`: parse the command, load config (exiting with one line
/// naming the bad variable), initialise telemetry, then migrate or serve until SIGTERM.
pub async fn main<C, Fut>(
    load: fn() -> Result<C, crate::config::ConfigError>,
    common: fn(&C) -> &CommonConfig,
    serve: fn(C) -> Fut,
) -> std::process::ExitCode
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    crate::config::load_dotenv();
    let command = match Command::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let config = match load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if command == Command::Healthcheck {
        return healthcheck(common(&config).http_port).await;
    }
    if let Err(e) = split_defaults(&common(&config).settings_defaults, None) {
        eprintln!("configuration error: SETTINGS_DEFAULTS: {e}");
        return std::process::ExitCode::from(2);
    }
    let telemetry = match crate::telemetry::init(common(&config)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("telemetry error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Migrate => migrate(&common(&config).db).await,
        Command::Serve => serve(config).await,
        Command::Healthcheck => Ok(()),
    };
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

/// `healthcheck`: the local service's `/readyz`, within 3 s.
async fn healthcheck(port: u16) -> std::process::ExitCode {
    let url = format!("http://127.0.0.1:{port}/readyz");
    crate::tls::install_crypto_provider();
    let answer = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .map_err(anyhow::Error::from)
        .map(|client| client.get(&url).send());
    match answer {
        Ok(request) => match request.await {
            Ok(r) if r.status().is_success() => std::process::ExitCode::SUCCESS,
            Ok(r) => {
                eprintln!("not ready: {url} answered {}", r.status());
                std::process::ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("not ready: {url}: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("healthcheck: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Command;

    #[test]
    fn command_line_accepts_serve_migrate_and_nothing_else() {
        let parse = |a: &[&str]| Command::parse(a.iter().map(|s| s.to_string()));
        assert_eq!(parse(&[]), Ok(Command::Serve));
        assert_eq!(parse(&["serve"]), Ok(Command::Serve));
        assert_eq!(parse(&["migrate"]), Ok(Command::Migrate));
        assert_eq!(parse(&["healthcheck"]), Ok(Command::Healthcheck));
        assert!(parse(&["migrate", "now"]).is_err());
    }
}
