//! Issue 16 item 4: nothing is lost silently. Over real HTTP (the testkit simulators), items
//! that could not be decoded and connections that collapsed onto one id must show in the
//! report as a `decode` error naming how many and (up to 20) which, making the outcome
//! `partial`; a list whose every item is undecodable is `failed` (DESIGN.md, `partial`).

use connhealth::channel3::Channel3;
use connhealth::subtotal::Subtotal;
use connhealth::violet::Violet;
use connhealth::{Aggregator, ErrorKind, HealthReport, Outcome, ProviderOutcome, Secret};
use connhealth_testkit::data::Channel3Connection;
use connhealth_testkit::{channel3 as c3sim, subtotal as stsim, violet as vsim};
use connhealth_testkit::{Channel3Sim, Fault, SubtotalSim, VioletSim};

fn ok_body(body: &str) -> Fault {
    Fault::Status {
        status: 200,
        retry_after: None,
        body: Some(body.to_owned()),
    }
}

fn only(report: &HealthReport) -> &ProviderOutcome {
    assert_eq!(report.providers.len(), 1);
    &report.providers[0]
}

fn channel3(sim: &Channel3Sim, customers: Vec<String>) -> Channel3 {
    Channel3::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .customers(customers)
        .build()
        .unwrap()
}

fn subtotal(sim: &SubtotalSim) -> Subtotal {
    Subtotal::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .customers(sim.customer_ids())
        .resolve_retailer_names(false)
        .build()
        .unwrap()
}

fn violet(sim: &VioletSim) -> Violet {
    Violet::builder()
        .base_url(sim.base_url())
        .app_id(sim.app_id())
        .app_secret(Secret::new(sim.app_secret()))
        .username(sim.username())
        .password(Secret::new(sim.password()))
        .exclude_public(false)
        .build()
        .unwrap()
}

/// The one `decode` error of an outcome, which must name `count` and every id in `ids`.
fn decode_error_naming(p: &ProviderOutcome, count: usize, ids: &[&str]) {
    let decode: Vec<_> = p
        .errors
        .iter()
        .filter(|e| e.kind == ErrorKind::Decode)
        .collect();
    assert_eq!(decode.len(), 1, "{:#?}", p.errors);
    let msg = &decode[0].message;
    assert!(msg.contains(&format!(" {count} ")), "count {count}: {msg}");
    for id in ids {
        assert!(msg.contains(id), "id {id}: {msg}");
    }
}

#[tokio::test]
async fn two_customers_reporting_one_connection_id_is_partial_and_names_it() {
    let sim = Channel3Sim::start_generated(2, 11).await.unwrap();
    let ids = sim.customer_ids();
    let mut shared = Channel3Connection::not_connected("shopify");
    shared.status = "active".into();
    shared.category = "ingestion".into();
    shared.id = Some("conn_shared".into());
    let mut bad = shared.clone();
    bad.status = "action_required".into();
    assert!(sim.set_connections(&ids[0], vec![shared]));
    assert!(sim.set_connections(&ids[1], vec![bad]));

    let report = Aggregator::new()
        .with_provider(channel3(&sim, ids.clone()))
        .run()
        .await;
    let p = only(&report);
    assert_eq!(p.outcome, Outcome::Partial, "{p:#?}");
    decode_error_naming(p, 1, &["channel3:conn_shared"]);
    // Still collapsed to one connection, the most severe.
    assert_eq!(report.connections.len(), 1);
    assert_eq!(p.connections, 1);
    assert_eq!(
        report.connections[0].status,
        connhealth::Status::ActionRequired
    );
}

#[tokio::test]
async fn duplicated_entries_in_one_answer_are_reported() {
    // Subtotal: every list doubled.
    let sim = SubtotalSim::start_generated(1, 5).await.unwrap();
    let served = sim.connections_of(&sim.customer_ids()[0]);
    assert!(!served.is_empty());
    sim.faults()
        .on(stsim::LIST_CONNECTIONS, Fault::DuplicateIds);
    let report = Aggregator::new().with_provider(subtotal(&sim)).run().await;
    let p = only(&report);
    assert_eq!(p.outcome, Outcome::Partial, "{p:#?}");
    let first = format!("subtotal:{}", served[0].connection_id);
    decode_error_naming(p, served.len(), &[&first]);
    assert_eq!(report.connections.len(), served.len());

    // Channel3: the same.
    let sim = Channel3Sim::start_generated(1, 5).await.unwrap();
    sim.faults()
        .on(c3sim::LIST_CONNECTIONS, Fault::DuplicateIds);
    let report = Aggregator::new()
        .with_provider(channel3(&sim, sim.customer_ids()))
        .run()
        .await;
    let p = only(&report);
    assert_eq!(p.outcome, Outcome::Partial, "{p:#?}");
    assert_eq!(
        p.errors
            .iter()
            .filter(|e| e.kind == ErrorKind::Decode)
            .count(),
        1,
        "{p:#?}"
    );
}

#[tokio::test]
async fn some_undecodable_items_make_the_outcome_partial() {
    let sim = SubtotalSim::start_generated(1, 3).await.unwrap();
    let body = r#"{"connections": [
        {"connection_id": "conn_ok", "customer_id": "c", "retailer_id": "r", "status": "active"},
        7, "x", null
    ]}"#;
    sim.faults().on(stsim::LIST_CONNECTIONS, ok_body(body));
    let report = Aggregator::new().with_provider(subtotal(&sim)).run().await;
    let p = only(&report);
    assert_eq!(p.outcome, Outcome::Partial, "{p:#?}");
    decode_error_naming(p, 3, &[]);
    assert_eq!(report.connections.len(), 1);
}

#[tokio::test]
async fn a_list_of_only_undecodable_items_is_failed() {
    // Subtotal.
    let sim = SubtotalSim::start_generated(1, 3).await.unwrap();
    sim.faults().on(
        stsim::LIST_CONNECTIONS,
        ok_body(r#"{"connections": [1, "two", null]}"#),
    );
    let report = Aggregator::new().with_provider(subtotal(&sim)).run().await;
    let p = only(&report);
    assert_eq!(p.outcome, Outcome::Failed, "{p:#?}");
    decode_error_naming(p, 3, &[]);
    assert_eq!(report.overall, connhealth::Status::Unknown);

    // Channel3.
    let sim = Channel3Sim::start_generated(1, 3).await.unwrap();
    sim.faults().on(
        c3sim::LIST_CONNECTIONS,
        ok_body(r#"{"connections": [1, null, "x"]}"#),
    );
    let report = Aggregator::new()
        .with_provider(channel3(&sim, sim.customer_ids()))
        .run()
        .await;
    let p = only(&report);
    assert_eq!(p.outcome, Outcome::Failed, "{p:#?}");
    decode_error_naming(p, 3, &[]);

    // Violet: a report whose entries name no merchant.
    let sim = VioletSim::start_generated(3, 3).await.unwrap();
    sim.faults().on(
        vsim::CONNECTION_HEALTH,
        ok_body(r#"[1, "x", {"merchant_status": "ACTIVE"}]"#),
    );
    let report = Aggregator::new().with_provider(violet(&sim)).run().await;
    let p = only(&report);
    assert_eq!(p.outcome, Outcome::Failed, "{p:#?}");
    decode_error_naming(p, 3, &[]);
}

#[tokio::test]
async fn an_empty_list_is_still_ok() {
    let sim = SubtotalSim::start_generated(1, 3).await.unwrap();
    sim.faults()
        .on(stsim::LIST_CONNECTIONS, ok_body(r#"{"connections": []}"#));
    let report = Aggregator::new().with_provider(subtotal(&sim)).run().await;
    let p = only(&report);
    assert_eq!(p.outcome, Outcome::Ok, "{p:#?}");
    assert!(p.errors.is_empty());
}

#[tokio::test]
async fn at_most_twenty_ids_are_named() {
    let sim = Channel3Sim::start_generated(1, 9).await.unwrap();
    let ids = sim.customer_ids();
    // One customer answering 25 connections, each listed twice.
    let mut conns = Vec::new();
    for n in 0..25 {
        let mut c = Channel3Connection::not_connected(&format!("platform{n:02}"));
        c.status = "active".into();
        c.category = "ingestion".into();
        c.id = Some(format!("dup_{n:02}"));
        conns.push(c.clone());
        conns.push(c);
    }
    assert!(sim.set_connections(&ids[0], conns));
    let report = Aggregator::new()
        .with_provider(channel3(&sim, ids.clone()))
        .run()
        .await;
    let p = only(&report);
    assert_eq!(p.outcome, Outcome::Partial, "{p:#?}");
    assert_eq!(report.connections.len(), 25);
    decode_error_naming(p, 25, &["channel3:dup_00", "channel3:dup_19"]);
    let msg = &p.errors[0].message;
    assert_eq!(msg.matches("channel3:dup_").count(), 20, "{msg}");
    assert!(!msg.contains("channel3:dup_20"), "{msg}");
}
