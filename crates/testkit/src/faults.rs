//! Fault injection ([`Faults`], [`FaultRule`], [`Fault`]) and request statistics ([`Stats`]).
//!
//! Every simulator owns one [`Faults`] and one [`Stats`]; both are cheap handles (`Arc`
//! inside) that a test may clone and keep. Rules are consulted for every request, after the
//! request has been counted in [`Stats`] and before authentication or any handler runs.
//!
//! # How rules combine
//!
//! * A rule matches a request when its `route` is `None` or equals the request's route name
//!   (see the `*` constants of each simulator module) **and** its `path_contains` is `None` or
//!   a substring of the raw (still percent-encoded) path and query.
//! * All matching latency rules ([`Fault::Latency`], [`Fault::LatencyBetween`]) fire and their
//!   delays add up; then the **first** matching response rule (any other variant), in push
//!   order, fires. So a latency rule composes with a response rule.
//! * A rule with `times: Some(n)` fires for the first `n` requests it matches and is then
//!   removed; `times: None` fires until [`Faults::clear`].
//!
//! [`Fault::Status`], [`Fault::Hang`] and [`Fault::MalformedJson`] answer without running the
//! handler (so before authentication). The other response faults run the real handler and then
//! rewrite its response, whatever its status.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::ratelimit::{Buckets, RateLimitFault};

/// Route name under which requests that match no route of a simulator are counted.
pub const UNMATCHED: &str = "unmatched";

/// What a [`FaultRule`] does to the requests it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Add a fixed latency (on tokio's clock) before the request is answered.
    Latency(Duration),
    /// Add a latency drawn uniformly from `[a, b]` (on tokio's clock).
    LatencyBetween(Duration, Duration),
    /// Answer with this status code, an optional `Retry-After` header value, and an optional
    /// body (default: the provider's usual error body for that status).
    Status {
        /// HTTP status code, e.g. 429, 500, 502, 503. An invalid code is answered as 500.
        status: u16,
        /// Value of the `Retry-After` header, e.g. `"2"`; `None` sends no such header.
        retry_after: Option<String>,
        /// The exact response body; `None` uses the provider's error shape.
        body: Option<String>,
    },
    /// Never answer: the request stays pending until the client gives up or the simulator
    /// shuts down (then it is answered with 503).
    Hang,
    /// Send the real status, headers and the first half of the real body, then abort the
    /// connection (the body stream yields an error).
    DropMidBody,
    /// Answer 200 with `Content-Type: application/json` and a body that is not JSON.
    MalformedJson,
    /// Answer with the real status and the real JSON cut in half (valid HTTP, invalid JSON).
    TruncatedBody,
    /// Answer with a valid JSON body of at least this many bytes, streamed in chunks: the real
    /// response with a large padding string field (`"x_padding"`) added to the top-level
    /// object (or to the first object of a top-level array; otherwise leading whitespace).
    OversizedBody(usize),
    /// The real response with enum values (statuses, states, categories...) replaced by
    /// never-seen ones (`"quantum_entangled"`, upper-cased where the provider upper-cases).
    UnknownEnums,
    /// The real response with optional / nullable fields removed.
    MissingOptionals,
    /// The real response with every list emptied (a top-level list becomes `[]`).
    EmptyArrays,
    /// The real response with every list of objects duplicated (`[a, b]` becomes
    /// `[a, b, a, b]`).
    DuplicateIds,
}

impl Fault {
    /// Whether this is a latency fault (which composes with one response fault).
    pub fn is_latency(&self) -> bool {
        matches!(self, Fault::Latency(_) | Fault::LatencyBetween(..))
    }

    /// `Status` 429 with `Retry-After` set to `retry_after_secs` seconds.
    pub fn too_many_requests(retry_after_secs: u64) -> Fault {
        Fault::Status {
            status: 429,
            retry_after: Some(retry_after_secs.to_string()),
            body: None,
        }
    }

    /// `Status` with the given code, no `Retry-After` and the provider's error body.
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            retry_after: None,
            body: None,
        }
    }
}

/// Error returned when a fault specification cannot be parsed (see [`Fault`]'s `FromStr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFaultError(String);

impl fmt::Display for ParseFaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseFaultError {}

/// Parses `KIND[:ARG[:ARG2]]`, as used by the `connhealth-sim` binary's `--fault`:
///
/// | spec | fault |
/// | --- | --- |
/// | `latency:MS` | `Latency(MS ms)` |
/// | `latency-between:A-B` | `LatencyBetween(A ms, B ms)` |
/// | `status:CODE[:RETRY_AFTER]` | `Status` (429 and 503 default to `Retry-After: 1`) |
/// | `hang`, `drop-mid-body`, `malformed-json`, `truncated-body` | the unit variants |
/// | `oversized-body:BYTES` | `OversizedBody(BYTES)` |
/// | `unknown-enums`, `missing-optionals`, `empty-arrays`, `duplicate-ids` | the unit variants |
///
/// Kinds are case-insensitive; `_` and `-` are interchangeable.
impl FromStr for Fault {
    type Err = ParseFaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ':');
        let kind = parts
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .replace('_', "-");
        let arg = parts.next().map(str::trim);
        let arg2 = parts.next().map(str::trim);
        let err = |m: &str| ParseFaultError(format!("invalid fault `{s}`: {m}"));
        let num = |a: Option<&str>, what: &str| -> Result<u64, ParseFaultError> {
            a.ok_or_else(|| err(&format!("missing {what}")))?
                .parse::<u64>()
                .map_err(|_| err(&format!("{what} must be a non-negative integer")))
        };
        let fault = match kind.as_str() {
            "latency" => Fault::Latency(Duration::from_millis(num(arg, "milliseconds")?)),
            "latency-between" => {
                let a = arg.ok_or_else(|| err("missing range A-B (milliseconds)"))?;
                let (lo, hi) = a
                    .split_once('-')
                    .ok_or_else(|| err("range must look like 100-500"))?;
                let lo = num(Some(lo), "range start")?;
                let hi = num(Some(hi), "range end")?;
                if lo > hi {
                    return Err(err("range start is after range end"));
                }
                Fault::LatencyBetween(Duration::from_millis(lo), Duration::from_millis(hi))
            }
            "status" => {
                let code = num(arg, "status code")?;
                if !(100..=999).contains(&code) {
                    return Err(err("status code must be within 100..=999"));
                }
                let retry_after = match arg2 {
                    Some(r) => Some(r.to_string()),
                    None if code == 429 || code == 503 => Some("1".to_string()),
                    None => None,
                };
                Fault::Status {
                    status: code as u16,
                    retry_after,
                    body: None,
                }
            }
            "hang" => Fault::Hang,
            "drop-mid-body" => Fault::DropMidBody,
            "malformed-json" => Fault::MalformedJson,
            "truncated-body" => Fault::TruncatedBody,
            "oversized-body" => Fault::OversizedBody(num(arg, "byte count")? as usize),
            "unknown-enums" => Fault::UnknownEnums,
            "missing-optionals" => Fault::MissingOptionals,
            "empty-arrays" => Fault::EmptyArrays,
            "duplicate-ids" => Fault::DuplicateIds,
            other => return Err(err(&format!("unknown kind `{other}`"))),
        };
        Ok(fault)
    }
}

/// One fault-injection rule. See the [module docs](self) for how rules match and combine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// Route name to match (e.g. `"list_connections"`); `None` matches every route,
    /// including requests that match no route.
    pub route: Option<String>,
    /// Only requests whose raw path and query (as received, percent-encoded) contain this.
    pub path_contains: Option<String>,
    /// What to do.
    pub fault: Fault,
    /// Fire for the first N matching requests, then stop; `None` = until cleared.
    pub times: Option<u32>,
}

impl FaultRule {
    /// A rule for every route, firing until cleared.
    pub fn new(fault: Fault) -> Self {
        FaultRule {
            route: None,
            path_contains: None,
            fault,
            times: None,
        }
    }

    /// Restrict the rule to one route name.
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Restrict the rule to requests whose raw path and query contain `needle`.
    pub fn path_contains(mut self, needle: impl Into<String>) -> Self {
        self.path_contains = Some(needle.into());
        self
    }

    /// Fire for the first `n` matching requests only.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, route: &str, raw: &str) -> bool {
        let route_ok = !matches!(self.route.as_deref(), Some(r) if r != route);
        let path_ok = !matches!(self.path_contains.as_deref(), Some(n) if !raw.contains(n));
        route_ok && path_ok
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The active fault rules of one simulator. Cloning gives another handle to the same rules.
///
/// Besides the rules it holds the simulator's [`RateLimitFault`] (none by default), which
/// [`Faults::clear`] leaves in place.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<FaultRule>>>,
    buckets: Arc<Mutex<Buckets>>,
}

/// What the fault rules decided for one request.
#[derive(Debug, Default)]
pub(crate) struct Selected {
    pub(crate) latency: Duration,
    pub(crate) response: Option<Fault>,
}

impl Faults {
    /// Add a rule (after the existing ones).
    pub fn push(&self, rule: FaultRule) {
        if rule.times == Some(0) {
            return;
        }
        lock(&self.rules).push(rule);
    }

    /// Convenience: `fault` on every request to `route`, until cleared.
    pub fn on(&self, route: &str, fault: Fault) {
        self.push(FaultRule::new(fault).route(route));
    }

    /// Convenience: `fault` on every request to every route, until cleared.
    pub fn on_all(&self, fault: Fault) {
        self.push(FaultRule::new(fault));
    }

    /// Limit every credential to a token bucket (`None`: no limit, the default). Buckets start
    /// full; setting a limit again empties nothing but starts every bucket full again.
    pub fn set_rate_limit(&self, limit: Option<RateLimitFault>) {
        lock(&self.buckets).set(limit);
    }

    /// The rate limit in force, if any.
    pub fn rate_limit(&self) -> Option<RateLimitFault> {
        lock(&self.buckets).limit
    }

    /// Take a token from `credential`'s bucket now; `Err(retry_after_secs)` when it is empty.
    pub(crate) fn take_token(&self, credential: String) -> Result<(), u64> {
        lock(&self.buckets).take(credential, tokio::time::Instant::now())
    }

    /// Remove every rule (the rate limit stays; see [`Faults::set_rate_limit`]).
    pub fn clear(&self) {
        lock(&self.rules).clear();
    }

    /// A snapshot of the rules still active (a rule with `times` left shows its remaining count).
    pub fn rules(&self) -> Vec<FaultRule> {
        lock(&self.rules).clone()
    }

    /// Decide what happens to one request, consuming `times` of the rules that fire.
    pub(crate) fn select(&self, route: &str, raw: &str) -> Selected {
        let mut rules = lock(&self.rules);
        if rules.is_empty() {
            return Selected::default();
        }
        let mut sel = Selected::default();
        for rule in rules.iter_mut() {
            if !rule.matches(route, raw) {
                continue;
            }
            let fires = match &rule.fault {
                Fault::Latency(d) => {
                    sel.latency += *d;
                    true
                }
                Fault::LatencyBetween(a, b) => {
                    let (lo, hi) = if a <= b { (*a, *b) } else { (*b, *a) };
                    let span = (hi - lo).as_nanos().min(u128::from(u64::MAX)) as u64;
                    let extra = if span == 0 {
                        0
                    } else {
                        fastrand::u64(0..=span)
                    };
                    sel.latency += lo + Duration::from_nanos(extra);
                    true
                }
                other => {
                    if sel.response.is_none() {
                        sel.response = Some(other.clone());
                        true
                    } else {
                        false
                    }
                }
            };
            if fires {
                if let Some(t) = rule.times.as_mut() {
                    *t = t.saturating_sub(1);
                }
            }
        }
        rules.retain(|r| r.times != Some(0));
        sel
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct RouteCounters {
    requests: u64,
    in_flight: u64,
    max_in_flight: u64,
}

#[derive(Debug, Default)]
struct StatsInner {
    routes: Mutex<HashMap<String, RouteCounters>>,
    raw_paths: Mutex<Vec<String>>,
    /// When each of `raw_paths` arrived, on tokio's clock (paused clocks included).
    arrivals: Mutex<Vec<tokio::time::Instant>>,
    total: AtomicU64,
    tcp_connections: AtomicU64,
    rate_limited: AtomicU64,
}

/// Request statistics of one simulator. Cloning gives another handle to the same counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    inner: Arc<StatsInner>,
}

/// Decrements the in-flight counter of a route when dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    stats: Stats,
    route: &'static str,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut routes = lock(&self.stats.inner.routes);
        if let Some(c) = routes.get_mut(self.route) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
    }
}

impl Stats {
    /// Requests received on `route` (every request, including rejected and faulted ones).
    pub fn requests(&self, route: &str) -> u64 {
        lock(&self.inner.routes)
            .get(route)
            .map_or(0, |c| c.requests)
    }

    /// Requests received on all routes (including [`UNMATCHED`] ones).
    pub fn total_requests(&self) -> u64 {
        self.inner.total.load(Ordering::SeqCst)
    }

    /// The highest number of requests to `route` that were being handled at the same time
    /// (from arrival until the response head was ready, injected latency included).
    pub fn max_in_flight(&self, route: &str) -> u64 {
        lock(&self.inner.routes)
            .get(route)
            .map_or(0, |c| c.max_in_flight)
    }

    /// Requests currently being handled on `route`.
    pub fn in_flight(&self, route: &str) -> u64 {
        lock(&self.inner.routes)
            .get(route)
            .map_or(0, |c| c.in_flight)
    }

    /// Request counts per route name.
    pub fn requests_by_route(&self) -> BTreeMap<String, u64> {
        lock(&self.inner.routes)
            .iter()
            .filter(|(_, c)| c.requests > 0)
            .map(|(r, c)| (r.clone(), c.requests))
            .collect()
    }

    /// Every request's raw path and query exactly as received (still percent-encoded), in
    /// arrival order.
    pub fn raw_paths(&self) -> Vec<String> {
        lock(&self.inner.raw_paths).clone()
    }

    /// Every request's raw path and query with the instant it arrived on **tokio's** clock
    /// (so a test on a paused clock can measure how often something was asked), in arrival
    /// order.
    pub fn timed_paths(&self) -> Vec<(tokio::time::Instant, String)> {
        let paths = lock(&self.inner.raw_paths).clone();
        let arrivals = lock(&self.inner.arrivals).clone();
        arrivals.into_iter().zip(paths).collect()
    }

    /// Requests answered 429 by the rate-limit fault ([`Faults::set_rate_limit`]).
    pub fn rate_limited(&self) -> u64 {
        self.inner.rate_limited.load(Ordering::SeqCst)
    }

    pub(crate) fn count_rate_limited(&self) {
        self.inner.rate_limited.fetch_add(1, Ordering::SeqCst);
    }

    /// TCP connections accepted by the simulator's listener.
    pub fn tcp_connections(&self) -> u64 {
        self.inner.tcp_connections.load(Ordering::SeqCst)
    }

    /// Reset every counter and the raw path log to zero (requests in flight stay counted as in
    /// flight).
    pub fn reset(&self) {
        {
            let mut routes = lock(&self.inner.routes);
            for c in routes.values_mut() {
                c.requests = 0;
                c.max_in_flight = c.in_flight;
            }
        }
        lock(&self.inner.raw_paths).clear();
        lock(&self.inner.arrivals).clear();
        self.inner.total.store(0, Ordering::SeqCst);
        self.inner.tcp_connections.store(0, Ordering::SeqCst);
        self.inner.rate_limited.store(0, Ordering::SeqCst);
    }

    pub(crate) fn begin(&self, route: &'static str, raw: &str) -> InFlight {
        self.inner.total.fetch_add(1, Ordering::SeqCst);
        {
            // One lock order (paths, then arrivals) so the two lists stay in step.
            let mut paths = lock(&self.inner.raw_paths);
            paths.push(raw.to_string());
            lock(&self.inner.arrivals).push(tokio::time::Instant::now());
        }
        {
            let mut routes = lock(&self.inner.routes);
            let c = routes.entry(route.to_string()).or_default();
            c.requests += 1;
            c.in_flight += 1;
            c.max_in_flight = c.max_in_flight.max(c.in_flight);
        }
        InFlight {
            stats: self.clone(),
            route,
        }
    }

    pub(crate) fn tcp_accepted(&self) {
        self.inner.tcp_connections.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        assert_eq!(
            "latency:250".parse::<Fault>(),
            Ok(Fault::Latency(Duration::from_millis(250)))
        );
        assert_eq!(
            "Latency_Between:1-3".parse::<Fault>(),
            Ok(Fault::LatencyBetween(
                Duration::from_millis(1),
                Duration::from_millis(3)
            ))
        );
        assert_eq!(
            "status:429".parse::<Fault>(),
            Ok(Fault::too_many_requests(1))
        );
        assert_eq!("status:500".parse::<Fault>(), Ok(Fault::status(500)));
        assert_eq!(
            "oversized-body:10".parse::<Fault>(),
            Ok(Fault::OversizedBody(10))
        );
        assert_eq!("hang".parse::<Fault>(), Ok(Fault::Hang));
        assert!("nope".parse::<Fault>().is_err());
        assert!("status:abc".parse::<Fault>().is_err());
        assert!("latency-between:5-1".parse::<Fault>().is_err());
    }

    #[test]
    fn times_and_composition() {
        let f = Faults::default();
        f.push(FaultRule::new(Fault::status(500)).route("a").times(2));
        f.push(FaultRule::new(Fault::Latency(Duration::from_millis(5))).times(1));
        f.push(FaultRule::new(Fault::Hang).route("a").path_contains("x"));
        let s = f.select("a", "/x");
        assert_eq!(s.latency, Duration::from_millis(5));
        assert_eq!(s.response, Some(Fault::status(500)));
        let s = f.select("a", "/y");
        assert_eq!(s.latency, Duration::ZERO);
        assert_eq!(s.response, Some(Fault::status(500)));
        let s = f.select("a", "/x");
        assert_eq!(s.response, Some(Fault::Hang));
        let s = f.select("a", "/y");
        assert_eq!(s.response, None);
        assert_eq!(f.rules().len(), 1);
        f.clear();
        assert!(f.rules().is_empty());
    }

    #[test]
    fn stats_count_and_reset() {
        let s = Stats::default();
        {
            let _a = s.begin("r", "/a");
            let _b = s.begin("r", "/b");
            assert_eq!(s.in_flight("r"), 2);
        }
        assert_eq!(s.requests("r"), 2);
        assert_eq!(s.max_in_flight("r"), 2);
        assert_eq!(s.in_flight("r"), 0);
        assert_eq!(s.raw_paths(), vec!["/a", "/b"]);
        s.reset();
        assert_eq!(s.total_requests(), 0);
        assert_eq!(s.max_in_flight("r"), 0);
        assert!(s.raw_paths().is_empty());
    }
}
