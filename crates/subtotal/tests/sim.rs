//! The adapter against the testkit's Subtotal simulator, over loopback HTTP.

use std::collections::HashMap;
use std::time::Duration;

use connhealth_core::http::RetryPolicy;
use connhealth_core::{Connection, ErrorKind, Provider, Remediation, Secret, Status};
use connhealth_subtotal::{ConnectionStatus, Subtotal, SubtotalBuilder, UpdateConnection};
use connhealth_testkit::data::{SubtotalConnection, SubtotalData};
use connhealth_testkit::subtotal::{CREATE_TOKEN, LIST_CONNECTIONS, RETAILERS, UPDATE_CONNECTION};
use connhealth_testkit::{Fault, FaultRule, SubtotalSim};

const LINK: &str = "https://link.subtotal.com/abc123";

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        ..RetryPolicy::default()
    }
}

fn builder(sim: &SubtotalSim, customers: Vec<String>) -> SubtotalBuilder {
    Subtotal::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .customers(customers)
        .retry(fast_retry())
}

fn conn(id: &str, customer: &str, retailer: &str, status: &str) -> SubtotalConnection {
    SubtotalConnection {
        connection_id: id.to_owned(),
        customer_id: customer.to_owned(),
        retailer_id: retailer.to_owned(),
        status: status.to_owned(),
        email: Some(format!("{id}@example.com")),
        mobile: Some("+15550100".to_owned()),
        is_simulated: None,
    }
}

/// One customer with one connection per status (ids `C-<status>`).
async fn four_statuses() -> SubtotalSim {
    let mut data = SubtotalData::empty();
    for (status, retailer) in [
        ("active", "walmart"),
        ("initialized", "bestbuy"),
        ("unauthenticated", "homedepot"),
        ("disconnected", "01J7SC1A2B3C4D5E6F7G8H9JKM"),
    ] {
        data.connections
            .push(conn(&format!("C-{status}"), "cus-1", retailer, status));
    }
    SubtotalSim::start(data).await.unwrap()
}

fn by_pid(conns: Vec<Connection>) -> HashMap<String, Connection> {
    conns
        .into_iter()
        .map(|c| (c.provider_connection_id.as_deref().unwrap().to_owned(), c))
        .collect()
}

fn link(id: &str) -> Option<String> {
    Some(format!("{LINK}?connection_id={id}"))
}

#[tokio::test]
async fn each_status_maps_as_documented() {
    let sim = four_statuses().await;
    let p = builder(&sim, vec!["cus-1".into()])
        .link_url(LINK)
        .build()
        .unwrap();
    let fetched = p.fetch().await;
    assert!(fetched.errors.is_empty(), "{:?}", fetched.errors);
    let got = by_pid(fetched.connections);
    assert_eq!(got.len(), 4);

    let c = &got["C-active"];
    assert_eq!(
        (c.status, c.provider_status.as_str()),
        (Status::Healthy, "active")
    );
    assert!(c.problems.is_empty());
    assert_eq!(c.platform, "walmart");
    assert_eq!(c.id, "subtotal:C-active");
    assert_eq!(c.customer.id, "cus-1");
    assert_eq!(c.customer.email, None);

    let c = &got["C-initialized"];
    assert_eq!(c.status, Status::Pending);
    assert_eq!(c.platform, "best_buy");
    assert_eq!(c.problems[0].code, "connection_initialized");
    assert_eq!(
        c.problems[0].remediation,
        Some(Remediation::CompleteSetup {
            step: "link".into()
        })
    );
    assert!(c.problems[0]
        .message
        .contains(&link("C-initialized").unwrap()));

    let c = &got["C-unauthenticated"];
    assert_eq!(c.status, Status::ActionRequired);
    assert_eq!(c.platform, "the_home_depot");
    assert_eq!(c.problems[0].code, "reauthentication_required");
    assert_eq!(
        c.problems[0].remediation,
        Some(Remediation::Reauthenticate {
            url: link("C-unauthenticated")
        })
    );

    let c = &got["C-disconnected"];
    assert_eq!(c.status, Status::Disconnected);
    assert_eq!(c.platform, "northside_grocers");
    assert_eq!(c.accounts[0].id, "01J7SC1A2B3C4D5E6F7G8H9JKM");
    assert_eq!(c.accounts[0].name.as_deref(), Some("Northside Grocers"));
    assert_eq!(c.problems[0].code, "connection_disconnected");
    assert_eq!(
        c.problems[0].remediation,
        Some(Remediation::Reconnect {
            url: link("C-disconnected")
        })
    );

    // Statuses set in the simulator: an unknown value, and a change.
    assert!(sim.set_status("C-active", "paused"));
    assert!(sim.set_status("C-disconnected", "active"));
    let got = by_pid(p.fetch().await.connections);
    let c = &got["C-active"];
    assert_eq!(
        (c.status, c.provider_status.as_str()),
        (Status::Unknown, "paused")
    );
    assert_eq!(c.problems[0].code, "unrecognized_value");
    assert!(c.problems[0].message.contains("\"paused\""));
    assert_eq!(got["C-disconnected"].status, Status::Healthy);

    // Without a Link URL the remediation has no url and the message says how to get one.
    let p = builder(&sim, vec!["cus-1".into()])
        .include_personal_data(true)
        .build()
        .unwrap();
    let got = by_pid(p.fetch().await.connections);
    let c = &got["C-unauthenticated"];
    assert_eq!(
        c.problems[0].remediation,
        Some(Remediation::Reauthenticate { url: None })
    );
    assert!(c.problems[0]
        .message
        .contains("?connection_id=C-unauthenticated"));
    assert_eq!(
        c.customer.email.as_deref(),
        Some("C-unauthenticated@example.com")
    );
}

#[tokio::test]
async fn disconnect_flips_the_next_poll() {
    let sim = four_statuses().await;
    let p = builder(&sim, vec!["cus-1".into()]).build().unwrap();
    assert_eq!(
        by_pid(p.fetch().await.connections)["C-active"].status,
        Status::Healthy
    );
    let updated = p.client().disconnect("C-active").await.unwrap();
    assert_eq!(updated.status, Some(ConnectionStatus::Disconnected));
    let mapped = p.map_response(&updated, None).unwrap();
    assert_eq!(mapped.status, Status::Disconnected);
    let got = by_pid(p.fetch().await.connections);
    assert_eq!(got["C-active"].status, Status::Disconnected);
    assert_eq!(got["C-active"].provider_status, "disconnected");
    assert_eq!(sim.connection("C-active").unwrap().status, "disconnected");
}

#[tokio::test]
async fn the_token_is_minted_once_reused_and_reminted_after_a_401() {
    let sim = four_statuses().await;
    let p = builder(&sim, vec![]).build().unwrap();
    let c = p.client();
    for mobile in ["+15550001", "+15550002", "+15550003"] {
        c.update_connection(
            "C-active",
            UpdateConnection {
                mobile: Some(mobile.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(sim.tokens_minted(), 1);
    assert_eq!(sim.stats().requests(UPDATE_CONNECTION), 3);
    assert_eq!(
        sim.connection("C-active").unwrap().mobile.as_deref(),
        Some("+15550003")
    );

    sim.revoke_tokens();
    let r = c
        .update_connection(
            "C-active",
            UpdateConnection {
                customer_id: Some("cus-1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.customer_id.as_deref(), Some("cus-1"));
    assert_eq!(sim.tokens_minted(), 2, "exactly one new mint");
    assert_eq!(sim.stats().requests(CREATE_TOKEN), 2);
    assert_eq!(
        sim.stats().requests(UPDATE_CONNECTION),
        5,
        "the refused PATCH and its repeat"
    );
    // The new token is cached again.
    c.disconnect("C-active").await.unwrap();
    assert_eq!(sim.tokens_minted(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_reminted_before_use() {
    let sim = four_statuses().await;
    sim.set_token_ttl(Duration::from_secs(300));
    let p = builder(&sim, vec![])
        .request_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let c = p.client();
    c.disconnect("C-active").await.unwrap();
    c.disconnect("C-active").await.unwrap();
    assert_eq!(sim.tokens_minted(), 1);
    // 300 s lifetime, 60 s margin: used until 240 s, then minted again without a 401.
    tokio::time::advance(Duration::from_secs(250)).await;
    c.disconnect("C-active").await.unwrap();
    assert_eq!(sim.tokens_minted(), 2);
    assert_eq!(sim.stats().requests(UPDATE_CONNECTION), 3);
}

#[tokio::test]
async fn a_bad_email_names_the_field_but_not_the_value() {
    let sim = four_statuses().await;
    let p = builder(&sim, vec![]).build().unwrap();
    let err = p
        .client()
        .update_connection(
            "C-active",
            UpdateConnection {
                email: Some("alice.example.com".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(err.http_status(), Some(422));
    assert!(
        text.contains("body.email: value is not a valid email address"),
        "{text}"
    );
    assert!(text.contains("C-active"), "{text}");
    assert!(!text.contains("alice.example.com"), "{text}");
    assert!(!format!("{err:?}").contains("alice.example.com"));
    assert_eq!(
        sim.connection("C-active").unwrap().email.as_deref(),
        Some("C-active@example.com")
    );
}

#[tokio::test]
async fn patch_is_not_retried_after_a_500() {
    let sim = four_statuses().await;
    sim.faults().push(
        FaultRule::new(Fault::status(500))
            .route(UPDATE_CONNECTION)
            .times(1),
    );
    let p = builder(&sim, vec![]).build().unwrap();
    let err = p.client().disconnect("C-active").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerError);
    assert_eq!(err.http_status(), Some(500));
    assert!(err.to_string().contains("C-active"), "{err}");
    assert_eq!(sim.stats().requests(UPDATE_CONNECTION), 1);
    assert_eq!(sim.connection("C-active").unwrap().status, "active");
}

#[tokio::test(start_paused = true)]
async fn three_hundred_customers_fan_out_under_the_bound() {
    let sim = SubtotalSim::start_generated(300, 42).await.unwrap();
    let customers = sim.customer_ids();
    assert_eq!(customers.len(), 300);
    sim.faults()
        .on(LIST_CONNECTIONS, Fault::Latency(Duration::from_millis(100)));
    let bound = 16;
    let p = builder(&sim, customers.clone())
        .concurrency(bound)
        .request_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut batches = 0;
    let mut total = 0;
    let mut s = p.stream();
    while let Some(batch) = futures::StreamExt::next(&mut s).await {
        batches += 1;
        total += batch.expect("every customer answers").len();
    }
    drop(s);
    assert_eq!(batches, 300);
    let expected: usize = customers.iter().map(|c| sim.connections_of(c).len()).sum();
    assert_eq!(total, expected);
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 300);
    assert_eq!(
        sim.stats().requests(RETAILERS),
        1,
        "one /retailers per poll"
    );
    let max = sim.stats().max_in_flight(LIST_CONNECTIONS);
    assert!(max <= bound as u64 && max > 1, "max in flight {max}");
}

#[tokio::test]
async fn failing_retailers_still_yield_every_connection_with_retailer_ids() {
    let sim = SubtotalSim::start_generated(20, 7).await.unwrap();
    sim.faults().on(RETAILERS, Fault::status(500));
    let customers = sim.customer_ids();
    let p = builder(&sim, customers.clone()).build().unwrap();
    let fetched = p.fetch().await;
    assert!(fetched.errors.is_empty(), "{:?}", fetched.errors);
    let expected: Vec<SubtotalConnection> = customers
        .iter()
        .flat_map(|c| sim.connections_of(c))
        .collect();
    assert_eq!(fetched.connections.len(), expected.len());
    let got = by_pid(fetched.connections);
    for e in &expected {
        let c = &got[&e.connection_id];
        assert_eq!(c.platform, e.retailer_id.to_lowercase());
        assert_eq!(c.accounts[0].name, None);
    }
    assert!(sim.stats().requests(RETAILERS) >= 1);
}

#[tokio::test]
async fn odd_customer_ids_are_one_query_value() {
    let mut data = SubtotalData::empty();
    let odd = ["a&b=c", "with space", "ünï©ødé/?#%+"];
    for (i, customer) in odd.iter().enumerate() {
        data.connections
            .push(conn(&format!("C{i}"), customer, "walmart", "active"));
    }
    // A customer whose id is a prefix of the odd one must not be confused with it.
    data.connections
        .push(conn("C-a", "a", "target", "unauthenticated"));
    let sim = SubtotalSim::start(data).await.unwrap();
    let p = builder(&sim, odd.iter().map(|s| s.to_string()).collect())
        .resolve_retailer_names(false)
        .build()
        .unwrap();
    let fetched = p.fetch().await;
    assert!(fetched.errors.is_empty(), "{:?}", fetched.errors);
    let got = by_pid(fetched.connections);
    assert_eq!(got.len(), 3);
    for (i, customer) in odd.iter().enumerate() {
        assert_eq!(got[&format!("C{i}")].customer.id, *customer);
    }
    let raw = sim.stats().raw_paths();
    assert!(
        raw.iter()
            .any(|p| p == "/connections?customer_id=a%26b%3Dc"),
        "{raw:?}"
    );
    assert!(
        raw.iter()
            .any(|p| p == "/connections?customer_id=with+space"),
        "{raw:?}"
    );
}

#[tokio::test]
async fn create_get_and_retailers_through_the_client() {
    let sim = four_statuses().await;
    let p = builder(&sim, vec![]).build().unwrap();
    let c = p.client();
    let created = c
        .create_connection(connhealth_subtotal::CreateConnection {
            customer_id: "cus-new".into(),
            retailer_id: "target".into(),
            email: Some("new@example.com".into()),
            mobile: None,
        })
        .await
        .unwrap();
    assert_eq!(created.status, Some(ConnectionStatus::Initialized));
    let id = created.connection_id.clone().unwrap();
    let got = c.get_connection(&id).await.unwrap();
    assert_eq!(got, created);
    assert_eq!(c.list_connections("cus-new").await.unwrap(), vec![created]);
    let retailers = c.retailers().await.unwrap();
    assert!(retailers
        .iter()
        .any(|r| r.key() == Some("walmart") && r.label() == Some("Walmart")));
    let err = c.get_connection("nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // An unknown connection cannot get a token: the error names it.
    let err = c.disconnect("nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("\"nope\""), "{err}");
    // Bad API key: authentication/forbidden error for every customer.
    let bad = Subtotal::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new("wrong-key"))
        .customers(vec!["cus-1".into()])
        .build()
        .unwrap();
    let fetched = bad.fetch().await;
    assert_eq!(fetched.errors.len(), 1);
    assert_eq!(fetched.errors[0].kind(), ErrorKind::Forbidden);
    assert!(!fetched.errors[0].to_string().contains("wrong-key"));
}
