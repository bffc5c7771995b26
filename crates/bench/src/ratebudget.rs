//! Polling at fleet scale under a provider's rate limit (issue 22): one full Channel3 sweep
//! of 5,000 customers against a simulator that limits its API key to 50 requests/s (the
//! testkit's [`RateLimitFault`], a token bucket answering 429 with `Retry-After`).
//!
//! The figure is `sweep time ÷ (requests ÷ 50 s)`, where requests = what the simulator
//! received (merchant-list pages + one connection read per customer + any retries), and the
//! share of them answered 429:
//!
//! * **budget**: `rate_limit = "50/s"` configured (target ≤ 1.05, zero 429s);
//! * **adaptive**: nothing configured, the client finds the limit (target ≤ 1.3, ≤ 5 % 429s).
//!
//! Each run starts a fresh simulator (full buckets) and a fresh client (no pacing learned), so
//! the adaptive run includes its cold start. Behind `connhealth-rate-bench` (release build).
//!
//! A tiny run (a bucket of 200/s, 40 customers):
//!
//! ```
//! use connhealth_bench::ratebudget::{rate_bench_run, RateBenchOptions, RateMode};
//!
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! let opts = RateBenchOptions { customers: 40, rate: 200, ..RateBenchOptions::default() };
//! let run = rt.block_on(rate_bench_run(&opts, RateMode::Budget)).unwrap();
//! assert_eq!(run.rate_limited, 0);
//! assert!(run.requests >= 41);
//! ```

use std::io;
use std::num::NonZeroU32;
use std::time::Instant;

use connhealth_channel3::Channel3;
use connhealth_core::http::RateLimit;
use connhealth_core::{Outcome, Provider, Secret};
use connhealth_testkit::RateLimitFault;
use serde::Serialize;

use crate::sims::{SimSpec, Sims};
use crate::ProviderKind;

/// What to run.
#[derive(Debug, Clone)]
pub struct RateBenchOptions {
    /// Channel3 customers (default 5,000).
    pub customers: usize,
    /// The simulator's limit per API key, requests per second (default 50).
    pub rate: u32,
    /// The simulator's bucket size (default 10: a fifth of a second's worth; providers
    /// enforce limits over short windows).
    pub burst: u32,
    /// The adapter's fan-out bound (default 32, connhealth's default).
    pub concurrency: usize,
    /// Data seed.
    pub seed: u64,
}

impl Default for RateBenchOptions {
    fn default() -> Self {
        RateBenchOptions {
            customers: 5_000,
            rate: 50,
            burst: 10,
            concurrency: 32,
            seed: 42,
        }
    }
}

/// With or without a configured budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateMode {
    /// `rate_limit` set to the simulator's rate.
    Budget,
    /// No `rate_limit`: adaptive pacing only.
    Adaptive,
}

impl RateMode {
    /// The targets: (ratio, share of 429s).
    pub fn targets(self) -> (f64, f64) {
        match self {
            RateMode::Budget => (1.05, 0.0),
            RateMode::Adaptive => (1.3, 0.05),
        }
    }
}

/// One sweep's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RateRun {
    /// Budget or adaptive.
    pub mode: RateMode,
    /// Customers swept.
    pub customers: usize,
    /// The simulator's rate (requests/s) and bucket size.
    pub sim_rate: u32,
    /// The simulator's bucket size.
    pub sim_burst: u32,
    /// Requests the simulator received.
    pub requests: u64,
    /// Of which answered 429 by the rate-limit fault.
    pub rate_limited: u64,
    /// The sweep's wall time, seconds.
    pub sweep_secs: f64,
    /// `requests ÷ rate`, seconds.
    pub ideal_secs: f64,
    /// `sweep_secs ÷ ideal_secs`.
    pub ratio: f64,
    /// `rate_limited ÷ requests`.
    pub share_429: f64,
    /// The pacing limit in force at the end (requests/s), if any.
    pub limit_at_end: Option<f64>,
    /// Time the client spent paused by `Retry-After`, seconds.
    pub paused_secs: f64,
    /// The 1-minute load average before and after.
    pub load_before: Option<f64>,
    /// The 1-minute load average after.
    pub load_after: Option<f64>,
}

fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One full sweep from cold (fresh simulator, fresh client).
pub async fn rate_bench_run(opts: &RateBenchOptions, mode: RateMode) -> io::Result<RateRun> {
    let sims = Sims::start(&SimSpec::uniform(
        opts.customers,
        &[ProviderKind::Channel3],
        opts.seed,
    ))?;
    sims.channel3.faults().set_rate_limit(Some(
        RateLimitFault::per_second(f64::from(opts.rate)).with_burst(opts.burst),
    ));
    let mut b = Channel3::builder()
        .base_url(sims.channel3.base_url())
        .api_key(Secret::new(sims.channel3.api_key()))
        .concurrency(opts.concurrency);
    if mode == RateMode::Budget {
        let rate = NonZeroU32::new(opts.rate).unwrap_or(NonZeroU32::MIN);
        b = b.rate_limit(RateLimit::per_second(rate));
    }
    let p = b.build().map_err(|e| io::Error::other(e.to_string()))?;
    let load_before = load_avg();
    let start = Instant::now();
    let fetched = p.fetch().await;
    let took = start.elapsed();
    if fetched.outcome() != Outcome::Ok {
        return Err(io::Error::other(format!(
            "the sweep was not ok: {:?}",
            fetched.errors.first().map(|e| e.to_string())
        )));
    }
    let stats = sims.channel3.stats();
    let requests = stats.total_requests();
    let rate_limited = stats.rate_limited();
    let ideal = requests as f64 / f64::from(opts.rate);
    let http = p.client().http().stats();
    Ok(RateRun {
        mode,
        customers: opts.customers,
        sim_rate: opts.rate,
        sim_burst: opts.burst,
        requests,
        rate_limited,
        sweep_secs: took.as_secs_f64(),
        ideal_secs: ideal,
        ratio: took.as_secs_f64() / ideal.max(f64::MIN_POSITIVE),
        share_429: rate_limited as f64 / requests.max(1) as f64,
        limit_at_end: http.current_limit(),
        paused_secs: http.paused().as_secs_f64(),
        load_before,
        load_after: load_avg(),
    })
}

/// A markdown table of runs, with each figure as a ratio to its target.
pub fn table(runs: &[RateRun]) -> String {
    let mut out = String::from(
        "| mode | requests | 429s (share) | sweep s | ideal s | ratio | ratio / target | limit at end | paused s | load 1m |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let (target, _) = r.mode.targets();
        let load = match (r.load_before, r.load_after) {
            (Some(a), Some(b)) => format!("{a:.1} → {b:.1}"),
            _ => "n/a".into(),
        };
        out.push_str(&format!(
            "| {:?} | {} | {} ({:.2} %) | {:.1} | {:.1} | {:.3} | {:.3} | {} | {:.1} | {} |\n",
            r.mode,
            r.requests,
            r.rate_limited,
            100.0 * r.share_429,
            r.sweep_secs,
            r.ideal_secs,
            r.ratio,
            r.ratio / target,
            r.limit_at_end
                .map_or("none".into(), |l| format!("{l:.1}/s")),
            r.paused_secs,
            load,
        ));
    }
    out
}
