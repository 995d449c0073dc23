//! When and how long to wait before trying a request again.

use crate::abiquo::backoff::Backoff;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Capped exponential backoff with jitter, for transient failures (5xx, 429, timeouts,
/// dropped connections).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first one included (1 = never retry).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial: Duration,
    /// Growth per retry.
    pub factor: f64,
    /// Upper bound of a single delay.
    pub max_delay: Duration,
    /// Upper bound on a server's `Retry-After`, so a confused server cannot stall the run.
    pub max_retry_after: Duration,
    /// Time one request may take, its retries included: no retry starts past it, and the
    /// last attempt's timeout is cut to what is left.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial: Duration::from_millis(200),
            factor: 2.0,
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            budget: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.initial,
            factor: self.factor,
            max: self.max_delay,
        }
    }

    /// The un-jittered delay before retry number `retry` (0-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        self.backoff().delay(retry)
    }

    /// Delay before retry number `retry`: the jittered [`Self::ceiling`] (uniform in
    /// [ceiling/2, ceiling]). A server's `Retry-After` wins when given (capped).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_retry_after);
        }
        self.backoff().jittered(retry)
    }
}

/// A retry about to happen, so the operator hears about an API that does not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryNotice {
    /// `GET /api/cloud/virtualmachines` (no query: it never carries secrets, but it is long).
    pub request: String,
    /// Why the last attempt failed: `HTTP 503`, `no answer within 30s`, `connection refused`.
    pub reason: String,
    /// This retry's number, from 1.
    pub retry: u32,
    /// Retries allowed at most.
    pub of: u32,
    pub delay: Duration,
}

/// Who hears about retries (the command layer prints them on stderr).
#[derive(Clone)]
pub struct RetryObserver(pub Arc<dyn Fn(&RetryNotice) + Send + Sync>);

impl fmt::Debug for RetryObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RetryObserver")
    }
}

/// Parses a `Retry-After` header given in seconds. HTTP dates are rare for APIs; for them the
/// caller falls back to its own backoff.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial: Duration::from_millis(100),
            factor: 2.0,
            max_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(5),
            budget: Duration::from_secs(60),
        };
        assert_eq!(p.ceiling(0), Duration::from_millis(100));
        assert_eq!(p.ceiling(1), Duration::from_millis(200));
        assert_eq!(p.ceiling(3), Duration::from_millis(800));
        assert_eq!(p.ceiling(4), Duration::from_secs(1));
        assert_eq!(p.ceiling(60), Duration::from_secs(1));
    }

    /// The ceilings as computed before retries shared the one backoff.
    #[test]
    fn default_ceilings_keep_their_exact_figures() {
        let p = RetryPolicy::default();
        let got: Vec<u128> = (0..9).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(
            got,
            [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(p.ceiling(u32::MAX), p.max_delay);
    }

    #[test]
    fn jittered_delay_stays_between_half_and_full_ceiling() {
        let p = RetryPolicy::default();
        for retry in 0..8 {
            let c = p.ceiling(retry);
            for _ in 0..50 {
                let d = p.delay(retry, None);
                assert!(
                    d >= c / 2 && d <= c,
                    "retry {retry}: {d:?} vs ceiling {c:?}"
                );
            }
        }
    }

    #[test]
    fn jitter_actually_varies() {
        let p = RetryPolicy::default();
        let delays: std::collections::BTreeSet<_> = (0..40).map(|_| p.delay(5, None)).collect();
        assert!(delays.len() > 1);
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3600))),
            p.max_retry_after
        );
    }

    #[test]
    fn retry_after_seconds_parse_and_dates_do_not() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
