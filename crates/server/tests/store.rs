//! `serve` with a store (a real SQLite file): a restart on the same store keeps `since`,
//! history and uptime and announces nothing twice; a store that cannot be written (full, with
//! SQLite's `max_page_count`) keeps serving the report, says so in `/readyz` and `/metrics`,
//! and publishes the events it kept, in order, once it can write again.

mod common;
/// The store crate's fixtures (real SQLite files, and the PostgreSQL cluster the tests start),
/// used from there rather than copied.
#[path = "../../store/tests/common/mod.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use connhealth_store::{Journal, JournalOptions, OpenOptions, SqliteStore, Store};
use connhealth_testkit::Fleet;
use serde_json::Value;

async fn get_json(server: &Running, path: &str) -> Value {
    let resp = server.get(path).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// Start a server over the fleet on `store`, its watcher starting from the stored state.
async fn start(fleet: &Fleet, store: Arc<dyn Store>, interval: Duration) -> Running {
    let (journal, loaded) = Journal::load(store, JournalOptions::default())
        .await
        .unwrap();
    let w = fleet_watcher(fleet, interval).with_state(loaded);
    let server =
        Running::start_with(w, Options::default(), |s| s.with_store(journal, |_| {})).await;
    server.ready(false).await;
    server
}

/// Every stored event, oldest first, through the JSON pages.
async fn all_events(server: &Running) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = get_json(server, &format!("/v1/events?after={after}&limit=1000")).await;
        let items = page["items"].as_array().unwrap().clone();
        if items.is_empty() {
            return out;
        }
        after = page["next_after"].as_i64().unwrap();
        out.extend(items);
    }
}

/// Every connection through the cursor pages.
async fn all_connections(server: &Running, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/connections?limit={limit}&cursor={c}"),
            None => format!("/v1/connections?limit={limit}"),
        };
        let page = get_json(server, &path).await;
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => {
                assert_eq!(page["total"].as_u64().unwrap() as usize, out.len());
                return out;
            }
        }
    }
}

async fn wait_for(mut ok: impl AsyncFnMut() -> bool, what: &str) {
    for _ in 0..250 {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_same_sqlite_store_keeps_since_history_and_uptime_and_announces_nothing_twice(
) {
    restart_keeps_everything(&mut pg::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_same_postgres_store_keeps_since_history_and_uptime_and_announces_nothing_twice(
) {
    // `None` (with a printed notice) only when CONNHEALTH_SKIP_POSTGRES=1.
    if let Some(mut f) = pg::postgres().await {
        restart_keeps_everything(&mut f).await;
    }
}

async fn restart_keeps_everything(f: &mut pg::Fixture) {
    let fleet = Fleet::start(3, 41).await.unwrap();
    let store = f.store();
    let server = start(&fleet, store.clone(), Duration::from_millis(200)).await;
    let report = get_json(&server, "/v1/report").await;
    let n = report["connections"].as_array().unwrap().len();
    wait_for(
        async || all_events(&server).await.len() >= n,
        "the first poll's events",
    )
    .await;

    // A change: one event more, with the store's next id.
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "unauthenticated"));
    let id = format!("subtotal:{DOC_CONNECTION}");
    wait_for(
        async || {
            get_json(&server, &format!("/v1/connections/{id}/history")).await["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["event"] == "status_changed")
        },
        "the status change stored",
    )
    .await;
    let events_before = all_events(&server).await;
    let conns_before = all_connections(&server, 7).await;
    let history_before = get_json(&server, &format!("/v1/connections/{id}/history")).await;
    let one = get_json(&server, &format!("/v1/connections/{id}")).await;
    assert_eq!(one["status"], "action_required");
    let changed = conns_before
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap();
    assert_eq!(one["since"], changed["since"]);
    assert_ne!(
        changed["since"],
        history_before["items"].as_array().unwrap().last().unwrap()["at"],
        "since moved with the status change"
    );
    let uptime_before = get_json(&server, "/v1/uptime?window=24h&by=connection").await;
    server.stop().await.unwrap();
    drop(store);

    // Restart on the same store (closed, opened again).
    f.reopen().await;
    let store = f.store();
    let server = start(&fleet, store.clone(), Duration::from_millis(200)).await;
    // A few polls later, nothing was announced again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let events_after = all_events(&server).await;
    assert_eq!(
        events_after, events_before,
        "the restart announced something again"
    );
    let mut seen = std::collections::HashSet::new();
    for e in &events_after {
        assert!(
            seen.insert((
                e["event"].to_string(),
                e["connection_id"].to_string(),
                e["provider"].to_string(),
                e["at"].to_string()
            )),
            "a duplicated transition: {e}"
        );
    }
    let conns_after = all_connections(&server, 1000).await;
    let key = |v: &Vec<Value>| {
        v.iter()
            .map(|c| {
                (
                    c["id"].to_string(),
                    c["since"].to_string(),
                    c["status"].to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        key(&conns_after),
        key(&conns_before),
        "since survives the restart"
    );
    assert_eq!(
        get_json(&server, &format!("/v1/connections/{id}/history")).await,
        history_before
    );
    let uptime_after = get_json(&server, "/v1/uptime?window=24h&by=connection").await;
    assert_eq!(uptime_after["items"], uptime_before["items"]);

    // SSE resumes from the store across the restart: the last id is known, nothing replayed.
    let last = events_before.last().unwrap()["id"].as_u64().unwrap();
    let mut sse = SseReader::connect(&server, Some(last - 1)).await;
    let e = sse.expect(Duration::from_secs(5)).await;
    assert_eq!(e.id, Some(last));
    // A change after the restart continues the ids.
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "active"));
    let e = sse.expect(Duration::from_secs(5)).await;
    assert!(
        e.id.unwrap() > last && e.json()["source"] == "poll",
        "{e:?}"
    );
    server.stop().await.unwrap();
    store.integrity_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_keeps_serving_warns_and_publishes_the_kept_events_when_it_can_write() {
    let fleet = Fleet::start(2, 7).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(
        SqliteStore::open(&dir.path().join("c.db"), &OpenOptions::default())
            .await
            .unwrap(),
    );
    let server = start(&fleet, sqlite.clone(), Duration::from_millis(200)).await;
    wait_for(
        async || !all_events(&server).await.is_empty(),
        "the first events",
    )
    .await;
    let before = all_events(&server).await;
    let mut sse = SseReader::connect(
        &server,
        Some(before.last().unwrap()["id"].as_u64().unwrap()),
    )
    .await;

    let (pages, _) = sqlite.page_stats().await.unwrap();
    sqlite.set_max_page_count(pages).await.unwrap();
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "unauthenticated"));
    let id = format!("subtotal:{DOC_CONNECTION}");
    // The report shows the change at once; the warning and the metrics say the store fails.
    wait_for(
        async || {
            get_json(&server, &format!("/v1/connections/{id}")).await["status"] == "action_required"
        },
        "the report to change",
    )
    .await;
    wait_for(
        async || {
            get_json(&server, "/readyz").await["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["code"] == "store_write_failed")
        },
        "the store_write_failed warning",
    )
    .await;
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("connhealth_store_write_failing 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("connhealth_store_pending_polls 0"),
        "{metrics}"
    );
    assert_eq!(
        all_events(&server).await,
        before,
        "nothing stored while full"
    );

    sqlite.set_max_page_count(1 << 30).await.unwrap();
    let e = sse.expect(Duration::from_secs(5)).await;
    assert_eq!(e.event, "status_changed");
    assert_eq!(
        e.id.unwrap(),
        before.last().unwrap()["id"].as_u64().unwrap() + 1,
        "ids in commit order"
    );
    wait_for(
        async || {
            !get_json(&server, "/readyz").await["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["code"] == "store_write_failed")
        },
        "the warning to clear",
    )
    .await;
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("connhealth_store_write_failing 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("connhealth_store_dropped_events_total 0"),
        "{metrics}"
    );
    let after = all_events(&server).await;
    let changes: Vec<&Value> = after[before.len()..]
        .iter()
        .filter(|e| e["event"] == "status_changed")
        .collect();
    assert_eq!(changes.len(), 1, "stored once: {after:?}");
    server.stop().await.unwrap();
    sqlite.integrity_check().await.unwrap();
}

/// `/v1/summary`'s counts against the report (counted here), its webhook freshness from the
/// store, grouping by customer over every page, and a status change on a 30-day timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_grouping_and_timelines_at_the_api() {
    let f = pg::sqlite().await;
    let fleet = Fleet::start(3, 43).await.unwrap();
    let store = f.store();
    let server = start(&fleet, store.clone(), Duration::from_millis(200)).await;

    // Summary: counts by status and by provider × status, as the report has them.
    let report = get_json(&server, "/v1/report").await;
    let sum = get_json(&server, "/v1/summary").await;
    let conns = report["connections"].as_array().unwrap();
    assert_eq!(sum["summary"]["total"], conns.len());
    for s in connhealth_core::Status::ALL {
        let n = conns.iter().filter(|c| c["status"] == s.as_str()).count();
        assert_eq!(sum["summary"][s.as_str()], n, "{s}");
    }
    let providers = sum["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 3);
    for p in providers {
        let name = p["provider"].as_str().unwrap();
        let mine: Vec<&Value> = conns.iter().filter(|c| c["provider"] == name).collect();
        assert_eq!(p["summary"]["total"], mine.len(), "{name}");
        for s in connhealth_core::Status::ALL {
            let n = mine.iter().filter(|c| c["status"] == s.as_str()).count();
            assert_eq!(p["summary"][s.as_str()], n, "{name} {s}");
        }
        let outcome = report["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["provider"] == name)
            .unwrap();
        assert_eq!(p["outcome"], outcome["outcome"]);
        assert_eq!(p["last_poll_at"], report["generated_at"]);
        assert!(p["last_webhook_at"].is_null());
    }
    // A webhook accepted into the store shows as that provider's freshness.
    let when = chrono::Utc::now() - chrono::Duration::minutes(3);
    store
        .accept_webhook("violet", "evt-summary-1", None, when)
        .await
        .unwrap();
    let sum = get_json(&server, "/v1/summary").await;
    let violet = sum["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "violet")
        .unwrap()
        .clone();
    let got: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(violet["last_webhook_at"].clone()).unwrap();
    assert_eq!(got.timestamp_millis(), when.timestamp_millis());

    // Grouped by customer, in pages of 7: every connection once, each customer's
    // connections together, customers worst first by their worst status.
    let mut grouped = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!(
                "/v1/connections?group=customer&limit=7&cursor={}",
                url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
            ),
            None => "/v1/connections?group=customer&limit=7".to_owned(),
        };
        let page = get_json(&server, &path).await;
        grouped.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(grouped.len(), conns.len());
    let key = |c: &Value| {
        format!(
            "{}:{}",
            c["provider"].as_str().unwrap(),
            c["customer"]["id"].as_str().unwrap()
        )
    };
    let rank = |s: &Value| {
        connhealth_core::Status::ALL
            .iter()
            .position(|x| x.as_str() == s.as_str().unwrap())
            .unwrap()
    };
    let mut order: Vec<String> = Vec::new();
    for c in &grouped {
        let k = key(c);
        if order.last() != Some(&k) {
            assert!(!order.contains(&k), "customer {k} is split");
            order.push(k.clone());
        }
        let worst = conns
            .iter()
            .filter(|x| key(x) == k)
            .map(|x| rank(&x["status"]))
            .max()
            .unwrap();
        assert_eq!(rank(&c["customer_status"]), worst, "{k}");
    }
    assert!(grouped
        .windows(2)
        .all(|w| rank(&w[0]["customer_status"]) >= rank(&w[1]["customer_status"])));

    // A status change is on the connection's 30-day timeline.
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "unauthenticated"));
    let id = format!("subtotal:{DOC_CONNECTION}");
    wait_for(
        async || {
            let page = get_json(
                &server,
                &format!("/v1/connections?q={DOC_CONNECTION}&timeline=30d"),
            )
            .await;
            let item = &page["items"][0];
            item["id"] == id.as_str()
                && item["timeline"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["from"] == "healthy" && p["to"] == "action_required")
        },
        "the status change on the timeline",
    )
    .await;
    let page = get_json(
        &server,
        &format!("/v1/connections?q={DOC_CONNECTION}&timeline=30d"),
    )
    .await;
    let points = page["items"][0]["timeline"].as_array().unwrap();
    assert_eq!(points[0]["from"], Value::Null, "appeared first: {points:?}");
    assert_eq!(points[0]["to"], "healthy");
    // Without `timeline` there is none.
    let plain = get_json(&server, &format!("/v1/connections?q={DOC_CONNECTION}")).await;
    assert!(plain["items"][0].get("timeline").is_none());
    server.stop().await.unwrap();
}

/// A cached `/v1/connections` page is answered gzip'd from bytes compressed once and kept:
/// the same JSON as the plain answer, the same bytes every time, and dropped with the plain
/// page at the next store write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_pages_are_served_gzipped_from_kept_bytes_until_the_next_store_write() {
    let fleet = Fleet::start(2, 7).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(
        SqliteStore::open(&dir.path().join("c.db"), &OpenOptions::default())
            .await
            .unwrap(),
    );
    let server = start(&fleet, sqlite.clone(), Duration::from_millis(200)).await;
    let path = format!("/v1/connections?q={DOC_CONNECTION}&limit=5");
    wait_for(
        async || get_json(&server, &path).await["total"] == 1,
        "the connection stored",
    )
    .await;
    let raw = reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .no_brotli()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let get = async |gzip: bool| {
        let mut req = raw.get(server.url(&path));
        if gzip {
            req = req.header("Accept-Encoding", "br;q=0.5, gzip");
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["vary"], "accept-encoding");
        let enc = resp
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        (enc, resp.bytes().await.unwrap())
    };
    let unzip = |b: &[u8]| -> Value {
        use std::io::Read as _;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b)
            .read_to_end(&mut out)
            .unwrap();
        serde_json::from_slice(&out).unwrap()
    };
    // Polls every 200 ms, each a store write: compare answers from one generation (the
    // same `total` and rows), retrying until a pair falls between two writes.
    let mut matched = false;
    for _ in 0..50 {
        let (enc, zipped) = get(true).await;
        let (enc2, zipped2) = get(true).await;
        let (plain_enc, plain) = get(false).await;
        assert_eq!(enc.as_deref(), Some("gzip"));
        assert_eq!(enc2.as_deref(), Some("gzip"));
        assert_eq!(plain_enc, None);
        let plain: Value = serde_json::from_slice(&plain).unwrap();
        if zipped == zipped2 && unzip(&zipped) == plain {
            matched = true;
            break;
        }
    }
    assert!(matched, "the gzip'd page never matched the plain one");

    // A change: the next store write drops the kept gzip too.
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "unauthenticated"));
    wait_for(
        async || unzip(&get(true).await.1)["items"][0]["status"] == "action_required",
        "the gzip'd page to show the change",
    )
    .await;
    server.stop().await.unwrap();
}
