//! Outbound HTTP to external systems: one client configuration (timeouts, no redirects) and one
//! classification of responses into "done", "retry later" and "give up", used by every
//! connector's push worker together with the consumer's retry/dead-letter handling.

use std::time::Duration;

use reqwest::{Method, StatusCode, header::RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};

use crate::bus::HandlerError;

pub mod quota;

/// Connection establishment limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Whole-request limit; consumers' `ack_wait` (30 s) stays well above it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `Retry-After` honoured; longer waits are capped (the message is nak'ed that long).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The shared client. Redirects are not followed: an API that redirects elsewhere is a
/// misconfiguration to surface, not to obey with credentials attached.
pub fn client() -> anyhow::Result<reqwest::Client> {
    crate::tls::install_crypto_provider();
    Ok(reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("datasync/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// How a target authenticates us.
#[derive(Clone, Debug)]
pub enum TargetAuth {
    /// `Authorization: Bearer <secret>`.
    Bearer(SecretString),
    /// A custom header carrying the secret (e.g. `X-API-Key`, `X-Shopify-Access-Token`).
    Header(&'static str, SecretString),
    /// The secret is part of the URL or the body (Slack webhooks, PagerDuty routing keys).
    InRequest,
}

/// A request to an external system, built by a mapper.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundRequest {
    pub method: Method,
    /// Path below the target's base URL, starting with `/`.
    pub path: String,
    pub body: serde_json::Value,
}

/// A configured external system.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub base_url: String,
    pub auth: TargetAuth,
}

/// What came back, classified.
#[derive(Debug)]
pub enum Outcome {
    Delivered(StatusCode),
    /// 5xx, 429, timeouts and connection errors: retry (after `Retry-After` if given).
    Retry {
        status: Option<StatusCode>,
        after: Option<Duration>,
        error: String,
    },
    /// 410: the resource or integration is gone; retrying cannot help.
    Gone,
    /// Other 4xx: the request itself is wrong; retrying cannot help.
    Rejected {
        status: StatusCode,
        body: String,
    },
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered(s) | Outcome::Rejected { status: s, .. } => Some(s.as_u16()),
            Outcome::Retry { status, .. } => status.map(|s| s.as_u16()),
            Outcome::Gone => Some(410),
        }
    }

    /// The consumer error for a non-delivered outcome.
    pub fn into_handler_error(self, what: &str) -> HandlerError {
        match self {
            Outcome::Delivered(_) => {
                HandlerError::Permanent(anyhow::anyhow!("{what}: not an error"))
            }
            Outcome::Retry { after, error, .. } => {
                HandlerError::Retry { error: anyhow::anyhow!("{what}: {error}"), after }
            }
            Outcome::Gone => {
                HandlerError::Permanent(anyhow::anyhow!("{what}: target answered 410 Gone"))
            }
            Outcome::Rejected { status, body } => HandlerError::Permanent(anyhow::anyhow!(
                "{what}: target rejected with {status}: {body}"
            )),
        }
    }
}

/// Sends `request` to `endpoint` and classifies the answer.
pub async fn send(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    request: &OutboundRequest,
) -> Outcome {
    match execute(
        client,
        endpoint,
        request.method.clone(),
        &request.path,
        Some(&request.body),
        None,
    )
    .await
    {
        Ok(response) => Outcome::Delivered(response.status()),
        Err(outcome) => outcome,
    }
}

/// Sends `request` (a `Null` body sends none) and returns the status and the JSON answer
/// (`Null` when the answer is empty or not JSON); a failure is classified like [`send`]'s.
pub async fn exchange(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    request: &OutboundRequest,
) -> Result<(StatusCode, serde_json::Value), Outcome> {
    exchange_with_headers(client, endpoint, request, None).await
}

/// [`exchange`], and every answer's headers (failures' too) go to `quota` first, so a budget
/// learns the system's rate limits from them (see [`crate::outbound::quota`]).
pub async fn exchange_with_headers(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    request: &OutboundRequest,
    quota: Option<&quota::QuotaBudget>,
) -> Result<(StatusCode, serde_json::Value), Outcome> {
    let body = (!request.body.is_null()).then_some(&request.body);
    let result =
        execute(client, endpoint, request.method.clone(), &request.path, body, quota).await;
    if let (
        Some(quota),
        Err(Outcome::Retry { status: Some(StatusCode::TOO_MANY_REQUESTS), after, .. }),
    ) = (quota, &result)
    {
        quota.refused(*after);
    }
    let response = result?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| Outcome::Retry {
        status: Some(status),
        after: None,
        error: format!(
            "reading the answer of {} failed: {}",
            origin(&endpoint.base_url),
            without_url(&e)
        ),
    })?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)))
}

/// GETs `path_and_query` below `endpoint` and parses the JSON answer; a failure is classified
/// like [`send`]'s (an answer that is not JSON counts as `Rejected`).
pub async fn fetch_json(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    path_and_query: &str,
) -> Result<serde_json::Value, Outcome> {
    let request = OutboundRequest {
        method: Method::GET,
        path: path_and_query.to_owned(),
        body: serde_json::Value::Null,
    };
    match exchange(client, endpoint, &request).await? {
        (status, serde_json::Value::Null) => {
            Err(Outcome::Rejected { status, body: "answer is not JSON".to_owned() })
        }
        (_, answer) => Ok(answer),
    }
}

/// Sends one request with the endpoint's credentials; a non-2xx answer or a transport error is
/// returned classified.
async fn execute(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
    quota: Option<&quota::QuotaBudget>,
) -> Result<reqwest::Response, Outcome> {
    let url = format!("{}{}", endpoint.base_url, path);
    let mut builder = client.request(method, &url);
    if let Some(body) = body {
        builder = builder.json(body);
    }
    let builder = match &endpoint.auth {
        TargetAuth::Bearer(token) => builder.bearer_auth(token.expose_secret()),
        TargetAuth::Header(name, value) => builder.header(*name, value.expose_secret()),
        TargetAuth::InRequest => builder,
    };
    let response = builder.send().await.map_err(|e| Outcome::Retry {
        status: None,
        after: None,
        error: format!("request to {} failed: {}", origin(&endpoint.base_url), without_url(&e)),
    })?;
    if let Some(quota) = quota {
        quota.observe(response.headers());
    }
    if response.status().is_success() { Ok(response) } else { Err(classify(response).await) }
}

async fn classify(response: reqwest::Response) -> Outcome {
    let status = response.status();
    let after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = scrub(&response.text().await.unwrap_or_default());
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
            Outcome::Retry { status: Some(status), after, error: format!("{status}") }
        }
        s if s.is_server_error() => {
            Outcome::Retry { status: Some(s), after, error: format!("{s}: {body}") }
        }
        StatusCode::GONE => Outcome::Gone,
        s => Outcome::Rejected { status: s, body },
    }
}

/// Most characters of a target's answer kept in errors, logs and dead letters.
const BODY_CAP: usize = 500;

fn sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "api-key",
        "authorization",
        "credential",
        "private_key",
        "access_key",
        "session",
        "cookie",
    ]
    .iter()
    .any(|s| key.contains(s))
}

fn hide(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if sensitive(k) && !v.is_object() && !v.is_array() {
                    *v = serde_json::Value::String("***".into());
                } else {
                    hide(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(hide),
        _ => {}
    }
}

/// A target's answer as errors, logs and dead letters keep it: credential-like values hidden
/// (JSON fields named like a password, token, secret or key; `Bearer <token>`; `key=value`
/// pairs of such names) and at most [`BODY_CAP`] characters. A target may echo what it was
/// sent, or its own secrets, in an error.
pub fn scrub(text: &str) -> String {
    let cleaned = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut v) if v.is_object() || v.is_array() => {
            hide(&mut v);
            v.to_string()
        }
        _ => {
            let mut out = String::with_capacity(text.len());
            let mut hide_next = false;
            for piece in
                text.split_inclusive(|c: char| c.is_whitespace() || matches!(c, '&' | ',' | ';'))
            {
                let (word, sep) = piece.split_at(
                    piece
                        .trim_end_matches(|c: char| {
                            c.is_whitespace() || matches!(c, '&' | ',' | ';')
                        })
                        .len(),
                );
                let scheme =
                    word.eq_ignore_ascii_case("bearer") || word.eq_ignore_ascii_case("basic");
                if hide_next && !word.is_empty() && !scheme {
                    out.push_str("***");
                    out.push_str(sep);
                    hide_next = false;
                    continue;
                }
                if scheme {
                    hide_next = true;
                }
                match word.split_once(['=', ':']) {
                    Some((k, v)) if sensitive(k) && !v.is_empty() => {
                        out.push_str(&word[..k.len() + 1]);
                        out.push_str("***");
                    }
                    Some((k, v)) if sensitive(k) && v.is_empty() => {
                        out.push_str(word);
                        hide_next = true;
                    }
                    _ => out.push_str(word),
                }
                out.push_str(sep);
            }
            out
        }
    };
    cleaned.chars().take(BODY_CAP).collect()
}

/// `Retry-After` as delay-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let delay = match value.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or_default()
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Scheme, host and port of a base URL: what errors name (a path may hold a secret, as Slack's
/// webhook URLs do).
fn origin(base_url: &str) -> String {
    reqwest::Url::parse(base_url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "the configured endpoint".to_owned())
}

/// The error's kind and its causes (TLS, DNS, refused, ...), without the URL: some URLs carry
/// a secret (Slack webhooks), and the endpoint's base URL is named by the caller anyway.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "transport error".to_owned()
    };
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_answers_are_capped_and_their_credentials_hidden() {
        let json = scrub(
            r#"{"error":"bad","echo":{"api_key":"k-123","password":"p4ss","user":"ann"},"items":[{"token":"t0k"}]}"#,
        );
        assert!(
            !json.contains("k-123") && !json.contains("p4ss") && !json.contains("t0k"),
            "{json}"
        );
        assert!(json.contains("\"user\":\"ann\""), "{json}");
        let text = scrub(
            "401: invalid Authorization: Bearer abc.def.ghi for client_secret=s3cr3t&user=ann",
        );
        assert!(!text.contains("abc.def.ghi") && !text.contains("s3cr3t"), "{text}");
        assert!(text.contains("user=ann"), "{text}");
        assert_eq!(scrub(&"x".repeat(2000)).len(), 500);
    }

    #[test]
    fn errors_name_the_origin_never_the_path() {
        let slack = "https://hooks.slack.com/services/T000/B000/secret-token";
        assert_eq!(origin(slack), "https://hooks.slack.com");
        assert_eq!(origin("http://127.0.0.1:9101/api"), "http://127.0.0.1:9101");
        assert_eq!(origin("not a url"), "the configured endpoint");
    }

    #[tokio::test]
    async fn a_failed_request_names_the_cause_but_not_the_secret_path() {
        // Nothing listens on port 1 of loopback: the connection is refused.
        let endpoint = Endpoint {
            base_url: "http://127.0.0.1:1/services/secret-token".into(),
            auth: TargetAuth::InRequest,
        };
        let request = OutboundRequest {
            method: Method::POST,
            path: String::new(),
            body: serde_json::json!({}),
        };
        let Outcome::Retry { error, .. } = send(&client().unwrap(), &endpoint, &request).await
        else {
            panic!("a refused connection is retried");
        };
        assert!(error.contains("http://127.0.0.1:1"), "{error}");
        assert!(error.contains("connection failed"), "{error}");
        assert!(!error.contains("secret-token"), "{error}");
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates_and_is_capped() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
