//! HTTP plumbing shared by every service: the one error type (rendered as RFC 9457 problem
//! details), strict JSON body parsing that names the bad field, and the authentication
//! extractors (admin bearer token, API keys, HMAC-signed bodies). All secret comparisons are
//! constant-time; secrets never appear in responses or logs.

pub mod pages;
pub mod session;
pub mod verify;

use std::future::{Ready, ready};

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, ResponseError,
    dev::Payload,
    http::{StatusCode, header},
    web,
};
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, de::DeserializeOwned};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Signed requests older (or newer) than this are rejected as replays.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;
/// Header carrying `t=<unix seconds>,v1=<hex hmac-sha256>` (several `v1=` during rotation).
pub const SIGNATURE_HEADER: &str = "x-datasync-signature";
/// Header carrying an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The one error type of every handler.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a field is invalid (400 or 422).
    #[error("{detail}")]
    Invalid { status: StatusCode, field: Option<String>, detail: String },
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state (409); `extra` adds machine-readable fields.
    #[error("{detail}")]
    Conflict { detail: String, extra: serde_json::Value },
    /// A business rule refused the request (422); `extra` adds machine-readable fields.
    #[error("{detail}")]
    Rejected { detail: String, extra: serde_json::Value },
    /// A dependency is down (503): the client should retry.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500). The cause is logged, never returned.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    /// A 422 naming the invalid field.
    pub fn field(field: &str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field: Some(field.to_owned()),
            detail: detail.into(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid-request",
            Self::Unauthorized(_) => "unauthorized",
            Self::NotFound(_) => "not-found",
            Self::Conflict { .. } => "conflict",
            Self::Rejected { .. } => "rejected",
            Self::Unavailable(_) => "unavailable",
            Self::Unexpected(_) => "internal",
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            diesel::result::Error::NotFound => Self::NotFound("record".into()),
            e => Self::Unexpected(e.into()),
        }
    }
}

impl From<crate::db::PoolError> for ApiError {
    fn from(e: crate::db::PoolError) -> Self {
        tracing::warn!(error = %e, "no database connection available");
        Self::Unavailable("database".into())
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "serde_json::Value::is_null")]
    extra: &'a serde_json::Value,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid { status, .. } => *status,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let null = serde_json::Value::Null;
        let (field, extra) = match self {
            Self::Invalid { field, .. } => (field.as_deref(), &null),
            Self::Conflict { extra, .. } | Self::Rejected { extra, .. } => (None, extra),
            _ => (None, &null),
        };
        let detail = match self {
            Self::Unexpected(e) => {
                // Logged once here, with the whole cause chain; the client sees no internals.
                tracing::error!(error = format!("{e:#}"), "request failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(status);
        if matches!(self, Self::Unavailable(_)) {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.content_type("application/problem+json").json(Problem {
            kind: format!("https://datasync.dev/problems/{}", self.kind()),
            title: status.canonical_reason().unwrap_or("error"),
            status: status.as_u16(),
            detail,
            field,
            extra,
        })
    }
}

/// Parses a JSON body strictly; errors are 400 (not JSON) or 422 naming the offending field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::Invalid {
                status: StatusCode::BAD_REQUEST,
                field: None,
                detail: format!("body is not valid JSON: {inner}"),
            };
        }
        let message = inner.to_string();
        // serde reports a missing field at the parent path, naming it in backticks.
        let field = match message.strip_prefix("missing field `") {
            Some(rest) => rest.split('`').next().unwrap_or_default().to_owned(),
            None if path != "." => path,
            None => String::new(),
        };
        let detail = message.split(" at line ").next().unwrap_or(&message).to_owned();
        ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field: (!field.is_empty()).then_some(field),
            detail,
        }
    })
}

/// Secrets the authentication extractors check against; the app registers one
/// `web::Data<AuthConfig>`.
#[derive(Clone)]
pub struct AuthConfig {
    pub admin_token: Option<crate::config::AdminToken>,
    /// `(client name, key)` pairs accepted in `X-API-Key`.
    pub api_keys: Vec<(String, SecretString)>,
    /// `(sender name, secret)` pairs accepted for signed bodies (several per sender during a
    /// rotation); a signed request speaks for the sender whose secret matched.
    pub hmac_secrets: Vec<verify::NamedSecret>,
    /// Largest request body accepted (`MAX_BODY_BYTES`); larger is a 413.
    pub max_body: usize,
    /// `PUBLIC_URL`: what URL-covering signatures are checked against.
    pub public_url: Option<String>,
}

/// Default largest request body: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            admin_token: None,
            api_keys: vec![],
            hmac_secrets: vec![],
            max_body: DEFAULT_MAX_BODY,
            public_url: None,
        }
    }
}

impl AuthConfig {
    /// Parses `name:key,name:key` (the `*_API_KEYS` and `*_HMAC_SECRETS` variables).
    pub fn parse_api_keys(
        var: &str,
    ) -> Result<Vec<(String, SecretString)>, crate::config::ConfigError> {
        crate::config::secret_list(var)
            .into_iter()
            .map(|entry| {
                let (name, key) = entry.expose_secret().split_once(':').ok_or_else(|| {
                    crate::config::ConfigError::Invalid {
                        name: var.to_owned(),
                        reason: "expected comma-separated name:key pairs".into(),
                    }
                })?;
                if name.is_empty() || key.len() < 16 {
                    return Err(crate::config::ConfigError::Invalid {
                        name: var.to_owned(),
                        reason: format!(
                            "entry for {name:?} needs a name and a key of at least 16 characters"
                        ),
                    });
                }
                Ok((name.to_owned(), SecretString::from(key.to_owned())))
            })
            .collect()
    }
}

/// Whether two secrets are equal, compared in constant time.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn auth_config(req: &HttpRequest) -> Result<&AuthConfig, ApiError> {
    req.app_data::<web::Data<AuthConfig>>()
        .map(|d| d.get_ref())
        .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("AuthConfig not registered")))
}

/// Proof that the request carried the admin bearer token.
#[derive(Debug)]
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            let expected = auth_config(req)?
                .admin_token
                .as_ref()
                .ok_or(ApiError::Unauthorized("admin endpoints are disabled"))?;
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or(ApiError::Unauthorized("missing bearer token"))?;
            if expected.accepts(given) {
                Ok(Admin)
            } else {
                Err(ApiError::Unauthorized("invalid bearer token"))
            }
        })())
    }
}

/// A read-only caller: a valid `X-API-Key` or the admin bearer token.
#[derive(Debug)]
pub struct Reader {
    /// The API key's client name, or `"admin"`.
    pub client: String,
}

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        ready((|| {
            if let Some(key) = req.headers().get(API_KEY_HEADER) {
                let key = key.to_str().map_err(|_| ApiError::Unauthorized("invalid API key"))?;
                let client = verify_api_key(&auth_config(req)?.api_keys, key)
                    .ok_or(ApiError::Unauthorized("invalid API key"))?;
                return Ok(Self { client });
            }
            match Admin::from_request(req, payload).into_inner() {
                Ok(Admin) => Ok(Self { client: "admin".into() }),
                Err(_) => Err(ApiError::Unauthorized("missing X-API-Key or admin bearer token")),
            }
        })())
    }
}

/// A request body whose sender is authenticated, by `X-API-Key` or by an HMAC signature over
/// the raw bytes (`X-Datasync-Signature: t=<unix>,v1=<hex>`, HMAC-SHA256 of `"<t>.<body>"`).
#[derive(Debug)]
pub struct Authenticated {
    /// The name of the API key or signing secret that matched: the only sender the request
    /// may speak for.
    pub client: String,
    pub body: Bytes,
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let body = web::Bytes::from_request(&req, payload);
        Box::pin(async move {
            let auth = auth_config(&req)?;
            // Authenticate by API key before reading the body, so unauthenticated clients
            // cannot make us buffer it.
            if let Some(key) = req.headers().get(API_KEY_HEADER) {
                let key = key.to_str().map_err(|_| ApiError::Unauthorized("invalid API key"))?;
                let client = verify_api_key(&auth.api_keys, key)
                    .ok_or(ApiError::Unauthorized("invalid API key"))?;
                let body = read_body(body, &req, auth.max_body).await?;
                return Ok(Self { client, body });
            }
            let header = req
                .headers()
                .get(SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or(ApiError::Unauthorized("missing X-API-Key or X-Datasync-Signature"))?;
            let body = read_body(body, &req, auth.max_body).await?;
            let client = verify_signature(
                &auth.hmac_secrets,
                &header,
                &body,
                chrono::Utc::now().timestamp(),
            )?;
            Ok(Self { client, body })
        })
    }
}

/// Reads the body up to `limit` bytes; a larger one (declared or streamed) is a 413.
pub async fn read_body(
    body: impl std::future::Future<Output = Result<Bytes, actix_web::Error>>,
    req: &HttpRequest,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::Invalid {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        field: None,
        detail: format!("body larger than {limit} bytes"),
    };
    if req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|len| len > limit)
    {
        return Err(too_large());
    }
    let body = body.await.map_err(|e| {
        if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
            return too_large();
        }
        ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            field: None,
            detail: format!("cannot read body: {e}"),
        }
    })?;
    if body.len() > limit {
        return Err(too_large());
    }
    Ok(body)
}

/// The client name of the matching key. Every key is compared (no early exit), so timing does
/// not reveal which key or how much of it matched.
pub fn verify_api_key(keys: &[(String, SecretString)], given: &str) -> Option<String> {
    let mut found = None;
    for (name, key) in keys {
        if ct_eq(given, key.expose_secret()) {
            found = Some(name.clone());
        }
    }
    found
}

/// Computes the signature header value for `body` at time `t` (for clients and tests).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(mac(secret, t, body).finalize().into_bytes()))
}

fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks `t=..,v1=..[,v1=..]` against every secret, in constant time per comparison, and
/// rejects timestamps outside the tolerance window (replays). Returns the name of the secret
/// that matched.
pub fn verify_signature(
    secrets: &[verify::NamedSecret],
    header: &str,
    body: &[u8],
    now: i64,
) -> Result<String, ApiError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = v.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let t = timestamp.ok_or(ApiError::Unauthorized("signature has no valid timestamp"))?;
    if now.abs_diff(t) > SIGNATURE_TOLERANCE_SECS.unsigned_abs() {
        return Err(ApiError::Unauthorized("signature timestamp outside the 5 minute window"));
    }
    let mut sender = None;
    for (name, secret) in secrets {
        let mut valid = false;
        for signature in &signatures {
            valid |= mac(secret.expose_secret(), t, body).verify_slice(signature).is_ok();
        }
        if valid {
            sender = Some(name.clone());
        }
    }
    sender.ok_or(ApiError::Unauthorized("invalid signature"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<verify::NamedSecret> {
        list.iter().map(|s| ("sender".to_owned(), SecretString::from(s.to_string()))).collect()
    }

    #[test]
    fn a_signature_made_with_any_current_secret_is_accepted() {
        let header = sign("old-secret", 1_000, b"{}");
        assert!(
            verify_signature(&secrets(&["new-secret", "old-secret"]), &header, b"{}", 1_010)
                .is_ok()
        );
    }

    #[test]
    fn a_tampered_body_or_unknown_secret_is_rejected() {
        let header = sign("secret", 1_000, b"{\"q\":1}");
        assert!(verify_signature(&secrets(&["secret"]), &header, b"{\"q\":2}", 1_000).is_err());
        assert!(verify_signature(&secrets(&["other"]), &header, b"{\"q\":1}", 1_000).is_err());
    }

    #[test]
    fn an_extreme_timestamp_is_rejected_without_overflow() {
        let header = format!("t={},v1=00", i64::MIN);
        assert!(verify_signature(&secrets(&["secret"]), &header, b"x", 1_000).is_err());
    }

    #[test]
    fn an_old_signature_is_rejected_as_replay() {
        let header = sign("secret", 1_000, b"x");
        let err = verify_signature(&secrets(&["secret"]), &header, b"x", 1_000 + 301).unwrap_err();
        assert!(err.to_string().contains("window"));
    }

    #[test]
    fn api_keys_map_to_their_client_name() {
        let keys = vec![("pos".to_owned(), SecretString::from("k".repeat(20)))];
        assert_eq!(verify_api_key(&keys, &"k".repeat(20)).as_deref(), Some("pos"));
        assert_eq!(verify_api_key(&keys, "nope"), None);
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        sku: String,
        quantity: i64,
    }

    #[test]
    fn json_errors_name_the_field() {
        let missing = parse_json::<Body>(br#"{"quantity": 1}"#).unwrap_err();
        assert!(
            matches!(missing, ApiError::Invalid { field: Some(ref f), .. } if f == "sku"),
            "{missing:?}"
        );
        let wrong = parse_json::<Body>(br#"{"sku": "a", "quantity": "x"}"#).unwrap_err();
        assert!(
            matches!(wrong, ApiError::Invalid { field: Some(ref f), .. } if f == "quantity"),
            "{wrong:?}"
        );
        let syntax = parse_json::<Body>(b"{").unwrap_err();
        assert_eq!(syntax.status_code(), StatusCode::BAD_REQUEST);
    }
}
