//! The webhook benchmark (issue 18): `serve` on a SQLite store over a Subtotal simulator,
//! sent signed `connection.*` webhooks at a steady rate, each flipping one connection's status
//! (the simulator is changed first, so the confirming `GET /connections/{id}` agrees).
//!
//! Measured per webhook: the time to its `202`, and the time from sending it to its
//! `status_changed` event arriving on `/v1/events` (server-sent events). An event is published
//! only once stored, after the served report and the store already show the change, so the
//! second figure bounds "receipt → change visible in `/v1/connections/{id}`" from above (it
//! also includes the webhook's own HTTP round trip).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connhealth_core::watch::{WatchConfig, Watcher};
use connhealth_core::Secret;
use connhealth_server::{Server, ServerConfig};
use connhealth_store::{Journal, JournalOptions, OpenOptions, StoreUrl};
use connhealth_testkit::webhooks::hmac_sha256;
use connhealth_testkit::SubtotalSim;
use serde::Serialize;

const SECRET: &str = "bench-webhook-secret-2f8e";

/// What to run.
#[derive(Debug, Clone)]
pub struct WebhookBenchOptions {
    /// Webhooks per second.
    pub rate: u32,
    /// How long to send, in seconds.
    pub secs: u32,
    /// Simulated Subtotal customers (1-4 connections each).
    pub customers: usize,
    /// Seed of the simulator's data.
    pub seed: u64,
}

impl Default for WebhookBenchOptions {
    fn default() -> Self {
        WebhookBenchOptions {
            rate: 500,
            secs: 30,
            customers: 1000,
            seed: 42,
        }
    }
}

/// p50 / p99 / max of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// How many.
    pub n: usize,
}

impl Percentiles {
    fn of(mut v: Vec<Duration>) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort();
        let at = |q: f64| {
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            v[i].as_secs_f64() * 1000.0
        };
        Percentiles {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
            n: v.len(),
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookBenchReport {
    /// Webhooks sent.
    pub sent: usize,
    /// Answered 202.
    pub accepted: usize,
    /// Answered anything else (429 included).
    pub not_accepted: usize,
    /// The rate actually sent, per second.
    pub achieved_rate: f64,
    /// Send → 202.
    pub ack: Percentiles,
    /// Send → its `status_changed` event on `/v1/events`.
    pub visible: Percentiles,
    /// Accepted webhooks whose change was not seen within 10 s of the end.
    pub unseen: usize,
    /// Connections flipped in turn.
    pub connections: usize,
}

impl WebhookBenchReport {
    /// A short table, with the targets (visible p99 ≤ 1 s, 202 p99 ≤ 5 ms).
    pub fn table(&self) -> String {
        format!(
            "webhooks: sent {} ({:.0}/s) accepted {} not accepted {} unseen {} over {} connections\n\
             202:     p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms   (p99 / 5 ms target = {:.2})\n\
             visible: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms   (p99 / 1 s target = {:.2})\n",
            self.sent,
            self.achieved_rate,
            self.accepted,
            self.not_accepted,
            self.unseen,
            self.connections,
            self.ack.p50_ms,
            self.ack.p99_ms,
            self.ack.max_ms,
            self.ack.p99_ms / 5.0,
            self.visible.p50_ms,
            self.visible.p99_ms,
            self.visible.max_ms,
            self.visible.p99_ms / 1000.0,
        )
    }
}

fn sign(ts: i64, body: &[u8]) -> (String, String) {
    let ts = ts.to_string();
    let sig: String = hmac_sha256(SECRET, &[ts.as_bytes(), b".", body])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (ts, format!("v1={sig}"))
}

/// Run the benchmark (in the caller's runtime; give it a multi-threaded one).
pub async fn webhook_bench(opts: &WebhookBenchOptions) -> Result<WebhookBenchReport, String> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: &dyn std::fmt::Display| format!("{what}: {err}")
    };
    let sim = SubtotalSim::start_generated(opts.customers, opts.seed)
        .await
        .map_err(|x| e("starting the simulator")(&x))?;
    let mut conns = Vec::new();
    for c in sim.customer_ids() {
        for k in sim.connections_of(&c) {
            sim.set_status(&k.connection_id, "active");
            conns.push(k);
        }
    }
    let provider = connhealth_subtotal::Subtotal::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .customers(sim.customer_ids())
        .webhook_secret(Secret::new(SECRET))
        .build()
        .map_err(|x| e("building the provider")(&x))?;
    let mut watcher = Watcher::new(WatchConfig {
        interval: Duration::from_secs(3600),
        jitter: 0.0,
        trip: 1,
        clear: 1,
        timeout: Duration::from_secs(30),
    });
    watcher.add(Arc::new(provider), None);

    let path = std::env::temp_dir().join(format!(
        "connhealth-webhook-bench-{}.db",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let url =
        StoreUrl::parse(&format!("sqlite://{}", path.display())).map_err(|x| e("store url")(&x))?;
    let store = connhealth_store::open(&url, OpenOptions::default())
        .await
        .map_err(|x| e("opening the store")(&x))?;
    let (journal, loaded) = Journal::load(store, JournalOptions::default())
        .await
        .map_err(|x| e("loading the store")(&x))?;
    let watcher = watcher.with_state(loaded);
    let server = Server::new(ServerConfig::new(([127, 0, 0, 1], 0).into()), watcher)
        .map_err(|x| e("server")(&x))?
        .with_store(journal, |_| {});
    let bound = server.bind().await.map_err(|x| e("bind")(&x))?;
    let addr = bound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|x| e("client")(&x))?;
    let ready = async {
        for _ in 0..6000 {
            if client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };
    if !ready.await {
        return Err("serve never became ready".into());
    }
    // Let the first poll's events be stored and published before listening.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // connection id → when its flip was sent; the SSE reader takes the entry.
    let pending: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let visible: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut events = client
        .get(format!("{base}/v1/events"))
        .send()
        .await
        .map_err(|x| e("/v1/events")(&x))?;
    let reader = {
        let (pending, visible) = (pending.clone(), visible.clone());
        tokio::spawn(async move {
            let mut buf = String::new();
            while let Ok(Some(chunk)) = events.chunk().await {
                let now = Instant::now();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find('\n') {
                    let line: String = buf.drain(..=end).collect();
                    let Some(data) = line.trim_end().strip_prefix("data:") else {
                        continue;
                    };
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                        continue;
                    };
                    if v["event"] != "status_changed" {
                        continue;
                    }
                    let Some(id) = v["connection_id"].as_str() else {
                        continue;
                    };
                    let sent = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
                    if let Some(sent) = sent {
                        visible
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(now - sent);
                    }
                }
            }
        })
    };

    let total = (opts.rate as usize) * (opts.secs as usize);
    let mut state: Vec<bool> = vec![true; conns.len()]; // true = active
    let acks: Arc<Mutex<Vec<(u16, Duration)>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(opts.rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let hook = format!("{base}/v1/webhooks/subtotal");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tick.tick().await;
        let k = i % conns.len();
        state[k] = !state[k];
        let (status, kind) = if state[k] {
            ("active", "connection.activated")
        } else {
            ("unauthenticated", "connection.unauthenticated")
        };
        let c = &conns[k];
        sim.set_status(&c.connection_id, status);
        let body = serde_json::to_vec(&serde_json::json!({
            "type": kind,
            "id": format!("01BENCH{i:019}"),
            "payload": { "connection": {
                "connection_id": c.connection_id, "customer_id": c.customer_id,
                "retailer_id": c.retailer_id, "status": status, "email": null, "mobile": null,
            }},
        }))
        .unwrap_or_default();
        let (ts, sig) = sign(chrono::Utc::now().timestamp(), &body);
        let id = format!("subtotal:{}", c.connection_id);
        let (client, hook, pending, acks) =
            (client.clone(), hook.clone(), pending.clone(), acks.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            // A connection's oldest unseen flip is the one its next event answers (a later
            // send time would make the figure look better than it is).
            let mine = {
                let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
                let ours = !p.contains_key(&id);
                if ours {
                    p.insert(id.clone(), sent);
                }
                ours
            };
            let r = client
                .post(&hook)
                .header("content-type", "application/json")
                .header("X-Subtotal-Timestamp", ts)
                .header("X-Subtotal-Signature", sig)
                .body(body)
                .send()
                .await;
            let took = sent.elapsed();
            let status = r.map(|r| r.status().as_u16()).unwrap_or(0);
            if status != 202 && mine {
                pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            }
            acks.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((status, took));
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    for _ in 0..1000 {
        if pending.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unseen = pending.lock().unwrap_or_else(|p| p.into_inner()).len();
    let _ = stop.send(());
    reader.abort();
    let _ = serving.await;
    let _ = std::fs::remove_file(&path);
    for suffix in ["-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let acks = std::mem::take(&mut *acks.lock().unwrap_or_else(|p| p.into_inner()));
    let accepted: Vec<Duration> = acks.iter().filter(|a| a.0 == 202).map(|a| a.1).collect();
    let visible = std::mem::take(&mut *visible.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(WebhookBenchReport {
        sent: acks.len(),
        not_accepted: acks.len() - accepted.len(),
        accepted: accepted.len(),
        achieved_rate: acks.len() as f64 / elapsed.as_secs_f64(),
        ack: Percentiles::of(accepted),
        visible: Percentiles::of(visible),
        unseen,
        connections: conns.len(),
    })
}
