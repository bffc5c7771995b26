//! Subtotal's token mint and PATCH (the `disconnect` action) share the provider's request
//! budget with its polls (one `HttpClient` per provider), against the simulator's rate-limit
//! fault, on tokio's paused clock.

use std::time::Duration;

use connhealth_core::{ActionKind, Outcome, Provider, Secret};
use connhealth_subtotal::Subtotal;
use connhealth_testkit::subtotal::{CREATE_TOKEN, UPDATE_CONNECTION};
use connhealth_testkit::{RateLimitFault, SubtotalSim};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn polls_token_mints_and_actions_share_one_budget() {
    let sim = SubtotalSim::start_generated(3, 7).await.unwrap();
    sim.faults()
        .set_rate_limit(Some(RateLimitFault::per_second(2.0).with_burst(2)));
    let p = Subtotal::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .customers(sim.customer_ids())
        .without_timers()
        .rate_limit("2/s".parse().unwrap())
        .build()
        .unwrap();
    let start = Instant::now();
    let fetched = p.fetch().await;
    assert_eq!(
        fetched.outcome(),
        Outcome::Ok,
        "{:?}",
        fetched.errors.first()
    );
    let customer = p.customers()[0].clone();
    let id = sim.connections_of(&customer)[0].connection_id.clone();
    assert!(sim.set_status(&id, "active"));
    let conn = p
        .fetch()
        .await
        .connections
        .into_iter()
        .find(|c| c.provider_connection_id.as_deref() == Some(id.as_str()))
        .unwrap();
    let out = p.act(&conn, ActionKind::Disconnect).await.unwrap();
    assert!(out.ok, "{}", out.message);
    let took = start.elapsed();
    assert_eq!(sim.stats().requests(CREATE_TOKEN), 1);
    assert_eq!(sim.stats().requests(UPDATE_CONNECTION), 1);
    let requests = sim.stats().total_requests();
    assert_eq!(
        sim.stats().rate_limited(),
        0,
        "{:?}",
        sim.stats().requests_by_route()
    );
    // A burst of 2, then one every 500 ms: the mint and the PATCH waited their turn too.
    let floor = Duration::from_millis((requests - 2) * 500);
    assert!(
        took >= floor - Duration::from_millis(10),
        "{took:?} < {floor:?}"
    );
    assert_eq!(p.http_stats().unwrap().requests(), requests);
}
