//! The dashboard and `/v1/connections` at fleet scale, measured in real Chromium (issue 21).
//!
//! Starts `connhealth demo --serve --customers N` (simulators in the same process, a temporary
//! SQLite store), waits until the first poll is stored, then:
//!
//! 1. opens the dashboard in headless Chromium (chromedriver + fantoccini) `RUNS` times, each
//!    in a fresh page, and reads from the Performance API: the `connhealth:first-row` mark
//!    (set when the first data rows are in the DOM; its `startTime` is from navigation
//!    start), and the `transferSize` of the navigation and every resource fetched until
//!    then (the first view's bytes on the wire);
//! 2. changes the status filter, the provider filter and the search box and times, in the
//!    page, the change → the re-rendered rows (`connhealth:rows-rendered`); the search figure
//!    includes the page's 250 ms debounce;
//! 3. runs 50 concurrent HTTP clients against `GET /v1/connections?limit=100` (without and
//!    with gzip) and the dashboard's own first-page query for `SECS` seconds each and reports
//!    p50 / p99 / max;
//! 4. reads the serve process's `VmRSS` / `VmHWM`.
//!
//! ```text
//! cargo build --release -p connhealth-cli --bin connhealth
//! cargo run --release -p connhealth-server --example dashboard_at_scale -- 5000 20000
//! ```
//!
//! Environment: `CONNHEALTH_BIN` (default `target/release/connhealth`), `INTERVAL` (the demo's
//! poll interval, default `1h`: one poll), `RUNS` (default 5),
//! `SECS` (default 10), `CLIENTS` (default 50), `LOAD_ONLY=1` (skip the browser: only the
//! HTTP load and the memory figures, e.g. while profiling the server). Prints one JSON line
//! per fleet size.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn get_json(http: &reqwest::Client, url: &str) -> Res<(u16, Value)> {
    let r = http.get(url).send().await?;
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(Value::Null);
    Ok((status, v))
}

async fn browser(port: u16) -> Res<Client> {
    let profile = std::env::temp_dir().join(format!("connhealth-scale-{}", std::process::id()));
    let caps = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-background-networking", "--disable-sync",
                     "--disable-component-update", "--window-size=1400,1000",
                     format!("--user-data-dir={}", profile.display())]
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    Ok(ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await?)
}

/// One fresh load of the page: (ms to the first row, bytes of the first view).
async fn first_view(c: &Client, url: &str) -> Res<(f64, u64)> {
    c.goto("about:blank").await?;
    c.goto(url).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = c
            .execute(
                "const m = performance.getEntriesByName('connhealth:first-row')[0];
                 if (!m) return null;
                 const nav = performance.getEntriesByType('navigation')[0];
                 let bytes = nav ? nav.transferSize : 0;
                 for (const r of performance.getEntriesByType('resource'))
                   if (r.responseEnd <= m.startTime) bytes += r.transferSize;
                 const first = document.querySelector('#rows tr[data-id]');
                 return [m.startTime, bytes, !!first];",
                vec![],
            )
            .await?;
        if let Some(a) = v.as_array() {
            if a[2].as_bool() == Some(true) {
                return Ok((a[0].as_f64().unwrap_or(-1.0), a[1].as_u64().unwrap_or(0)));
            }
        }
        if Instant::now() > deadline {
            return Err("no first row within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Change a control in the page and time it until the rows are rendered again (ms).
async fn change(c: &Client, id: &str, value: &str, event: &str) -> Res<f64> {
    let script = "
        const [id, value, ev, done] = arguments;
        const n = performance.getEntriesByName('connhealth:rows-rendered').length;
        const t0 = performance.now();
        const e = document.getElementById(id);
        e.value = value;
        e.dispatchEvent(new Event(ev));
        (function wait() {
          const m = performance.getEntriesByName('connhealth:rows-rendered');
          if (m.length > n) done(m[m.length - 1].startTime - t0); else setTimeout(wait, 2);
        })();";
    let v = c
        .execute_async(script, vec![json!(id), json!(value), json!(event)])
        .await?;
    Ok(v.as_f64().unwrap_or(-1.0))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// `clients` concurrent clients on `url` for `secs` (asking for gzip or not): latencies in
/// ms, sorted.
async fn load(url: &str, clients: usize, secs: u64, gzip: bool) -> Res<Vec<f64>> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .gzip(gzip)
        .pool_max_idle_per_host(clients)
        .build()?;
    let url: Arc<str> = url.into();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                let r = http.get(&*url).send().await;
                let ok = match r {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    out.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort_by(f64::total_cmp);
    Ok(all)
}

async fn measure(customers: u64) -> Res<Value> {
    let bin =
        std::env::var("CONNHEALTH_BIN").unwrap_or_else(|_| "target/release/connhealth".into());
    let port = free_port();
    let interval = std::env::var("INTERVAL").unwrap_or_else(|_| "1h".into());
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let serve = Kill(
        Command::new(&bin)
            .args(["demo", "--serve", "--customers", &customers.to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            // One poll only (the demo's default is every 5 s, and at this scale a poll takes
            // seconds of CPU): what is measured is serving, not polling.
            .args(["--interval", &interval])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {bin}: {e}"))?,
    );
    let pid = serve.0.id();
    let http = reqwest::Client::builder().no_proxy().build()?;
    // Ready, and the first poll stored: the store's total matches the summary's.
    let connections = loop {
        if let Ok((200, s)) = get_json(&http, &format!("{base}/v1/summary")).await {
            let total = s["summary"]["total"].as_u64().unwrap_or(0);
            if let Ok((200, p)) = get_json(&http, &format!("{base}/v1/connections?limit=1")).await {
                if total > 0 && p["total"].as_u64() == Some(total) {
                    break total;
                }
            }
        }
        if started.elapsed() > Duration::from_secs(1800) {
            return Err("not ready within 30 min".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let ready_s = started.elapsed().as_secs_f64();
    let rss_ready = proc_kib(pid, "VmRSS:");

    let mut firsts = Vec::new();
    let mut bytes = Vec::new();
    let mut status_ms = Vec::new();
    let mut provider_ms = Vec::new();
    let mut search_ms = Vec::new();
    if std::env::var_os("LOAD_ONLY").is_none() {
        let driver_port = free_port();
        let _driver = Kill(
            Command::new("/usr/bin/chromedriver")
                .arg(format!("--port={driver_port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let c = browser(driver_port).await?;
        let runs = env_or("RUNS", 5);
        for _ in 0..runs {
            let (ms, b) = first_view(&c, &format!("{base}/")).await?;
            firsts.push(ms);
            bytes.push(b);
        }
        for _ in 0..runs {
            status_ms.push(change(&c, "filter-status", "degraded", "change").await?);
            status_ms.push(change(&c, "filter-status", "", "change").await?);
            provider_ms.push(change(&c, "filter-provider", "violet", "change").await?);
            provider_ms.push(change(&c, "filter-provider", "", "change").await?);
            search_ms.push(change(&c, "search", "shopify", "input").await?);
            search_ms.push(change(&c, "search", "", "input").await?);
        }
        let _ = c.close().await;
    }
    // In load order too: whether the slow loads are the first (cold) ones.
    let firsts_in_order = firsts.clone();
    for v in [
        &mut firsts,
        &mut status_ms,
        &mut provider_ms,
        &mut search_ms,
    ] {
        v.sort_by(f64::total_cmp);
    }
    let clients = env_or("CLIENTS", 50) as usize;
    let secs = env_or("SECS", 10);
    let mut loads = serde_json::Map::new();
    // The flat first page, plain and gzip'd, and the dashboard's own first-page query (as
    // dashboard.html spells it, which the server prebuilds after every change).
    for (q, gzip) in [
        ("limit=100", false),
        ("limit=100", true),
        ("group=customer&timeline=30d&limit=100", true),
    ] {
        let lat = load(&format!("{base}/v1/connections?{q}"), clients, secs, gzip).await?;
        loads.insert(
            format!("{q}{}", if gzip { " (gzip)" } else { "" }),
            json!({
                "requests": lat.len(),
                "per_s": lat.len() as f64 / secs as f64,
                "p50_ms": pct(&lat, 0.5),
                "p99_ms": pct(&lat, 0.99),
                "max_ms": lat.last().copied().unwrap_or(f64::NAN),
            }),
        );
    }
    let bytes_median = {
        let mut b = bytes.clone();
        b.sort_unstable();
        b.get(b.len() / 2).copied()
    };
    Ok(json!({
        "customers_per_provider": customers,
        "connections": connections,
        "ready_and_stored_s": ready_s,
        "first_row_ms": {"median": pct(&firsts, 0.5), "max": firsts.last(), "all": firsts, "in_order": firsts_in_order},
        "first_view_bytes": {"median": bytes_median, "all": bytes},
        "filter_status_ms": {"median": pct(&status_ms, 0.5), "max": status_ms.last()},
        "filter_provider_ms": {"median": pct(&provider_ms, 0.5), "max": provider_ms.last()},
        "search_ms_with_250ms_debounce": {"median": pct(&search_ms, 0.5), "max": search_ms.last()},
        "connections_route": loads,
        "clients": clients,
        "rss_kib": {"ready": rss_ready, "now": proc_kib(pid, "VmRSS:"), "peak": proc_kib(pid, "VmHWM:")},
    }))
}

#[tokio::main]
async fn main() -> Res<()> {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![5000] } else { sizes };
    for n in sizes {
        let v = measure(n).await?;
        println!("{v}");
    }
    Ok(())
}
