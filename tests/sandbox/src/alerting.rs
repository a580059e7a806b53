//! Slack's incoming webhooks and PagerDuty's Events API v2, validated as their documentation
//! describes them, refusing anything else as the real ones do.
//!
//! - Slack (`POST <webhook path>`, `Content-Type: application/json`): a JSON object with a
//!   non-empty `text`, or non-empty `blocks` each naming its `type`. Answers are plain text:
//!   `ok`, or `400 invalid_payload` / `no_text` / `invalid_blocks`, `404 no_service` for an
//!   unknown webhook.
//! - PagerDuty (`POST /v2/enqueue`): `routing_key` (the 32-character integration key),
//!   `event_action` (`trigger`, `acknowledge`, `resolve`), `dedup_key` (at most 255 characters,
//!   required to acknowledge or resolve); a trigger's `payload` with `summary` (at most 1024
//!   characters), `source` and `severity` (`critical`, `error`, `warning`, `info`). Answers
//!   `202 {status: "success", message: "Event processed", dedup_key}` or `400 {status:
//!   "invalid event", message: "Event object is invalid", errors: [...]}`. Alerts are kept by
//!   `dedup_key`: a trigger opens one (or adds to the open one), a resolve closes the open one
//!   and is dropped when none is open.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// What PagerDuty holds for one `dedup_key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub dedup_key: String,
    /// `triggered`, `acknowledged` or `resolved`.
    pub status: String,
    pub summary: String,
    pub severity: String,
    /// Trigger events applied to it.
    pub triggers: usize,
}

/// Slack: the answer's status and plain-text body.
pub(crate) fn slack(
    known_webhook: bool,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, &'static str) {
    if !known_webhook {
        return (404, "no_service");
    }
    if !content_type.is_some_and(|c| c.starts_with("application/json")) {
        return (400, "invalid_payload");
    }
    let Ok(Value::Object(message)) = serde_json::from_slice::<Value>(body) else {
        return (400, "invalid_payload");
    };
    let text = message.get("text").and_then(Value::as_str).is_some_and(|t| !t.trim().is_empty());
    match message.get("blocks") {
        Some(Value::Array(blocks))
            if !blocks.is_empty()
                && blocks.iter().all(|b| b.get("type").and_then(Value::as_str).is_some()) => {}
        Some(_) => return (400, "invalid_blocks"),
        None if !text => return (400, "no_text"),
        None => {}
    }
    (200, "ok")
}

fn invalid(errors: Vec<String>) -> (u16, Value) {
    (
        400,
        json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}),
    )
}

/// PagerDuty: validates one event and applies it to `incidents`.
pub(crate) fn pagerduty(
    incidents: &mut BTreeMap<String, Incident>,
    routing_key: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let Some(Value::Object(event)) = body else {
        return invalid(vec!["Event object is not valid JSON".into()]);
    };
    fn text(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|s| !s.trim().is_empty())
    }
    let mut errors = Vec::new();
    match text(event.get("routing_key")) {
        None => errors.push("'routing_key' is missing or blank".to_owned()),
        Some(key) if key.len() != 32 || key != routing_key => {
            errors.push("Invalid routing key".to_owned())
        }
        Some(_) => {}
    }
    let action = text(event.get("event_action"));
    match action {
        None => errors.push("'event_action' is missing or blank".to_owned()),
        Some("trigger" | "acknowledge" | "resolve") => {}
        Some(_) => errors
            .push("'event_action' is invalid (must be trigger, acknowledge or resolve)".to_owned()),
    }
    let dedup_key = match event.get("dedup_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if !k.is_empty() && k.chars().count() <= 255 => Some(k.clone()),
        Some(_) => {
            errors.push("'dedup_key' must be a string of at most 255 characters".to_owned());
            None
        }
    };
    if matches!(action, Some("acknowledge" | "resolve")) && dedup_key.is_none() {
        errors.push("'dedup_key' is required to acknowledge or resolve".to_owned());
    }
    let mut trigger = None;
    if action == Some("trigger") {
        match event.get("payload") {
            Some(Value::Object(payload)) => {
                match text(payload.get("summary")) {
                    None => errors.push("'payload.summary' is missing or blank".to_owned()),
                    Some(s) if s.chars().count() > 1024 => {
                        errors.push("'payload.summary' is longer than 1024 characters".to_owned())
                    }
                    Some(_) => {}
                }
                if text(payload.get("source")).is_none() {
                    errors.push("'payload.source' is missing or blank".to_owned());
                }
                match text(payload.get("severity")) {
                    Some("critical" | "error" | "warning" | "info") => {}
                    _ => errors.push(
                        "'payload.severity' is invalid (must be critical, error, warning or info)"
                            .to_owned(),
                    ),
                }
                if payload.get("custom_details").is_some_and(|d| !d.is_object() && !d.is_string()) {
                    errors.push("'payload.custom_details' must be an object".to_owned());
                }
                trigger = Some((
                    text(payload.get("summary")).unwrap_or_default().to_owned(),
                    text(payload.get("severity")).unwrap_or_default().to_owned(),
                ));
            }
            _ => errors.push("'payload' is missing or not an object".to_owned()),
        }
    }
    for list in ["images", "links"] {
        if event.get(list).is_some_and(|v| !v.is_array()) {
            errors.push(format!("'{list}' must be an array"));
        }
    }
    if !errors.is_empty() {
        return invalid(errors);
    }
    let key = dedup_key.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let open = incidents.get(&key).is_some_and(|i| i.status != "resolved");
    match (action, trigger) {
        (Some("trigger"), Some((summary, severity))) => {
            if open {
                if let Some(i) = incidents.get_mut(&key) {
                    i.triggers += 1;
                }
            } else {
                incidents.insert(
                    key.clone(),
                    Incident {
                        dedup_key: key.clone(),
                        status: "triggered".into(),
                        summary,
                        severity,
                        triggers: 1,
                    },
                );
            }
        }
        (Some(action), _) if open => {
            if let Some(i) = incidents.get_mut(&key) {
                i.status = if action == "resolve" { "resolved" } else { "acknowledged" }.into();
            }
        }
        // An acknowledge or resolve for no open alert is accepted and dropped.
        _ => {}
    }
    (202, json!({"status": "success", "message": "Event processed", "dedup_key": key}))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sandboxroutingkey0123456789abcde";

    #[test]
    fn slack_takes_text_or_blocks_as_json_only() {
        assert_eq!(slack(true, Some("application/json"), br#"{"text":"hi"}"#), (200, "ok"));
        assert_eq!(
            slack(true, Some("application/json"), br#"{"blocks":[{"type":"section"}]}"#),
            (200, "ok")
        );
        assert_eq!(slack(true, Some("application/json"), br#"{"text":""}"#), (400, "no_text"));
        assert_eq!(
            slack(true, Some("application/json"), br#"{"blocks":[{}]}"#),
            (400, "invalid_blocks")
        );
        assert_eq!(slack(true, Some("text/plain"), br#"{"text":"hi"}"#), (400, "invalid_payload"));
        assert_eq!(slack(true, Some("application/json"), b"[1]"), (400, "invalid_payload"));
        assert_eq!(
            slack(false, Some("application/json"), br#"{"text":"hi"}"#),
            (404, "no_service")
        );
    }

    #[test]
    fn pagerduty_validates_events_and_keeps_alerts_by_dedup_key() {
        let mut incidents = BTreeMap::new();
        let trigger = json!({"routing_key": KEY, "event_action": "trigger", "dedup_key": "k",
            "payload": {"summary": "down", "source": "sync-monitor", "severity": "critical"}});
        assert_eq!(pagerduty(&mut incidents, KEY, Some(&trigger)).0, 202);
        assert_eq!(pagerduty(&mut incidents, KEY, Some(&trigger)).0, 202);
        assert_eq!(incidents["k"].triggers, 2);
        let resolve = json!({"routing_key": KEY, "event_action": "resolve", "dedup_key": "k"});
        assert_eq!(pagerduty(&mut incidents, KEY, Some(&resolve)).1["dedup_key"], "k");
        assert_eq!(incidents["k"].status, "resolved");
        let bad = json!({"routing_key": "short", "event_action": "trigger",
            "payload": {"summary": "x", "source": "s", "severity": "fatal"}});
        let (status, body) = pagerduty(&mut incidents, KEY, Some(&bad));
        assert_eq!((status, body["status"].as_str()), (400, Some("invalid event")));
        assert_eq!(body["errors"].as_array().unwrap().len(), 2, "{body}");
        let no_key = json!({"routing_key": KEY, "event_action": "resolve"});
        assert_eq!(pagerduty(&mut incidents, KEY, Some(&no_key)).0, 400);
    }
}
