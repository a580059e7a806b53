//! Admin sessions for HTML pages. An administrator logs in once with the admin token and gets a
//! session cookie: `<expires unix>.<HMAC-SHA256 of it under the admin token>`, `HttpOnly`,
//! `SameSite=Strict`, valid for [`LIFETIME`] and until the token changes. Every form carries a
//! CSRF token bound to the session (an HMAC of it), checked in constant time on each POST;
//! `SameSite=Strict` keeps other sites' requests from carrying the cookie at all.

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use std::future::{Ready, ready};

use super::{Admin, ApiError, auth_config, ct_eq};

/// The session cookie's name.
pub const COOKIE: &str = "datasync_session";
/// How long a session lasts.
pub const LIFETIME: i64 = 8 * 3600;

fn sign(token: &SecretString, purpose: &str, value: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(token.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(purpose.as_bytes());
    mac.update(b":");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A new session's cookie value, valid until `now + LIFETIME`.
pub fn new_session(token: &SecretString, now: i64) -> String {
    let expires = (now + LIFETIME).to_string();
    format!("{expires}.{}", sign(token, "session", &expires))
}

/// Whether `cookie` is a session this token signed that has not expired at `now`.
pub fn valid(token: &SecretString, cookie: &str, now: i64) -> bool {
    let Some((expires, signature)) = cookie.split_once('.') else { return false };
    let Ok(at) = expires.parse::<i64>() else { return false };
    at > now && ct_eq(signature, &sign(token, "session", expires))
}

/// The CSRF token of forms in `session`.
pub fn csrf_token(token: &SecretString, session: &str) -> String {
    sign(token, "csrf", session)
}

/// The `Set-Cookie` value of a session (`Secure` when the page was reached over HTTPS).
pub fn cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={LIFETIME}{secure}")
}

/// The `Set-Cookie` value that ends a session.
pub fn cleared() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// An administrator, by session cookie or bearer token, for HTML pages.
#[derive(Debug)]
pub struct AdminPage {
    /// The session (forms need its CSRF token); `None` with the bearer token.
    pub session: Option<String>,
    /// The CSRF token forms carry (empty with the bearer token, which needs none: no browser
    /// sends it by itself).
    pub csrf: String,
}

impl AdminPage {
    /// Whether a form's CSRF token belongs to this session (always with the bearer token).
    pub fn csrf_ok(&self, given: Option<&str>) -> bool {
        match &self.session {
            None => true,
            Some(_) => given.is_some_and(|g| !self.csrf.is_empty() && ct_eq(g, &self.csrf)),
        }
    }
}

impl FromRequest for AdminPage {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        ready((|| {
            if req.headers().contains_key(header::AUTHORIZATION) {
                Admin::from_request(req, payload).into_inner()?;
                return Ok(Self { session: None, csrf: String::new() });
            }
            let token = auth_config(req)?
                .admin_token
                .as_ref()
                .map(|t| &t.current)
                .ok_or(ApiError::Unauthorized("admin pages are disabled"))?;
            let session = cookie_value(req, COOKIE)
                .filter(|c| valid(token, c, chrono::Utc::now().timestamp()))
                .ok_or(ApiError::Unauthorized("not logged in"))?;
            let csrf = csrf_token(token, &session);
            Ok(Self { session: Some(session), csrf })
        })())
    }
}

/// The value of the cookie `name` the request carries.
fn cookie_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// Whether `given` is the admin token (a login form's).
pub fn is_admin_token(req: &HttpRequest, given: &str) -> Result<bool, ApiError> {
    let token = auth_config(req)?
        .admin_token
        .as_ref()
        .ok_or(ApiError::Unauthorized("admin pages are disabled"))?;
    Ok(token.accepts(given))
}

/// The admin token, to sign a new session.
pub fn admin_token(req: &HttpRequest) -> Result<SecretString, ApiError> {
    auth_config(req)?
        .admin_token
        .as_ref()
        .map(|t| t.current.clone())
        .ok_or(ApiError::Unauthorized("admin pages are disabled"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_until_it_expires_or_the_token_changes() {
        let token = SecretString::from("admin-token-0123456789");
        let session = new_session(&token, 1_000);
        assert!(valid(&token, &session, 1_000 + LIFETIME - 1));
        assert!(!valid(&token, &session, 1_000 + LIFETIME));
        assert!(!valid(&SecretString::from("another-token-0123456789"), &session, 1_001));
        let (expires, signature) = session.split_once('.').unwrap();
        let later = format!("{}.{signature}", expires.parse::<i64>().unwrap() + 3600);
        assert!(!valid(&token, &later, 1_001), "the expiry is signed");
        assert!(!valid(&token, "garbage", 1_001));
        let csrf = csrf_token(&token, &session);
        assert_ne!(csrf, csrf_token(&token, &new_session(&token, 2_000)));
        let page = AdminPage { session: Some(session), csrf: csrf.clone() };
        assert!(page.csrf_ok(Some(&csrf)) && !page.csrf_ok(Some("x")) && !page.csrf_ok(None));
    }
}
