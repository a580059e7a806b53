//! The SCIM 2.0 service provider under `/scim/v2` (RFC 7643, RFC 7644): `Users` and `Groups`
//! (create, get, replace, PATCH, delete, list with filter, paging, sorting and attribute
//! projection), `ServiceProviderConfig`, `ResourceTypes` and `Schemas`.
//!
//! Each source (an identity provider or HR system) has its own bearer token
//! (`SCIM_TOKENS=<source>=<token>,...`) and sees and changes only its own users and groups.
//! `meta.version` is the ETag; `If-Match` on PUT, PATCH and DELETE refuses a stale one with
//! `412`. Errors are SCIM error documents with `scimType` where RFC 7644 names one.

mod discovery;
pub mod filter;
pub mod patch;
mod representation;
mod resources;
pub mod sql;

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, ResponseError,
    dev::Payload,
    http::{StatusCode, header},
    web,
};
use futures::future::{Ready, ready};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

pub use resources::configure;

use crate::AppState;

/// SCIM's media type.
pub const MEDIA_TYPE: &str = "application/scim+json";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// A SCIM error: its status, `scimType` and detail.
#[derive(Debug)]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    pub fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self { status, scim_type, detail: detail.into() }
    }

    pub fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self::new(400, Some(scim_type), detail)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(404, None, format!("{what} not found"))
    }
}

impl std::fmt::Display for ScimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.detail)
    }
}

impl ResponseError for ScimError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST)
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({"schemas": [ERROR_SCHEMA], "status": self.status.to_string(), "detail": self.detail});
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        HttpResponse::build(self.status_code()).content_type(MEDIA_TYPE).body(body.to_string())
    }
}

impl From<diesel::result::Error> for ScimError {
    fn from(e: diesel::result::Error) -> Self {
        tracing::error!(error = %e, "directory database");
        Self::new(503, None, "the directory database is unavailable")
    }
}

impl From<crate::store::WriteError> for ScimError {
    fn from(e: crate::store::WriteError) -> Self {
        match e {
            crate::store::WriteError::Taken => {
                Self::new(409, Some("uniqueness"), "userName is already taken (case-insensitively)")
            }
            crate::store::WriteError::Database(e) => e.into(),
        }
    }
}

impl From<patch::PatchError> for ScimError {
    fn from(e: patch::PatchError) -> Self {
        Self::bad(e.scim_type, e.detail)
    }
}

/// The source a request's bearer token belongs to.
#[derive(Clone, Debug)]
pub struct ScimSource(pub String);

impl FromRequest for ScimSource {
    type Error = ScimError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let unauthorized = || ScimError::new(401, None, "a valid bearer token is required");
        let found = (|| {
            let state = req.app_data::<web::Data<AppState>>()?;
            let given = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
            let token = given.strip_prefix("Bearer ").or_else(|| given.strip_prefix("bearer "))?;
            // Every token is compared (in constant time), whichever matches.
            let mut found = None;
            for (source, secret) in &state.scim_tokens {
                if shared::http::ct_eq(token, secret.expose_secret()) {
                    found = Some(source.clone());
                }
            }
            found
        })();
        ready(found.map(ScimSource).ok_or_else(unauthorized))
    }
}

/// A SCIM response.
pub fn respond(status: StatusCode, body: &Value) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response.content_type(MEDIA_TYPE);
    if let Some(version) = body.pointer("/meta/version").and_then(Value::as_str) {
        response.insert_header((header::ETAG, version.to_owned()));
    }
    if status == StatusCode::CREATED
        && let Some(location) = body.pointer("/meta/location").and_then(Value::as_str)
    {
        response.insert_header((header::LOCATION, location.to_owned()));
    }
    response.body(body.to_string())
}
