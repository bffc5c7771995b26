//! Rate budgets and adaptive pacing: how fast one provider is asked.
//!
//! Every [`HttpClient`](crate::http::HttpClient) (one per provider, shared by its clones, so by
//! polls, `Provider::refresh` and actions alike) owns one rate control, consulted before
//! **every attempt**, retries included:
//!
//! 1. **The shared pause.** A 429 or 503 carrying `Retry-After` pauses the whole provider until
//!    then (capped at the retry policy's `max_retry_after`): every caller, not only the one
//!    that was told, waits. One pause, not one per request.
//! 2. **The adaptive pacing rate** (AIMD on a rate, not on in-flight requests), driven by 429s
//!    (a 503 means "overloaded", not "too fast": it pauses but leaves the rate). Until the
//!    first 429 nothing is paced. The first one seeds the rate from what the provider
//!    accepted in the last second (a 429 when nothing was accepted in the last second, since
//!    the last pause, switches pacing off again: there is no rate to learn from a provider
//!    that refuses everything, only its pauses to honour), then the rate grows multiplicatively (slow start: +ln 2
//!    per success, so it roughly doubles every second) until the next 429, and from then on
//!    additively (+max(0.5, 2 % of the rate) requests/s per second) and multiplicatively
//!    down (× 0.85) on each later 429. A 429 without a new pause decreases from the smaller of
//!    the rate and what was accepted over the last second, when that window (which restarts
//!    at the end of every pause) is at least half a second long; a 429 that starts a pause
//!    decreases from the rate itself. Only one decrease per round: a throttled answer to a request sent
//!    before the last decrease does not decrease again. The rate grows only while it is what
//!    holds callers back, so a quiet provider does not drift to an unbounded rate. Requests
//!    are spaced evenly (no burst). Why a rate and not a concurrency window: providers limit
//!    requests per key per window; on a fast network one request in flight already exceeds
//!    50 requests/s, so bounding in-flight requests cannot meet a rate limit.
//! 3. **The configured budget** (`rate_limit = "600/min"`, [`RateLimit`]): a GCRA limiter
//!    (`governor`) on tokio's clock, allowing bursts of [`RateLimit::burst`] (at most 5, and
//!    at most one second's worth) and otherwise spreading requests evenly. The adaptive rate
//!    still applies under it, for a budget that turns out too generous.
//!
//! ```
//! use connhealth_core::http::RateLimit;
//!
//! let r: RateLimit = "600/min".parse().unwrap();
//! assert_eq!(r.requests_per_second(), 10.0);
//! assert_eq!(r.burst(), 5);
//! assert_eq!(r.to_string(), "600/min");
//! assert_eq!("2/s".parse::<RateLimit>().unwrap().burst(), 2);
//! assert!("600 per minute".parse::<RateLimit>().is_err());
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::http::HttpStats;

/// The largest burst a [`RateLimit`] allows.
pub const MAX_BURST: u32 = 5;

/// A request budget: `count` requests per `N/s`, `N/min` or `N/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    count: NonZeroU32,
    per_secs: u32,
}

impl RateLimit {
    /// `count` requests per second.
    pub fn per_second(count: NonZeroU32) -> Self {
        RateLimit { count, per_secs: 1 }
    }

    /// `count` requests per minute.
    pub fn per_minute(count: NonZeroU32) -> Self {
        RateLimit {
            count,
            per_secs: 60,
        }
    }

    /// `count` requests per hour.
    pub fn per_hour(count: NonZeroU32) -> Self {
        RateLimit {
            count,
            per_secs: 3600,
        }
    }

    /// The budget in requests per second.
    pub fn requests_per_second(&self) -> f64 {
        f64::from(self.count.get()) / f64::from(self.per_secs)
    }

    /// How many requests may go at once after a quiet spell: one second's worth, at least 1
    /// and at most [`MAX_BURST`] (providers enforce limits over short windows).
    pub fn burst(&self) -> u32 {
        (self.requests_per_second().floor() as u32).clamp(1, MAX_BURST)
    }

    /// The even spacing between two requests.
    pub fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.per_secs)) / self.count.get()
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per_secs {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Why a [`RateLimit`] could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseRateLimitError(String);

impl fmt::Display for ParseRateLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a rate limit; expected N/s, N/min or N/h with N a whole number from 1 to {}, e.g. \"600/min\"",
            self.0,
            u32::MAX
        )
    }
}

impl std::error::Error for ParseRateLimitError {}

/// Parses `N/s`, `N/min` or `N/h` (spaces around the parts allowed; the unit is
/// case-insensitive).
impl FromStr for RateLimit {
    type Err = ParseRateLimitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseRateLimitError(s.to_owned());
        let (n, unit) = s.split_once('/').ok_or_else(err)?;
        let n = n.trim();
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let count = n
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(err)?;
        match unit.trim().to_ascii_lowercase().as_str() {
            "s" => Ok(RateLimit::per_second(count)),
            "min" => Ok(RateLimit::per_minute(count)),
            "h" => Ok(RateLimit::per_hour(count)),
            _ => Err(err()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// governor's clock on tokio's time, so that a paused test clock drives the budget too.
#[derive(Debug, Clone)]
struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.origin.elapsed())
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

#[derive(Debug)]
struct Budget {
    limit: RateLimit,
    limiter: Limiter,
    clock: TokioClock,
}

/// The multiplicative decrease of the adaptive rate.
const BETA: f64 = 0.85;
/// The lowest adaptive rate (one request a minute).
const MIN_RATE: f64 = 1.0 / 60.0;
/// The highest adaptive rate (beyond it pacing is pointless).
const MAX_RATE: f64 = 100_000.0;
/// The window over which accepted requests are counted.
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Adaptive {
    /// Requests per second; `None` until the first 429/503.
    rate: Option<f64>,
    slow_start: bool,
    next_slot: Option<Instant>,
    paused_until: Option<Instant>,
    last_decrease: Option<Instant>,
    /// Where the current observation window may start (after the last pause).
    window_start: Instant,
    /// When the requests answered in the last [`WINDOW`] were answered.
    ok: VecDeque<Instant>,
}

/// The per-provider rate control (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct RateControl {
    budget: Option<Budget>,
    state: Mutex<Adaptive>,
    stats: Arc<HttpStats>,
}

/// What [`RateControl::acquire`] did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Permit {
    /// The adaptive rate held this attempt back.
    paced: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn interval(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate.clamp(MIN_RATE, MAX_RATE))
}

impl RateControl {
    pub(crate) fn new(limit: Option<RateLimit>, stats: Arc<HttpStats>) -> Self {
        let now = Instant::now();
        let budget = limit.map(|limit| {
            let clock = TokioClock { origin: now };
            let burst = NonZeroU32::new(limit.burst()).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(limit.period())
                .unwrap_or_else(|| Quota::per_second(limit.count))
                .allow_burst(burst);
            Budget {
                limit,
                limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
                clock,
            }
        });
        stats.set_configured(limit.map(|l| l.requests_per_second()));
        stats.set_limit(limit.map(|l| l.requests_per_second()));
        RateControl {
            budget,
            state: Mutex::new(Adaptive {
                rate: None,
                slow_start: false,
                next_slot: None,
                paused_until: None,
                last_decrease: None,
                window_start: now,
                ok: VecDeque::new(),
            }),
            stats,
        }
    }

    pub(crate) fn budget(&self) -> Option<RateLimit> {
        self.budget.as_ref().map(|b| b.limit)
    }

    /// The adaptive rate, if one is in force.
    #[cfg(test)]
    pub(crate) fn adaptive_rate(&self) -> Option<f64> {
        lock(&self.state).rate
    }

    /// Wait until this attempt may go: the shared pause, then the adaptive rate, then the
    /// configured budget.
    pub(crate) async fn acquire(&self) -> Permit {
        let mut paced = false;
        loop {
            let (until, is_pause) = {
                let mut s = lock(&self.state);
                let now = Instant::now();
                match s.paused_until {
                    Some(p) if p > now => (Some(p), true),
                    _ => match s.rate {
                        None => (None, false),
                        Some(rate) => {
                            let slot = s.next_slot.map_or(now, |n| n.max(now));
                            s.next_slot = Some(slot + interval(rate));
                            ((slot > now).then_some(slot), false)
                        }
                    },
                }
            };
            let Some(until) = until else { break };
            tokio::time::sleep_until(until).await;
            if !is_pause {
                paced = true;
                // A pause that began while this attempt waited for its slot still applies.
                let paused = lock(&self.state)
                    .paused_until
                    .is_some_and(|p| p > Instant::now());
                if !paused {
                    break;
                }
            }
        }
        if let Some(b) = &self.budget {
            while let Err(not_until) = b.limiter.check() {
                tokio::time::sleep(not_until.wait_time_from(b.clock.now())).await;
            }
        }
        Permit { paced }
    }

    /// Successes accepted in the current window, as requests per second (`None` when the
    /// window is too short to say).
    fn observed(s: &Adaptive, now: Instant) -> Option<f64> {
        let from = s.window_start.max(now.checked_sub(WINDOW).unwrap_or(now));
        let span = now.saturating_duration_since(from);
        if span < WINDOW / 2 {
            return None;
        }
        let n = s.ok.iter().filter(|t| **t >= from).count();
        Some(n as f64 / span.as_secs_f64())
    }

    fn prune(s: &mut Adaptive, now: Instant) {
        while s
            .ok
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > WINDOW)
        {
            s.ok.pop_front();
        }
    }

    /// A 2xx (or any answer that was not a throttle) arrived.
    pub(crate) fn on_success(&self, permit: Permit) {
        let mut s = lock(&self.state);
        let now = Instant::now();
        s.ok.push_back(now);
        Self::prune(&mut s, now);
        if permit.paced {
            if let Some(r) = s.rate {
                let grown = if s.slow_start {
                    r + std::f64::consts::LN_2
                } else {
                    r + (0.02 * r).max(0.5) / r
                };
                s.rate = Some(grown.min(MAX_RATE));
            }
        }
        self.publish(&s, now);
    }

    /// A 429 or 503 arrived for an attempt that went at `sent_at`.
    pub(crate) fn on_throttle(
        &self,
        status: u16,
        sent_at: Instant,
        retry_after: Option<Duration>,
        max_pause: Duration,
    ) {
        let counter = if status == 429 {
            &self.stats.rate_limited
        } else {
            &self.stats.unavailable
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut s = lock(&self.state);
        let now = Instant::now();
        Self::prune(&mut s, now);
        // Accepted in the last second, since the last pause ended (before this 429's pause).
        let accepted = s.ok.iter().filter(|t| **t >= s.window_start).count();
        if let Some(ra) = retry_after {
            let until = now + ra.min(max_pause);
            let current = s.paused_until.filter(|p| *p > now).unwrap_or(now);
            if until > current {
                self.stats
                    .paused_ns
                    .fetch_add((until - current).as_nanos() as u64, Ordering::Relaxed);
                s.paused_until = Some(until);
                s.window_start = until;
                s.next_slot = Some(s.next_slot.map_or(until, |n| n.max(until)));
            }
        }
        if status != 429 || s.last_decrease.is_some_and(|t| sent_at <= t) {
            // A 503 says "overloaded", not "too fast": it pauses (above) but leaves the rate.
            // A 429 to an attempt sent before the last decrease belongs to that round.
            self.publish(&s, now);
            return;
        }
        if accepted == 0 {
            // The provider accepts nothing at all: there is no rate to learn, and pacing would
            // only queue every caller behind each pause. Honour its pauses, pace nothing, and
            // learn again from the first 429 after it accepts requests.
            s.rate = None;
            s.slow_start = false;
            s.last_decrease = Some(now);
            self.publish(&s, now);
            return;
        }
        let observed = Self::observed(&s, now);
        let next = match s.rate {
            None => {
                // Seed from what was accepted in the last second; slow start from there.
                s.slow_start = true;
                (s.ok.len() as f64).max(1.0)
            }
            Some(r) => {
                s.slow_start = false;
                BETA * observed.map_or(r, |o| o.min(r))
            }
        };
        s.rate = Some(next.clamp(MIN_RATE, MAX_RATE));
        s.last_decrease = Some(now);
        tracing::debug!(
            rate = next,
            status,
            "throttled by the provider; pacing requests"
        );
        self.publish(&s, now);
    }

    fn publish(&self, s: &Adaptive, now: Instant) {
        let limit = match (s.rate, self.budget.as_ref()) {
            (Some(r), Some(b)) => Some(r.min(b.limit.requests_per_second())),
            (r, b) => r.or(b.map(|b| b.limit.requests_per_second())),
        };
        self.stats.set_limit(limit);
        let in_window =
            s.ok.iter()
                .filter(|t| now.saturating_duration_since(**t) <= WINDOW)
                .count();
        self.stats.set_rate(in_window as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for (s, rps, burst, shown) in [
            ("600/min", 10.0, 5, "600/min"),
            (" 50 / S ", 50.0, 5, "50/s"),
            ("3/s", 3.0, 3, "3/s"),
            ("30/min", 0.5, 1, "30/min"),
            ("7200/h", 2.0, 2, "7200/h"),
        ] {
            let r: RateLimit = s.parse().unwrap();
            assert_eq!(r.requests_per_second(), rps, "{s}");
            assert_eq!(r.burst(), burst, "{s}");
            assert_eq!(r.to_string(), shown);
            assert_eq!(shown.parse::<RateLimit>(), Ok(r));
        }
        for bad in [
            "",
            "600",
            "0/s",
            "-1/s",
            "1.5/s",
            "+3/s",
            "x/min",
            "5/day",
            "5/",
            "/s",
            "99999999999/s",
        ] {
            let e = bad.parse::<RateLimit>().unwrap_err().to_string();
            assert!(e.contains("expected N/s, N/min or N/h"), "{bad}: {e}");
        }
        assert_eq!(
            RateLimit::per_minute(NonZeroU32::new(600).unwrap()).period(),
            Duration::from_millis(100)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_spreads_requests_evenly_after_a_small_burst() {
        let stats = Arc::new(HttpStats::default());
        let c = RateControl::new(Some("10/s".parse().unwrap()), stats.clone());
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..25 {
            c.acquire().await;
            at.push(start.elapsed());
        }
        // 5 at once, then one every 100 ms: the 25th goes at 2 s.
        assert!(
            at[..5].iter().all(|t| *t < Duration::from_millis(1)),
            "{at:?}"
        );
        assert!(at[5] >= Duration::from_millis(99), "{at:?}");
        assert!(at[24] >= Duration::from_millis(1990), "{at:?}");
        assert!(at[24] <= Duration::from_millis(2010), "{at:?}");
        assert_eq!(stats.configured_rate(), Some(10.0));
        assert_eq!(stats.current_limit(), Some(10.0));
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_seed_decrease_once_per_round_and_pause_everyone() {
        let stats = Arc::new(HttpStats::default());
        let c = RateControl::new(None, stats.clone());
        assert_eq!(stats.current_limit(), None);
        for _ in 0..20 {
            let p = c.acquire().await;
            c.on_success(p);
        }
        let sent = Instant::now();
        c.on_throttle(
            429,
            sent,
            Some(Duration::from_secs(2)),
            Duration::from_secs(60),
        );
        // Seeded from the 20 accepted in the last second.
        assert_eq!(c.adaptive_rate(), Some(20.0));
        // A second 429 for an attempt sent before the decrease does not decrease again.
        c.on_throttle(
            429,
            sent,
            Some(Duration::from_secs(1)),
            Duration::from_secs(60),
        );
        assert_eq!(c.adaptive_rate(), Some(20.0));
        assert_eq!(stats.rate_limited(), 2);
        assert_eq!(stats.paused(), Duration::from_secs(2));
        // Everyone waits for the pause.
        let start = Instant::now();
        let p = c.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(2));
        c.on_success(p);
        // A 503 pauses (when it says how long) but leaves the rate alone.
        tokio::time::advance(Duration::from_millis(10)).await;
        c.on_throttle(503, Instant::now(), None, Duration::from_secs(60));
        assert_eq!(c.adaptive_rate(), Some(20.0));
        assert_eq!(stats.unavailable(), 1);
        assert_eq!(stats.paused(), Duration::from_secs(2));
        // A 429 to a later attempt decreases (x 0.85).
        c.on_throttle(429, Instant::now(), None, Duration::from_secs(60));
        let r = c.adaptive_rate().unwrap();
        assert!((r - 20.0 * BETA).abs() < 1e-9, "{r}");
        // A Retry-After beyond the cap pauses only for the cap.
        tokio::time::advance(Duration::from_millis(10)).await;
        c.on_throttle(
            429,
            Instant::now(),
            Some(Duration::from_secs(3600)),
            Duration::from_secs(5),
        );
        assert_eq!(stats.paused(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_that_accepts_nothing_is_paused_not_paced() {
        let stats = Arc::new(HttpStats::default());
        let c = RateControl::new(None, stats.clone());
        // Refused from the start: nothing to learn.
        c.on_throttle(
            429,
            Instant::now(),
            Some(Duration::from_secs(1)),
            Duration::from_secs(60),
        );
        assert_eq!(c.adaptive_rate(), None);
        assert_eq!(stats.current_limit(), None);
        // It accepts some, then refuses: paced from what it accepted.
        c.acquire().await;
        for _ in 0..4 {
            c.on_success(Permit { paced: false });
        }
        tokio::time::advance(Duration::from_millis(100)).await;
        c.on_throttle(
            429,
            Instant::now(),
            Some(Duration::from_secs(1)),
            Duration::from_secs(60),
        );
        assert_eq!(c.adaptive_rate(), Some(4.0));
        // A second later, after the pause, it still refuses everything: pacing is off again.
        tokio::time::advance(Duration::from_millis(1500)).await;
        c.on_throttle(
            429,
            Instant::now(),
            Some(Duration::from_secs(1)),
            Duration::from_secs(60),
        );
        assert_eq!(c.adaptive_rate(), None);
        assert_eq!(stats.rate_limited(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_grows_only_while_it_holds_callers_back() {
        let stats = Arc::new(HttpStats::default());
        let c = RateControl::new(None, stats.clone());
        c.on_success(c.acquire().await);
        c.on_throttle(429, Instant::now(), None, Duration::from_secs(60));
        assert_eq!(c.adaptive_rate(), Some(1.0));
        // Paced: slow start adds ln 2 per success (about doubling every second).
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let p = c.acquire().await;
            c.on_success(p);
        }
        let grown = c.adaptive_rate().unwrap();
        assert!(grown > 6.0, "{grown}");
        // Unpaced successes (callers slower than the rate) leave it alone.
        let p = Permit { paced: false };
        for _ in 0..100 {
            c.on_success(p);
        }
        assert_eq!(c.adaptive_rate(), Some(grown));
        assert_eq!(stats.current_limit(), Some(grown));
    }
}
