//! The dashboard in headless Chromium, driven over WebDriver (chromedriver + fantoccini):
//! tiles, the status filter, the search box, live updates over `/v1/events`, the token flow,
//! and a screenshot in `target/test-artifacts/`.
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

async fn screenshot(c: &Client, name: &str) -> Res<PathBuf> {
    let png = c.screenshot().await?;
    let path = artifacts_dir().join(name);
    std::fs::write(&path, png)?;
    Ok(path)
}

async fn report(server: &Running) -> HealthReport {
    server.get("/v1/report").await.json().await.unwrap()
}

async fn scenario(c: &Client, fleet: &Fleet, server: &Running, guarded: &Running) -> Res<()> {
    c.set_window_size(1440, 1100).await?;
    c.goto(&server.url("/")).await?;
    assert_eq!(c.title().await?, "connhealth — connection health");

    // Every tile, with its count, matching the report.
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
    let all = rows(c).await?;
    assert_eq!(all.len(), before.connections.len());
    assert!(
        all.windows(2).all(|w| rank(&w[0].1) >= rank(&w[1].1)),
        "rows are worst first: {all:?}"
    );
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

    // Search narrows to one connection.
    let doc_id = format!("subtotal:{DOC_CONNECTION}");
    c.find(Locator::Id("search"))
        .await?
        .send_keys(DOC_CONNECTION)
        .await?;
    let found = rows(c).await?;
    assert_eq!(found, vec![(doc_id.clone(), "healthy".to_owned())]);
    c.find(Locator::Id("clear-filters")).await?.click().await?;
    assert_eq!(rows(c).await?.len(), before.connections.len());

    // Filter on action_required by clicking its tile.
    let expected = before.summary.action_required;
    assert!(
        expected > 0,
        "the generated data has action_required connections"
    );
    let tile = c.find(Locator::Id("tile-action_required")).await?;
    tile.click().await?;
    assert_eq!(tile.attr("aria-pressed").await?.as_deref(), Some("true"));
    let filtered = rows(c).await?;
    assert_eq!(filtered.len(), expected);
    assert!(
        filtered.iter().all(|(_, s)| s == "action_required"),
        "{filtered:?}"
    );
    let select = c.find(Locator::Id("filter-status")).await?;
    assert_eq!(
        select.prop("value").await?.as_deref(),
        Some("action_required")
    );

    // A simulator change arrives live: the row joins the filtered table.
    assert!(!filtered.iter().any(|(id, _)| *id == doc_id));
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "unauthenticated"));
    wait_for("the changed row to appear live", || async {
        let rows = rows(c).await?;
        Ok(rows
            .iter()
            .any(|(id, s)| *id == doc_id && s == "action_required")
            .then_some(()))
    })
    .await?;
    let filtered = rows(c).await?;
    assert_eq!(filtered.len(), expected + 1);
    assert!(filtered.iter().all(|(_, s)| s == "action_required"));
    let count = c
        .find(Locator::Css("#tile-action_required .count"))
        .await?
        .text()
        .await?;
    assert_eq!(count, (expected + 1).to_string());
    // Its remediation is a link (a `reauthenticate` with a URL), the live counter moved.
    let row = c
        .find(Locator::Css(&format!("tr[data-id=\"{doc_id}\"]")))
        .await?;
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
    let live = c.find(Locator::Id("live-text")).await?.text().await?;
    assert!(live.starts_with("Live · "), "{live}");
    screenshot(c, "dashboard-filtered.png").await?;

    // Unfilter: everything again, the changed connection included, for the screenshot.
    c.find(Locator::Id("tile-action_required"))
        .await?
        .click()
        .await?;
    let all = rows(c).await?;
    assert_eq!(all.len(), before.connections.len());
    assert!(all.contains(&(doc_id.clone(), "action_required".to_owned())));
    let path = screenshot(c, "dashboard.png").await?;
    eprintln!("screenshot: {}", path.display());

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

    let fleet = Fleet::start(3, 31).await.unwrap();
    let w = fleet_watcher(&fleet, Duration::from_millis(200));
    let server = Running::start(w, Options::default()).await;
    let w2 = fleet_watcher(&fleet, Duration::from_secs(60));
    let guarded = Running::start(
        w2,
        Options {
            token: Some(TOKEN),
            ..Options::default()
        },
    )
    .await;
    server.ready(false).await;
    guarded.ready(true).await;

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
