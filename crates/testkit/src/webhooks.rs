//! Signed webhooks out of the simulators: when a simulator's data changes (through its
//! mutation methods) and [`crate::VioletSim::emit_webhooks_to`] /
//! [`crate::SubtotalSim::emit_webhooks_to`] was called, it POSTs the provider's webhook to a
//! URL, signed as the provider signs it (DESIGN.md, "Webhooks in"), so `demo --serve` can
//! show pushes live and tests can drive a receiver end to end.
//!
//! Deliveries leave in order from one background task; [`WebhookEmitter::flush`] waits until
//! every queued one has been answered (or failed), and [`WebhookEmitter::deliveries`] says
//! what each got.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{mpsc, watch};

/// HMAC-SHA256 of the concatenation of `parts`, keyed with `secret`'s UTF-8 bytes.
pub fn hmac_sha256(secret: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// One webhook sent (or attempted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The event id the webhook carried.
    pub event_id: String,
    /// The event type (Violet topic or Subtotal `type`).
    pub event_type: String,
    /// The receiver's HTTP status, or `None` when the request failed (connection, timeout).
    pub status: Option<u16>,
}

pub(crate) struct Job {
    pub(crate) event_id: String,
    pub(crate) event_type: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

/// The sending half a simulator holds once webhooks are on: a queue to one delivery task.
#[derive(Clone)]
pub struct WebhookEmitter {
    url: Arc<str>,
    pub(crate) secret: Arc<str>,
    tx: mpsc::UnboundedSender<Job>,
    queued: Arc<Mutex<u64>>,
    done: watch::Receiver<u64>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl fmt::Debug for WebhookEmitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEmitter")
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl WebhookEmitter {
    /// Start the delivery task (in the caller's tokio runtime) posting to `url`.
    pub(crate) fn start(url: &str, secret: &str) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let (done_tx, done) = watch::channel(0u64);
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&deliveries);
        let target = url.to_owned();
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default();
            let mut n = 0u64;
            while let Some(job) = rx.recv().await {
                let mut req = client
                    .post(&target)
                    .header("content-type", "application/json")
                    .body(job.body);
                for (k, v) in &job.headers {
                    req = req.header(*k, v);
                }
                let status = req.send().await.ok().map(|r| r.status().as_u16());
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Delivery {
                        event_id: job.event_id,
                        event_type: job.event_type,
                        status,
                    });
                n += 1;
                let _ = done_tx.send(n);
            }
        });
        WebhookEmitter {
            url: Arc::from(url),
            secret: Arc::from(secret),
            tx,
            queued: Arc::new(Mutex::new(0)),
            done,
            deliveries,
        }
    }

    pub(crate) fn send(&self, job: Job) {
        let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        if self.tx.send(job).is_ok() {
            *q += 1;
        }
    }

    /// Wait until every webhook queued so far has been delivered or has failed.
    pub async fn flush(&self) {
        let target = *self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let mut done = self.done.clone();
        // Err: the task ended (runtime shutting down); nothing more will be delivered.
        let _ = done.wait_for(|n| *n >= target).await;
    }

    /// Every delivery so far, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Where a simulator keeps its emitter (none until webhooks are turned on).
#[derive(Debug, Default)]
pub(crate) struct EmitterSlot(Mutex<Option<WebhookEmitter>>);

impl EmitterSlot {
    pub(crate) fn set(&self, e: WebhookEmitter) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    pub(crate) fn get(&self) -> Option<WebhookEmitter> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What a [`receiver`] hands each request to: the headers and the raw body; `Ok(item)` is
/// answered 202 and `item` sent to the channel, `Err(status)` is answered with that status.
pub type Verify<T> = dyn Fn(&axum::http::HeaderMap, &[u8]) -> Result<T, u16> + Send + Sync;

/// A small webhook receiver on `127.0.0.1` (a free port) in the caller's runtime, for tests
/// and demos: every `POST {url}` goes through `verify`. Returns the URL and the channel of
/// accepted items.
pub async fn receiver<T: Send + 'static>(
    verify: Arc<Verify<T>>,
) -> std::io::Result<(String, mpsc::UnboundedReceiver<T>)> {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};

    type St<T> = (Arc<Verify<T>>, mpsc::UnboundedSender<T>);
    async fn hook<T: Send + 'static>(
        State((verify, tx)): State<St<T>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        match verify(&headers, &body) {
            Ok(item) => {
                let _ = tx.send(item);
                StatusCode::ACCEPTED
            }
            Err(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/webhooks", axum::routing::post(hook::<T>))
        .with_state((verify, tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, rx))
}
