//! The rate-limit fault: a token bucket per credential, over real HTTP on loopback, on tokio's
//! paused clock (the buckets refill on tokio's clock).

use std::time::Duration;

use connhealth_testkit::{Channel3Sim, RateLimitFault, SubtotalSim, VioletSim};
use tokio::time::Instant;

const DOC: &str = "/v0/partner/merchants/cus_doc_example/connections";

async fn c3_get(c: &reqwest::Client, sim: &Channel3Sim, key: &str) -> reqwest::Response {
    c.get(format!("{}{DOC}", sim.base_url()))
        .header("x-api-key", key)
        .send()
        .await
        .expect("request")
}

fn retry_after(r: &reqwest::Response) -> Option<u64> {
    r.headers().get("retry-after")?.to_str().ok()?.parse().ok()
}

#[tokio::test(start_paused = true)]
async fn an_empty_bucket_answers_429_with_retry_after_per_key() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    sim.faults()
        .set_rate_limit(Some(RateLimitFault::per_second(2.0).with_burst(3)));
    let c = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(c3_get(&c, &sim, sim.api_key()).await.status().as_u16(), 200);
    }
    let r = c3_get(&c, &sim, sim.api_key()).await;
    assert_eq!(r.status().as_u16(), 429);
    // The next token is at most 0.5 s away: said as 1 s (whole seconds, rounded up).
    assert_eq!(retry_after(&r), Some(1));
    let body: serde_json::Value = r.json().await.expect("the provider's error body");
    assert_eq!(body["detail"], "Too Many Requests");
    // Another credential has a bucket of its own (it is refused by authentication, not 429).
    assert_eq!(c3_get(&c, &sim, "another-key").await.status().as_u16(), 403);
    assert_eq!(sim.stats().rate_limited(), 1);
    // Clearing the fault rules leaves the limit; removing it lets everything through.
    sim.faults().clear();
    assert_eq!(c3_get(&c, &sim, sim.api_key()).await.status().as_u16(), 429);
    sim.faults().set_rate_limit(None);
    assert_eq!(c3_get(&c, &sim, sim.api_key()).await.status().as_u16(), 200);
    assert_eq!(sim.stats().rate_limited(), 2);
    sim.stats().reset();
    assert_eq!(sim.stats().rate_limited(), 0);
}

/// A client that waits `Retry-After` whenever it is told to gets every answer, and the
/// bucket's rate bounds how fast: 30 requests at 5/s (burst 5) take at least 5 s.
#[tokio::test(start_paused = true)]
async fn a_client_honouring_retry_after_succeeds() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    sim.faults()
        .set_rate_limit(Some(RateLimitFault::per_second(5.0).with_burst(5)));
    let c = reqwest::Client::new();
    let start = Instant::now();
    let mut limited = 0;
    for _ in 0..30 {
        loop {
            let r = c3_get(&c, &sim, sim.api_key()).await;
            if r.status().as_u16() == 429 {
                limited += 1;
                let secs = retry_after(&r).expect("Retry-After on every 429");
                tokio::time::sleep(Duration::from_secs(secs)).await;
                continue;
            }
            assert_eq!(r.status().as_u16(), 200);
            break;
        }
    }
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(limited > 0);
    assert_eq!(sim.stats().rate_limited(), limited);
}

/// Violet counts by app id, Subtotal by `x-api-key`: the fault is the same for all three.
#[tokio::test(start_paused = true)]
async fn violet_and_subtotal_are_limited_per_credential_too() {
    let v = VioletSim::start_generated(2, 1).await.expect("violet");
    v.faults()
        .set_rate_limit(Some(RateLimitFault::per_second(1.0).with_burst(1)));
    let c = reqwest::Client::new();
    let login = || {
        c.post(format!("{}/login", v.base_url()))
            .header("x-violet-app-id", v.app_id().to_string())
            .header("x-violet-app-secret", v.app_secret())
            .json(&serde_json::json!({"username": "u", "password": "p"}))
            .send()
    };
    assert_ne!(login().await.unwrap().status().as_u16(), 429);
    let r = login().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(retry_after(&r), Some(1));
    assert_eq!(v.stats().rate_limited(), 1);

    let s = SubtotalSim::start_generated(2, 1).await.expect("subtotal");
    s.faults()
        .set_rate_limit(Some(RateLimitFault::per_second(0.5).with_burst(1)));
    let get = || {
        c.get(format!("{}/retailers", s.base_url()))
            .header("x-api-key", s.api_key())
            .send()
    };
    assert_eq!(get().await.unwrap().status().as_u16(), 200);
    let r = get().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(retry_after(&r), Some(2));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(get().await.unwrap().status().as_u16(), 200);
    assert_eq!(s.stats().rate_limited(), 1);
}
