//! Violet's login shares the provider's request budget with its reports (one `HttpClient` per
//! provider), against the simulator's rate-limit fault, on tokio's paused clock.

use std::time::Duration;

use connhealth_core::{Outcome, Provider, RefreshHint, Secret};
use connhealth_testkit::violet::LOGIN;
use connhealth_testkit::{RateLimitFault, VioletSim};
use connhealth_violet::Violet;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn login_reports_and_refreshes_share_one_budget() {
    let sim = VioletSim::start_generated(6, 2).await.unwrap();
    // Violet counts by app id: one bucket for login and reports alike.
    sim.faults()
        .set_rate_limit(Some(RateLimitFault::per_second(2.0).with_burst(2)));
    let p = Violet::builder()
        .base_url(sim.base_url())
        .app_id(sim.app_id())
        .app_secret(Secret::new(sim.app_secret()))
        .username(sim.username())
        .password(Secret::new(sim.password()))
        .without_timers()
        .rate_limit("2/s".parse().unwrap())
        .build()
        .unwrap();
    let ids: Vec<String> = sim
        .merchant_ids()
        .into_iter()
        .take(4)
        .map(|id| id.to_string())
        .collect();
    let start = Instant::now();
    let fetched = p.fetch().await;
    assert_eq!(
        fetched.outcome(),
        Outcome::Ok,
        "{:?}",
        fetched.errors.first()
    );
    for id in &ids {
        p.refresh(id, RefreshHint::default())
            .await
            .expect("refresh");
    }
    let took = start.elapsed();
    let requests = sim.stats().total_requests();
    assert!(sim.stats().requests(LOGIN) >= 1);
    assert!(requests >= 6, "{requests}");
    assert_eq!(
        sim.stats().rate_limited(),
        0,
        "{:?}",
        sim.stats().requests_by_route()
    );
    // A burst of 2, then one every 500 ms, login included.
    let floor = Duration::from_millis((requests - 2) * 500);
    assert!(
        took >= floor - Duration::from_millis(10),
        "{took:?} < {floor:?}"
    );
    assert_eq!(p.http_stats().unwrap().configured_rate(), Some(2.0));
}
