//! The `refresh` action against the testkit's Violet simulator over loopback HTTP, on tokio's
//! paused clock for the 15-minute rule.

use std::time::Duration;

use connhealth_core::{ActionError, ActionKind, ErrorKind, Provider, RefreshHint, Secret, Status};
use connhealth_testkit::violet::CONNECTION_HEALTH_MERCHANT;
use connhealth_testkit::{Fault, FaultRule, VioletSim};
use connhealth_violet::{Violet, RECOMPUTE_INTERVAL};

fn violet(sim: &VioletSim) -> Violet {
    Violet::builder()
        .base_url(sim.base_url())
        .app_id(sim.app_id())
        .app_secret(Secret::new(sim.app_secret()))
        .username(sim.username())
        .password(Secret::new(sim.password()))
        .without_timers()
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn refresh_recomputes_then_refuses_for_15_minutes_sharing_the_webhook_window() {
    let sim = VioletSim::start_generated(3, 61).await.unwrap();
    let v = violet(&sim);
    let fetched = v.fetch().await;
    assert!(fetched.connections.len() >= 2);
    let conn = fetched.connections[0].clone();
    let merchant: i64 = conn.customer.id.parse().unwrap();
    let listed = v.actions(&conn);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, ActionKind::Refresh);
    assert!(!listed[0].destructive);

    // A change the cached report does not show yet: the recompute returns it.
    assert!(sim.set_merchant_status(merchant, "DISABLED"));
    let out = v.act(&conn, ActionKind::Refresh).await.unwrap();
    assert!(out.ok);
    assert_eq!(sim.health_refreshes(), 1);
    let got = out.connection.expect("the recomputed connection");
    assert_eq!(got.id, conn.id);
    assert_eq!(got.status, Status::Disconnected);

    // A second one 14:59 later: refused, nothing sent, retry_at 1 s ahead.
    tokio::time::advance(RECOMPUTE_INTERVAL - Duration::from_secs(1)).await;
    let sent = sim.stats().requests(CONNECTION_HEALTH_MERCHANT);
    let before = chrono::Utc::now();
    let e = v.act(&conn, ActionKind::Refresh).await.unwrap_err();
    let ActionError::RateLimited { retry_at, .. } = &e else {
        panic!("expected rate limited, got {e}");
    };
    let wait = (*retry_at - before).num_milliseconds();
    assert!((1000..=2000).contains(&wait), "retry_at {wait} ms ahead");
    assert!(e.to_string().contains("15 minutes"), "{e}");
    assert_eq!(sim.stats().requests(CONNECTION_HEALTH_MERCHANT), sent);

    // After the window: allowed again.
    tokio::time::advance(Duration::from_secs(1)).await;
    v.act(&conn, ActionKind::Refresh).await.unwrap();
    assert_eq!(sim.health_refreshes(), 2);

    // The webhook's targeted refresh used the same window: an action right after it is refused.
    let other = &fetched.connections[1];
    v.refresh(&other.customer.id, RefreshHint::Customer)
        .await
        .unwrap();
    assert_eq!(sim.health_refreshes(), 3);
    let e = v.act(other, ActionKind::Refresh).await.unwrap_err();
    assert!(e.retry_at().is_some(), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_recompute_is_a_typed_error_and_unsupported_kinds_send_nothing() {
    let sim = VioletSim::start_generated(2, 62).await.unwrap();
    let v = violet(&sim);
    let fetched = v.fetch().await;
    let conn = fetched.connections[0].clone();
    let e = v.act(&conn, ActionKind::Disconnect).await.unwrap_err();
    assert!(matches!(e, ActionError::Unsupported { .. }), "{e}");
    sim.faults()
        .push(FaultRule::new(Fault::status(503)).route(CONNECTION_HEALTH_MERCHANT));
    let e = v.act(&conn, ActionKind::Refresh).await.unwrap_err();
    let pe = e.provider_error().expect("provider error");
    assert_eq!(pe.provider(), "violet");
    assert_eq!(pe.kind(), ErrorKind::ServerError);
    assert!(
        pe.endpoint()
            .contains("/operations/connection_health/{merchant_id}"),
        "{pe}"
    );
}
