//! The adapter against the testkit's Channel3 simulator, over HTTP on loopback.

use std::collections::HashSet;
use std::time::Duration;

use connhealth_channel3::{Channel3, Channel3Builder};
use connhealth_core::http::RetryPolicy;
use connhealth_core::{Aggregator, Concurrency, ErrorKind, Outcome, Provider, Secret, Status};
use connhealth_testkit::channel3::{LIST_CONNECTIONS, LIST_MERCHANTS};
use connhealth_testkit::data::{self, GenOptions, CHANNEL3_FOREIGN_ID, CHANNEL3_ODD_IDS};
use connhealth_testkit::{Channel3Sim, Fault, FaultRule};

fn builder(sim: &Channel3Sim) -> Channel3Builder {
    Channel3::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
}

/// No client timers that a paused clock could fire while a loopback answer is on its way.
fn paused_builder(sim: &Channel3Sim) -> Channel3Builder {
    builder(sim)
        .request_timeout(Duration::from_secs(3600))
        .connect_timeout(Duration::from_secs(3600))
}

async fn sim_with(n: usize, seed: u64, opts: GenOptions) -> Channel3Sim {
    Channel3Sim::start(data::channel3_customers_with(n, seed, &opts))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_of_1000_customers_returns_each_exactly_once() {
    let sim = Channel3Sim::start_generated(1000, 7).await.unwrap();
    // Ask for 250 per page: the simulator caps at 100 and says so in `size`/`pages`.
    let p = builder(&sim)
        .page_size(250)
        .concurrency(32)
        .build()
        .unwrap();
    let fetched = p.fetch().await;
    assert_eq!(
        fetched.outcome(),
        Outcome::Ok,
        "{:?}",
        fetched.errors.first()
    );
    assert_eq!(fetched.ok_batches, 1000);

    let ids: HashSet<&str> = fetched.connections.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        fetched.connections.len(),
        "connection ids are unique"
    );
    let customers: HashSet<String> = fetched
        .connections
        .iter()
        .map(|c| c.customer.id.clone())
        .collect();
    let expected: HashSet<String> = sim.customer_ids().into_iter().collect();
    assert_eq!(customers, expected);
    let served: usize = sim
        .customer_ids()
        .iter()
        .map(|c| sim.connections(c).unwrap().len())
        .sum();
    assert_eq!(fetched.connections.len(), served);
    // Names from discovery reach the model.
    for c in &fetched.connections {
        assert_eq!(
            c.customer.name.as_deref(),
            sim.customer(&c.customer.id).unwrap().name.as_deref(),
            "{}",
            c.id
        );
    }

    assert_eq!(sim.stats().requests(LIST_MERCHANTS), 10);
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_bound_holds_across_discovery_pages() {
    let sim = Channel3Sim::start_generated(200, 3).await.unwrap();
    sim.faults()
        .on(LIST_CONNECTIONS, Fault::Latency(Duration::from_millis(20)));
    let p = builder(&sim).page_size(30).concurrency(8).build().unwrap();
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Ok);
    assert_eq!(fetched.ok_batches, 200);
    let max = sim.stats().max_in_flight(LIST_CONNECTIONS);
    assert!(max <= 8, "max in flight {max} > 8");
    assert!(max > 1, "requests did not overlap (max {max})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_customers_respect_the_bound_and_skip_discovery() {
    let sim = Channel3Sim::start_generated(60, 4).await.unwrap();
    sim.faults()
        .on(LIST_CONNECTIONS, Fault::Latency(Duration::from_millis(20)));
    let ids = sim.customer_ids();
    let p = builder(&sim)
        .customers(ids.clone())
        .concurrency(5)
        .build()
        .unwrap();
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Ok);
    assert_eq!(fetched.ok_batches, 60);
    assert_eq!(
        sim.stats().requests(LIST_MERCHANTS),
        0,
        "a configured list skips discovery"
    );
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 60);
    let max = sim.stats().max_in_flight(LIST_CONNECTIONS);
    assert!((2..=5).contains(&max), "max in flight {max}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_bound_spans_providers() {
    let sim = Channel3Sim::start_generated(40, 5).await.unwrap();
    sim.faults()
        .on(LIST_CONNECTIONS, Fault::Latency(Duration::from_millis(20)));
    let shared = Concurrency::shared(4);
    let a = builder(&sim)
        .name("c3-a")
        .shared_concurrency(shared.clone())
        .build()
        .unwrap();
    let b = builder(&sim)
        .name("c3-b")
        .shared_concurrency(shared)
        .build()
        .unwrap();
    let report = Aggregator::new()
        .with_provider(a)
        .with_provider(b)
        .run()
        .await;
    assert!(report.providers.iter().all(|p| p.outcome == Outcome::Ok));
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 80);
    let max = sim.stats().max_in_flight(LIST_CONNECTIONS);
    assert!((2..=4).contains(&max), "max in flight {max}");
}

#[tokio::test]
async fn a_refused_key_fails_discovery_with_one_error() {
    let sim = Channel3Sim::start_generated(20, 1).await.unwrap();
    let p = builder(&sim)
        .api_key(Secret::new("c3_sk_wrong_key"))
        .build()
        .unwrap();
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Failed);
    assert_eq!(fetched.errors.len(), 1);
    let e = &fetched.errors[0];
    assert!(
        matches!(e.kind(), ErrorKind::Authentication | ErrorKind::Forbidden),
        "{e}"
    );
    assert_eq!(e.provider(), "channel3");
    assert_eq!(e.endpoint(), "GET /v0/partner/merchants");
    let text = e.to_string();
    assert!(
        text.contains("channel3") && text.contains("GET /v0/partner/merchants"),
        "{text}"
    );
    assert!(!text.contains("c3_sk_wrong_key"));
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 0);
}

#[tokio::test]
async fn a_401_is_authentication_and_ends_the_poll() {
    let sim = Channel3Sim::start_generated(30, 1).await.unwrap();
    // Discovery: one fatal error batch naming the provider and the endpoint.
    sim.faults().on(LIST_MERCHANTS, Fault::status(401));
    let fetched = builder(&sim).name("c3-eu").build().unwrap().fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Failed);
    assert_eq!(fetched.errors.len(), 1);
    let e = &fetched.errors[0];
    assert_eq!(
        (e.kind(), e.http_status()),
        (ErrorKind::Authentication, Some(401))
    );
    assert!(
        e.to_string()
            .starts_with("c3-eu: GET /v0/partner/merchants: authentication"),
        "{e}"
    );

    // Configured customers: the first 401 ends the stream instead of 30 identical errors.
    sim.faults().clear();
    sim.faults().on(LIST_CONNECTIONS, Fault::status(401));
    let p = builder(&sim)
        .customers(sim.customer_ids())
        .concurrency(4)
        .build()
        .unwrap();
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Failed);
    assert_eq!(fetched.errors.len(), 1);
    let e = &fetched.errors[0];
    assert_eq!(e.kind(), ErrorKind::Authentication);
    assert_eq!(
        e.endpoint(),
        "GET /v0/partner/merchants/{customer_id}/connections"
    );
    assert!(e.customer_id().is_some());
}

#[tokio::test]
async fn one_foreign_customer_leaves_the_rest() {
    let sim = sim_with(
        12,
        9,
        GenOptions {
            foreign: true,
            ..GenOptions::default()
        },
    )
    .await;
    let mut ids: Vec<String> = sim.customer_ids();
    if !ids.iter().any(|i| i == CHANNEL3_FOREIGN_ID) {
        ids.push(CHANNEL3_FOREIGN_ID.to_owned());
    }
    let p = builder(&sim).customers(ids.clone()).build().unwrap();
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Partial);
    assert_eq!(fetched.errors.len(), 1);
    let e = &fetched.errors[0];
    assert_eq!(
        (e.kind(), e.http_status()),
        (ErrorKind::Forbidden, Some(403))
    );
    assert_eq!(e.customer_id(), Some(CHANNEL3_FOREIGN_ID));
    assert!(!e.message().is_empty(), "the provider's detail is surfaced");
    assert_eq!(fetched.ok_batches, ids.len() - 1);
}

#[tokio::test]
async fn one_failing_customer_under_discovery_is_partial() {
    let sim = Channel3Sim::start_generated(15, 2).await.unwrap();
    let victim = sim.customer_ids()[7].clone();
    sim.faults().push(
        FaultRule::new(Fault::status(500))
            .route(LIST_CONNECTIONS)
            .path_contains(format!("/merchants/{victim}/")),
    );
    let p = builder(&sim).retry(RetryPolicy::none()).build().unwrap();
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Partial);
    assert_eq!(fetched.ok_batches, 14);
    assert_eq!(fetched.errors.len(), 1);
    assert_eq!(fetched.errors[0].kind(), ErrorKind::ServerError);
    assert_eq!(fetched.errors[0].customer_id(), Some(victim.as_str()));
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_is_retried() {
    let sim = Channel3Sim::start_generated(6, 11).await.unwrap();
    sim.faults().push(
        FaultRule::new(Fault::too_many_requests(2))
            .route(LIST_CONNECTIONS)
            .times(1),
    );
    let p = paused_builder(&sim).build().unwrap();
    let fetched = p.fetch().await;
    assert_eq!(
        fetched.outcome(),
        Outcome::Ok,
        "{:?}",
        fetched.errors.first()
    );
    assert_eq!(fetched.ok_batches, 6);
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 7);
    assert_eq!(p.client().http().stats().retries(), 1);
}

#[tokio::test]
async fn odd_ids_reach_the_right_path() {
    let sim = sim_with(
        3,
        5,
        GenOptions {
            odd_ids: true,
            ..GenOptions::default()
        },
    )
    .await;
    let p = builder(&sim).customers(CHANNEL3_ODD_IDS).build().unwrap();
    let fetched = p.fetch().await;
    assert_eq!(
        fetched.outcome(),
        Outcome::Ok,
        "{:?}",
        fetched.errors.first()
    );
    let raw = sim.stats().raw_paths();
    for (id, encoded) in CHANNEL3_ODD_IDS.iter().zip([
        "cus%2Fslash",
        "cus%3Fquery",
        "cus%25percent",
        "cus%23hash",
        "cus%20space",
        "cus_%C3%BCn%C3%AFcode",
    ]) {
        let want = format!("/v0/partner/merchants/{encoded}/connections");
        assert!(raw.contains(&want), "{want} not in {raw:?}");
        let mine: Vec<_> = fetched
            .connections
            .iter()
            .filter(|c| c.customer.id == *id)
            .collect();
        assert_eq!(mine.len(), sim.connections(id).unwrap().len(), "{id}");
        let wc = mine.iter().find(|c| c.platform == "web_crawl").unwrap();
        assert_eq!(wc.status, Status::Healthy, "{id}");
    }
    // And through discovery (the odd ids are listed too).
    let fetched = builder(&sim).build().unwrap().fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Ok);
    let customers: HashSet<String> = fetched
        .connections
        .iter()
        .map(|c| c.customer.id.clone())
        .collect();
    assert_eq!(customers, sim.customer_ids().into_iter().collect());
}

#[tokio::test]
async fn provider_faults_degrade_gracefully() {
    let sim = Channel3Sim::start_generated(10, 21).await.unwrap();
    let ids = sim.customer_ids();
    let p = builder(&sim)
        .customers(ids.clone())
        .retry(RetryPolicy::none())
        .max_body_bytes(256 * 1024)
        .build()
        .unwrap();

    sim.faults().on(LIST_CONNECTIONS, Fault::UnknownEnums);
    let f = p.fetch().await;
    assert_eq!(f.outcome(), Outcome::Ok);
    assert!(!f.connections.is_empty());
    for c in &f.connections {
        assert!(c.status >= Status::Unknown, "{} {}", c.id, c.status);
        assert!(
            c.problems.iter().any(|p| p.code == "unrecognized_value"),
            "{}",
            c.id
        );
    }

    sim.faults().clear();
    sim.faults().on(LIST_CONNECTIONS, Fault::DuplicateIds);
    let f = p.fetch().await;
    // Collapsed duplicates are reported (issue 16 item 4): one `decode` error per customer.
    assert_eq!(f.outcome(), Outcome::Partial);
    assert_eq!(f.errors.len(), ids.len());
    assert!(f
        .errors
        .iter()
        .all(|e| e.kind() == ErrorKind::Decode && e.message().contains("collapsed")));
    let unique: HashSet<&str> = f.connections.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        unique.len(),
        f.connections.len(),
        "duplicated entries are dropped"
    );
    let served: usize = ids.iter().map(|c| sim.connections(c).unwrap().len()).sum();
    assert_eq!(f.connections.len(), served);

    for fault in [Fault::MissingOptionals, Fault::EmptyArrays] {
        sim.faults().clear();
        sim.faults().on(LIST_CONNECTIONS, fault.clone());
        let f = p.fetch().await;
        assert_eq!(
            f.outcome(),
            Outcome::Ok,
            "{fault:?}: {:?}",
            f.errors.first()
        );
    }

    sim.faults().clear();
    sim.faults().push(
        FaultRule::new(Fault::MalformedJson)
            .route(LIST_CONNECTIONS)
            .times(1),
    );
    sim.faults().push(
        FaultRule::new(Fault::OversizedBody(1024 * 1024))
            .route(LIST_CONNECTIONS)
            .times(1),
    );
    let f = p.fetch().await;
    assert_eq!(f.outcome(), Outcome::Partial);
    let kinds: HashSet<ErrorKind> = f.errors.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        HashSet::from([ErrorKind::Decode, ErrorKind::TooLarge])
    );
    assert!(f.errors.iter().all(|e| e.customer_id().is_some()));
    assert_eq!(f.ok_batches, 8);
}

#[tokio::test]
async fn control_plane_calls_against_the_simulator() {
    let sim = Channel3Sim::start_generated(3, 1).await.unwrap();
    let p = builder(&sim).build().unwrap();
    let c = p.client();
    let m = c
        .create_merchant("newshop.example", Some("New Shop"))
        .await
        .unwrap();
    assert!(m.created);
    let again = c
        .create_merchant("https://www.NewShop.example/", None)
        .await
        .unwrap();
    assert_eq!(again.customer_id, m.customer_id);
    assert!(!again.created);
    assert_eq!(c.list_all_merchants().await.unwrap().len(), 4);

    let conns = c.list_connections(&m.customer_id).await.unwrap();
    assert!(conns
        .connections
        .iter()
        .any(|x| x.platform.as_ref().map(|p| p.as_str()) == Some("web_crawl")));

    let allow = sim_allowlisted_redirect();
    let s = c
        .create_connect_session(&m.customer_id, &allow, Some("google"))
        .await
        .unwrap();
    assert!(s.expires_at.is_some(), "{:?}", s.expires_at_raw);
    assert_eq!(sim.sessions().len(), 1);
    assert_eq!(sim.sessions()[0].token, s.token.expose());

    let err = c
        .create_connect_session(&m.customer_id, &allow, Some("myspace"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(err.http_status(), Some(422));
}

fn sim_allowlisted_redirect() -> String {
    format!(
        "{}/callback",
        data::CHANNEL3_REDIRECT_PREFIX.trim_end_matches('/')
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_fetched_while_later_pages_are_listed() {
    let sim = Channel3Sim::start_generated(250, 8).await.unwrap();
    sim.faults()
        .on(LIST_MERCHANTS, Fault::Latency(Duration::from_millis(100)));
    let p = builder(&sim).page_size(50).build().unwrap();
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Ok);
    assert_eq!(fetched.ok_batches, 250);
    let raw = sim.stats().raw_paths();
    let first_connections = raw
        .iter()
        .position(|p| p.ends_with("/connections"))
        .unwrap();
    let last_page = raw.iter().rposition(|p| p.contains("/merchants?")).unwrap();
    assert!(
        first_connections < last_page,
        "page 1's customers should be fetched before the last page is listed"
    );
}
