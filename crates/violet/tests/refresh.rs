//! `Provider::refresh` against the testkit's Violet simulator over loopback HTTP.

use std::time::Duration;

use connhealth_core::{Provider, RefreshHint, Secret};
use connhealth_testkit::violet::CONNECTION_HEALTH_MERCHANT;
use connhealth_testkit::VioletSim;
use connhealth_violet::{Violet, RECOMPUTE_INTERVAL};

fn violet(sim: &VioletSim) -> Violet {
    Violet::builder()
        .base_url(sim.base_url())
        .app_id(sim.app_id())
        .app_secret(Secret::new(sim.app_secret()))
        .username(sim.username())
        .password(Secret::new(sim.password()))
        // Paused clock: no client timers.
        .without_timers()
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn refresh_recomputes_a_merchant_at_most_once_per_15_minutes() {
    let sim = VioletSim::start_generated(5, 21).await.unwrap();
    let v = violet(&sim);
    let ids = sim.merchant_ids();
    let (a, b) = (ids[0].to_string(), ids[1].to_string());

    assert_eq!(v.recompute_allowed_in(&a), None);
    let got = v.refresh(&a, RefreshHint::Customer).await.unwrap();
    assert_eq!(v.recompute_allowed_in(&a), Some(RECOMPUTE_INTERVAL));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, format!("violet:{a}"));
    assert_eq!(sim.health_refreshes(), 1, "the first refresh recomputes");

    // Within the window: the cached report, no second recompute.
    v.refresh(&a, RefreshHint::Customer).await.unwrap();
    tokio::time::advance(RECOMPUTE_INTERVAL - Duration::from_secs(1)).await;
    v.refresh(&a, RefreshHint::Customer).await.unwrap();
    assert_eq!(v.recompute_allowed_in(&a), Some(Duration::from_secs(1)));
    assert_eq!(sim.health_refreshes(), 1);
    assert_eq!(sim.stats().requests(CONNECTION_HEALTH_MERCHANT), 3);

    // Another merchant has its own window.
    v.refresh(&b, RefreshHint::Customer).await.unwrap();
    assert_eq!(sim.health_refreshes(), 2);

    // After 15 minutes: recomputed again.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(v.recompute_allowed_in(&a), None);
    v.refresh(&a, RefreshHint::Customer).await.unwrap();
    assert_eq!(sim.health_refreshes(), 3);
    assert_eq!(sim.stats().requests(CONNECTION_HEALTH_MERCHANT), 5);
}

#[tokio::test]
async fn refresh_shows_a_change_the_poll_would_show() {
    let sim = VioletSim::start_generated(3, 22).await.unwrap();
    let v = violet(&sim);
    let id = sim.merchant_ids()[0];
    assert!(sim.set_merchant_status(id, "DISABLED"));
    let got = v
        .refresh(&id.to_string(), RefreshHint::Customer)
        .await
        .unwrap();
    assert_eq!(got[0].provider_status, "DISABLED");
    assert!(
        got[0]
            .problems
            .iter()
            .any(|p| p.code == "merchant_disabled"),
        "{:?}",
        got[0].problems
    );
}

#[tokio::test]
async fn refresh_of_an_unknown_merchant_is_a_typed_error() {
    let sim = VioletSim::start_generated(3, 23).await.unwrap();
    let v = violet(&sim);
    let e = v
        .refresh("999999999", RefreshHint::Customer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), connhealth_core::ErrorKind::NotFound, "{e}");
    assert_eq!(e.customer_id(), Some("999999999"));
}
