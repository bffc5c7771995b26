//! `POST /v1/webhooks/{name}` over real HTTP, on a real SQLite store, with the simulators'
//! signed emitters: a verified webhook becomes a history event of source `webhook`; every
//! rejected request changes nothing.

mod common;
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

const SECRET: &str = "whsec-subtotal-test-4f1e9a";
const VIOLET_SECRET: &str = "violet-app-secret-test-8d2b";

/// A watcher over the fleet whose Subtotal provider verifies webhooks with [`SECRET`] (Violet
/// with [`VIOLET_SECRET`]) and
/// polls only once (an hour apart): later changes can only come from webhooks.
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
    let violet = simulators::violet(&fleet.violet)
        .webhook_secret(Secret::new(VIOLET_SECRET))
        .build()
        .unwrap();
    w.add(Arc::new(c3), None);
    w.add(Arc::new(violet), None);
    w.add(Arc::new(subtotal), None);
    w
}

async fn start(fleet: &Fleet, store: Arc<dyn Store>) -> Running {
    let (journal, loaded) = Journal::load(store, JournalOptions::default())
        .await
        .unwrap();
    let w = watcher(fleet).with_state(loaded);
    let server =
        Running::start_with(w, Options::default(), |s| s.with_store(journal, |_| {})).await;
    server.ready(false).await;
    // Ready once the first report is served; its events are stored just after.
    let n = get_json(&server, "/v1/report").await["connections"]
        .as_array()
        .unwrap()
        .len();
    wait_for(
        async || all_events(&server).await.len() >= n,
        "the first poll's events",
    )
    .await;
    server
}

async fn get_json(server: &Running, path: &str) -> Value {
    let resp = server.get(path).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

async fn all_events(server: &Running) -> Vec<Value> {
    get_json(server, "/v1/events?after=0&limit=1000").await["items"]
        .as_array()
        .unwrap()
        .clone()
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

/// A Subtotal webhook body about `connection_id`, and its signature headers for `ts`.
fn subtotal_body(event_id: &str, event_type: &str, connection: &Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": event_type,
        "id": event_id,
        "payload": { "connection": connection },
    }))
    .unwrap()
}

fn sign(secret: &str, ts: i64, body: &[u8]) -> (String, String) {
    let ts = ts.to_string();
    let sig: String = hmac_sha256(secret, &[ts.as_bytes(), b".", body])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (ts, format!("v1={sig}"))
}

async fn post(
    server: &Running,
    path: &str,
    headers: Option<(String, String)>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = server
        .client
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some((ts, sig)) = headers {
        req = req
            .header("X-Subtotal-Timestamp", ts)
            .header("X-Subtotal-Signature", sig);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_subtotal_unauthenticated_webhook_turns_the_connection_action_required() {
    let fleet = Fleet::start(3, 41).await.unwrap();
    let f = pg::sqlite().await;
    let server = start(&fleet, f.store()).await;
    let id = format!("subtotal:{DOC_CONNECTION}");
    let before = get_json(&server, &format!("/v1/connections/{id}")).await;
    assert_ne!(before["status"], "action_required");

    let emitter = fleet
        .subtotal
        .emit_webhooks_to(&server.url("/v1/webhooks/subtotal"), SECRET);
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "unauthenticated"));
    emitter.flush().await;
    let deliveries = emitter.deliveries();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].status, Some(202));

    // The poll is an hour away: only the webhook can bring this. The status is applied at
    // once (status_changed); the confirming read brings the problem the adapter maps
    // (problem_raised), so both mean the worker is done with this webhook.
    wait_for(
        async || {
            let history = get_json(&server, &format!("/v1/connections/{id}/history")).await;
            let items = history["items"].as_array().unwrap();
            let of = |name: &str| {
                items
                    .iter()
                    .any(|e| e["event"] == name && e["source"] == "webhook")
            };
            of("status_changed") && of("problem_raised")
        },
        "status_changed and problem_raised events of source webhook",
    )
    .await;
    let now = get_json(&server, &format!("/v1/connections/{id}")).await;
    assert_eq!(now["status"], "action_required");
    let events = all_events(&server).await;
    let hooked: Vec<&Value> = events.iter().filter(|e| e["source"] == "webhook").collect();
    assert!(!hooked.is_empty());
    assert!(hooked.iter().all(|e| e["connection_id"] == id.as_str()));

    // A replay of the same delivery: 200 duplicate, nothing new.
    let c = fleet.subtotal.connection(DOC_CONNECTION).unwrap();
    let conn = serde_json::json!({
        "connection_id": c.connection_id, "customer_id": c.customer_id,
        "retailer_id": c.retailer_id, "status": c.status, "email": null, "mobile": null,
    });
    let body = subtotal_body(&deliveries[0].event_id, "connection.unauthenticated", &conn);
    let headers = sign(SECRET, chrono::Utc::now().timestamp(), &body);
    let resp = post(&server, "/v1/webhooks/subtotal", Some(headers), body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({ "duplicate": true })
    );
    assert_eq!(all_events(&server).await, events);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_webhooks_change_nothing() {
    let fleet = Fleet::start(3, 41).await.unwrap();
    let f = pg::sqlite().await;
    let server = start(&fleet, f.store()).await;
    let events = all_events(&server).await;
    let connections = get_json(&server, "/v1/connections?limit=1000").await;
    let c = fleet.subtotal.connection(DOC_CONNECTION).unwrap();
    let conn = serde_json::json!({
        "connection_id": c.connection_id, "customer_id": c.customer_id,
        "retailer_id": c.retailer_id, "status": "unauthenticated", "email": null, "mobile": null,
    });
    let now = chrono::Utc::now().timestamp();
    let body = subtotal_body(
        "01EVTREJECTED0000000000001",
        "connection.unauthenticated",
        &conn,
    );
    let path = "/v1/webhooks/subtotal";

    // Forged: signed with another secret.
    let r = post(
        &server,
        path,
        Some(sign("not-the-secret", now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 401);
    // A true signature, but of another body.
    let other = subtotal_body("01EVTREJECTED0000000000002", "connection.activated", &conn);
    let r = post(&server, path, Some(sign(SECRET, now, &other)), body.clone()).await;
    assert_eq!(r.status(), 401);
    // No signature at all.
    let r = post(&server, path, None, body.clone()).await;
    assert_eq!(r.status(), 401);
    // A stale timestamp (an hour old), correctly signed.
    let r = post(
        &server,
        path,
        Some(sign(SECRET, now - 3600, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 401);
    // Above 1 MiB.
    let huge = vec![b' '; 1024 * 1024 + 1];
    let r = post(&server, path, Some(sign(SECRET, now, &huge)), huge).await;
    assert_eq!(r.status(), 413);
    // Signed, but not JSON; signed JSON of the wrong shape.
    let junk = b"this is not json".to_vec();
    let r = post(&server, path, Some(sign(SECRET, now, &junk)), junk).await;
    assert_eq!(r.status(), 400);
    let shape = br#"{"type": 7, "payload": []}"#.to_vec();
    let r = post(&server, path, Some(sign(SECRET, now, &shape)), shape).await;
    assert_eq!(r.status(), 400);
    // No such provider; a provider without webhooks configured.
    let r = post(
        &server,
        "/v1/webhooks/nosuch",
        Some(sign(SECRET, now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = post(
        &server,
        "/v1/webhooks/channel3",
        Some(sign(SECRET, now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 404);

    assert_eq!(all_events(&server).await, events);
    assert_eq!(
        get_json(&server, "/v1/connections?limit=1000").await,
        connections
    );

    // An unknown event type, correctly signed: 202, recorded, nothing else.
    let unknown = subtotal_body("01EVTUNKNOWN00000000000001", "connection.teleported", &conn);
    let r = post(
        &server,
        path,
        Some(sign(SECRET, now, &unknown)),
        unknown.clone(),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({ "accepted": true })
    );
    // Recorded: its replay is a duplicate.
    let r = post(&server, path, Some(sign(SECRET, now, &unknown)), unknown).await;
    assert_eq!(r.status(), 200);
    assert_eq!(all_events(&server).await, events);
    assert_eq!(
        get_json(&server, "/v1/connections?limit=1000").await,
        connections
    );
    server.stop().await.unwrap();
}

const ADMIN: &str = "admin-token-for-tests-91c2e7";

async fn post_refresh(server: &Running, auth: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = server
        .client
        .post(server.url("/v1/refresh"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(a) = auth {
        req = req.bearer_auth(a);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_needs_the_admin_token_and_records_its_changes_with_source_refresh() {
    let fleet = Fleet::start(3, 41).await.unwrap();
    let c = fleet.subtotal.connection(DOC_CONNECTION).unwrap();
    let good =
        serde_json::json!({ "provider": "subtotal", "customer_id": c.customer_id }).to_string();

    // No admin token configured: 403, even on loopback and with the read token.
    let f = pg::sqlite().await;
    let open = start(&fleet, f.store()).await;
    let r = post_refresh(&open, Some(ADMIN), &good).await;
    assert_eq!(r.status(), 403);
    open.stop().await.unwrap();

    let f = pg::sqlite().await;
    let (journal, loaded) = Journal::load(f.store(), JournalOptions::default())
        .await
        .unwrap();
    let w = watcher(&fleet).with_state(loaded);
    let server = Running::start_with(
        w,
        Options {
            token: Some(TOKEN),
            ..Options::default()
        },
        |s| {
            s.state().set_admin_token(Secret::new(ADMIN));
            s.with_store(journal, |_| {})
        },
    )
    .await;
    server.ready(true).await;
    // The admin token opens every GET too; no token opens none.
    let r = server
        .client
        .get(server.url("/v1/report"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.get("/v1/report").await.status(), 401);
    let events = async || -> Vec<Value> {
        server
            .get_auth("/v1/events?after=0&limit=1000")
            .await
            .json::<Value>()
            .await
            .unwrap()["items"]
            .as_array()
            .unwrap()
            .clone()
    };
    let n = server
        .get_auth("/v1/report")
        .await
        .json::<Value>()
        .await
        .unwrap()["connections"]
        .as_array()
        .unwrap()
        .len();
    wait_for(
        async || events().await.len() >= n,
        "the first poll's events",
    )
    .await;
    let before = events().await;

    // The simulator changes; only a refresh can tell (the next poll is an hour away).
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "disconnected"));
    // Missing, wrong (the read token is not the admin token): 401, nothing queued.
    assert_eq!(post_refresh(&server, None, &good).await.status(), 401);
    assert_eq!(
        post_refresh(&server, Some(TOKEN), &good).await.status(),
        401
    );
    assert_eq!(
        post_refresh(&server, Some("wrong-admin-token-000000"), &good)
            .await
            .status(),
        401
    );
    // Bad bodies: 400; an unknown provider: 404.
    assert_eq!(
        post_refresh(&server, Some(ADMIN), "not json")
            .await
            .status(),
        400
    );
    assert_eq!(
        post_refresh(&server, Some(ADMIN), r#"{"provider":"subtotal"}"#)
            .await
            .status(),
        400
    );
    let unknown = serde_json::json!({ "provider": "nosuch", "customer_id": "x" }).to_string();
    assert_eq!(
        post_refresh(&server, Some(ADMIN), &unknown).await.status(),
        404
    );
    assert_eq!(events().await, before, "a rejected request changed nothing");

    let r = post_refresh(&server, Some(ADMIN), &good).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({ "accepted": true })
    );
    let id = format!("subtotal:{DOC_CONNECTION}");
    wait_for(
        async || {
            events().await.iter().any(|e| {
                e["event"] == "status_changed"
                    && e["source"] == "refresh"
                    && e["connection_id"] == id.as_str()
            })
        },
        "a status_changed event of source refresh",
    )
    .await;
    let now: Value = server
        .get_auth(&format!("/v1/connections/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["status"], "disconnected");
    server.stop().await.unwrap();
}

#[test]
fn a_short_admin_token_is_refused() {
    let mut config = connhealth_server::ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.admin_token = Some(Secret::new("short"));
    let err =
        connhealth_server::Server::new(config, Watcher::new(WatchConfig::default())).unwrap_err();
    assert!(matches!(
        err,
        connhealth_server::ServerError::AdminTokenTooShort
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_queue_bound_is_429_with_retry_after_and_serve_keeps_answering() {
    let fleet = Fleet::start(3, 41).await.unwrap();
    let f = pg::sqlite().await;
    let (journal, loaded) = Journal::load(f.store(), JournalOptions::default())
        .await
        .unwrap();
    let w = watcher(&fleet).with_state(loaded);
    let server = Running::start_with(w, Options::default(), |s| {
        s.with_queue_bound(1).with_store(journal, |_| {})
    })
    .await;
    server.ready(false).await;
    // Refreshes now hang: the first queued one holds the only place in the queue.
    fleet
        .subtotal
        .faults()
        .on_all(connhealth_testkit::Fault::Hang);
    let c = fleet.subtotal.connection(DOC_CONNECTION).unwrap();
    let conn = serde_json::json!({
        "connection_id": c.connection_id, "customer_id": c.customer_id,
        "retailer_id": c.retailer_id, "status": "unauthenticated", "email": null, "mobile": null,
    });
    let now = chrono::Utc::now().timestamp();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let body = subtotal_body(
            &format!("01EVTFLOOD{i:016}"),
            "connection.unauthenticated",
            &conn,
        );
        let r = post(
            &server,
            "/v1/webhooks/subtotal",
            Some(sign(SECRET, now, &body)),
            body,
        )
        .await;
        if r.status() == 429 {
            let retry = r
                .headers()
                .get("retry-after")
                .expect("Retry-After on a 429");
            assert!(retry.to_str().unwrap().parse::<u64>().unwrap() >= 1);
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[0], 202, "{statuses:?}");
    assert!(statuses[1..].iter().all(|s| *s == 429), "{statuses:?}");
    // The rest of serve answers.
    assert_eq!(server.get("/healthz").await.status(), 200);
    assert_eq!(server.get("/v1/report").await.status(), 200);
    assert_eq!(server.get("/v1/connections").await.status(), 200);
    fleet.subtotal.faults().clear();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violet_merchant_disconnected_webhook_triggers_one_targeted_pull_of_that_merchant() {
    let fleet = Fleet::start(3, 41).await.unwrap();
    let f = pg::sqlite().await;
    let server = start(&fleet, f.store()).await;
    let merchant = fleet.violet.merchant_ids()[0];
    let stats = fleet.violet.stats();
    let by_route = stats.requests_by_route();
    let paths = stats.raw_paths().len();
    let emitter = fleet
        .violet
        .emit_webhooks_to(&server.url("/v1/webhooks/violet"), VIOLET_SECRET);
    fleet
        .violet
        .emit_webhook("MERCHANT_DISCONNECTED", merchant)
        .expect("webhooks are on");
    emitter.flush().await;
    let deliveries = emitter.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, Some(202));
    let targeted = format!("/connection_health/{merchant}");
    wait_for(
        async || {
            stats.raw_paths()[paths..]
                .iter()
                .any(|p| p.contains(&targeted))
        },
        "the targeted pull of the merchant",
    )
    .await;
    let new: Vec<String> = stats.raw_paths()[paths..].to_vec();
    let pulls: Vec<&String> = new
        .iter()
        .filter(|p| p.contains("/operations/connection_health"))
        .collect();
    assert_eq!(pulls.len(), 1, "{new:?}");
    assert!(pulls[0].contains(&targeted), "{new:?}");
    // No full listing was asked for.
    let after = stats.requests_by_route();
    let list_route = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .filter(|(k, _)| k.ends_with("/operations/connection_health"))
            .map(|(_, v)| *v)
            .sum::<u64>()
    };
    assert_eq!(list_route(&after), list_route(&by_route));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_for_a_customer_not_configured_is_recorded_and_changes_nothing() {
    let fleet = Fleet::start(3, 41).await.unwrap();
    let f = pg::sqlite().await;
    let server = start(&fleet, f.store()).await;
    let before = all_events(&server).await;
    let connections = get_json(&server, "/v1/connections?limit=1000").await;
    let c = fleet.subtotal.connection(DOC_CONNECTION).unwrap();
    let stranger = serde_json::json!({
        "connection_id": "01JNOTCONFIGURED0000000000", "customer_id": "not-a-configured-customer",
        "retailer_id": c.retailer_id, "status": "unauthenticated", "email": null, "mobile": null,
    });
    let now = chrono::Utc::now().timestamp();
    let body = subtotal_body(
        "01EVTSTRANGER0000000000001",
        "connection.unauthenticated",
        &stranger,
    );
    let r = post(
        &server,
        "/v1/webhooks/subtotal",
        Some(sign(SECRET, now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 202);
    // Recorded: a replay is a duplicate.
    let r = post(
        &server,
        "/v1/webhooks/subtotal",
        Some(sign(SECRET, now, &body)),
        body,
    )
    .await;
    assert_eq!(r.status(), 200);
    // The worker is sequential: once a later, known webhook's event is stored, the stranger's
    // refresh has been handled.
    let known = serde_json::json!({
        "connection_id": c.connection_id, "customer_id": c.customer_id,
        "retailer_id": c.retailer_id, "status": "unauthenticated", "email": null, "mobile": null,
    });
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "unauthenticated"));
    let body = subtotal_body(
        "01EVTKNOWN000000000000001",
        "connection.unauthenticated",
        &known,
    );
    let r = post(
        &server,
        "/v1/webhooks/subtotal",
        Some(sign(SECRET, now, &body)),
        body,
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = format!("subtotal:{DOC_CONNECTION}");
    wait_for(
        async || {
            all_events(&server)
                .await
                .iter()
                .any(|e| e["source"] == "webhook")
        },
        "the known webhook's event",
    )
    .await;
    let after = all_events(&server).await;
    let new: Vec<&Value> = after[before.len()..].iter().collect();
    assert!(
        new.iter().all(|e| e["connection_id"] == id.as_str()),
        "{new:?}"
    );
    let now_conns = get_json(&server, "/v1/connections?limit=1000").await;
    assert_eq!(
        now_conns["total"], connections["total"],
        "no connection of the stranger appeared"
    );
    server.stop().await.unwrap();
}
