//! The dashboard in headless Chromium, driven over WebDriver (chromedriver + fantoccini):
//! tiles from the server's counts, customer groups with their worst status, paging, the
//! status filter, the search box, 30-day timelines, the provider panel, live updates over
//! `/v1/events`, no overflow at 1280/1400/390 px, the token flow, and screenshots (desktop and
//! phone) in `target/test-artifacts/`.
//!
//! Needs `/usr/bin/chromedriver` and `/usr/bin/chromium` (Debian: `apt-get install -y chromium
//! chromium-driver`). Without them the test FAILS, unless `CONNHEALTH_SKIP_BROWSER` is set:
//! then it passes with a loud message that nothing was tested. With them it always runs.

mod common;

use std::future::Future;
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use connhealth_core::{HealthReport, Status};
use connhealth_testkit::Fleet;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt as _;
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(10);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A chromedriver child process, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

async fn start_driver() -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = artifacts_dir().join("chromedriver.log");
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver { child, port };
    let http = client();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ok = http
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return driver;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not start within {WAIT:?} (log: {})",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1440,1100",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let caps = match caps {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port)),
    )
    .await
    .expect("a Chromium session within 30 s")
    .expect("a Chromium session")
}

/// Poll `f` until it yields `Some`, at most `WAIT`.
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> Res<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Res<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out after {WAIT:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each table row's (data-id, data-status).
async fn rows(c: &Client) -> Res<Vec<(String, String)>> {
    let v = c
        .execute(
            "return [...document.querySelectorAll('#rows tr[data-id]')].map(r => [r.dataset.id, r.dataset.status]);",
            vec![],
        )
        .await?;
    Ok(serde_json::from_value(v)?)
}

/// Each tile's count (None while it still shows the placeholder).
async fn tile_counts(c: &Client) -> Res<Vec<(String, Option<usize>)>> {
    let mut out = Vec::new();
    for s in Status::ALL {
        let tile = c.find(Locator::Id(&format!("tile-{s}"))).await?;
        let text = tile.find(Locator::Css(".count")).await?.text().await?;
        out.push((s.to_string(), text.trim().parse().ok()));
    }
    Ok(out)
}

fn rank(status: &str) -> usize {
    Status::ALL
        .iter()
        .position(|s| s.as_str() == status)
        .expect("a known status")
}

/// The text of the element at `css`.
async fn text_at(c: &Client, css: &str) -> Res<String> {
    Ok(c.find(Locator::Css(css)).await?.text().await?)
}

async fn screenshot(c: &Client, name: &str) -> Res<PathBuf> {
    let png = c.screenshot().await?;
    let path = artifacts_dir().join(name);
    std::fs::write(&path, png)?;
    Ok(path)
}

async fn report(server: &Running) -> HealthReport {
    server.get("/v1/report").await.json().await.unwrap()
}

/// Run a script in the page, its result as JSON.
async fn js<T: serde::de::DeserializeOwned>(c: &Client, script: &str) -> Res<T> {
    Ok(serde_json::from_value(c.execute(script, vec![]).await?)?)
}

/// Each customer group header's (key, status) and each row's (id, status, group key), in
/// page order.
async fn groups(c: &Client) -> Res<Vec<(String, String, Vec<(String, String)>)>> {
    js(
        c,
        "const out = []; for (const tr of document.querySelectorAll('#rows tr')) {
           if (tr.classList.contains('group')) out.push([tr.dataset.group, tr.dataset.status, []]);
           else if (tr.dataset.id && out.length) out[out.length - 1][2].push([tr.dataset.id, tr.dataset.status]);
         } return out;",
    )
    .await
}

/// Whether the page is wider than the window (a horizontal scrollbar).
async fn overflows(c: &Client) -> Res<bool> {
    js(
        c,
        "return document.documentElement.scrollWidth > document.documentElement.clientWidth + 1;",
    )
    .await
}

async fn wait_rows(
    c: &Client,
    what: &str,
    ok: impl Fn(&[(String, String)]) -> bool,
) -> Res<Vec<(String, String)>> {
    wait_for(what, || async {
        let r = rows(c).await?;
        Ok(ok(&r).then_some(r))
    })
    .await
}

/// The admin token of the browser test's main server (the action buttons).
const ADMIN: &str = "admin-token-browser-actions-5e2a";

/// Narrow the table to `id` with the search box and wait for its row.
async fn pin(c: &Client, id: &str) -> Res<()> {
    let search = c.find(Locator::Id("search")).await?;
    search.clear().await?;
    search.send_keys(id).await?;
    wait_rows(c, &format!("the row of {id}"), |r| {
        r.iter().any(|(rid, _)| rid == id)
    })
    .await?;
    Ok(())
}

/// Click the `kind` button of `id`'s row, found afresh each try: live updates re-render the
/// rows, so a button found a moment ago may be gone (a stale element) by the click.
async fn click_action(c: &Client, id: &str, kind: &str) -> Res<()> {
    let css = format!("tr[data-id=\"{id}\"] button.action[data-kind=\"{kind}\"]");
    wait_for("a clickable action button", || async {
        Ok(match c.find(Locator::Css(&css)).await {
            Ok(b) => b.click().await.ok(),
            Err(_) => None,
        })
    })
    .await
}

/// The text of the dialog (prompt or confirm) the page opened.
async fn dialog(c: &Client) -> Res<String> {
    wait_for("a dialog", || async { Ok(c.get_alert_text().await.ok()) }).await
}

/// `(data-ok, text)` of `id`'s action result once it is no longer "Working…".
async fn action_result(c: &Client, id: &str) -> Res<(String, String)> {
    let script = format!(
        "const e = document.querySelector('tr[data-id=\"{id}\"] .action-result');
         return e && e.textContent !== 'Working…' ? [e.dataset.ok, e.textContent] : null;"
    );
    wait_for("the action's result", || async {
        js::<Option<(String, String)>>(c, &script).await
    })
    .await
}

/// The audit log, newest first (read over HTTP with the admin token).
async fn audit(server: &Running) -> Vec<Value> {
    let v: Value = server
        .client
        .get(server.url("/v1/audit"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"].as_array().unwrap().clone()
}

/// The action buttons: the token asked once (kept in the page only), a non-destructive
/// `refresh`, a destructive `disconnect` that asks first (dismissed: nothing sent), the result
/// shown in the row, an audit row per attempt and the change as an event of source `action`.
async fn actions(c: &Client, server: &Running) -> Res<()> {
    let items = |v: &Value| v["items"].as_array().cloned().unwrap_or_default();
    let kinds = |i: &Value| -> Vec<(String, bool)> {
        i["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["kind"].as_str().unwrap_or_default().to_owned(),
                    a["destructive"] == true,
                )
            })
            .collect()
    };
    let violet: Value = server
        .get("/v1/connections?provider=violet&limit=1")
        .await
        .json()
        .await?;
    let violet = items(&violet)[0].clone();
    assert!(
        kinds(&violet).contains(&("refresh".to_owned(), false)),
        "{violet}"
    );
    let violet = violet["id"].as_str().unwrap().to_owned();
    let subtotal: Value = server
        .get("/v1/connections?provider=subtotal&status=healthy&limit=1")
        .await
        .json()
        .await?;
    let subtotal = items(&subtotal)[0].clone();
    assert!(
        kinds(&subtotal).contains(&("disconnect".to_owned(), true)),
        "{subtotal}"
    );
    let subtotal = subtotal["id"].as_str().unwrap().to_owned();
    assert!(audit(server).await.is_empty());

    // Refresh: the token is asked for first, then the result shows in the row.
    pin(c, &violet).await?;
    click_action(c, &violet, "refresh").await?;
    let asked = dialog(c).await?;
    assert!(asked.starts_with("Admin token"), "{asked}");
    c.send_alert_text(ADMIN).await?;
    c.accept_alert().await?;
    let (ok, message) = action_result(c, &violet).await?;
    assert_eq!(ok, "true", "{message}");
    assert!(!message.is_empty());
    let a = audit(server).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        (&a[0]["action"], &a[0]["connection_id"], &a[0]["outcome"]),
        (&json!("refresh"), &json!(violet), &json!("done"))
    );
    // The token lives in the page's memory only.
    let kept: (usize, usize, String) = js(
        c,
        "return [localStorage.length, sessionStorage.length, document.cookie];",
    )
    .await?;
    assert_eq!(kept, (0, 0, String::new()));

    // Disconnect is destructive: it asks; dismissed, nothing is sent.
    pin(c, &subtotal).await?;
    click_action(c, &subtotal, "disconnect").await?;
    let asked = dialog(c).await?;
    assert!(asked.starts_with("Really disconnect"), "{asked}");
    c.dismiss_alert().await?;
    // Asked again (not the token: the page kept it), and accepted.
    click_action(c, &subtotal, "disconnect").await?;
    let asked = dialog(c).await?;
    assert!(asked.starts_with("Really disconnect"), "{asked}");
    assert_eq!(
        audit(server).await.len(),
        1,
        "the dismissed one sent nothing"
    );
    c.accept_alert().await?;
    let (ok, message) = action_result(c, &subtotal).await?;
    assert_eq!(ok, "true", "{message}");
    screenshot(c, "dashboard-action.png").await?;
    let a = audit(server).await;
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(
        (&a[0]["action"], &a[0]["connection_id"], &a[0]["outcome"]),
        (&json!("disconnect"), &json!(subtotal), &json!("done"))
    );
    // The connection changed: a status change to disconnected in its history, and the row
    // shows it. (Its source is `action` unless this test's 200 ms poll read the provider
    // between the PATCH and the action's re-fetch — then `poll`, rightly: the poll saw it
    // first. tests/actions.rs asserts the `action` source with no poll racing.)
    let id: String = url::form_urlencoded::byte_serialize(subtotal.as_bytes()).collect();
    let history: Value = server
        .get(&format!("/v1/connections/{id}/history"))
        .await
        .json()
        .await?;
    let changed: Vec<Value> = items(&history)
        .into_iter()
        .filter(|e| e["event"] == "status_changed")
        .collect();
    assert_eq!(changed[0]["to"], "disconnected", "{history}");
    assert!(
        changed[0]["source"] == "action" || changed[0]["source"] == "poll",
        "{history}"
    );
    wait_rows(c, "the disconnected row", |r| {
        r.iter()
            .any(|(rid, s)| *rid == subtotal && s == "disconnected")
    })
    .await?;
    c.find(Locator::Id("clear-filters")).await?.click().await?;
    wait_rows(c, "the cleared filters", |r| r.len() == 100).await?;
    Ok(())
}

async fn scenario(c: &Client, fleet: &Fleet, server: &Running, guarded: &Running) -> Res<()> {
    c.set_window_size(1400, 1000).await?;
    c.goto(&server.url("/")).await?;
    assert_eq!(c.title().await?, "connhealth — connection health");

    // Every tile, with its count, matching the report (counted by the server's summary).
    let before = report(server).await;
    let counts = wait_for("tile counts", || async {
        let counts = tile_counts(c).await?;
        Ok(counts.iter().all(|(_, n)| n.is_some()).then_some(counts))
    })
    .await?;
    for (status, n) in &counts {
        let s: Status = status.parse().unwrap();
        assert_eq!(n.unwrap(), before.summary.count(s), "tile {status}");
    }
    // The first page: 100 rows of more, grouped by customer, worst customer first.
    let total = before.connections.len();
    assert!(total > 100, "the fleet is bigger than one page: {total}");
    let first = wait_rows(c, "the first page", |r| r.len() == 100).await?;
    let shown = c.find(Locator::Id("shown")).await?.text().await?;
    assert_eq!(shown, format!("Showing 100 of {total} connections"));
    let gs = groups(c).await?;
    assert!(gs.len() > 1, "{gs:?}");
    let mut keys = std::collections::HashSet::new();
    for (key, status, members) in &gs {
        assert!(keys.insert(key.clone()), "customer {key} is split");
        let worst = before
            .connections
            .iter()
            .filter(|x| format!("{}:{}", x.provider, x.customer.id) == *key)
            .map(|x| x.status)
            .max()
            .unwrap();
        assert_eq!(status, worst.as_str(), "group {key} shows its worst status");
        assert!(!members.is_empty());
        assert!(members.iter().all(|(_, s)| rank(s) <= rank(status)));
    }
    assert!(
        gs.windows(2).all(|w| rank(&w[0].1) >= rank(&w[1].1)),
        "customers worst first: {gs:?}"
    );
    // The page never downloaded the whole report.
    let fetched: Vec<String> = js(
        c,
        "return performance.getEntriesByType('resource').map(e => e.name);",
    )
    .await?;
    assert!(
        fetched.iter().any(|u| u.contains("/v1/summary")),
        "{fetched:?}"
    );
    assert!(
        // Exactly the query the server prebuilds after every change (DASHBOARD_FIRST_PAGE).
        fetched
            .iter()
            .any(|u| u.ends_with("/v1/connections?group=customer&timeline=30d&limit=100")),
        "{fetched:?}"
    );
    assert!(
        !fetched.iter().any(|u| u.contains("/v1/report")),
        "{fetched:?}"
    );
    // Every row has its 30-day timeline and says since when.
    let (timelines, sinces): (usize, usize) = js(
        c,
        "return [document.querySelectorAll('#rows tr[data-id] .timeline').length,
                 document.querySelectorAll('#rows tr[data-id] time.since[datetime]').length];",
    )
    .await?;
    assert_eq!((timelines, sinces), (100, 100));

    // Paging: the next page joins the first, nothing twice.
    c.find(Locator::Id("load-more")).await?.click().await?;
    let two = wait_rows(c, "the second page", |r| r.len() == total.min(200)).await?;
    assert_eq!(&two[..100], &first[..]);
    let distinct: std::collections::HashSet<_> = two.iter().map(|(id, _)| id).collect();
    assert_eq!(distinct.len(), two.len());

    // The provider panel: outcome, last poll, uptime and webhook freshness. Violet has three
    // hours of history (`seed_violet_history`: one connection, healthy throughout), rolled
    // up by the first poll's commit; the others have no complete hour yet.
    let violet = c
        .find(Locator::Css("#providers [data-provider=\"violet\"]"))
        .await?;
    let webhook = violet.find(Locator::Css(".webhook")).await?.text().await?;
    assert!(webhook.ends_with("min ago"), "{webhook}");
    let panel =
        |provider: &str, field: &str| format!("#providers [data-provider=\"{provider}\"] .{field}");
    wait_for("violet's uptime", || async {
        let t = text_at(c, &panel("violet", "uptime-24h")).await?;
        Ok((t == "100.00 %").then_some(()))
    })
    .await?;
    for w in ["7d", "30d"] {
        let t = text_at(c, &panel("violet", &format!("uptime-{w}"))).await?;
        assert_eq!(t, "100.00 %", "violet's uptime over {w}");
    }
    let channel3_up = text_at(c, &panel("channel3", "uptime-24h")).await?;
    assert_eq!(channel3_up, "—", "no complete hour of channel3 yet");
    // The dash says what it means, to a pointer and to a screen reader; a figure needs no note.
    let note = |provider: &'static str| async move {
        let e = c.find(Locator::Css(&panel(provider, "uptime-24h"))).await?;
        Res::Ok((e.attr("title").await?, e.attr("aria-label").await?))
    };
    let why = Some("not known yet: uptime counts complete hours".to_string());
    assert_eq!(note("channel3").await?, (why.clone(), why));
    assert_eq!(note("violet").await?, (None, None));
    let subtotal_hook = text_at(c, &panel("subtotal", "webhook")).await?;
    assert_eq!(subtotal_hook, "none received");

    // Live indicator.
    wait_for("the live indicator", || async {
        let state = c
            .find(Locator::Id("live"))
            .await?
            .attr("data-state")
            .await?;
        Ok((state.as_deref() == Some("live")).then_some(()))
    })
    .await?;

    // Search re-queries the server and narrows to one connection.
    let doc_id = format!("subtotal:{DOC_CONNECTION}");
    c.find(Locator::Id("search"))
        .await?
        .send_keys(DOC_CONNECTION)
        .await?;
    wait_rows(c, "the search result", |r| {
        r == [(doc_id.clone(), "healthy".to_owned())]
    })
    .await?;
    c.find(Locator::Id("clear-filters")).await?.click().await?;
    wait_rows(c, "the cleared filters", |r| r.len() == 100).await?;

    // Filter on action_required by clicking its tile.
    let expected = before.summary.action_required;
    assert!(
        (1..100).contains(&expected),
        "the generated data has action_required connections: {expected}"
    );
    let tile = c.find(Locator::Id("tile-action_required")).await?;
    tile.click().await?;
    assert_eq!(tile.attr("aria-pressed").await?.as_deref(), Some("true"));
    let filtered = wait_rows(c, "the filtered rows", |r| {
        r.len() == expected && r.iter().all(|(_, s)| s == "action_required")
    })
    .await?;
    let select = c.find(Locator::Id("filter-status")).await?;
    assert_eq!(
        select.prop("value").await?.as_deref(),
        Some("action_required")
    );

    // A simulator change arrives live: the row joins the filtered table.
    assert!(!filtered.iter().any(|(id, _)| *id == doc_id));
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "unauthenticated"));
    wait_rows(c, "the changed row to appear live", |r| {
        r.iter()
            .any(|(id, s)| *id == doc_id && s == "action_required")
    })
    .await?;
    let filtered = rows(c).await?;
    assert_eq!(filtered.len(), expected + 1);
    assert!(filtered.iter().all(|(_, s)| s == "action_required"));
    wait_for("the tile count to move", || async {
        let count = c
            .find(Locator::Css("#tile-action_required .count"))
            .await?
            .text()
            .await?;
        Ok((count == (expected + 1).to_string()).then_some(()))
    })
    .await?;
    let row = c
        .find(Locator::Css(&format!("tr[data-id=\"{doc_id}\"]")))
        .await?;
    // Its remediation is a link (a `reauthenticate` with a URL).
    let link = row.find(Locator::Css("a.remedy")).await?;
    let href = link.attr("href").await?.unwrap_or_default();
    assert!(
        href.starts_with("https://link.subtotal.example/reconnect"),
        "{href}"
    );
    assert_eq!(
        link.attr("rel").await?.as_deref(),
        Some("noopener noreferrer")
    );
    // Its history: one status change on the timeline, healthy then action required, and
    // "broken since" the change.
    let tl = row.find(Locator::Css(".timeline")).await?;
    assert_eq!(tl.attr("data-changes").await?.as_deref(), Some("1"));
    let segs: Vec<String> = js(
        c,
        &format!(
            "return [...document.querySelectorAll('tr[data-id=\"{doc_id}\"] .timeline span')].map(s => s.dataset.status || 'gap');"
        ),
    )
    .await?;
    assert_eq!(
        segs.last().map(String::as_str),
        Some("action_required"),
        "{segs:?}"
    );
    assert!(segs.contains(&"healthy".to_owned()), "{segs:?}");
    let since = row
        .find(Locator::Css("td.status .sub"))
        .await?
        .text()
        .await?;
    assert!(since.starts_with("broken since "), "{since}");
    let live = c.find(Locator::Id("live-text")).await?.text().await?;
    assert!(live.starts_with("Live · "), "{live}");
    screenshot(c, "dashboard-filtered.png").await?;

    // Unfilter: the first page again, the changed connection's customer first.
    c.find(Locator::Id("tile-action_required"))
        .await?
        .click()
        .await?;
    wait_rows(c, "the unfiltered page", |r| r.len() == 100).await?;
    // No horizontal overflow at 1280 and 1400 px, nor at a phone's 390 px.
    for (w, h) in [(1280, 900), (1400, 1000)] {
        c.set_window_size(w, h).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!overflows(c).await?, "horizontal overflow at {w} px");
    }
    let path = screenshot(c, "dashboard.png").await?;
    eprintln!("screenshot: {}", path.display());
    c.set_window_size(390, 844).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!overflows(c).await?, "horizontal overflow at phone width");
    let path = screenshot(c, "dashboard-phone.png").await?;
    eprintln!("screenshot: {}", path.display());
    c.set_window_size(1400, 1000).await?;

    // The action buttons (after the screenshots: the disconnect changes a row).
    actions(c, server).await?;

    // With a token: the page opened as /?token=… loads its data and goes live.
    c.goto(&guarded.url(&format!("/?token={TOKEN}"))).await?;
    wait_for("the guarded page's rows", || async {
        Ok((!rows(c).await?.is_empty()).then_some(()))
    })
    .await?;
    wait_for("the guarded page's live indicator", || async {
        let state = c
            .find(Locator::Id("live"))
            .await?
            .attr("data-state")
            .await?;
        Ok((state.as_deref() == Some("live")).then_some(()))
    })
    .await?;
    // Without the token: the server's 401, nothing else.
    c.goto(&guarded.url("/")).await?;
    let body = c.find(Locator::Css("body")).await?.text().await?;
    assert!(body.contains("unauthorized"), "{body}");
    Ok(())
}

/// What the browser test does on this machine.
#[derive(Debug, PartialEq, Eq)]
enum Gate {
    /// Chromium and chromedriver are there: run (whatever `CONNHEALTH_SKIP_BROWSER` says).
    Run,
    /// They are missing and the skip was asked for: pass, saying loudly that nothing ran.
    Skip(String),
    /// They are missing and no skip was asked for: fail, saying how to fix it.
    Fail(String),
}

/// The rule: the test is skipped only when the browser is absent AND `CONNHEALTH_SKIP_BROWSER`
/// is set (to anything but empty or `0`); absent without it is a failure, present is a run.
fn browser_gate(chromedriver: bool, chromium: bool, skip: Option<&str>) -> Gate {
    if chromedriver && chromium {
        return Gate::Run;
    }
    let missing: Vec<&str> = [(chromedriver, CHROMEDRIVER), (chromium, CHROMIUM)]
        .into_iter()
        .filter(|(there, _)| !there)
        .map(|(_, path)| path)
        .collect();
    let missing = missing.join(" and ");
    match skip {
        Some(v) if !v.trim().is_empty() && v.trim() != "0" => Gate::Skip(format!(
            "!! {missing} not found and CONNHEALTH_SKIP_BROWSER is set: the dashboard browser \
             test was SKIPPED.\n!! The dashboard is NOT tested in this run. Install chromium + \
             chromium-driver to run it."
        )),
        _ => Gate::Fail(format!(
            "{missing} not found: the dashboard browser test needs headless Chromium. Install \
             it with `apt-get install -y chromium chromium-driver`, or set \
             CONNHEALTH_SKIP_BROWSER=1 to skip this test deliberately."
        )),
    }
}

#[test]
fn the_browser_test_skips_only_when_asked_and_absent() {
    assert_eq!(browser_gate(true, true, None), Gate::Run);
    // Present: the skip variable does not turn a runnable test off.
    assert_eq!(browser_gate(true, true, Some("1")), Gate::Run);
    for skip in [None, Some(""), Some("0")] {
        match browser_gate(false, true, skip) {
            Gate::Fail(why) => assert!(
                why.contains(CHROMEDRIVER) && why.contains("apt-get"),
                "{why}"
            ),
            other => panic!("{skip:?}: {other:?}"),
        }
    }
    match browser_gate(false, false, Some("1")) {
        Gate::Skip(why) => {
            assert!(
                why.contains("SKIPPED") && why.contains(CHROMEDRIVER) && why.contains(CHROMIUM),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        browser_gate(true, false, Some("yes")),
        Gate::Skip(_)
    ));
}

#[tokio::test]
async fn dashboard_in_headless_chromium() {
    let skip = std::env::var("CONNHEALTH_SKIP_BROWSER").ok();
    match browser_gate(
        Path::new(CHROMEDRIVER).exists(),
        Path::new(CHROMIUM).exists(),
        skip.as_deref(),
    ) {
        Gate::Run => {}
        Gate::Skip(why) => {
            let bar = "!".repeat(78);
            // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "\n{bar}\n{why}\n{bar}\n");
            return;
        }
        Gate::Fail(why) => panic!("{why}"),
    }

    let fleet = Fleet::start(8, 31).await.unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    seed_violet_history(dirs.0.path()).await;
    let (server, store) = start_stored(
        &fleet,
        dirs.0.path(),
        Duration::from_millis(200),
        Options {
            admin: Some(ADMIN),
            ..Options::default()
        },
    )
    .await;
    let (guarded, _) = start_stored(
        &fleet,
        dirs.1.path(),
        Duration::from_secs(60),
        Options {
            token: Some(TOKEN),
            ..Options::default()
        },
    )
    .await;
    server.ready(false).await;
    guarded.ready(true).await;
    // A webhook accepted a few minutes ago: the provider panel's freshness.
    store
        .accept_webhook(
            "violet",
            "evt-browser-1",
            None,
            chrono::Utc::now() - chrono::Duration::minutes(4),
        )
        .await
        .unwrap();

    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    // Assertions panic: catch that, so the browser session is always closed (killing
    // chromedriver alone would orphan Chromium).
    let outcome = AssertUnwindSafe(scenario(&c, &fleet, &server, &guarded))
        .catch_unwind()
        .await;
    if !matches!(outcome, Ok(Ok(()))) {
        let _ = screenshot(&c, "dashboard-failure.png").await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), c.close()).await;
    drop(driver);
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e} (see target/test-artifacts/dashboard-failure.png)"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
    server.stop().await.unwrap();
    guarded.stop().await.unwrap();
}

/// Three hours ago, one Violet connection (not in the fleet: the first poll removes it),
/// healthy since: the server's first commit rolls those hours up, so the provider panel has
/// an uptime to show for Violet.
async fn seed_violet_history(dir: &Path) {
    use connhealth_core::{watch::Tracked, Connection, Customer, Role};
    let store = open_store(dir).await;
    let at = chrono::Utc::now() - chrono::Duration::hours(3);
    let connection = Connection::new(
        "violet",
        Some("seeded"),
        Customer::new("seeded_merchant"),
        "shopify",
        Role::Source,
        Status::Healthy,
        at,
    );
    store
        .commit_poll(connhealth_store::PollRecord {
            at,
            upserts: vec![Tracked {
                connection: std::sync::Arc::new(connection),
                since: at,
                streak: 0,
                worsening: false,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
}
