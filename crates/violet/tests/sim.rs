//! Against the testkit's Violet simulator over loopback HTTP.

use std::time::Duration;

use connhealth_core::{Connection, ErrorKind, Provider, Secret, Status};
use connhealth_testkit::violet::{CONNECTION_HEALTH, CONNECTION_HEALTH_MERCHANT, LOGIN, REFRESH};
use connhealth_testkit::{Fault, FaultRule, VioletSim};
use connhealth_violet::{Violet, VioletBuilder};
use futures::future::join_all;
use futures::StreamExt;

fn builder(sim: &VioletSim) -> VioletBuilder {
    Violet::builder()
        .base_url(sim.base_url())
        .app_id(sim.app_id())
        .app_secret(Secret::new(sim.app_secret()))
        .username(sim.username())
        .password(Secret::new(sim.password()))
}

/// For paused-clock tests: no client timers (see the common brief).
fn paused_builder(sim: &VioletSim) -> VioletBuilder {
    builder(sim).without_timers()
}

fn sorted(mut v: Vec<Connection>) -> Vec<Connection> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    for c in &mut v {
        c.observed_at = chrono::DateTime::UNIX_EPOCH.into();
    }
    v
}

fn public_ids(sim: &VioletSim) -> Vec<i64> {
    sim.merchant_ids()
        .into_iter()
        .filter(|id| sim.merchant(*id).unwrap()["distribution_type"] == "PUBLIC")
        .collect()
}

#[tokio::test]
async fn login_then_report() {
    let sim = VioletSim::start_generated(60, 7).await.unwrap();
    let violet = builder(&sim).build().unwrap();
    let fetched = violet.fetch().await;
    assert!(fetched.errors.is_empty(), "{:?}", fetched.errors);
    assert_eq!(fetched.ok_batches, 1);
    let public = public_ids(&sim);
    assert!(public.contains(&123), "the documented example is PUBLIC");
    assert_eq!(fetched.connections.len(), 60 - public.len());
    assert!(fetched
        .connections
        .iter()
        .all(|c| c.provider == "violet" && c.id.starts_with("violet:")));
    assert_eq!(sim.logins(), 1);
    assert_eq!(sim.refreshes(), 0);
    assert_eq!(sim.stats().requests(CONNECTION_HEALTH), 1);
    let paths = sim.stats().raw_paths();
    assert!(
        paths.iter().any(
            |p| p.contains("/v1/operations/connection_health?app_id=10001&exclude_public=true")
        ),
        "{paths:?}"
    );
    // The generator's mix: every status class shows up, each explained.
    for c in &fetched.connections {
        assert_eq!(c.status, c.worst_reported());
        assert!(c.status.is_ok() || !c.problems.is_empty(), "{c:#?}");
        assert_eq!(c.customer.email, None);
    }
    for status in [
        Status::Healthy,
        Status::Degraded,
        Status::ActionRequired,
        Status::Disconnected,
        Status::Pending,
    ] {
        assert!(
            fetched.connections.iter().any(|c| c.status == status),
            "no {status}"
        );
    }

    // exclude_public(false): everyone, the documented example included, same token.
    let all = builder(&sim).exclude_public(false).build().unwrap();
    let conns = all.client().connection_health().await.unwrap();
    assert_eq!(conns.len(), 60);
    let doc = conns.iter().find(|c| c.id == "violet:123").unwrap();
    assert_eq!(doc.status, Status::ActionRequired);
    assert_eq!(doc.provider_status, "INACTIVE");
}

#[tokio::test]
async fn camel_case_and_lower_case_enums_map_identically() {
    let sim = VioletSim::start_generated(80, 3).await.unwrap();
    let violet = builder(&sim).exclude_public(false).build().unwrap();
    let plain = sorted(violet.client().connection_health().await.unwrap());
    sim.set_camel_case(true);
    let camel = sorted(violet.client().connection_health().await.unwrap());
    sim.set_lower_case_enums(true);
    let both = sorted(violet.client().connection_health().await.unwrap());
    assert_eq!(plain.len(), 80);
    assert_eq!(camel, plain);
    // Lower-cased enums: only the verbatim provider_status (and messages quoting it) change.
    type Summary = (String, Status, Vec<String>, Vec<String>, String);
    let norm = |v: &[Connection]| -> Vec<Summary> {
        v.iter()
            .map(|c| {
                (
                    c.id.clone(),
                    c.status,
                    c.problems.iter().map(|p| p.code.clone()).collect(),
                    c.checks
                        .iter()
                        .map(|k| format!("{}={}", k.name, k.status))
                        .collect(),
                    c.provider_status.to_ascii_uppercase(),
                )
            })
            .collect()
    };
    assert_eq!(norm(&both), norm(&plain));
    assert!(both.iter().any(|c| c.provider_status == "active"));
}

#[tokio::test(start_paused = true)]
async fn expired_token_is_refreshed_once_for_many_concurrent_calls() {
    let sim = VioletSim::start_generated(30, 11).await.unwrap();
    let violet = paused_builder(&sim).build().unwrap();
    let client = violet.client();
    client.authenticate().await.unwrap();
    assert_eq!((sim.logins(), sim.refreshes()), (1, 0));

    sim.expire_all_tokens();
    let ids: Vec<String> = sim
        .merchant_ids()
        .iter()
        .take(20)
        .map(|i| i.to_string())
        .collect();
    let results = join_all(ids.iter().map(|id| client.merchant_health(id))).await;
    for (id, r) in ids.iter().zip(&results) {
        let c = r.as_ref().unwrap();
        assert_eq!(&c.customer.id, id);
    }
    assert_eq!(sim.refreshes(), 1, "one shared refresh");
    assert_eq!(sim.logins(), 1, "no re-login");
    assert_eq!(client.auth_stats().refreshes, 1);
    assert_eq!(client.auth_stats().logins, 1);

    // The same with refresh_merchant.
    sim.expire_all_tokens();
    let results = join_all(ids.iter().map(|id| client.refresh_merchant(id))).await;
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(sim.refreshes(), 2);
    assert_eq!(sim.logins(), 1);
    assert_eq!(sim.health_refreshes(), 20);
    assert!(sim
        .stats()
        .raw_paths()
        .iter()
        .any(|p| p.contains("refresh=true")));
}

#[tokio::test(start_paused = true)]
async fn revoked_refresh_token_leads_to_exactly_one_relogin() {
    let sim = VioletSim::start_generated(30, 12).await.unwrap();
    let violet = paused_builder(&sim).build().unwrap();
    let client = violet.client();
    client.authenticate().await.unwrap();
    sim.revoke_refresh_tokens();
    sim.expire_all_tokens();
    let ids: Vec<String> = sim
        .merchant_ids()
        .iter()
        .take(20)
        .map(|i| i.to_string())
        .collect();
    let results = join_all(ids.iter().map(|id| client.merchant_health(id))).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(sim.logins(), 2, "exactly one re-login");
    assert_eq!(sim.stats().requests(REFRESH), 1, "one refused refresh");
    assert_eq!(sim.refreshes(), 0);
    assert_eq!(client.auth_stats().logins, 2);
}

#[tokio::test(start_paused = true)]
async fn token_is_refreshed_ahead_of_its_exp() {
    let sim = VioletSim::start_generated(10, 13).await.unwrap();
    sim.set_token_ttl(Duration::from_secs(3600));
    let violet = paused_builder(&sim).build().unwrap();
    let client = violet.client();
    client.connection_health().await.unwrap();
    tokio::time::advance(Duration::from_secs(3000)).await;
    client.connection_health().await.unwrap();
    assert_eq!(sim.refreshes(), 0, "not yet");
    // Within the 60 s margin before exp: refreshed before the call, no 401 round trip.
    tokio::time::advance(Duration::from_secs(560)).await;
    client.connection_health().await.unwrap();
    assert_eq!(sim.refreshes(), 1);
    assert_eq!(
        sim.stats().requests(CONNECTION_HEALTH),
        3,
        "no refused request"
    );
    // A day later (the refreshed token has expired too): refreshed again, still one login.
    tokio::time::advance(Duration::from_secs(86_400)).await;
    client.connection_health().await.unwrap();
    assert_eq!((sim.logins(), sim.refreshes()), (1, 2));
    assert_eq!(sim.stats().requests(CONNECTION_HEALTH), 4);
}

#[tokio::test]
async fn wrong_password_fails_fast_with_authentication() {
    let sim = VioletSim::start_generated(5, 14).await.unwrap();
    let violet = builder(&sim)
        .password(Secret::new("hunter2-wrong"))
        .build()
        .unwrap();
    let fetched = violet.fetch().await;
    assert_eq!(fetched.connections.len(), 0);
    assert_eq!(fetched.errors.len(), 1);
    let e = &fetched.errors[0];
    assert_eq!(e.kind(), ErrorKind::Authentication);
    assert_eq!(e.endpoint(), "POST /login");
    assert_eq!(e.http_status(), Some(401));
    let text = format!("{e} {e:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains(sim.username()), "{text}");
    assert!(!text.contains("developer"), "{text}");
    assert!(text.contains("POST /login"), "{text}");
    assert_eq!(
        sim.stats().requests(LOGIN),
        1,
        "no retry of a refused login"
    );
    assert_eq!(sim.stats().requests(CONNECTION_HEALTH), 0);
    assert_eq!(sim.logins(), 0);
}

#[tokio::test]
async fn refused_token_after_refresh_and_relogin_is_an_authentication_error() {
    let sim = VioletSim::start_generated(5, 15).await.unwrap();
    let violet = builder(&sim).build().unwrap();
    sim.faults().on(CONNECTION_HEALTH, Fault::status(401));
    let e = violet.client().connection_health().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Authentication);
    assert_eq!(e.endpoint(), "GET /operations/connection_health");
    // Request, refresh, retry, login, retry: then give up.
    assert_eq!(sim.stats().requests(CONNECTION_HEALTH), 3);
    assert_eq!((sim.logins(), sim.refreshes()), (2, 1));
}

#[tokio::test]
async fn login_survives_one_transient_failure() {
    let sim = VioletSim::start_generated(5, 16).await.unwrap();
    let violet = builder(&sim)
        .retry(connhealth_core::http::RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            ..Default::default()
        })
        .build()
        .unwrap();
    sim.faults()
        .push(FaultRule::new(Fault::status(503)).route(LOGIN).times(1));
    violet.client().connection_health().await.unwrap();
    assert_eq!(sim.stats().requests(LOGIN), 2);
    assert_eq!(sim.logins(), 1);
}

#[tokio::test]
async fn per_merchant_errors_name_the_merchant() {
    let sim = VioletSim::start_generated(5, 17).await.unwrap();
    let violet = builder(&sim).build().unwrap();
    let e = violet.client().merchant_health("999999").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.customer_id(), Some("999999"));
    assert_eq!(
        e.endpoint(),
        "GET /operations/connection_health/{merchant_id}"
    );
    // Ids are one encoded path segment.
    let e = violet.client().merchant_health("1/../2").await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidRequest),
        "{e}"
    );
    assert!(sim
        .stats()
        .raw_paths()
        .iter()
        .any(|p| p.contains("1%2F..%2F2")));
}

#[tokio::test]
async fn merchants_health_fans_out_within_the_bound() {
    let sim = VioletSim::start_generated(40, 18).await.unwrap();
    sim.faults().on(
        CONNECTION_HEALTH_MERCHANT,
        Fault::Latency(Duration::from_millis(20)),
    );
    let violet = builder(&sim).concurrency(4).build().unwrap();
    let ids: Vec<String> = sim.merchant_ids().iter().map(|i| i.to_string()).collect();
    let results: Vec<_> = violet
        .client()
        .merchants_health(ids.clone())
        .collect()
        .await;
    assert_eq!(results.len(), 40);
    assert!(results.iter().all(|r| r.is_ok()));
    assert!(sim.stats().max_in_flight(CONNECTION_HEALTH_MERCHANT) <= 4);
    assert_eq!(sim.health_refreshes(), 0);
}

#[tokio::test]
async fn faults_in_the_report_never_fail_it() {
    let sim = VioletSim::start_generated(40, 19).await.unwrap();
    let violet = builder(&sim).exclude_public(false).build().unwrap();
    for fault in [
        Fault::UnknownEnums,
        Fault::MissingOptionals,
        Fault::DuplicateIds,
    ] {
        sim.faults().clear();
        sim.faults().on(CONNECTION_HEALTH, fault.clone());
        let conns = violet
            .client()
            .connection_health()
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert!(!conns.is_empty(), "{fault:?}");
        for c in &conns {
            assert!(
                c.status.is_ok() || !c.problems.is_empty(),
                "{fault:?}: {c:#?}"
            );
        }
        if fault == Fault::UnknownEnums {
            assert!(
                conns.iter().all(|c| c.status >= Status::Unknown
                    || c.status == Status::Pending
                    || c.status == Status::Syncing),
                "{fault:?}"
            );
            assert!(conns
                .iter()
                .any(|c| c.problems.iter().any(|p| p.code == "unrecognized_value")));
        }
    }
    sim.faults().clear();
    sim.faults().on(CONNECTION_HEALTH, Fault::EmptyArrays);
    assert!(violet
        .client()
        .connection_health()
        .await
        .unwrap()
        .is_empty());
    for (fault, kind) in [
        (Fault::MalformedJson, ErrorKind::Decode),
        (Fault::TruncatedBody, ErrorKind::Decode),
    ] {
        sim.faults().clear();
        sim.faults().on(CONNECTION_HEALTH, fault.clone());
        let e = violet.client().connection_health().await.unwrap_err();
        assert_eq!(e.kind(), kind, "{fault:?}: {e}");
        assert_eq!(e.endpoint(), "GET /operations/connection_health");
    }
    sim.faults().clear();
    let small = builder(&sim).max_body_bytes(10_000).build().unwrap();
    assert_eq!(
        small.client().connection_health().await.unwrap_err().kind(),
        ErrorKind::TooLarge
    );
}

#[tokio::test]
async fn ten_thousand_merchants_in_one_report() {
    let sim = VioletSim::start_generated(10_000, 20).await.unwrap();
    let violet = builder(&sim).exclude_public(false).build().unwrap();
    let conns = violet.client().connection_health().await.unwrap();
    assert_eq!(conns.len(), 10_000);
    let mut ids: Vec<&str> = conns.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10_000);
    assert_eq!(sim.stats().requests(CONNECTION_HEALTH), 1);
}
