//! `POST /v1/connections/{id}/actions/{kind}` and `GET /v1/audit` over real HTTP, on a real
//! SQLite store, against the testkit's simulators: each action end to end with its status
//! code, its audit row and, where the connection changed, its event of source `action`; every
//! refused or failed request claims nothing and changes nothing.

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
use connhealth_testkit::data::CHANNEL3_REDIRECT_PREFIX;
use connhealth_testkit::subtotal::{CREATE_TOKEN, UPDATE_CONNECTION};
use connhealth_testkit::{channel3, violet, Fault, FaultRule, Fleet};
use serde_json::Value;

const ADMIN: &str = "admin-token-for-actions-5b8e21";

/// A watcher over the fleet that polls once (an hour apart): later changes can only come from
/// actions.
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
        .connect_redirect_uri(format!("{CHANNEL3_REDIRECT_PREFIX}connected"))
        .build()
        .unwrap();
    let subtotal = simulators::subtotal(&fleet.subtotal)
        .link_url("https://link.subtotal.example/reconnect")
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let violet = simulators::violet(&fleet.violet).build().unwrap();
    w.add(Arc::new(c3), None);
    w.add(Arc::new(violet), None);
    w.add(Arc::new(subtotal), None);
    w
}

async fn start(fleet: &Fleet, store: Arc<dyn Store>, admin: bool) -> Running {
    let (journal, loaded) = Journal::load(store, JournalOptions::default())
        .await
        .unwrap();
    let w = watcher(fleet).with_state(loaded);
    let server = Running::start_with(w, Options::default(), |s| {
        if admin {
            s.state().set_admin_token(Secret::new(ADMIN));
        }
        s.with_store(journal, |_| {})
    })
    .await;
    server.ready(false).await;
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

async fn action_events(server: &Running) -> Vec<Value> {
    all_events(server)
        .await
        .into_iter()
        .filter(|e| e["source"] == "action")
        .collect()
}

async fn audit(server: &Running) -> Vec<Value> {
    get_json(server, "/v1/audit?limit=1000").await["items"]
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

fn path(id: &str, kind: &str) -> String {
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    format!("/v1/connections/{id}/actions/{kind}")
}

async fn act(server: &Running, id: &str, kind: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = server.client.post(server.url(&path(id, kind)));
    if let Some(a) = auth {
        req = req.bearer_auth(a);
    }
    req.send().await.unwrap()
}

async fn act_json(
    server: &Running,
    id: &str,
    kind: &str,
    want: u16,
) -> (Value, reqwest::header::HeaderMap) {
    let resp = act(server, id, kind, Some(ADMIN)).await;
    assert_eq!(resp.status(), want, "{id} {kind}");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let headers = resp.headers().clone();
    (resp.json().await.unwrap(), headers)
}

/// The connection of the current report with this status and provider.
async fn find(server: &Running, provider: &str, status: &str) -> Value {
    let report = get_json(server, "/v1/report").await;
    report["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == provider && c["status"] == status)
        .unwrap_or_else(|| panic!("no {provider} connection {status}"))
        .clone()
}

fn kinds(item: &Value) -> Vec<(String, bool)> {
    item["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_owned(),
                a["destructive"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_listed_on_every_connection_and_need_the_admin_token() {
    let fleet = Fleet::start(3, 81).await.unwrap();
    let id = format!("subtotal:{DOC_CONNECTION}");

    // No admin token configured: 403, nothing done, no audit row.
    let f = pg::sqlite().await;
    let open = start(&fleet, f.store(), false).await;
    let r = act(&open, &id, "disconnect", Some(ADMIN)).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(audit(&open).await.is_empty());
    open.stop().await.unwrap();

    let f = pg::sqlite().await;
    let server = start(&fleet, f.store(), true).await;
    let page = get_json(&server, "/v1/connections?limit=1000").await;
    let items = page["items"].as_array().unwrap();
    assert!(!items.is_empty());
    for item in items {
        let listed = kinds(item);
        let want: Vec<(String, bool)> = match (
            item["provider"].as_str().unwrap(),
            item["status"].as_str().unwrap(),
        ) {
            ("violet", _) => vec![("refresh".into(), false)],
            ("channel3", "not_connected" | "disconnected" | "action_required") => {
                vec![("connect_link".into(), false)]
            }
            ("channel3", _) => vec![],
            ("subtotal", "disconnected") => vec![("reauth_link".into(), false)],
            ("subtotal", "action_required") => {
                vec![("reauth_link".into(), false), ("disconnect".into(), true)]
            }
            ("subtotal", _) => vec![("disconnect".into(), true)],
            (p, _) => panic!("unexpected provider {p}"),
        };
        assert_eq!(listed, want, "{}", item["id"]);
        let one = get_json(
            &server,
            &format!(
                "/v1/connections/{}",
                item["id"].as_str().unwrap().replace(':', "%3A")
            ),
        )
        .await;
        assert_eq!(one["actions"], item["actions"]);
    }

    // Missing, wrong (and a cookie is never read): 401, the provider never asked.
    for auth in [None, Some("wrong-admin-token-0000000")] {
        let r = act(&server, &id, "disconnect", auth).await;
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
    let r = server
        .client
        .post(server.url(&path(&id, "disconnect")))
        .header("cookie", format!("token={ADMIN}; admin_token={ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A GET of the action route is not an action.
    let r = server.get(&path(&id, "disconnect")).await;
    assert_eq!(r.status(), 405);
    assert_eq!(fleet.subtotal.stats().requests(UPDATE_CONNECTION), 0);
    assert_eq!(fleet.subtotal.stats().requests(CREATE_TOKEN), 0);
    assert!(
        audit(&server).await.is_empty(),
        "unauthenticated attempts are not audited"
    );
    assert!(action_events(&server).await.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtotal_disconnect_end_to_end_then_a_failing_patch_claims_nothing() {
    let fleet = Fleet::start(3, 82).await.unwrap();
    let f = pg::sqlite().await;
    let server = start(&fleet, f.store(), true).await;
    let conns = fleet.subtotal.connection_ids();
    for c in &conns {
        fleet.subtotal.set_status(c, "active");
    }
    // The first poll saw them as generated: re-poll is an hour away, so pick active ones.
    let target = find(&server, "subtotal", "healthy").await;
    let id = target["id"].as_str().unwrap().to_owned();
    let pid = target["provider_connection_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (body, _) = act_json(&server, &id, "disconnect", 200).await;
    assert_eq!(body["kind"], "disconnect");
    assert_eq!(body["ok"], true);
    assert_eq!(body["connection"]["status"], "disconnected");
    assert!(body.get("url").is_none());
    assert_eq!(
        fleet.subtotal.connection(&pid).unwrap().status,
        "disconnected"
    );
    // Recorded before the answer: the event of source action is there at once.
    let events = action_events(&server).await;
    assert!(
        events.iter().any(|e| e["event"] == "status_changed"
            && e["connection_id"] == id.as_str()
            && e["to"] == "disconnected"),
        "{events:?}"
    );
    let now = get_json(
        &server,
        &format!("/v1/connections/{}", id.replace(':', "%3A")),
    )
    .await;
    assert_eq!(now["status"], "disconnected");
    assert_eq!(kinds(&now), [("reauth_link".to_owned(), false)]);
    let rows = audit(&server).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["actor"], "admin");
    assert_eq!(rows[0]["action"], "disconnect");
    assert_eq!(rows[0]["connection_id"], id.as_str());
    assert_eq!(rows[0]["ok"], true);
    assert_eq!(rows[0]["outcome"], "done");
    assert!(rows[0]["at"].is_string());

    // Now disconnected: a second disconnect is not supported (404), nothing sent.
    let patches = fleet.subtotal.stats().requests(UPDATE_CONNECTION);
    let (body, _) = act_json(&server, &id, "disconnect", 404).await;
    assert_eq!(body["ok"], false);
    assert_eq!(fleet.subtotal.stats().requests(UPDATE_CONNECTION), patches);
    assert_eq!(audit(&server).await[0]["outcome"], "unsupported");

    // The PATCH fails after the token was minted: 5xx, 4xx, timeout. Each is 502 ok:false,
    // its audit row says the PATCH failed, nothing claims success, no event, no retry.
    let other = find(&server, "subtotal", "healthy").await;
    let oid = other["id"].as_str().unwrap().to_owned();
    let opid = other["provider_connection_id"].as_str().unwrap().to_owned();
    let before = all_events(&server).await;
    for (fault, what) in [
        (Fault::status(500), "server_error"),
        (Fault::status(409), "HTTP 409"),
        (Fault::Hang, "timeout"),
    ] {
        let minted = fleet.subtotal.tokens_minted();
        let patches = fleet.subtotal.stats().requests(UPDATE_CONNECTION);
        fleet
            .subtotal
            .faults()
            .push(FaultRule::new(fault).route(UPDATE_CONNECTION).times(1));
        let (body, _) = act_json(&server, &oid, "disconnect", 502).await;
        assert_eq!(body["ok"], false);
        assert!(body.get("connection").is_none());
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.contains("token was minted, then the PATCH failed"),
            "{msg}"
        );
        assert!(msg.contains("PATCH /connections/{connection_id}"), "{msg}");
        assert!(msg.contains(what), "{what}: {msg}");
        assert_eq!(fleet.subtotal.tokens_minted(), minted + 1);
        assert_eq!(
            fleet.subtotal.stats().requests(UPDATE_CONNECTION),
            patches + 1
        );
        let row = &audit(&server).await[0];
        assert_eq!(row["ok"], false);
        assert_eq!(row["outcome"], "failed");
        assert_eq!(row["connection_id"], oid.as_str());
        assert!(
            row["message"].as_str().unwrap().contains("PATCH failed"),
            "{row}"
        );
        assert!(
            !row["message"].as_str().unwrap().contains("eyJ"),
            "no token in the audit"
        );
    }
    assert_eq!(fleet.subtotal.connection(&opid).unwrap().status, "active");
    assert_eq!(
        all_events(&server).await,
        before,
        "no event from a failed action"
    );
    let now = get_json(
        &server,
        &format!("/v1/connections/{}", oid.replace(':', "%3A")),
    )
    .await;
    assert_eq!(now["status"], "healthy");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn violet_refresh_records_the_change_and_a_second_within_15_minutes_is_429() {
    let fleet = Fleet::start(3, 83).await.unwrap();
    let f = pg::sqlite().await;
    let server = start(&fleet, f.store(), true).await;
    let report = get_json(&server, "/v1/report").await;
    let target = report["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "violet" && c["status"] != "action_required")
        .expect("a violet connection not yet action_required")
        .clone();
    let id = target["id"].as_str().unwrap().to_owned();
    let merchant: i64 = target["customer"]["id"].as_str().unwrap().parse().unwrap();
    // Worst of all statuses: whatever the checks say, the recomputed report is action_required.
    assert!(fleet
        .violet
        .set_merchant_status(merchant, "APPLICATION_DENIED"));

    let (body, _) = act_json(&server, &id, "refresh", 200).await;
    assert_eq!(body["ok"], true);
    assert_eq!(body["connection"]["status"], "action_required");
    assert_eq!(fleet.violet.health_refreshes(), 1);
    let events = action_events(&server).await;
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "status_changed" && e["connection_id"] == id.as_str()),
        "{events:?}"
    );

    let sent = fleet
        .violet
        .stats()
        .requests(violet::CONNECTION_HEALTH_MERCHANT);
    let (body, headers) = act_json(&server, &id, "refresh", 429).await;
    assert_eq!(body["ok"], false);
    let retry_at =
        chrono::DateTime::parse_from_rfc3339(body["retry_at"].as_str().unwrap()).unwrap();
    let ahead = (retry_at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
    assert!((800..=900).contains(&ahead), "retry_at {ahead} s ahead");
    let after: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((800..=900).contains(&after), "Retry-After {after}");
    assert_eq!(
        fleet
            .violet
            .stats()
            .requests(violet::CONNECTION_HEALTH_MERCHANT),
        sent,
        "nothing sent"
    );
    assert_eq!(fleet.violet.health_refreshes(), 1);
    let rows = audit(&server).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["outcome"].as_str(), rows[0]["ok"].as_bool()),
        (Some("rate_limited"), Some(false))
    );
    assert_eq!(
        (rows[1]["outcome"].as_str(), rows[1]["ok"].as_bool()),
        (Some("done"), Some(true))
    );
    assert_eq!(
        action_events(&server).await,
        events,
        "no event from a refused action"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel3_connect_link_returns_the_url_but_never_stores_it() {
    let fleet = Fleet::start(3, 84).await.unwrap();
    let f = pg::sqlite().await;
    let server = start(&fleet, f.store(), true).await;
    let target = find(&server, "channel3", "not_connected").await;
    let id = target["id"].as_str().unwrap().to_owned();

    // An optional JSON body is fine; a body that is not JSON is 400 and nothing is sent.
    let r = server
        .client
        .post(server.url(&path(&id, "connect_link")))
        .bearer_auth(ADMIN)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(fleet.channel3.stats().requests(channel3::CREATE_SESSION), 0);

    let r = server
        .client
        .post(server.url(&path(&id, "connect_link")))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let sessions = fleet.channel3.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(body["url"], sessions[0].url.as_str());
    assert_eq!(sessions[0].platform.as_deref(), target["platform"].as_str());
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("single-use") && msg.contains("30 minutes"),
        "{msg}"
    );
    let rows = audit(&server).await;
    assert_eq!(rows[0]["outcome"], "done");
    let stored = serde_json::to_string(&rows).unwrap();
    assert!(
        !stored.contains(&sessions[0].url),
        "the connect URL is a secret"
    );
    assert!(!stored.contains(&sessions[0].token));

    // A session answer without `url`: 502 ok:false naming the endpoint, audited as failed.
    fleet.channel3.faults().push(
        FaultRule::new(Fault::Status {
            status: 200,
            retry_after: None,
            body: Some(r#"{"token":"cs_nourl","expires_at":"2030-01-01T00:00:00Z"}"#.into()),
        })
        .route(channel3::CREATE_SESSION)
        .times(1),
    );
    let (body, _) = act_json(&server, &id, "connect_link", 502).await;
    assert_eq!(body["ok"], false);
    assert!(body.get("url").is_none());
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("POST /v0/partner/merchants/{customer_id}/connections/sessions"),
        "{msg}"
    );
    assert!(msg.contains("url"), "{msg}");
    let row = &audit(&server).await[0];
    assert_eq!(
        (row["outcome"].as_str(), row["ok"].as_bool()),
        (Some("failed"), Some(false))
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_connections_and_kinds_are_404_and_audited_and_the_audit_log_pages() {
    let fleet = Fleet::start(2, 85).await.unwrap();
    let f = pg::sqlite().await;
    let server = start(&fleet, f.store(), true).await;
    let before = all_events(&server).await;

    let (body, _) = act_json(&server, "subtotal:NOPE", "disconnect", 404).await;
    assert_eq!(body["ok"], false);
    assert!(body["message"].as_str().unwrap().contains("subtotal:NOPE"));
    let healthy = find(&server, "channel3", "healthy").await;
    let hid = healthy["id"].as_str().unwrap();
    // A kind the connection does not support, and a kind nobody knows.
    act_json(&server, hid, "connect_link", 404).await;
    let r = act(&server, hid, "launch_rockets", Some(ADMIN)).await;
    assert_eq!(r.status(), 404);
    let rows = audit(&server).await;
    let outcomes: Vec<_> = rows
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["unsupported", "unsupported", "not_found"]);
    assert_eq!(rows[0]["action"], "launch_rockets");
    assert!(rows
        .iter()
        .all(|r| r["ok"] == false && r["actor"] == "admin"));
    assert_eq!(all_events(&server).await, before);

    // Paging, newest first.
    let p1 = get_json(&server, "/v1/audit?limit=2").await;
    let ids: Vec<i64> = p1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] > ids[1]);
    let next = p1["next_before"].as_i64().unwrap();
    let p2 = get_json(&server, &format!("/v1/audit?limit=2&before={next}")).await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert!(p2["next_before"].is_null());
    assert_eq!(server.get("/v1/audit?limit=0").await.status(), 400);
    assert_eq!(server.get("/v1/audit?before=x").await.status(), 400);
    server.stop().await.unwrap();
}
