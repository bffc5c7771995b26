//! Shared fixtures: an axum receiver on loopback in the test's own runtime, a real SQLite
//! store in a temp dir, sinks and changes.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Response};
use chrono::{DateTime, TimeZone, Utc};
use connhealth_core::{Change, Secret, Status};
use connhealth_notify::*;
use connhealth_store::{open, NewEvent, OpenOptions, PollRecord, Source, Store, StoreUrl};
use serde_json::{json, Value};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const SLACK_TOKEN: &str = "T000/B000/XXXXsecretslacktoken";

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
}

// ---------- the receiver ----------

#[derive(Clone, Debug)]
pub enum Behaviour {
    Ok,
    Status(u16),
    RetryAfter(u16, &'static str),
    Hang,
    HugeBody(u16),
    Garbage,
    Redirect,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub answered: u16,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let behaviour = Arc::new(Mutex::new(Behaviour::Ok));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (b, g) = (behaviour.clone(), got.clone());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let (b, g) = (b.clone(), g.clone());
                async move {
                    let beh = b.lock().unwrap().clone();
                    let answered = match &beh {
                        Behaviour::Ok | Behaviour::Garbage | Behaviour::Hang => 200,
                        Behaviour::Status(s)
                        | Behaviour::RetryAfter(s, _)
                        | Behaviour::HugeBody(s) => *s,
                        Behaviour::Redirect => 302,
                    };
                    if uri.path() != "/elsewhere" {
                        g.lock().unwrap().push(Received {
                            path: uri.path().to_owned(),
                            headers,
                            body: body.to_vec(),
                            answered,
                        });
                    } else {
                        g.lock().unwrap().push(Received {
                            path: "/elsewhere".into(),
                            headers,
                            body: body.to_vec(),
                            answered: 200,
                        });
                        return Response::new(Body::from("followed"));
                    }
                    let mut r = Response::builder().status(answered);
                    match beh {
                        Behaviour::Hang => {
                            std::future::pending::<()>().await;
                            unreachable!()
                        }
                        Behaviour::RetryAfter(_, ra) => {
                            r = r.header("retry-after", ra);
                            r.body(Body::from("slow down")).unwrap()
                        }
                        Behaviour::HugeBody(_) => {
                            // 64 MiB of the same line, streamed.
                            let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
                            let s = futures::stream::iter(
                                (0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                            );
                            r.body(Body::from_stream(s)).unwrap()
                        }
                        Behaviour::Garbage => {
                            r.body(Body::from(vec![0xffu8, 0xfe, 0x00, 0x7b])).unwrap()
                        }
                        Behaviour::Redirect => r
                            .header("location", "/elsewhere")
                            .body(Body::empty())
                            .unwrap(),
                        _ => r.body(Body::from("ok")).unwrap(),
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            addr,
            behaviour,
            got,
        }
    }
    pub fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    pub fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

// ---------- fixtures ----------

pub fn env(k: &str) -> Option<String> {
    match k {
        "NOTIFY_SECRET" => Some(SECRET.into()),
        "SLACK_URL" => None,
        _ => None,
    }
}

pub fn webhook_cfg(name: &str, url: &str, extra: Value) -> SinkConfig {
    let mut v = json!({"name": name, "kind": "webhook", "url": url, "secret_env": "NOTIFY_SECRET"});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

pub fn webhook(name: &str, url: &str, extra: Value) -> Sink {
    webhook_cfg(name, url, extra).validate_with(env).unwrap()
}

pub fn slack(name: &str, url: &str) -> Sink {
    let cfg: SinkConfig =
        serde_json::from_value(json!({"name": name, "kind": "slack", "url_env": "SLACK_URL"}))
            .unwrap();
    let url = url.to_owned();
    cfg.validate_with(move |k| (k == "SLACK_URL").then(|| url.clone()))
        .unwrap()
}

pub async fn store_in(dir: &std::path::Path) -> Arc<dyn Store> {
    let url = StoreUrl::parse_relative_to("sqlite://notify.db", dir).unwrap();
    open(&url, OpenOptions::default()).await.unwrap()
}

pub fn notifier(store: Arc<dyn Store>, sinks: Vec<Sink>, mutes: Vec<Mute>) -> Notifier {
    let opts = NotifierOptions {
        clock: Arc::new(TokioClock::starting_at(t0())),
        ..NotifierOptions::default()
    };
    Notifier::new(store, sinks, mutes, opts).unwrap()
}

pub fn change(conn: &str, from: Status, to: Status) -> Change {
    serde_json::from_value(json!({
        "event": "status_changed", "from": from, "to": to,
        "connection_id": format!("violet:{conn}:shopify"), "provider": "violet",
        "customer_id": conn, "platform": "shopify", "at": t0(), "since": null,
    }))
    .unwrap()
}

pub fn problem(conn: &str, message: &str, url: &str) -> Change {
    serde_json::from_value(json!({
        "event": "problem_raised",
        "problem": {"code": "reauthentication_required", "severity": "action_required",
                    "message": message, "remediation": {"kind": "reauthenticate", "url": url}},
        "connection_id": format!("violet:{conn}:shopify"), "provider": "violet",
        "customer_id": conn, "platform": "shopify", "at": t0(), "since": null,
    }))
    .unwrap()
}

pub fn outage(provider: &str) -> Change {
    serde_json::from_value(json!({
        "event": "provider_unavailable", "outcome": "failed", "errors": [],
        "connection_id": null, "provider": provider, "customer_id": null, "platform": null,
        "at": t0(), "since": null,
    }))
    .unwrap()
}

pub async fn commit(store: &Arc<dyn Store>, changes: Vec<Change>, sinks: &[&str]) -> Vec<i64> {
    let events = changes
        .into_iter()
        .map(|change| NewEvent {
            change,
            source: Source::Poll,
            notify: sinks.iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    store
        .commit_poll(PollRecord {
            at: t0(),
            events,
            ..PollRecord::default()
        })
        .await
        .unwrap()
}

/// A temp-dir store, a receiver, and a worker over them on the test's clock.
pub async fn setup(
    sinks: impl FnOnce(&Receiver) -> Vec<Sink>,
    mutes: Vec<Mute>,
) -> (tempfile::TempDir, Arc<dyn Store>, Receiver, Notifier) {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let rx = Receiver::start().await;
    let n = notifier(store.clone(), sinks(&rx), mutes);
    (dir, store, rx, n)
}

pub async fn rows(store: &Arc<dyn Store>, sink: &str) -> Vec<connhealth_store::Delivery> {
    store.deliveries(Some(sink), None, 100_000).await.unwrap()
}

pub fn verify(r: &Received) -> (String, Value) {
    let signer = Signer::new(&Secret::new(SECRET)).unwrap();
    let id = r.headers["webhook-id"].to_str().unwrap().to_owned();
    let ts: i64 = r.headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let sig = r.headers["webhook-signature"].to_str().unwrap();
    assert!(signer.verify(&id, ts, &r.body, sig), "signature verifies");
    let other = Signer::new(&Secret::new(
        "whsec_c2VjcmV0LW9mLWEtcm90YXRlZC1lbmRwb2ludA==",
    ))
    .unwrap();
    assert!(
        !other.verify(&id, ts, &r.body, sig),
        "another secret does not"
    );
    assert!(
        !signer.verify(&id, ts + 1, &r.body, sig),
        "another timestamp does not"
    );
    (id, serde_json::from_slice(&r.body).unwrap())
}
