//! The rate-limit fault: a token bucket per credential, answering 429 with `Retry-After`.
//!
//! Real providers limit each API key to so many requests per window. [`RateLimitFault`] makes
//! a simulator do the same: every credential the simulator sees (Channel3's and Subtotal's
//! `x-api-key`, Violet's `X-Violet-App-Id`, else `Authorization` or `X-Violet-Token`) has its
//! own bucket of `burst` tokens, refilled at `per_second` (on tokio's clock, so a test with a
//! paused clock sees it refill as time advances). A request that finds its bucket empty is
//! answered `429` with the provider's error body and `Retry-After` = the seconds until the
//! next token, rounded up (at least 1); it is counted in
//! [`Stats::rate_limited`](crate::Stats::rate_limited) and never reaches the handler.
//!
//! ```
//! use connhealth_testkit::RateLimitFault;
//!
//! let r: RateLimitFault = "50/s".parse().unwrap();
//! assert_eq!((r.per_second, r.burst), (50.0, 50));
//! let r = "600/min".parse::<RateLimitFault>().unwrap().with_burst(5);
//! assert_eq!((r.per_second, r.burst), (10.0, 5));
//! assert!("fast".parse::<RateLimitFault>().is_err());
//! ```

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use axum::http::HeaderMap;
use tokio::time::Instant;

/// A token bucket per credential: `burst` tokens, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitFault {
    /// Tokens added per second (requests per second sustained).
    pub per_second: f64,
    /// Bucket size: how many requests may arrive at once after a quiet spell (at least 1).
    pub burst: u32,
}

impl RateLimitFault {
    /// `per_second` requests per second, with a burst of one second's worth (at least 1).
    pub fn per_second(per_second: f64) -> Self {
        RateLimitFault {
            per_second,
            burst: (per_second.floor() as u32).max(1),
        }
    }

    /// The same rate with a bucket of `burst` tokens (at least 1).
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }
}

impl fmt::Display for RateLimitFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s (burst {})", self.per_second, self.burst)
    }
}

/// Parses `N/s`, `N/min` or `N/h` (N a positive number); the burst is one second's worth.
impl FromStr for RateLimitFault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("invalid rate limit `{s}`: expected N/s, N/min or N/h");
        let (n, unit) = s.trim().split_once('/').ok_or_else(err)?;
        let n: f64 = n.trim().parse().map_err(|_| err())?;
        if !(n.is_finite() && n > 0.0) {
            return Err(err());
        }
        let secs = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" => 1.0,
            "min" | "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        Ok(RateLimitFault::per_second(n / secs))
    }
}

/// The credential a request is counted under.
pub(crate) fn credential(headers: &HeaderMap) -> String {
    for name in [
        "x-api-key",
        "x-violet-app-id",
        "authorization",
        "x-violet-token",
    ] {
        if let Some(v) = headers.get(name) {
            return format!("{name}:{}", String::from_utf8_lossy(v.as_bytes()));
        }
    }
    "anonymous".to_owned()
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of one simulator (inside [`Faults`](crate::Faults)).
#[derive(Debug, Default)]
pub(crate) struct Buckets {
    pub(crate) limit: Option<RateLimitFault>,
    buckets: HashMap<String, Bucket>,
}

impl Buckets {
    pub(crate) fn set(&mut self, limit: Option<RateLimitFault>) {
        self.limit = limit;
        self.buckets.clear();
    }

    /// Take a token for `key` at `now`: `Ok` when one was there, else the `Retry-After`
    /// (whole seconds until the next token, at least 1).
    pub(crate) fn take(&mut self, key: String, now: Instant) -> Result<(), u64> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let burst = f64::from(limit.burst.max(1));
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * limit.per_second).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - b.tokens) / limit.per_second.max(f64::MIN_POSITIVE);
        let secs = Duration::from_secs_f64(wait.min(1e9)).as_secs_f64().ceil() as u64;
        Err(secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert_eq!("50/s".parse(), Ok(RateLimitFault::per_second(50.0)));
        assert_eq!(
            " 120 / MIN "
                .parse::<RateLimitFault>()
                .map(|r| r.per_second),
            Ok(2.0)
        );
        assert_eq!("3600/h".parse::<RateLimitFault>().map(|r| r.burst), Ok(1));
        for bad in ["", "50", "0/s", "-1/s", "x/s", "5/day", "inf/s"] {
            assert!(bad.parse::<RateLimitFault>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bucket_refills_and_retry_after_rounds_up() {
        let mut b = Buckets::default();
        b.set(Some(RateLimitFault::per_second(2.0).with_burst(2)));
        let t0 = Instant::now();
        assert_eq!(b.take("k".into(), t0), Ok(()));
        assert_eq!(b.take("k".into(), t0), Ok(()));
        // Empty: the next token is 0.5 s away, said as 1 s.
        assert_eq!(b.take("k".into(), t0), Err(1));
        // Another key has its own bucket.
        assert_eq!(b.take("other".into(), t0), Ok(()));
        assert_eq!(b.take("k".into(), t0 + Duration::from_millis(500)), Ok(()));
        assert_eq!(b.take("k".into(), t0 + Duration::from_millis(500)), Err(1));
        // A slow bucket says how many whole seconds.
        b.set(Some(RateLimitFault::per_second(0.25).with_burst(1)));
        assert_eq!(b.take("k".into(), t0), Ok(()));
        assert_eq!(b.take("k".into(), t0 + Duration::from_millis(100)), Err(4));
    }
}
