//! Two `serve` replicas (in this process) on one real PostgreSQL database: the leader polls
//! and drains the stored queue, the follower serves every read from the store, accepts
//! webhooks and refreshes into the queue, calls no provider (its own simulators' request
//! counters stay at zero) and takes over when the leader stops, without re-announcing what
//! the leader committed. (The kill -9 takeover of three real processes is in the CLI's
//! tests/replicas.rs.)

mod common;
/// The store crate's fixtures (the PostgreSQL cluster the tests start), used from there.
#[path = "../../store/tests/common/mod.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use connhealth::simulators;
use connhealth_core::watch::{WatchConfig, Watcher};
use connhealth_core::Secret;
use connhealth_store::{Journal, JournalOptions, Store};
use connhealth_testkit::webhooks::hmac_sha256;
use connhealth_testkit::Fleet;
use serde_json::Value;

const SECRET: &str = "whsec-subtotal-replica-test-3c9d";
const ADMIN: &str = "admin-token-for-replicas-9e41b7";

/// The fleet's three simulators through the real adapters, Subtotal verifying webhooks with
/// [`SECRET`]; polls an hour apart, so later changes come from webhooks and refreshes.
fn watcher(fleet: &Fleet) -> Watcher {
    let mut w = Watcher::new(WatchConfig {
        interval: Duration::from_secs(3600),
        jitter: 0.0,
        trip: 1,
        clear: 1,
        timeout: Duration::from_secs(10),
    });
    let c3 = simulators::channel3(&fleet.channel3)
        .customers(fleet.channel3.customer_ids())
        .build()
        .unwrap();
    let subtotal = simulators::subtotal(&fleet.subtotal)
        .link_url("https://link.subtotal.example/reconnect")
        .webhook_secret(Secret::new(SECRET))
        .build()
        .unwrap();
    let violet = simulators::violet(&fleet.violet).build().unwrap();
    w.add(Arc::new(c3), None);
    w.add(Arc::new(violet), None);
    w.add(Arc::new(subtotal), None);
    w
}

/// Every request any of the fleet's simulators received.
fn asked(fleet: &Fleet) -> u64 {
    fleet.channel3.stats().total_requests()
        + fleet.violet.stats().total_requests()
        + fleet.subtotal.stats().total_requests()
}

async fn replica(fleet: &Fleet, store: Arc<dyn Store>, id: &str) -> Running {
    let (journal, loaded) = Journal::load(store, JournalOptions::default())
        .await
        .unwrap();
    let w = watcher(fleet).with_state(loaded);
    let server = Running::start_with(
        w,
        Options {
            admin: Some(ADMIN),
            ..Options::default()
        },
        |s| s.with_store(journal, |_| {}).with_replica_id(id),
    )
    .await;
    server.ready(false).await;
    server
}

async fn get_json(server: &Running, path: &str) -> Value {
    let resp = server.get(path).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

async fn text(server: &Running, path: &str) -> String {
    server.get(path).await.text().await.unwrap()
}

/// Wait until `ok` holds; a failure guard only (30 s), never a timing assertion.
async fn wait_for(mut ok: impl AsyncFnMut() -> bool, what: &str) {
    for _ in 0..1500 {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} never happened");
}

/// `(id, status)` of every connection in a replica's `/v1/report`.
async fn view(server: &Running) -> Vec<(String, String)> {
    get_json(server, "/v1/report").await["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn stored_events(server: &Running) -> Vec<Value> {
    get_json(server, "/v1/events?after=0&limit=1000").await["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn post(server: &Running, path: &str, body: Value) -> reqwest::Response {
    server
        .client
        .post(server.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Send the signed Subtotal webhook about `connection` (the simulator's shape); its status.
async fn subtotal_webhook(server: &Running, event_id: &str, connection: &Value) -> u16 {
    let body = serde_json::to_vec(&serde_json::json!({
        "type": "connection.unauthenticated",
        "id": event_id,
        "payload": { "connection": connection },
    }))
    .unwrap();
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig: String = hmac_sha256(SECRET, &[ts.as_bytes(), b".", &body])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    server
        .client
        .post(server.url("/v1/webhooks/subtotal"))
        .header("content-type", "application/json")
        .header("X-Subtotal-Timestamp", ts)
        .header("X-Subtotal-Signature", format!("v1={sig}"))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_from_the_store_and_the_leader_does_its_work() {
    let Some(db) = pg::postgres().await else {
        return;
    };
    // Two simulator fleets with the same seed: the leader's, and the follower's, which must
    // never be asked anything while it follows.
    let leader_fleet = Fleet::start(3, 41).await.unwrap();
    let follower_fleet = Fleet::start(3, 41).await.unwrap();
    let a = replica(&leader_fleet, db.store(), "replica-a").await;
    let n = view(&a).await.len();
    wait_for(
        async || stored_events(&a).await.len() >= n,
        "the leader's first poll stored",
    )
    .await;
    let b = replica(&follower_fleet, db.store(), "replica-b").await;

    // Who leads, in /readyz (a warning, not a 503) and /metrics.
    let ready = get_json(&b, "/readyz").await;
    let follower = ready["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "follower")
        .unwrap_or_else(|| panic!("{ready}"));
    assert!(
        follower["message"].as_str().unwrap().contains("replica-a"),
        "{follower}"
    );
    assert!(!get_json(&a, "/readyz").await["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "follower"));
    assert!(text(&a, "/metrics")
        .await
        .contains("connhealth_leader{holder=\"replica-a\",leader=\"replica-a\"} 1"));
    let m = text(&b, "/metrics").await;
    assert!(
        m.contains("connhealth_leader{holder=\"replica-b\",leader=\"replica-a\"} 0"),
        "{m}"
    );
    assert!(m.contains("connhealth_follower_sync_age_seconds"), "{m}");

    // The follower's view is the leader's, from the store.
    assert_eq!(view(&b).await, view(&a).await);
    let (sa, sb) = (
        get_json(&a, "/v1/summary").await,
        get_json(&b, "/v1/summary").await,
    );
    assert_eq!(sa["by_status"], sb["by_status"]);
    assert_eq!(
        get_json(&b, "/v1/connections?limit=500").await["total"],
        get_json(&a, "/v1/connections?limit=500").await["total"]
    );

    // A webhook to the follower goes into the stored queue; the leader drains it (asking its
    // own simulator), and the change reaches the follower's view and its event stream.
    let id = format!("subtotal:{DOC_CONNECTION}");
    let mut sse = SseReader::connect(&b, None).await;
    let mut leader_sse = SseReader::connect(&a, None).await;
    assert!(leader_fleet
        .subtotal
        .set_status(DOC_CONNECTION, "unauthenticated"));
    let before = get_json(&a, &format!("/v1/connections/{id}")).await;
    let c = leader_fleet.subtotal.connection(DOC_CONNECTION).unwrap();
    let sent = serde_json::json!({
        "connection_id": c.connection_id, "customer_id": c.customer_id,
        "retailer_id": c.retailer_id, "status": "unauthenticated", "email": null, "mobile": null,
    });
    assert_eq!(subtotal_webhook(&b, "evt-replica-1", &sent).await, 202);
    // The leader publishes the change when it commits it; the follower, the same event (same
    // store id) once it read it from the store. The gap is its lag (measured for
    // BENCHMARKS.md, not asserted: FOLLOW_EVERY bounds it).
    let committed = leader_sse
        .until(Duration::from_secs(20), |e| {
            e.event == "status_changed" && e.json()["connection_id"] == id.as_str()
        })
        .await;
    let seen_on_leader = std::time::Instant::now();
    let changed = sse
        .until(Duration::from_secs(20), |e| e.id == committed.id)
        .await;
    eprintln!(
        "follower lag: the event reached the follower's stream {:?} after the leader's",
        seen_on_leader.elapsed()
    );
    assert_eq!(changed.event, "status_changed");
    assert_eq!(changed.json()["source"], "webhook");
    assert_eq!(changed.json()["to"], "action_required");
    wait_for(
        async || {
            view(&b)
                .await
                .iter()
                .any(|(c, s)| *c == id && s == "action_required")
        },
        "the follower's /v1/report shows the leader's change",
    )
    .await;
    assert_eq!(
        get_json(&b, &format!("/v1/connections/{id}")).await["status"],
        "action_required"
    );

    // POST /v1/refresh on the follower: queued, done by the leader, answered once done.
    let customer = before["customer"]["id"].as_str().unwrap().to_owned();
    let leader_asked = leader_fleet.subtotal.stats().total_requests();
    let resp = post(
        &b,
        "/v1/refresh",
        serde_json::json!({"provider": "subtotal", "customer_id": customer}),
    )
    .await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["done"], true, "{body}");
    assert!(leader_fleet.subtotal.stats().total_requests() > leader_asked);

    // An action on the follower: relayed through the store, done by the leader (which
    // re-fetches the connection from its simulator), answered with the leader's answer.
    let leader_asked = leader_fleet.subtotal.stats().total_requests();
    let resp = post(
        &b,
        &format!("/v1/connections/{id}/actions/reauth_link"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "reauth_link", "{body}");
    assert_eq!(body["ok"], true, "{body}");
    assert!(body["url"]
        .as_str()
        .unwrap()
        .starts_with("https://link.subtotal.example/reconnect"));
    assert!(leader_fleet.subtotal.stats().total_requests() > leader_asked);
    // One audit row, written by the leader; the link stays out of it.
    let audit: Value = b
        .client
        .get(b.url("/v1/audit"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = audit["items"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{audit}");
    assert_eq!(rows[0]["action"], "reauth_link");
    assert!(!audit.to_string().contains("link.subtotal.example"));
    // An action the connection does not support: the leader's 404, relayed.
    let resp = post(
        &b,
        &format!("/v1/connections/{id}/actions/connect_link"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(asked(&follower_fleet), 0, "a follower called a provider");

    // Takeover: the leader stops (and gives its lease up); the follower leads, polling its
    // own simulators, which agree with what was stored (the same change was made there):
    // nothing is announced again.
    assert!(follower_fleet
        .subtotal
        .set_status(DOC_CONNECTION, "unauthenticated"));
    let stored_before = stored_events(&b).await.len();
    a.stop().await.unwrap();
    wait_for(
        async || {
            text(&b, "/metrics")
                .await
                .contains("connhealth_leader{holder=\"replica-b\",leader=\"replica-b\"} 1")
        },
        "the follower leads",
    )
    .await;
    wait_for(
        async || {
            asked(&follower_fleet) > 0
                && text(&b, "/metrics")
                    .await
                    .contains("connhealth_polls_total 1")
        },
        "the new leader's first poll",
    )
    .await;
    assert!(!get_json(&b, "/readyz").await["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "follower"));
    let history = get_json(&b, &format!("/v1/connections/{id}/history")).await;
    let to_action_required = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "status_changed" && e["to"] == "action_required")
        .count();
    assert_eq!(to_action_required, 1, "{history}");
    // Its own first poll may only add what really differs between the two fleets (nothing).
    let after: Vec<Value> = stored_events(&b).await[stored_before..].to_vec();
    assert!(
        after.iter().all(|e| e["source"] != "poll"),
        "a takeover re-announced: {after:?}"
    );
    b.stop().await.unwrap();
}

/// A leader whose lease another holder took (as after a pause past its TTL) stops: it calls
/// no provider any more, says who leads, and a refresh sent to it while nobody it knows does
/// the work is answered `queued` after the bounded wait; once the lease is free it leads
/// again, from what the store holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_lease_stops_and_follows() {
    let Some(db) = pg::postgres().await else {
        return;
    };
    let fleet = Fleet::start(3, 41).await.unwrap();
    let a = replica(&fleet, db.store(), "replica-a").await;
    let n = view(&a).await.len();
    wait_for(
        async || stored_events(&a).await.len() >= n,
        "the first poll stored",
    )
    .await;
    let far = chrono::Utc::now().timestamp_millis() + 10 * 60 * 1000;
    db.raw(&format!(
        "UPDATE leases SET holder = 'intruder', until_ms = {far} WHERE name = 'leader'"
    ));
    wait_for(
        async || {
            text(&a, "/metrics")
                .await
                .contains("connhealth_leader{holder=\"replica-a\",leader=\"intruder\"} 0")
        },
        "replica-a follows the intruder",
    )
    .await;
    let ready = get_json(&a, "/readyz").await;
    assert!(ready.to_string().contains("intruder leads"), "{ready}");
    let asked_before = asked(&fleet);

    // Nobody drains the queue now: the refresh is answered after the bounded wait.
    let customer = fleet.subtotal.customer_ids()[0].clone();
    let resp = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
        .post(a.url("/v1/refresh"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"provider": "subtotal", "customer_id": customer}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["queued"], true, "{body}");
    assert!(body["work_id"].as_i64().is_some(), "{body}");
    assert_eq!(asked(&fleet), asked_before, "a follower called a provider");
    // The follower's queue count is the store's: the refresh still waits there.
    wait_for(
        async || {
            text(&a, "/metrics")
                .await
                .contains("connhealth_webhook_queue_depth 1")
        },
        "the follower counts the stored queue",
    )
    .await;

    // The intruder goes away: replica-a leads again (a second term) and does the queued work.
    db.raw("DELETE FROM leases WHERE name = 'leader'");
    wait_for(
        async || {
            let m = text(&a, "/metrics").await;
            m.contains("connhealth_leader{holder=\"replica-a\",leader=\"replica-a\"} 1")
                && m.contains("connhealth_leader_terms_total 2")
        },
        "replica-a leads again",
    )
    .await;
    wait_for(
        async || fleet.subtotal.stats().total_requests() > 0 && asked(&fleet) > asked_before,
        "the new term polls and drains the queue",
    )
    .await;
    a.stop().await.unwrap();
}
