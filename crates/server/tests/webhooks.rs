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

/// How a test's serve is set up (the defaults: the default queue bound, the client's
/// default timeouts).
#[derive(Debug, Clone, Copy, Default)]
struct Setup {
    queue_bound: Option<usize>,
    /// Subtotal's request timeout, without retries: a hung targeted read fails fast
    /// (transient), so the item is released and retried.
    subtotal_timeout: Option<Duration>,
}

/// A watcher over the fleet whose Subtotal provider verifies webhooks with [`SECRET`] (Violet
/// with [`VIOLET_SECRET`]) and
/// polls only once (an hour apart): later changes can only come from webhooks.
fn watcher(fleet: &Fleet, setup: Setup) -> Watcher {
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
    let mut subtotal = simulators::subtotal(&fleet.subtotal)
        .link_url("https://link.subtotal.example/reconnect")
        .webhook_secret(Secret::new(SECRET));
    if let Some(t) = setup.subtotal_timeout {
        subtotal = subtotal
            .request_timeout(t)
            .retry(connhealth_core::http::RetryPolicy::none());
    }
    let subtotal = subtotal.build().unwrap();
    let violet = simulators::violet(&fleet.violet)
        .webhook_secret(Secret::new(VIOLET_SECRET))
        .build()
        .unwrap();
    w.add(Arc::new(c3), None);
    w.add(Arc::new(violet), None);
    w.add(Arc::new(subtotal), None);
    w
}

/// Serve over `fleet` on `store`, returned once the first poll's events are stored.
async fn start_on(fleet: &Fleet, store: Arc<dyn Store>, setup: Setup) -> Running {
    let (journal, loaded) = Journal::load(store, JournalOptions::default())
        .await
        .unwrap();
    let w = watcher(fleet, setup).with_state(loaded);
    let server = Running::start_with(w, Options::default(), |s| {
        let s = match setup.queue_bound {
            Some(b) => s.with_queue_bound(b),
            None => s,
        };
        s.with_store(journal, |_| {})
    })
    .await;
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

/// One test's world: the simulators, a store (a SQLite file or a PostgreSQL database, kept
/// open), and serve on them.
struct World {
    fleet: Fleet,
    db: pg::Fixture,
    server: Option<Running>,
}

impl World {
    async fn new(db: pg::Fixture, setup: Setup) -> World {
        let fleet = Fleet::start(3, 41).await.unwrap();
        let server = start_on(&fleet, db.store(), setup).await;
        World {
            fleet,
            db,
            server: Some(server),
        }
    }

    async fn sqlite(setup: Setup) -> World {
        World::new(pg::sqlite().await, setup).await
    }

    fn server(&self) -> &Running {
        self.server.as_ref().expect("serving")
    }

    /// Stop serve and start another process's worth on the same store and simulators.
    async fn restart(&mut self, setup: Setup) {
        if let Some(s) = self.server.take() {
            s.stop().await.unwrap();
        }
        self.server = Some(start_on(&self.fleet, self.db.store(), setup).await);
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.unwrap();
        }
    }

    /// The Subtotal connection of the documented example, as its webhooks carry it.
    fn doc_connection(&self, status: &str) -> Value {
        let c = self.fleet.subtotal.connection(DOC_CONNECTION).unwrap();
        serde_json::json!({
            "connection_id": c.connection_id, "customer_id": c.customer_id,
            "retailer_id": c.retailer_id, "status": status, "email": null, "mobile": null,
        })
    }

    /// POST a Subtotal webhook, signed with [`SECRET`] now.
    async fn post_subtotal(&self, body: &[u8]) -> reqwest::Response {
        let headers = sign(SECRET, chrono::Utc::now().timestamp(), body);
        post(
            self.server(),
            "/v1/webhooks/subtotal",
            Some(headers),
            body.to_vec(),
        )
        .await
    }

    async fn metrics(&self) -> String {
        let r = self.server().get("/metrics").await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }
}

/// The value of one series (`name{labels}` exactly as exposed), 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
}

/// Run each named test on a SQLite file and on a real PostgreSQL database.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::pg::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = super::pg::postgres().await else { return };
                    super::$name(db).await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_signed_subtotal_unauthenticated_webhook_turns_the_connection_action_required,
    rejected_webhooks_change_nothing,
);

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

async fn a_signed_subtotal_unauthenticated_webhook_turns_the_connection_action_required(
    db: pg::Fixture,
) {
    let world = World::new(db, Setup::default()).await;
    let (fleet, server) = (&world.fleet, world.server());
    let id = format!("subtotal:{DOC_CONNECTION}");
    let before = get_json(server, &format!("/v1/connections/{id}")).await;
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
    // once (status_changed, the webhook's word); the problem the adapter maps (problem_raised)
    // comes with the first read after it: the webhook's confirming read, or the scheduled
    // re-check the webhook moved to the front, whichever lands first (source `webhook` or
    // `poll`). Done when both are stored and the worker's targeted refresh finished.
    wait_for(
        async || {
            let history = get_json(server, &format!("/v1/connections/{id}/history")).await;
            let items = history["items"].as_array().unwrap();
            let status = items
                .iter()
                .any(|e| e["event"] == "status_changed" && e["source"] == "webhook");
            let problem = items.iter().any(|e| e["event"] == "problem_raised");
            let m = world.metrics().await;
            let refreshed = metric(
                &m,
                "connhealth_refreshes_total{provider=\"subtotal\",source=\"webhook\",result=\"done\"}",
            ) >= 1.0;
            status && problem && refreshed
        },
        "status_changed (webhook), problem_raised and the targeted refresh",
    )
    .await;
    let history = get_json(server, &format!("/v1/connections/{id}/history")).await;
    let raised = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "problem_raised")
        .count();
    assert_eq!(
        raised, 1,
        "announced once, whichever read brought it: {history}"
    );
    let now = get_json(server, &format!("/v1/connections/{id}")).await;
    assert_eq!(now["status"], "action_required");
    let events = all_events(server).await;
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
    let resp = post(server, "/v1/webhooks/subtotal", Some(headers), body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({ "duplicate": true })
    );
    assert_eq!(all_events(server).await, events);
    // Counted: one accepted, one replay, one targeted refresh done, nothing left queued.
    let m = world.metrics().await;
    let received = |outcome: &str| {
        metric(
            &m,
            &format!(
                "connhealth_webhooks_received_total{{provider=\"subtotal\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(
        (received("accepted"), received("duplicate")),
        (1.0, 1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "connhealth_refreshes_total{provider=\"subtotal\",source=\"webhook\",result=\"done\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "connhealth_webhook_queue_depth"), 0.0, "{m}");
    // The time of the accepted one is known to the state (and so to /v1/summary).
    let last = server_last_webhook(&m, "subtotal");
    assert!(last.is_some(), "{m}");
    world.stop().await;
}

/// `connhealth_webhook_last_received_timestamp_seconds` of `provider`, if exposed.
fn server_last_webhook(m: &str, provider: &str) -> Option<f64> {
    let series =
        format!("connhealth_webhook_last_received_timestamp_seconds{{provider=\"{provider}\"}}");
    m.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map(|v| v.trim().parse().unwrap())
}

async fn rejected_webhooks_change_nothing(db: pg::Fixture) {
    let world = World::new(db, Setup::default()).await;
    let (fleet, server) = (&world.fleet, world.server());
    let events = all_events(server).await;
    let connections = get_json(server, "/v1/connections?limit=1000").await;
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
        server,
        path,
        Some(sign("not-the-secret", now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 401);
    // A true signature, but of another body.
    let other = subtotal_body("01EVTREJECTED0000000000002", "connection.activated", &conn);
    let r = post(server, path, Some(sign(SECRET, now, &other)), body.clone()).await;
    assert_eq!(r.status(), 401);
    // No signature at all.
    let r = post(server, path, None, body.clone()).await;
    assert_eq!(r.status(), 401);
    // A stale timestamp (an hour old), correctly signed.
    let r = post(
        server,
        path,
        Some(sign(SECRET, now - 3600, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 401);
    // Above 1 MiB.
    let huge = vec![b' '; 1024 * 1024 + 1];
    let r = post(server, path, Some(sign(SECRET, now, &huge)), huge).await;
    assert_eq!(r.status(), 413);
    // Signed, but not JSON; signed JSON of the wrong shape.
    let junk = b"this is not json".to_vec();
    let r = post(server, path, Some(sign(SECRET, now, &junk)), junk).await;
    assert_eq!(r.status(), 400);
    let shape = br#"{"type": 7, "payload": []}"#.to_vec();
    let r = post(server, path, Some(sign(SECRET, now, &shape)), shape).await;
    assert_eq!(r.status(), 400);
    // No such provider; a provider without webhooks configured.
    let r = post(
        server,
        "/v1/webhooks/nosuch",
        Some(sign(SECRET, now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = post(
        server,
        "/v1/webhooks/channel3",
        Some(sign(SECRET, now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 404);

    assert_eq!(all_events(server).await, events);
    assert_eq!(
        get_json(server, "/v1/connections?limit=1000").await,
        connections
    );

    // An unknown event type, correctly signed: 202, recorded, nothing else.
    let unknown = subtotal_body("01EVTUNKNOWN00000000000001", "connection.teleported", &conn);
    let r = post(
        server,
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
    let r = post(server, path, Some(sign(SECRET, now, &unknown)), unknown).await;
    assert_eq!(r.status(), 200);
    assert_eq!(all_events(server).await, events);
    assert_eq!(
        get_json(server, "/v1/connections?limit=1000").await,
        connections
    );
    assert_eq!(
        world
            .db
            .store()
            .webhook_overview()
            .await
            .unwrap()
            .pending_work,
        0,
        "nothing queued"
    );
    // Each answer counted under its outcome; a made-up provider name is `unknown`.
    let m = world.metrics().await;
    let count = |provider: &str, outcome: &str| {
        metric(
            &m,
            &format!("connhealth_webhooks_received_total{{provider=\"{provider}\",outcome=\"{outcome}\"}}"),
        )
    };
    for (provider, outcome, n) in [
        ("subtotal", "rejected_signature", 4.0),
        ("subtotal", "too_large", 1.0),
        ("subtotal", "rejected_body", 2.0),
        ("subtotal", "accepted", 1.0),
        ("subtotal", "duplicate", 1.0),
        ("subtotal", "queue_full", 0.0),
        ("unknown", "unknown_provider", 1.0),
        ("channel3", "unknown_provider", 1.0),
    ] {
        assert_eq!(count(provider, outcome), n, "{provider} {outcome}:\n{m}");
    }
    assert!(!m.contains("nosuch"), "{m}");
    assert!(
        !m.contains("connhealth_refreshes_total{"),
        "no refresh ran: {m}"
    );
    world.stop().await;
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
    let open = start_on(&fleet, f.store(), Setup::default()).await;
    let r = post_refresh(&open, Some(ADMIN), &good).await;
    assert_eq!(r.status(), 403);
    open.stop().await.unwrap();

    let f = pg::sqlite().await;
    let (journal, loaded) = Journal::load(f.store(), JournalOptions::default())
        .await
        .unwrap();
    let w = watcher(&fleet, Setup::default()).with_state(loaded);
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

/// With the queue bound at 1: the targeted read of the documented connection hangs (until
/// Subtotal's short request timeout), so the one queued refresh keeps its place however slowly
/// the test runs; it is retried (the sweep) until the read answers.
const HOLD: Setup = Setup {
    queue_bound: Some(1),
    subtotal_timeout: Some(Duration::from_millis(300)),
};

fn hang_doc_read(fleet: &Fleet) {
    let c = fleet.subtotal.connection(DOC_CONNECTION).unwrap();
    fleet.subtotal.faults().push(
        connhealth_testkit::FaultRule::new(connhealth_testkit::Fault::Hang)
            .route(connhealth_testkit::subtotal::GET_CONNECTION)
            .path_contains(format!("/connections/{}", c.connection_id)),
    );
}

fn assert_retry_after(r: &reqwest::Response) {
    assert_eq!(r.status(), 429);
    let retry = r
        .headers()
        .get("retry-after")
        .expect("Retry-After on a 429");
    assert!(retry.to_str().unwrap().parse::<u64>().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_while_the_queue_is_full_is_a_duplicate_and_a_new_id_is_accepted_once_it_drains() {
    let world = World::sqlite(HOLD).await;
    let (fleet, server) = (&world.fleet, world.server());
    hang_doc_read(fleet);
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "unauthenticated"));
    let conn = world.doc_connection("unauthenticated");
    let a = subtotal_body(
        "01EVTQUEUEA000000000000001",
        "connection.unauthenticated",
        &conn,
    );
    let b = subtotal_body(
        "01EVTQUEUEB000000000000001",
        "connection.unauthenticated",
        &conn,
    );
    assert_eq!(world.post_subtotal(&a).await.status(), 202);
    // The queue is full (A's refresh holds the only place): a replay of A is still told it is
    // a duplicate, B is pushed back with nothing recorded.
    let r = world.post_subtotal(&a).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({ "duplicate": true })
    );
    let r = world.post_subtotal(&b).await;
    assert_retry_after(&r);
    let store = world.db.store();
    assert!(!store
        .webhook_seen("subtotal", "01EVTQUEUEB000000000000001")
        .await
        .unwrap());
    assert_eq!(store.webhook_overview().await.unwrap().pending_work, 1);
    // The rest of serve answers.
    assert_eq!(server.get("/healthz").await.status(), 200);
    assert_eq!(server.get("/v1/report").await.status(), 200);
    let m = world.metrics().await;
    assert_eq!(metric(&m, "connhealth_webhook_queue_depth"), 1.0, "{m}");
    assert_eq!(metric(&m, "connhealth_webhook_queue_bound"), 1.0, "{m}");

    // The read answers again: A's refresh finishes (after retries), then B is accepted.
    fleet.subtotal.faults().clear();
    wait_for(
        async || {
            let r = world.post_subtotal(&b).await;
            match r.status().as_u16() {
                202 => true,
                429 => false,
                other => panic!("B got {other}"),
            }
        },
        "B accepted once the queue drained",
    )
    .await;
    wait_for(
        async || {
            let m = world.metrics().await;
            metric(
                &m,
                "connhealth_refreshes_total{provider=\"subtotal\",source=\"webhook\",result=\"done\"}",
            ) == 2.0
        },
        "both refreshes done",
    )
    .await;
    let m = world.metrics().await;
    assert!(
        metric(
            &m,
            "connhealth_refreshes_total{provider=\"subtotal\",source=\"webhook\",result=\"retried\"}"
        ) >= 1.0,
        "{m}"
    );
    let received = |outcome: &str| {
        metric(
            &m,
            &format!(
                "connhealth_webhooks_received_total{{provider=\"subtotal\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(received("accepted"), 2.0, "{m}");
    assert_eq!(received("duplicate"), 1.0, "{m}");
    assert!(received("queue_full") >= 1.0, "{m}");
    assert_eq!(metric(&m, "connhealth_webhook_queue_depth"), 0.0, "{m}");
    // A's status, applied and confirmed, is the connection's.
    let id = format!("subtotal:{DOC_CONNECTION}");
    let now = get_json(server, &format!("/v1/connections/{id}")).await;
    assert_eq!(now["status"], "action_required");
    assert_eq!(store.webhook_overview().await.unwrap().pending_work, 0);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queued_before_a_restart_counts_against_the_bound_and_is_done_after_it() {
    let mut world = World::sqlite(HOLD).await;
    hang_doc_read(&world.fleet);
    let conn = world.doc_connection("unauthenticated");
    let a = subtotal_body(
        "01EVTRESTARTA0000000000001",
        "connection.unauthenticated",
        &conn,
    );
    let c = subtotal_body(
        "01EVTRESTARTC0000000000001",
        "connection.unauthenticated",
        &conn,
    );
    assert_eq!(world.post_subtotal(&a).await.status(), 202);
    // Stopped before A's refresh could finish (its read hangs): A stays queued in the store.
    world.restart(HOLD).await;
    assert_eq!(
        world
            .db
            .store()
            .webhook_overview()
            .await
            .unwrap()
            .pending_work,
        1
    );
    // This process accepted nothing, yet its queue is full: the count came from the store.
    let m = world.metrics().await;
    assert_eq!(metric(&m, "connhealth_webhook_queue_depth"), 1.0, "{m}");
    assert_retry_after(&world.post_subtotal(&c).await);
    assert!(!world
        .db
        .store()
        .webhook_seen("subtotal", "01EVTRESTARTC0000000000001")
        .await
        .unwrap());
    // The accepted webhook's time survived the restart.
    assert!(server_last_webhook(&m, "subtotal").is_some(), "{m}");

    // The read answers: the restarted worker does the leftover, then C is accepted.
    world.fleet.subtotal.faults().clear();
    wait_for(
        async || {
            let m = world.metrics().await;
            metric(
                &m,
                "connhealth_refreshes_total{provider=\"subtotal\",source=\"webhook\",result=\"done\"}",
            ) == 1.0
        },
        "the leftover refresh done by the restarted serve",
    )
    .await;
    assert_eq!(
        world
            .db
            .store()
            .webhook_overview()
            .await
            .unwrap()
            .pending_work,
        0
    );
    assert_eq!(world.post_subtotal(&c).await.status(), 202);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violet_merchant_disconnected_webhook_triggers_one_targeted_pull_of_that_merchant() {
    let world = World::sqlite(Setup::default()).await;
    let (fleet, server) = (&world.fleet, world.server());
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
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_for_a_customer_not_configured_is_recorded_and_changes_nothing() {
    let world = World::sqlite(Setup::default()).await;
    let (fleet, server) = (&world.fleet, world.server());
    let before = all_events(server).await;
    let connections = get_json(server, "/v1/connections?limit=1000").await;
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
        server,
        "/v1/webhooks/subtotal",
        Some(sign(SECRET, now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 202);
    // Recorded: a replay is a duplicate.
    let r = post(
        server,
        "/v1/webhooks/subtotal",
        Some(sign(SECRET, now, &body)),
        body,
    )
    .await;
    assert_eq!(r.status(), 200);
    // Then a known webhook; both refreshes are awaited through /metrics (the worker runs
    // different customers' refreshes concurrently, so one finishing says nothing of the other).
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
        server,
        "/v1/webhooks/subtotal",
        Some(sign(SECRET, now, &body)),
        body,
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = format!("subtotal:{DOC_CONNECTION}");
    wait_for(
        async || {
            all_events(server)
                .await
                .iter()
                .any(|e| e["source"] == "webhook")
        },
        "the known webhook's event",
    )
    .await;
    wait_for(
        async || {
            let m = world.metrics().await;
            let finished = |result: &str| {
                metric(
                    &m,
                    &format!("connhealth_refreshes_total{{provider=\"subtotal\",source=\"webhook\",result=\"{result}\"}}"),
                )
            };
            finished("done") + finished("failed") == 2.0
        },
        "both refreshes finished",
    )
    .await;
    let after = all_events(server).await;
    let new: Vec<&Value> = after[before.len()..].iter().collect();
    assert!(
        new.iter().all(|e| e["connection_id"] == id.as_str()),
        "{new:?}"
    );
    let now_conns = get_json(server, "/v1/connections?limit=1000").await;
    assert_eq!(
        now_conns["total"], connections["total"],
        "no connection of the stranger appeared"
    );
    world.stop().await;
}

/// The flood of the issue: 10,000 signed Subtotal events in a few seconds from many
/// concurrent clients over real HTTP, against the default queue bound. The targeted read is
/// slowed (50 ms) while the flood lasts, so the worker cannot keep up and the bound must
/// hold (at most one thousand plus twenty a second get in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_ten_thousand_webhooks_is_bounded_loses_nothing_accepted_and_serve_keeps_answering(
) {
    const N: usize = 10_000;
    const CLIENTS: usize = 32;
    let world = World::sqlite(Setup::default()).await;
    let (fleet, server) = (&world.fleet, world.server());
    let c = fleet.subtotal.connection(DOC_CONNECTION).unwrap();
    // Events that restate the connection's status: processing them changes nothing, so every
    // accepted one is one finished refresh and no event.
    let kind = restating_event(&c.status);
    let conn = world.doc_connection(&c.status);
    let bodies: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        (0..N)
            .map(|i| {
                let id = format!("01EVTFLOOD{i:016}");
                let body = subtotal_body(&id, kind, &conn);
                (id, body)
            })
            .collect(),
    );
    let events_before = all_events(server).await;
    fleet.subtotal.faults().push(
        connhealth_testkit::FaultRule::new(connhealth_testkit::Fault::Latency(
            Duration::from_millis(50),
        ))
        .route(connhealth_testkit::subtotal::GET_CONNECTION),
    );
    let url = server.url("/v1/webhooks/subtotal");

    // While the flood lasts, the rest of serve is asked, over its own connections.
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let prober = {
        let flooding = flooding.clone();
        let (health, report) = (server.url("/healthz"), server.url("/v1/report"));
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answered = (0u32, 0u32);
            let ok = async |url: &str| {
                client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            };
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                answered.0 += u32::from(ok(&health).await);
                answered.1 += u32::from(ok(&report).await);
            }
            answered
        })
    };
    let send = |indices: Vec<usize>| {
        let (bodies, url) = (bodies.clone(), url.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut out = Vec::with_capacity(indices.len());
            for i in indices {
                let (_, body) = &bodies[i];
                let (ts, sig) = sign(SECRET, chrono::Utc::now().timestamp(), body);
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("X-Subtotal-Timestamp", ts)
                    .header("X-Subtotal-Signature", sig)
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                out.push((i, r.status().as_u16(), retry_after));
            }
            out
        })
    };
    let mut tasks = Vec::new();
    for k in 0..CLIENTS {
        tasks.push(send((k..N).step_by(CLIENTS).collect()));
    }
    let mut answers = Vec::with_capacity(N);
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let (health_ok, report_ok) = prober.await.unwrap();
    assert!(health_ok >= 1 && report_ok >= 1, "{health_ok} {report_ok}");
    fleet.subtotal.faults().clear();

    let accepted: Vec<usize> = answers.iter().filter(|a| a.1 == 202).map(|a| a.0).collect();
    let pushed_back: Vec<usize> = answers.iter().filter(|a| a.1 == 429).map(|a| a.0).collect();
    assert_eq!(accepted.len() + pushed_back.len(), N, "only 202 and 429");
    assert!(!pushed_back.is_empty(), "the flood exceeded the bound");
    assert!(
        accepted.len() >= 1000,
        "the queue took its bound: {}",
        accepted.len()
    );
    assert!(answers
        .iter()
        .filter(|a| a.1 == 429)
        .all(|a| a.2.is_some_and(|s| s >= 1)));

    // Every accepted one is processed; none pushed back was recorded.
    let store = world.db.store();
    wait_for(
        async || store.webhook_overview().await.unwrap().pending_work == 0,
        "the queue drained",
    )
    .await;
    let done =
        "connhealth_refreshes_total{provider=\"subtotal\",source=\"webhook\",result=\"done\"}";
    let m = world.metrics().await;
    assert_eq!(metric(&m, done), accepted.len() as f64, "{m}");
    assert_eq!(metric(&m, "connhealth_webhook_queue_depth"), 0.0, "{m}");
    assert_eq!(
        all_events(server).await,
        events_before,
        "no change, no event"
    );
    for &i in pushed_back.iter().step_by(97) {
        assert!(!store.webhook_seen("subtotal", &bodies[i].0).await.unwrap());
    }
    for &i in accepted.iter().step_by(97) {
        assert!(store.webhook_seen("subtotal", &bodies[i].0).await.unwrap());
    }

    // Re-sent (the senders' retry) into the drained queue, at most a bound's worth at a
    // time, the pushed-back ones are all accepted: 202, never 200 (none was recorded).
    let bound = metric(&m, "connhealth_webhook_queue_bound") as usize;
    assert_eq!(bound, connhealth_server::DEFAULT_QUEUE_BOUND);
    for chunk in pushed_back.chunks(bound) {
        let mut tasks = Vec::new();
        for k in 0..CLIENTS {
            tasks.push(send(
                chunk.iter().copied().skip(k).step_by(CLIENTS).collect(),
            ));
        }
        for t in tasks {
            let again = t.await.unwrap();
            assert!(again.iter().all(|a| a.1 == 202), "{again:?}");
        }
        wait_for(
            async || store.webhook_overview().await.unwrap().pending_work == 0,
            "the queue drained",
        )
        .await;
    }
    let m = world.metrics().await;
    assert_eq!(metric(&m, done), N as f64, "{m}");
    assert_eq!(all_events(server).await, events_before);
    world.stop().await;
}

/// The Subtotal event type that restates `status` (processing it changes nothing).
fn restating_event(status: &str) -> &'static str {
    match status {
        "active" => "connection.activated",
        "unauthenticated" => "connection.unauthenticated",
        "disconnected" => "connection.disconnected",
        other => panic!("unexpected status {other}"),
    }
}

/// Group commit: concurrent accepts share store transactions, yet every 202 means that
/// webhook's id and work are durable (all seen after serve and the store are restarted); a
/// transaction that fails answers each of its webhooks 503 and records none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_are_durable_when_answered_and_a_failed_commit_records_none() {
    const N: usize = 48;
    let mut world = World::sqlite(Setup::default()).await;
    let c = world.fleet.subtotal.connection(DOC_CONNECTION).unwrap();
    let kind = restating_event(&c.status);
    let conn = world.doc_connection(&c.status);
    let ids = |prefix: &str| -> Vec<String> {
        (0..N)
            .map(|i| format!("01EVT{prefix}{i:020}"))
            .collect::<Vec<_>>()
    };
    let send_all = async |world: &World, ids: &[String]| -> Vec<u16> {
        futures::future::join_all(ids.iter().map(|id| {
            let body = subtotal_body(id, kind, &conn);
            async move { world.post_subtotal(&body).await.status().as_u16() }
        }))
        .await
    };

    let good = ids("GOOD");
    assert_eq!(send_all(&world, &good).await, vec![202; N]);

    // Every insert of these ids fails inside the store's transaction.
    world.db.raw(
        "CREATE TRIGGER boom BEFORE INSERT ON webhooks WHEN NEW.event_id LIKE '01EVTBAD%' \
         BEGIN SELECT RAISE(ABORT, 'boom'); END;",
    );
    let bad = ids("BAD");
    assert_eq!(send_all(&world, &bad).await, vec![503; N]);
    let m = world.metrics().await;
    assert_eq!(
        metric(
            &m,
            "connhealth_webhooks_received_total{provider=\"subtotal\",outcome=\"store_unavailable\"}"
        ),
        N as f64,
        "{m}"
    );

    // Restart serve and reopen the store: what was answered 202 is there, nothing else.
    if let Some(s) = world.server.take() {
        s.stop().await.unwrap();
    }
    world.db.reopen().await;
    let store = world.db.store();
    for id in &good {
        assert!(store.webhook_seen("subtotal", id).await.unwrap(), "{id}");
    }
    for id in &bad {
        assert!(!store.webhook_seen("subtotal", id).await.unwrap(), "{id}");
    }
    world.server = Some(start_on(&world.fleet, world.db.store(), Setup::default()).await);
    // Replays of the accepted ones are duplicates after the restart.
    let replay = subtotal_body(&good[0], kind, &conn);
    assert_eq!(world.post_subtotal(&replay).await.status(), 200);
    world.stop().await;
}
