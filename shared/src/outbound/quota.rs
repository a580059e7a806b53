//! A share of an external system's API quota, for background work (bulk loads, drift
//! reconciliation) that must never starve live webhooks and pushes.
//!
//! The budget learns the quota from the system's answers: HubSpot's
//! `X-HubSpot-RateLimit-Max` / `-Remaining` / `-Interval-Milliseconds`, or the common
//! `X-RateLimit-Limit` / `-Remaining` / `-Reset` (seconds), and from 429s with `Retry-After`.
//! Background work asks [`QuotaBudget::wait_turn`] before each request: while the window's
//! remaining requests are above the reserve (`max × (1 − share)`) it goes on; at the reserve it
//! pauses until the window ends, and resumes by itself. The reserve stays for live traffic,
//! which never waits on the budget.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use reqwest::header::HeaderMap;
use tokio_util::sync::CancellationToken;

/// What the latest answer said of the window.
#[derive(Clone, Copy, Debug)]
struct Seen {
    max: u64,
    remaining: u64,
    interval: Duration,
    /// When the current window is thought to end.
    ends: Instant,
}

/// A share of one system's quota. Share it (`Arc`) between the requests it should govern.
#[derive(Debug)]
pub struct QuotaBudget {
    share: f64,
    seen: Mutex<Option<Seen>>,
    /// Paused by a 429 until then.
    refused_until: Mutex<Option<Instant>>,
}

fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

impl QuotaBudget {
    /// `share` of the quota (0 < share ≤ 1) may be spent by the work this budget governs.
    /// The share in the variable `name` (`default` when unset): above 0 and at most 1.
    pub fn share_from_env(name: &str, default: f64) -> Result<f64, crate::config::ConfigError> {
        let share: f64 = crate::config::var_parsed(name, default)?;
        if !(share > 0.0 && share <= 1.0) {
            return Err(crate::config::ConfigError::Invalid {
                name: name.into(),
                reason: "must be above 0 and at most 1".into(),
            });
        }
        Ok(share)
    }

    pub fn new(share: f64) -> Self {
        Self {
            share: share.clamp(0.01, 1.0),
            seen: Mutex::new(None),
            refused_until: Mutex::new(None),
        }
    }

    /// Requests of a window kept for live traffic.
    fn reserve(&self, max: u64) -> u64 {
        ((max as f64) * (1.0 - self.share)).ceil() as u64
    }

    /// Learns from an answer's rate-limit headers.
    pub fn observe(&self, headers: &HeaderMap) {
        let (max, remaining, interval) = if let (Some(max), Some(remaining)) = (
            number(headers, "x-hubspot-ratelimit-max"),
            number(headers, "x-hubspot-ratelimit-remaining"),
        ) {
            let interval = number(headers, "x-hubspot-ratelimit-interval-milliseconds")
                .map_or(Duration::from_secs(10), Duration::from_millis);
            (max, remaining, interval)
        } else if let (Some(max), Some(remaining)) =
            (number(headers, "x-ratelimit-limit"), number(headers, "x-ratelimit-remaining"))
        {
            let reset = number(headers, "x-ratelimit-reset")
                .map_or(Duration::from_secs(10), Duration::from_secs);
            (max, remaining, reset)
        } else {
            return;
        };
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let ends = match *seen {
            // Still the same window: more requests used, its end unchanged.
            Some(s) if remaining <= s.remaining && now < s.ends => s.ends,
            // A fresh window (the count went up) or the first answer: it ends at most one
            // interval from now.
            _ => now + interval,
        };
        *seen = Some(Seen { max, remaining, interval, ends });
    }

    /// A 429: pause background work for `retry_after` (or one window).
    pub fn refused(&self, retry_after: Option<Duration>) {
        let interval = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::from_secs(1), |s| s.interval);
        let until = Instant::now() + retry_after.unwrap_or(interval);
        *self.refused_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    /// How long background work should wait before its next request (`None`: go).
    pub fn pause(&self) -> Option<Duration> {
        let now = Instant::now();
        if let Some(until) = *self.refused_until.lock().unwrap_or_else(|p| p.into_inner())
            && until > now
        {
            return Some(until - now);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let s = (*seen)?;
        if now >= s.ends {
            // The window is over: the next answer tells the new one.
            *seen = None;
            return None;
        }
        if s.remaining <= self.reserve(s.max) {
            return Some(s.ends - now);
        }
        // Count this request before its answer arrives, so concurrent work cannot overshoot.
        *seen = Some(Seen { remaining: s.remaining - 1, ..s });
        None
    }

    /// Waits until background work may send its next request (or until `shutdown`); returns
    /// how long it waited.
    pub async fn wait_turn(&self, shutdown: &CancellationToken) -> Duration {
        let started = Instant::now();
        while let Some(wait) = self.pause() {
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                "quota budget spent for this window; pausing background work"
            );
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderName, HeaderValue};

    use super::*;

    fn hubspot(max: u64, remaining: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-hubspot-ratelimit-max", max),
            ("x-hubspot-ratelimit-remaining", remaining),
            ("x-hubspot-ratelimit-interval-milliseconds", 10_000),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_str(&v.to_string()).unwrap());
        }
        h
    }

    #[test]
    fn background_work_stops_at_the_reserve_and_a_new_window_frees_it() {
        let budget = QuotaBudget::new(0.5);
        assert_eq!(budget.pause(), None, "nothing known yet: go");
        budget.observe(&hubspot(100, 60));
        assert_eq!(budget.pause(), None, "60 left, 50 reserved: go");
        budget.observe(&hubspot(100, 50));
        let wait = budget.pause().expect("at the reserve: pause");
        assert!(wait <= Duration::from_secs(10) && wait > Duration::from_secs(9), "{wait:?}");
        budget.observe(&hubspot(100, 99));
        assert_eq!(budget.pause(), None, "a fresh window: go");
    }

    #[test]
    fn a_429_pauses_for_its_retry_after() {
        let budget = QuotaBudget::new(1.0);
        budget.refused(Some(Duration::from_secs(2)));
        let wait = budget.pause().unwrap();
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(2));
    }
}
