//! Rate budgets and adaptive pacing of the Channel3 adapter against the simulator's
//! rate-limit fault (a token bucket per API key), over HTTP on loopback, on tokio's paused
//! clock: the simulator's buckets and the client's pacing both run on tokio's time.

use std::time::Duration;

use connhealth_channel3::{Channel3, Channel3Builder, Channel3Config};
use connhealth_core::http::RateLimit;
use connhealth_core::{Outcome, Provider, RefreshHint, Secret};
use connhealth_testkit::{Channel3Sim, RateLimitFault};
use tokio::time::Instant;

fn builder(sim: &Channel3Sim) -> Channel3Builder {
    Channel3::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .without_timers()
}

fn rate(s: &str) -> RateLimit {
    s.parse().unwrap()
}

/// With `rate_limit = "10/s"` a sweep of 48 customers (about 50 requests) takes at least
/// 4.5 s of tokio time, and the simulator's bucket of 10/s never answers 429.
#[tokio::test(start_paused = true)]
async fn a_budget_of_10_per_s_meets_a_bucket_of_10_per_s_without_a_429() {
    let sim = Channel3Sim::start_generated(48, 3).await.unwrap();
    sim.faults()
        .set_rate_limit(Some(RateLimitFault::per_second(10.0)));
    let p = builder(&sim).rate_limit(rate("10/s")).build().unwrap();
    let start = Instant::now();
    let fetched = p.fetch().await;
    let took = start.elapsed();
    assert_eq!(
        fetched.outcome(),
        Outcome::Ok,
        "{:?}",
        fetched.errors.first()
    );
    let requests = sim.stats().total_requests();
    assert!(requests >= 49, "{requests}");
    assert_eq!(sim.stats().rate_limited(), 0);
    // A burst of 5, then one every 100 ms.
    let floor = Duration::from_millis((requests - 5) * 100);
    assert!(
        took >= floor - Duration::from_millis(10),
        "{took:?} < {floor:?}"
    );
    let stats = p.client().http().stats();
    assert_eq!(stats.configured_rate(), Some(10.0));
    assert_eq!(stats.rate_limited(), 0);
}

/// Refreshes (webhooks, `POST /v1/refresh`) and polls share one budget: run together, their
/// requests still go at 5/s and the simulator's bucket of 5/s never answers 429.
#[tokio::test(start_paused = true)]
async fn refresh_and_poll_share_the_budget() {
    let sim = Channel3Sim::start_generated(20, 4).await.unwrap();
    sim.faults()
        .set_rate_limit(Some(RateLimitFault::per_second(5.0).with_burst(5)));
    let p = builder(&sim).rate_limit(rate("5/s")).build().unwrap();
    let ids: Vec<String> = sim.customer_ids().iter().take(10).cloned().collect();
    let start = Instant::now();
    let (fetched, refreshed) = tokio::join!(p.fetch(), async {
        let mut n = 0;
        for id in &ids {
            n += p
                .refresh(id, RefreshHint::default())
                .await
                .expect("refresh")
                .len();
        }
        n
    });
    let took = start.elapsed();
    assert_eq!(
        fetched.outcome(),
        Outcome::Ok,
        "{:?}",
        fetched.errors.first()
    );
    assert!(refreshed > 0);
    let requests = sim.stats().total_requests();
    assert!(requests >= 31, "{requests}");
    assert_eq!(sim.stats().rate_limited(), 0);
    let floor = Duration::from_millis((requests - 5) * 200);
    assert!(
        took >= floor - Duration::from_millis(10),
        "{took:?} < {floor:?}"
    );
}

/// With no budget configured, against a bucket of 20/s (burst 5), the adaptive pacing
/// converges: after a warm-up sweep, a second sweep of 600 customers gets at most 5 % of its
/// requests answered 429, takes at most 1.3 x the time the bucket needs, and the limit in
/// force dropped from none to about the bucket's rate.
#[tokio::test(start_paused = true)]
async fn without_a_budget_the_pacing_converges_on_the_bucket() {
    let sim = Channel3Sim::start_generated(600, 5).await.unwrap();
    sim.faults()
        .set_rate_limit(Some(RateLimitFault::per_second(20.0).with_burst(5)));
    let p = builder(&sim).build().unwrap();
    let http = p.client().http().clone();
    assert_eq!(http.current_limit(), None);
    let warm = p.fetch().await;
    assert_eq!(warm.outcome(), Outcome::Ok, "{:?}", warm.errors.first());
    assert!(http.stats().rate_limited() > 0, "the bucket was never hit");
    sim.stats().reset();
    let start = Instant::now();
    let fetched = p.fetch().await;
    let took = start.elapsed();
    assert_eq!(
        fetched.outcome(),
        Outcome::Ok,
        "{:?}",
        fetched.errors.first()
    );
    let requests = sim.stats().total_requests();
    let limited = sim.stats().rate_limited();
    assert!(
        limited as f64 <= 0.05 * requests as f64,
        "{limited} of {requests} answered 429"
    );
    let ideal = Duration::from_secs_f64(requests as f64 / 20.0);
    assert!(
        took.as_secs_f64() <= 1.3 * ideal.as_secs_f64(),
        "{took:?} vs the bucket's {ideal:?}"
    );
    let limit = http.current_limit().expect("a pacing limit in force");
    assert!((10.0..=30.0).contains(&limit), "{limit}");
    eprintln!(
        "second sweep: {requests} requests, {limited} answered 429, {took:?} ({:.3} x ideal), limit {limit:.1}/s",
        took.as_secs_f64() / ideal.as_secs_f64()
    );
}

/// The config key reaches the client; a bad value names the key.
#[test]
fn the_rate_limit_key_reaches_the_client() {
    let c: Channel3Config = serde_json::from_value(serde_json::json!({
        "kind": "channel3", "api_key_env": "K", "base_url": "http://127.0.0.1:9",
        "rate_limit": "600/min",
    }))
    .unwrap();
    let env = |n: &str| (n == "K").then(|| "c3_sk_x".to_owned());
    let p = Channel3Builder::from_config(&c, &env)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(p.client().http().configured_rate(), Some(10.0));
    let e = serde_json::from_value::<Channel3Config>(serde_json::json!({
        "kind": "channel3", "api_key_env": "K", "rate_limit": "lots",
    }))
    .unwrap_err();
    assert!(e.to_string().contains("expected N/s, N/min or N/h"), "{e}");
}
