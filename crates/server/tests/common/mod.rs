//! Shared test harness: the testkit simulators behind the real adapters, a server on
//! 127.0.0.1:0, a scripted provider, and a small SSE reader.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connhealth::simulators;
use connhealth_core::futures::stream::{self, BoxStream, StreamExt};
use connhealth_core::watch::{WatchConfig, Watcher};
use connhealth_core::{Batch, Connection, Customer, Provider, Role, Secret, Status};
use connhealth_server::{Server, ServerConfig, ServerError};
use connhealth_testkit::Fleet;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// The documented Subtotal example connection (healthy, `active`).
pub const DOC_CONNECTION: &str = "01J51S0JYV6N7K1030CV1ZKSCA";
pub const TOKEN: &str = "test-bearer-token-7f3a9c";

/// A watcher over the fleet's three simulators through the real adapters. The server finds
/// their HTTP counters itself, through `Provider::http_stats`.
pub fn fleet_watcher(fleet: &Fleet, interval: Duration) -> Watcher {
    let mut w = Watcher::new(WatchConfig {
        interval,
        jitter: 0.0,
        trip: 1,
        clear: 1,
        timeout: Duration::from_secs(10),
    });
    let c3 = simulators::channel3(&fleet.channel3)
        .customers(fleet.channel3.customer_ids())
        .build()
        .unwrap();
    let violet = simulators::violet(&fleet.violet).build().unwrap();
    let subtotal = simulators::subtotal(&fleet.subtotal)
        .link_url("https://link.subtotal.example/reconnect")
        .build()
        .unwrap();
    w.add(Arc::new(c3), None);
    w.add(Arc::new(violet), None);
    w.add(Arc::new(subtotal), None);
    w
}

/// A provider whose answer the test sets, optionally held back until a gate opens.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub name: String,
    pub connections: Arc<Mutex<Vec<Connection>>>,
    pub gate: watch::Receiver<bool>,
}

impl Scripted {
    /// Answers at once.
    pub fn open(name: &str, connections: Vec<Connection>) -> Scripted {
        let (tx, rx) = watch::channel(true);
        drop(tx); // open for ever: `wait_for` sees `true` before it sees the channel closed
        Scripted {
            name: name.into(),
            connections: Arc::new(Mutex::new(connections)),
            gate: rx,
        }
    }

    /// Answers only once the returned sender sends `true`.
    pub fn gated(name: &str, connections: Vec<Connection>) -> (Scripted, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (
            Scripted {
                name: name.into(),
                connections: Arc::new(Mutex::new(connections)),
                gate: rx,
            },
            tx,
        )
    }
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    fn stream(&self) -> BoxStream<'_, Batch> {
        let mut gate = self.gate.clone();
        let conns = self.connections.clone();
        stream::once(async move {
            let _ = gate.wait_for(|open| *open).await;
            Ok(conns.lock().unwrap().clone())
        })
        .boxed()
    }
}

/// A connection of a scripted provider.
pub fn conn(provider: &str, pid: &str, customer: &str, status: Status) -> Connection {
    let mut built = Connection::new(
        provider,
        None,
        Customer::new(customer),
        "shopify",
        Role::Source,
        status,
        chrono::Utc::now(),
    );
    built.id = Connection::make_id(provider, Some(pid), customer, "shopify");
    built.provider_connection_id = Some(pid.into());
    built.provider_status = "scripted".into();
    built
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<Result<(), ServerError>>>,
}

pub struct Options {
    pub token: Option<&'static str>,
    /// The admin token (`POST` routes), none by default.
    pub admin: Option<&'static str>,
    pub event_buffer: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            admin: None,
            event_buffer: 1024,
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

impl Running {
    pub async fn start(watcher: Watcher, opts: Options) -> Running {
        Self::start_with(watcher, opts, |s| s).await
    }

    pub async fn start_with(
        watcher: Watcher,
        opts: Options,
        f: impl FnOnce(Server) -> Server,
    ) -> Running {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
        config.token = opts.token.map(Secret::new);
        config.admin_token = opts.admin.map(Secret::new);
        config.event_buffer = opts.event_buffer;
        let server = f(Server::new(config, watcher).expect("valid config"));
        let bound = server.bind().await.expect("bind 127.0.0.1:0");
        let addr = bound.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            client: client(),
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_auth(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// Wait (at most 5 s) until /readyz says ready.
    pub async fn ready(&self, token: bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut req = self.client.get(self.url("/readyz"));
            if token {
                req = req.bearer_auth(TOKEN);
            }
            if req.send().await.unwrap().status() == 200 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shut down gracefully; the serve future's result.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.serving.take().unwrap())
            .await
            .expect("the server stops within 5 s")
            .expect("serve task did not panic")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<u64>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// Reads events off a `text/event-stream` response.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
    pub comments: usize,
}

pub enum Next {
    Event(SseEvent),
    Timeout,
    End,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> SseReader {
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        SseReader {
            resp,
            buf: String::new(),
            comments: 0,
        }
    }

    pub async fn connect(running: &Running, last_event_id: Option<u64>) -> SseReader {
        let mut req = running.client.get(running.url("/v1/events"));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        SseReader::new(req.send().await.unwrap())
    }

    /// The next event within `within`.
    pub async fn next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let mut ev = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    any = true;
                    match field {
                        "event" => ev.event = value.into(),
                        "id" => ev.id = Some(value.parse().expect("numeric id")),
                        "data" => {
                            if !ev.data.is_empty() {
                                ev.data.push('\n');
                            }
                            ev.data.push_str(value)
                        }
                        _ => {}
                    }
                }
                if any {
                    return Next::Event(ev);
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Err(_) => return Next::Timeout,
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None)) | Ok(Err(_)) => return Next::End,
            }
        }
    }

    /// The next event, which must come within `within`.
    pub async fn expect(&mut self, within: Duration) -> SseEvent {
        match self.next(within).await {
            Next::Event(e) => e,
            Next::Timeout => panic!("no event within {within:?}"),
            Next::End => panic!("the stream ended"),
        }
    }

    /// Skip events until one satisfies `pred` (within `within` overall).
    pub async fn until(&mut self, within: Duration, pred: impl Fn(&SseEvent) -> bool) -> SseEvent {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self.expect(left).await;
            if pred(&e) {
                return e;
            }
        }
    }
}

/// A server over the fleet with a fresh SQLite store in `dir` (the dashboard's list is the
/// store's), its store handle.
/// The SQLite store `connhealth.db` in `dir` (made if missing).
pub async fn open_store(dir: &Path) -> std::sync::Arc<dyn connhealth_store::Store> {
    let url = connhealth_store::StoreUrl::parse_relative_to("sqlite://connhealth.db", dir).unwrap();
    connhealth_store::open(&url, Default::default())
        .await
        .unwrap()
}

pub async fn start_stored(
    fleet: &Fleet,
    dir: &Path,
    interval: Duration,
    opts: Options,
) -> (Running, std::sync::Arc<dyn connhealth_store::Store>) {
    let store = open_store(dir).await;
    let (journal, loaded) = connhealth_store::Journal::load(store.clone(), Default::default())
        .await
        .unwrap();
    let w = fleet_watcher(fleet, interval).with_state(loaded);
    let server = Running::start_with(w, opts, |s| s.with_store(journal, |_| {})).await;
    (server, store)
}
