//! Webhook authentication schemes, checked over the raw bytes before anything is parsed:
//!
//! - [Standard Webhooks](https://www.standardwebhooks.com): `webhook-id`, `webhook-timestamp`
//!   (seconds) and `webhook-signature` (`v1,<base64>` entries separated by spaces), HMAC-SHA256
//!   of `"<id>.<timestamp>.<body>"` with a `whsec_<base64>` secret.
//! - HubSpot v3: `X-HubSpot-Signature-v3`, base64 HMAC-SHA256 of method + URI + body +
//!   `X-HubSpot-Request-Timestamp` (milliseconds) with the app's client secret.
//! - datasync's own `X-Datasync-Signature: t=<unix>,v1=<hex>` (HMAC-SHA256 of `"<t>.<body>"`).
//! - `X-API-Key`.
//!
//! Every scheme takes several secrets (rotation: old and new are both accepted), each secret
//! belongs to one named sender, compares in constant time, and refuses timestamps more than
//! five minutes away from now in either direction (replays).
//!
//! Written here rather than with the `standardwebhooks` crate: that crate brings a third
//! `base64` major version, a second HMAC implementation and `time`, reads the clock itself
//! (the tolerance cannot be tested at its edges), takes one secret per verifier and refuses
//! bodies that are not UTF-8. The scheme is twenty lines on the `hmac`/`sha2` already in the
//! tree, and the tests below check it against the scheme's published example.

use actix_web::http::header::HeaderMap;
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::{ApiError, SIGNATURE_TOLERANCE_SECS};

/// A named secret: the sender it authenticates, and the secret.
pub type NamedSecret = (String, SecretString);

/// One way a sender can authenticate a webhook.
#[derive(Clone, Debug)]
pub enum Scheme {
    /// Standard Webhooks; secrets are `whsec_<base64>` (or bare base64).
    StandardWebhooks(Vec<NamedSecret>),
    /// HubSpot's v3 request signature; secrets are app client secrets.
    HubSpotV3(Vec<NamedSecret>),
    /// `X-Datasync-Signature: t=<unix>,v1=<hex>`.
    Datasync(Vec<NamedSecret>),
    /// `X-API-Key`.
    ApiKey(Vec<NamedSecret>),
}

/// A request as the schemes see it.
pub struct Signed<'a> {
    pub method: &'a str,
    /// The full URI the sender called (scheme, host, path and query), for HubSpot.
    pub uri: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Who sent a verified request, and the sender's delivery id if the scheme carries one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The name of the secret that matched.
    pub sender: String,
    pub delivery_id: Option<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    for part in parts {
        mac.update(part);
    }
    mac
}

/// The key bytes of a Standard Webhooks secret.
pub fn whsec_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    BASE64.decode(encoded).map_err(|e| format!("not a whsec_<base64> secret: {e}"))
}

fn within_tolerance(now_secs: i64, t_secs: i64) -> bool {
    now_secs.abs_diff(t_secs) <= SIGNATURE_TOLERANCE_SECS.unsigned_abs()
}

/// HubSpot decodes these percent-escapes in the URI before signing.
const HUBSPOT_DECODED: [(&str, &str); 12] = [
    ("%3A", ":"),
    ("%2F", "/"),
    ("%3F", "?"),
    ("%40", "@"),
    ("%21", "!"),
    ("%24", "$"),
    ("%27", "'"),
    ("%28", "("),
    ("%29", ")"),
    ("%2A", "*"),
    ("%2C", ","),
    ("%3B", ";"),
];

fn hubspot_uri(uri: &str) -> String {
    let mut out = uri.to_owned();
    for (escaped, plain) in HUBSPOT_DECODED {
        out = out.replace(escaped, plain).replace(&escaped.to_lowercase(), plain);
    }
    out
}

impl Scheme {
    /// The scheme's name in errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::StandardWebhooks(_) => "standard-webhooks",
            Scheme::HubSpotV3(_) => "hubspot-v3",
            Scheme::Datasync(_) => "datasync-signature",
            Scheme::ApiKey(_) => "api-key",
        }
    }

    /// Whether the request carries this scheme's credential (it is then judged by it alone).
    pub fn present(&self, headers: &HeaderMap) -> bool {
        let name = match self {
            Scheme::StandardWebhooks(_) => "webhook-signature",
            Scheme::HubSpotV3(_) => "x-hubspot-signature-v3",
            Scheme::Datasync(_) => super::SIGNATURE_HEADER,
            Scheme::ApiKey(_) => super::API_KEY_HEADER,
        };
        headers.contains_key(name)
    }

    /// Checks the secrets' format (at start-up, so a bad secret stops the service).
    /// Every secret must be long enough to resist guessing: at least
    /// [`crate::config::MIN_SECRET_LEN`] characters, or, for a `whsec_` secret, that many bytes
    /// once decoded.
    pub fn validate(&self) -> Result<(), String> {
        let min = crate::config::MIN_SECRET_LEN;
        let secrets = match self {
            Scheme::StandardWebhooks(s)
            | Scheme::HubSpotV3(s)
            | Scheme::Datasync(s)
            | Scheme::ApiKey(s) => s,
        };
        for (name, secret) in secrets {
            let length = match self {
                Scheme::StandardWebhooks(_) => whsec_key(secret.expose_secret())
                    .map_err(|e| format!("secret of {name}: {e}"))?
                    .len(),
                _ => secret.expose_secret().len(),
            };
            if length < min {
                return Err(format!(
                    "a secret of {name} is shorter than {min} characters (or bytes, decoded)"
                ));
            }
        }
        Ok(())
    }

    /// Verifies `req` at `now_ms` (Unix milliseconds).
    pub fn verify(&self, req: &Signed<'_>, now_ms: i64) -> Result<Verified, ApiError> {
        let now = now_ms.div_euclid(1000);
        match self {
            Scheme::StandardWebhooks(secrets) => {
                let id = header(req.headers, "webhook-id")
                    .ok_or(ApiError::Unauthorized("missing webhook-id"))?;
                let t = header(req.headers, "webhook-timestamp")
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or(ApiError::Unauthorized("missing or invalid webhook-timestamp"))?;
                if !within_tolerance(now, t) {
                    return Err(ApiError::Unauthorized(
                        "webhook-timestamp outside the 5 minute window",
                    ));
                }
                let given: Vec<Vec<u8>> = header(req.headers, "webhook-signature")
                    .ok_or(ApiError::Unauthorized("missing webhook-signature"))?
                    .split(' ')
                    .filter_map(|s| s.split_once(','))
                    .filter(|(version, _)| *version == "v1")
                    .filter_map(|(_, sig)| BASE64.decode(sig).ok())
                    .collect();
                let t = t.to_string();
                let matched = secrets.iter().rev().fold(None, |found, (name, secret)| {
                    let Ok(key) = whsec_key(secret.expose_secret()) else { return found };
                    let mac = hmac(&key, &[id.as_bytes(), b".", t.as_bytes(), b".", req.body]);
                    let ok = given
                        .iter()
                        .fold(false, |ok, sig| ok | mac.clone().verify_slice(sig).is_ok());
                    if ok { Some(name.clone()) } else { found }
                });
                let sender = matched.ok_or(ApiError::Unauthorized("invalid webhook-signature"))?;
                Ok(Verified { sender, delivery_id: Some(id.to_owned()) })
            }
            Scheme::HubSpotV3(secrets) => {
                let t = header(req.headers, "x-hubspot-request-timestamp")
                    .ok_or(ApiError::Unauthorized("missing X-HubSpot-Request-Timestamp"))?;
                let t_ms = t
                    .parse::<i64>()
                    .map_err(|_| ApiError::Unauthorized("invalid X-HubSpot-Request-Timestamp"))?;
                if !within_tolerance(now, t_ms.div_euclid(1000)) {
                    return Err(ApiError::Unauthorized(
                        "X-HubSpot-Request-Timestamp outside the 5 minute window",
                    ));
                }
                let given = header(req.headers, "x-hubspot-signature-v3")
                    .and_then(|s| BASE64.decode(s).ok())
                    .ok_or(ApiError::Unauthorized("missing or invalid X-HubSpot-Signature-v3"))?;
                let uri = hubspot_uri(req.uri);
                let parts: [&[u8]; 4] =
                    [req.method.as_bytes(), uri.as_bytes(), req.body, t.as_bytes()];
                let matched = secrets.iter().rev().fold(None, |found, (name, secret)| {
                    let ok = hmac(secret.expose_secret().as_bytes(), &parts)
                        .verify_slice(&given)
                        .is_ok();
                    if ok { Some(name.clone()) } else { found }
                });
                let sender =
                    matched.ok_or(ApiError::Unauthorized("invalid X-HubSpot-Signature-v3"))?;
                Ok(Verified { sender, delivery_id: None })
            }
            Scheme::Datasync(secrets) => {
                let value = header(req.headers, super::SIGNATURE_HEADER)
                    .ok_or(ApiError::Unauthorized("missing X-Datasync-Signature"))?;
                let sender = super::verify_signature(secrets, value, req.body, now)?;
                Ok(Verified { sender, delivery_id: None })
            }
            Scheme::ApiKey(keys) => {
                let key = header(req.headers, super::API_KEY_HEADER)
                    .ok_or(ApiError::Unauthorized("missing X-API-Key"))?;
                let sender = super::verify_api_key(keys, key)
                    .ok_or(ApiError::Unauthorized("invalid API key"))?;
                Ok(Verified { sender, delivery_id: None })
            }
        }
    }
}

/// Verifies `req` with the first of `schemes` whose credential it carries.
pub fn verify_any(schemes: &[Scheme], req: &Signed<'_>, now_ms: i64) -> Result<Verified, ApiError> {
    let scheme = schemes
        .iter()
        .find(|s| s.present(req.headers))
        .ok_or(ApiError::Unauthorized("missing credentials (a signature or an API key)"))?;
    scheme.verify(req, now_ms)
}

/// Signs for Standard Webhooks (senders and tests): the `webhook-signature` value.
pub fn sign_standard(secret: &str, id: &str, t: i64, body: &[u8]) -> Result<String, String> {
    let key = whsec_key(secret)?;
    let mac = hmac(&key, &[id.as_bytes(), b".", t.to_string().as_bytes(), b".", body]);
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// Signs for HubSpot v3 (senders and tests): the `X-HubSpot-Signature-v3` value.
pub fn sign_hubspot(secret: &str, method: &str, uri: &str, body: &[u8], t_ms: i64) -> String {
    let t = t_ms.to_string();
    let uri = hubspot_uri(uri);
    let mac = hmac(secret.as_bytes(), &[method.as_bytes(), uri.as_bytes(), body, t.as_bytes()]);
    BASE64.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn named(secrets: &[(&str, &str)]) -> Vec<NamedSecret> {
        secrets.iter().map(|(n, s)| (n.to_string(), SecretString::from(s.to_string()))).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn signed<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Signed<'a> {
        Signed { method: "POST", uri: "https://example.com/webhooks/crm", headers, body }
    }

    // The example published with the Standard Webhooks specification and its libraries.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn standard_webhooks_matches_the_published_example() {
        assert_eq!(
            sign_standard(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY).unwrap(),
            SPEC_SIGNATURE
        );
        let h = headers(&[
            ("webhook-id", SPEC_ID),
            ("webhook-timestamp", &SPEC_TS.to_string()),
            ("webhook-signature", SPEC_SIGNATURE),
        ]);
        let scheme = Scheme::StandardWebhooks(named(&[("crm", SPEC_SECRET)]));
        let verified = scheme.verify(&signed(&h, SPEC_BODY), SPEC_TS * 1000).unwrap();
        assert_eq!(verified, Verified { sender: "crm".into(), delivery_id: Some(SPEC_ID.into()) });
    }

    #[test]
    fn standard_webhooks_matches_the_reference_librarys_example() {
        let signature = sign_standard(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(signature.unwrap(), "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn standard_webhooks_accepts_any_listed_signature_and_any_current_secret() {
        let old = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZA==";
        let new = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldw==";
        let sig_old = sign_standard(old, "m1", 1000, b"{}").unwrap();
        let sig_new = sign_standard(new, "m1", 1000, b"{}").unwrap();
        let scheme = Scheme::StandardWebhooks(named(&[("crm", new), ("crm", old)]));
        for value in
            [format!("v1,bm9wZQ== {sig_old}"), sig_new.clone(), format!("{sig_new} {sig_old}")]
        {
            let h = headers(&[
                ("webhook-id", "m1"),
                ("webhook-timestamp", "1000"),
                ("webhook-signature", &value),
            ]);
            assert!(scheme.verify(&signed(&h, b"{}"), 1_000_000).is_ok(), "{value}");
        }
        // A v2 entry with a valid v1 MAC is not a v1 signature.
        let v2 = sig_new.replacen("v1,", "v2,", 1);
        let h = headers(&[
            ("webhook-id", "m1"),
            ("webhook-timestamp", "1000"),
            ("webhook-signature", &v2),
        ]);
        assert!(scheme.verify(&signed(&h, b"{}"), 1_000_000).is_err());
    }

    #[test]
    fn standard_webhooks_refuses_tampering_and_timestamps_off_by_more_than_five_minutes() {
        let scheme = Scheme::StandardWebhooks(named(&[("crm", SPEC_SECRET)]));
        let ts = SPEC_TS.to_string();
        let h = headers(&[
            ("webhook-id", SPEC_ID),
            ("webhook-timestamp", &ts),
            ("webhook-signature", SPEC_SIGNATURE),
        ]);
        assert!(scheme.verify(&signed(&h, br#"{"test": 2432232315}"#), SPEC_TS * 1000).is_err());
        for (now, ok) in [
            (SPEC_TS + 300, true),
            (SPEC_TS - 300, true),
            (SPEC_TS + 301, false),
            (SPEC_TS - 301, false),
        ] {
            assert_eq!(scheme.verify(&signed(&h, SPEC_BODY), now * 1000).is_ok(), ok, "now {now}");
        }
        let other_id = headers(&[
            ("webhook-id", "msg_other"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", SPEC_SIGNATURE),
        ]);
        assert!(scheme.verify(&signed(&other_id, SPEC_BODY), SPEC_TS * 1000).is_err());
        let missing = headers(&[("webhook-id", SPEC_ID), ("webhook-timestamp", &ts)]);
        assert!(scheme.verify(&signed(&missing, SPEC_BODY), SPEC_TS * 1000).is_err());
        assert!(Scheme::StandardWebhooks(named(&[("crm", "whsec_***")])).validate().is_err());
        assert!(
            Scheme::StandardWebhooks(named(&[("crm", "whsec_")])).validate().is_err(),
            "an empty key"
        );
        assert!(
            Scheme::StandardWebhooks(named(&[("crm", "whsec_c2hvcnQ=")])).validate().is_err(),
            "5 bytes"
        );
        assert!(Scheme::ApiKey(named(&[("erp", "short-key")])).validate().is_err());
        assert!(Scheme::HubSpotV3(named(&[("crm", "0123456789abcdef")])).validate().is_ok());
    }

    #[test]
    fn hubspot_v3_signs_method_uri_body_and_timestamp() {
        let secret = "hubspot-client-secret";
        let uri = "https://example.com/webhooks/crm?portal=62515";
        let body = br#"[{"eventId":1,"subscriptionType":"contact.creation","objectId":123}]"#;
        let t = 1_700_000_000_000_i64;
        let signature = sign_hubspot(secret, "POST", uri, body, t);
        // Computed independently: base64(HMAC-SHA256(secret, "POST" + uri + body + "1700000000000")).
        assert_eq!(signature, "v8sR3eWO1e0UGgYXaVvdt99Ghb6M4PvxxJGrauuYrBQ=");
        let h = headers(&[
            ("x-hubspot-signature-v3", &signature),
            ("x-hubspot-request-timestamp", &t.to_string()),
        ]);
        let scheme = Scheme::HubSpotV3(named(&[("crm", secret)]));
        let req = Signed { method: "POST", uri, headers: &h, body };
        assert_eq!(scheme.verify(&req, t).unwrap().sender, "crm");
        assert!(scheme.verify(&req, t + 300_000).is_ok());
        assert!(scheme.verify(&req, t + 301_000).is_err(), "older than five minutes");
        let other_uri = Signed { uri: "https://example.com/webhooks/crm?portal=1", ..req };
        assert!(scheme.verify(&other_uri, t).is_err());
        let get = Signed { method: "GET", uri, headers: &h, body };
        assert!(scheme.verify(&get, t).is_err());
    }

    #[test]
    fn hubspot_v3_decodes_the_uri_escapes_hubspot_decodes() {
        let t = 1_700_000_000_000_i64;
        let plain = sign_hubspot("s", "POST", "https://x.io/hook?a=b:c,d", b"", t);
        let escaped = sign_hubspot("s", "POST", "https://x.io/hook?a=b%3Ac%2cd", b"", t);
        assert_eq!(plain, escaped);
    }

    #[test]
    fn the_sender_is_the_name_of_the_matching_secret() {
        let scheme = Scheme::Datasync(named(&[("pos", "pos-secret"), ("wms", "wms-secret")]));
        let value = super::super::sign("wms-secret", 1000, b"{}");
        let h = headers(&[("x-datasync-signature", &value)]);
        assert_eq!(scheme.verify(&signed(&h, b"{}"), 1_000_000).unwrap().sender, "wms");
        let keys = Scheme::ApiKey(named(&[("erp", "erp-key-0123456789")]));
        let h = headers(&[("x-api-key", "erp-key-0123456789")]);
        assert_eq!(verify_any(&[scheme, keys], &signed(&h, b"{}"), 0).unwrap().sender, "erp");
        assert!(verify_any(&[], &signed(&HeaderMap::new(), b"{}"), 0).is_err());
    }
}
