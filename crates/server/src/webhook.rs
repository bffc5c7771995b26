//! `POST /v1/webhooks/{name}`: verified webhooks in, a stored queue of targeted refreshes,
//! one bounded worker draining it (see the [routes](crate::routes) docs).
//!
//! The handler answers in DESIGN.md's order: 404 (no such provider, or no webhooks
//! configured for it) → 503 `no_store` → 413 (above [`MAX_WEBHOOK_BODY_BYTES`], read through
//! a length limit so a huge body is never buffered whole) → 401 (missing or wrong signature,
//! stale timestamp) → 400 (malformed) → 200 `{duplicate: true}` (event id seen before: a
//! read-only lookup, so a replay is recognised even while the queue is full) → 429 with
//! `Retry-After` (queue full, nothing recorded) → 202 `{accepted: true}`. The event id and its
//! queued work are stored in one transaction, shared by the accepts that arrived while the
//! previous one ran (group commit,
//! [`Store::accept_webhooks`](connhealth_store::Store::accept_webhooks)); the 202 is sent only
//! once that transaction committed, and a failed one answers each of its webhooks 503 with
//! none recorded. Two deliveries of one id racing past the lookup are told apart there by the
//! unique key (the loser gets the 200).
//! Bodies are never logged.
//!
//! The queue's count is a slot reserved before the insert (so concurrent deliveries never
//! overshoot the bound) and released when the worker finishes the item; a restarted `serve`
//! starts it from the stored queue ([`Store::webhook_overview`](connhealth_store::Store::webhook_overview)),
//! and its worker drains what a previous process left. An item in progress when `serve`
//! stops is released at once, so the next process takes it up without waiting for its lease.
// A rejected request's answer is the `Err`: built once per request, so boxing gains nothing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use connhealth_core::webhook::MAX_WEBHOOK_BODY_BYTES;
use connhealth_core::{Connection, Provider, RefreshHint, Status};
use connhealth_store::{
    NewWebhook, NewWork, Source, Store, StoreError, WebhookAccept, WebhookOverview, WorkItem,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::http as h;
use crate::state::AppState;

/// The default bound of the refresh queue (`ServerConfig::queue_bound`): past it, webhooks
/// that need a refresh get 429 + `Retry-After`. 1,000 queued refreshes is about two seconds of
/// the worker's work at the benchmark's rate, well inside the 5 s `Retry-After`; a burst
/// larger than that is pushed back to the senders, who retry.
pub const DEFAULT_QUEUE_BOUND: usize = 1000;
/// What a 429 asks the sender to wait, in seconds.
const RETRY_AFTER_SECS: &str = "5";
/// How often the worker looks for work besides being woken (work left by a restart, work
/// released after a transient failure).
pub(crate) const SWEEP: Duration = Duration::from_secs(5);
/// How long a claim holds an item.
const LEASE_SECS: i64 = 120;
/// Attempts after which a refresh that keeps failing transiently is given up.
const MAX_ATTEMPTS: i64 = 5;
/// The queued work's kind.
const REFRESH: &str = "refresh";

/// The answer a webhook got, as `/metrics` labels it (`outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Received {
    Accepted,
    Duplicate,
    RejectedSignature,
    RejectedBody,
    TooLarge,
    QueueFull,
    UnknownProvider,
    NoStore,
    StoreUnavailable,
}

impl Received {
    /// Every outcome, so each series starts at zero.
    pub(crate) const ALL: [Received; 9] = [
        Received::Accepted,
        Received::Duplicate,
        Received::RejectedSignature,
        Received::RejectedBody,
        Received::TooLarge,
        Received::QueueFull,
        Received::UnknownProvider,
        Received::NoStore,
        Received::StoreUnavailable,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Received::Accepted => "accepted",
            Received::Duplicate => "duplicate",
            Received::RejectedSignature => "rejected_signature",
            Received::RejectedBody => "rejected_body",
            Received::TooLarge => "too_large",
            Received::QueueFull => "queue_full",
            Received::UnknownProvider => "unknown_provider",
            Received::NoStore => "no_store",
            Received::StoreUnavailable => "store_unavailable",
        }
    }
}

/// How a queued refresh ended, as `/metrics` labels it (`result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Refreshed {
    /// Read and applied.
    Done,
    /// Not possible (e.g. a customer not configured), unreadable, or given up after retries.
    Failed,
    /// A transient failure: released for another attempt.
    Retried,
}

impl Refreshed {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refreshed::Done => "done",
            Refreshed::Failed => "failed",
            Refreshed::Retried => "retried",
        }
    }
}

/// The intake's counters for `/metrics` (labels are configured provider names only: a name a
/// sender made up is counted as `unknown`).
#[derive(Debug, Default, Clone)]
pub(crate) struct IntakeStats {
    /// Webhooks by (provider, outcome).
    pub(crate) received: BTreeMap<(String, Received), u64>,
    /// Finished refreshes by (provider, source, result).
    pub(crate) refreshes: BTreeMap<(String, &'static str, Refreshed), u64>,
    /// When the last accepted webhook arrived, per provider.
    pub(crate) last_webhook: BTreeMap<String, DateTime<Utc>>,
}

/// The webhook intake shared by the handler and the worker.
#[derive(Debug)]
pub(crate) struct Intake {
    providers: Mutex<Vec<Arc<dyn Provider>>>,
    queued: AtomicUsize,
    bound: AtomicUsize,
    wake: Notify,
    /// The poller's inbox, once serving (actions hand their re-fetched connection to it).
    applied: Mutex<Option<mpsc::Sender<Applied>>>,
    stats: Mutex<IntakeStats>,
    /// The group committer's inbox, started by the first accept.
    committer: std::sync::OnceLock<mpsc::Sender<AcceptRequest>>,
}

/// The most accepts written in one transaction.
const ACCEPT_GROUP: usize = 128;

/// One accept waiting for the next group commit, and where its answer goes.
#[derive(Debug)]
struct AcceptRequest {
    hook: NewWebhook,
    reply: oneshot::Sender<Result<WebhookAccept, Arc<StoreError>>>,
}

/// Group commit: every accept that arrived while the previous transaction ran goes into the
/// next one ([`Store::accept_webhooks`]), so concurrent webhooks share one write instead of
/// queueing for SQLite's single writer one by one. Each is answered only after its
/// transaction committed; a failed transaction fails all of its accepts (none recorded).
/// Ends when the intake (its sender) is dropped; it holds the store weakly, so a stopped
/// `serve` does not keep the store (and its file lock) open.
async fn commit_accepts(store: std::sync::Weak<dyn Store>, mut rx: mpsc::Receiver<AcceptRequest>) {
    while let Some(first) = rx.recv().await {
        // Gone: the waiting handlers see their answer dropped (a 503).
        let Some(store) = store.upgrade() else {
            return;
        };
        let mut group = vec![first];
        while group.len() < ACCEPT_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let (hooks, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|r| (r.hook, r.reply)).unzip();
        match store.accept_webhooks(hooks, Utc::now()).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

impl Default for Intake {
    fn default() -> Self {
        Intake {
            providers: Mutex::new(Vec::new()),
            queued: AtomicUsize::new(0),
            bound: AtomicUsize::new(DEFAULT_QUEUE_BOUND),
            wake: Notify::new(),
            applied: Mutex::new(None),
            stats: Mutex::new(IntakeStats::default()),
            committer: std::sync::OnceLock::new(),
        }
    }
}

impl Intake {
    pub(crate) fn set_providers(&self, providers: Vec<Arc<dyn Provider>>) {
        *self.providers.lock().unwrap_or_else(|e| e.into_inner()) = providers;
    }

    pub(crate) fn set_bound(&self, bound: usize) {
        self.bound.store(bound.max(1), Ordering::Relaxed);
    }

    pub(crate) fn set_applied(&self, tx: mpsc::Sender<Applied>) {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    pub(crate) fn applied(&self) -> Option<mpsc::Sender<Applied>> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn provider(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|p| p.name() == name)
            .cloned()
    }

    /// The configured providers that have webhooks configured.
    pub(crate) fn webhook_providers(&self) -> Vec<String> {
        self.providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| {
                p.verify_webhook(&Default::default(), b"", Utc::now())
                    .is_some()
            })
            .map(|p| p.name().to_owned())
            .collect()
    }

    /// Record `hook` durably in the next group commit on `store`; the answer comes once that
    /// transaction committed (or failed). `None` if the committer is gone.
    async fn accept(
        &self,
        store: &Arc<dyn Store>,
        hook: NewWebhook,
    ) -> Option<Result<WebhookAccept, Arc<StoreError>>> {
        let tx = self.committer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(ACCEPT_GROUP * 8);
            tokio::spawn(commit_accepts(Arc::downgrade(store), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send(AcceptRequest { hook, reply }).await.ok()?;
        answer.await.ok()
    }

    /// Take a place in the queue; `false` when it is full.
    fn try_reserve(&self) -> bool {
        let bound = self.bound.load(Ordering::Relaxed);
        self.queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < bound).then_some(n + 1)
            })
            .is_ok()
    }

    /// Give a place back: its work was not queued (a duplicate, a failed write) or is done.
    fn release(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    fn wake_worker(&self) {
        self.wake.notify_one();
    }

    /// Queued refreshes now (the `/metrics` queue depth).
    pub(crate) fn depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The queue's bound.
    pub(crate) fn bound(&self) -> usize {
        self.bound.load(Ordering::Relaxed)
    }

    /// Start from what the store holds (at `serve` start, before any request): the work a
    /// previous process left counts against the bound, and `last_webhook_at` survives.
    pub(crate) fn restore(&self, overview: &WebhookOverview) {
        self.queued.store(
            usize::try_from(overview.pending_work).unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
        let mut stats = self.lock_stats();
        for (provider, at) in &overview.last_received {
            let e = stats.last_webhook.entry(provider.clone()).or_insert(*at);
            *e = (*e).max(*at);
        }
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, IntakeStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stats(&self) -> IntakeStats {
        self.lock_stats().clone()
    }

    fn count_received(&self, provider: &str, outcome: Received, at: DateTime<Utc>) {
        let mut stats = self.lock_stats();
        *stats
            .received
            .entry((provider.to_owned(), outcome))
            .or_default() += 1;
        if outcome == Received::Accepted {
            stats.last_webhook.insert(provider.to_owned(), at);
        }
    }

    fn count_refresh(&self, provider: &str, source: &'static str, result: Refreshed) {
        *self
            .lock_stats()
            .refreshes
            .entry((provider.to_owned(), source, result))
            .or_default() += 1;
    }

    /// When the last accepted webhook of `provider` arrived (this process, or the store's
    /// record of earlier ones).
    pub(crate) fn last_webhook_at(&self, provider: &str) -> Option<DateTime<Utc>> {
        self.lock_stats().last_webhook.get(provider).copied()
    }
}

/// The arguments of a queued refresh (ids and a status only: no secrets, no bodies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RefreshWork {
    pub(crate) customer_id: String,
    /// The provider's connection id to read (a one-connection refresh), if any.
    #[serde(default)]
    pub(crate) connection_id: Option<String>,
    /// A status to apply at once, before the confirming read (Subtotal's event status).
    #[serde(default)]
    pub(crate) status: Option<Status>,
    #[serde(default)]
    pub(crate) provider_status: Option<String>,
    pub(crate) source: Source,
}

impl RefreshWork {
    pub(crate) fn into_work(self, provider: &str) -> NewWork {
        NewWork {
            kind: REFRESH.into(),
            provider: provider.to_owned(),
            payload: serde_json::to_value(&self).unwrap_or_default(),
        }
    }
}

/// What the worker hands the poller (which owns the watcher and the journal).
#[derive(Debug)]
pub(crate) enum Applied {
    /// Apply a status to a remembered connection at once.
    Status {
        provider: String,
        customer_id: String,
        connection_id: String,
        status: Status,
        provider_status: Option<String>,
        source: Source,
    },
    /// A targeted read's result.
    Read {
        provider: String,
        customer_id: String,
        connections: Vec<Connection>,
        whole_customer: bool,
        source: Source,
        /// Told once the result is applied and recorded (an action waits for it).
        done: Option<tokio::sync::oneshot::Sender<()>>,
    },
}

impl Applied {
    /// The sender to tell once recorded, taken out.
    pub(crate) fn take_done(&mut self) -> Option<tokio::sync::oneshot::Sender<()>> {
        match self {
            Applied::Read { done, .. } => done.take(),
            Applied::Status { .. } => None,
        }
    }

    pub(crate) fn source(&self) -> Source {
        match self {
            Applied::Status { source, .. } | Applied::Read { source, .. } => *source,
        }
    }

    /// Feed it to the watcher at `at` and return the changes
    /// ([`Watcher::apply_refresh_changes`](connhealth_core::watch::Watcher::apply_refresh_changes):
    /// the view is built once per batch by the caller, not per item).
    pub(crate) fn apply(
        self,
        watcher: &mut connhealth_core::watch::Watcher,
        at: DateTime<Utc>,
    ) -> Vec<connhealth_core::diff::Change> {
        match self {
            Applied::Status {
                provider,
                customer_id,
                connection_id,
                status,
                provider_status,
                ..
            } => {
                let known: Vec<Connection> = watcher
                    .state()
                    .connections
                    .values()
                    .filter(|t| {
                        t.connection.provider == provider
                            && t.connection.customer.id == customer_id
                            && (t.connection.provider_connection_id.as_deref()
                                == Some(connection_id.as_str())
                                || t.connection.id == connection_id)
                    })
                    .map(|t| {
                        let mut c = connhealth_core::Connection::clone(&t.connection);
                        c.status = status;
                        if let Some(s) = &provider_status {
                            c.provider_status = s.clone();
                        }
                        c
                    })
                    .collect();
                let changes =
                    watcher.apply_refresh_changes(&provider, &customer_id, &known, false, at);
                // The webhook's word, not a read: a scheduled re-check confirms it next.
                watcher.move_to_front(&provider, &customer_id);
                changes
            }
            Applied::Read {
                provider,
                customer_id,
                connections,
                whole_customer,
                ..
            } => watcher.apply_refresh_changes(
                &provider,
                &customer_id,
                &connections,
                whole_customer,
                at,
            ),
        }
    }
}

fn not_found(name: &str) -> Response {
    h::error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no provider {name:?} with webhooks configured (set webhook_secret_env in its config)"
        ),
    )
}

/// 429 with `Retry-After`.
pub(crate) fn queue_full() -> Response {
    let mut r = h::error(
        StatusCode::TOO_MANY_REQUESTS,
        "queue_full",
        "the refresh queue is full; retry later (nothing was recorded)",
    );
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    r
}

/// Queue `work` unless the queue is full (then 429, nothing recorded); its id.
pub(crate) async fn enqueue(state: &AppState, work: NewWork) -> Result<i64, Response> {
    let store = state.store().cloned().ok_or_else(crate::stored::no_store)?;
    let intake = state.intake();
    if !intake.try_reserve() {
        return Err(queue_full());
    }
    let id = match store.enqueue_work(work, Utc::now()).await {
        Ok(id) => id,
        Err(e) => {
            intake.release();
            return Err(store_unavailable(&e));
        }
    };
    intake.wake_worker();
    Ok(id)
}

fn store_unavailable(e: &connhealth_store::StoreError) -> Response {
    h::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        e.to_string(),
    )
}

/// `POST /v1/webhooks/{name}`.
pub(crate) async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let intake = state.intake();
    // A configured provider's name labels the counters; a name the sender made up does not.
    let mut label = "unknown".to_owned();
    let run = async {
        let provider = intake
            .provider(&name)
            .ok_or_else(|| (Received::UnknownProvider, not_found(&name)))?;
        label = name.clone();
        // `None` = no webhooks configured for it: the check needs no body.
        if provider
            .verify_webhook(&Default::default(), b"", Utc::now())
            .is_none()
        {
            return Err((Received::UnknownProvider, not_found(&name)));
        }
        let store = state
            .store()
            .cloned()
            .ok_or_else(|| (Received::NoStore, crate::stored::no_store()))?;
        let (parts, body) = req.into_parts();
        let too_large = || {
            (
                Received::TooLarge,
                h::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("webhook bodies are at most {MAX_WEBHOOK_BODY_BYTES} bytes"),
                ),
            )
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_WEBHOOK_BODY_BYTES as u64) {
            return Err(too_large());
        }
        // A length limit while reading: a body without a (true) length is never buffered past it.
        let bytes = axum::body::to_bytes(body, MAX_WEBHOOK_BODY_BYTES)
            .await
            .map_err(|_| too_large())?;
        let now = Utc::now();
        let event = match provider.verify_webhook(&parts.headers, &bytes, now) {
            None => return Err((Received::UnknownProvider, not_found(&name))),
            Some(Err(e)) => {
                let status =
                    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
                let (outcome, code) = match status {
                    StatusCode::UNAUTHORIZED => (Received::RejectedSignature, "unauthorized"),
                    StatusCode::PAYLOAD_TOO_LARGE => (Received::TooLarge, "payload_too_large"),
                    _ => (Received::RejectedBody, "bad_request"),
                };
                tracing::info!(provider = %name, error = %e, "webhook rejected");
                return Err((outcome, h::error(status, code, e.to_string())));
            }
            Some(Ok(event)) => event,
        };
        let duplicate = || {
            tracing::info!(provider = %name, event_id = %event.event_id, "webhook replayed; nothing recorded");
            (
                Received::Duplicate,
                h::json_value(StatusCode::OK, &serde_json::json!({ "duplicate": true })),
            )
        };
        let unavailable =
            |e: connhealth_store::StoreError| (Received::StoreUnavailable, store_unavailable(&e));
        // A replay is told so even while the queue is full (a read: nothing written).
        if store
            .webhook_seen(&name, &event.event_id)
            .await
            .map_err(unavailable)?
        {
            return Ok(duplicate());
        }
        let work = event.refresh_target().map(|customer_id| {
            RefreshWork {
                customer_id: customer_id.to_owned(),
                connection_id: event.connection_id.clone(),
                status: event.status,
                provider_status: event.provider_status.clone(),
                source: Source::Webhook,
            }
            .into_work(&name)
        });
        let queued = work.is_some();
        if queued && !intake.try_reserve() {
            return Err((Received::QueueFull, queue_full()));
        }
        let hook = NewWebhook {
            provider: name.clone(),
            event_id: event.event_id.clone(),
            work,
        };
        let Some(accepted) = intake.accept(&store, hook).await else {
            if queued {
                intake.release();
            }
            return Err((
                Received::StoreUnavailable,
                h::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store's writer stopped",
                ),
            ));
        };
        match accepted {
            // Lost a race with a concurrent delivery of the same id.
            Ok(WebhookAccept::Duplicate) => {
                if queued {
                    intake.release();
                }
                Ok(duplicate())
            }
            Ok(WebhookAccept::Accepted { work_id }) => {
                tracing::info!(provider = %name, event_id = %event.event_id, event_type = %event.event_type.as_str(), queued, "webhook accepted");
                match (queued, work_id.is_some()) {
                    (true, true) => intake.wake_worker(),
                    (true, false) => intake.release(),
                    _ => {}
                }
                Ok((
                    Received::Accepted,
                    h::json_value(
                        StatusCode::ACCEPTED,
                        &serde_json::json!({ "accepted": true }),
                    ),
                ))
            }
            Err(e) => {
                if queued {
                    intake.release();
                }
                Err((Received::StoreUnavailable, store_unavailable(&e)))
            }
        }
    };
    let (outcome, mut resp) = run.await.unwrap_or_else(|r| r);
    intake.count_received(&label, outcome, Utc::now());
    let headers = resp.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The body of `POST /v1/refresh`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    provider: String,
    customer_id: String,
}

/// `POST /v1/refresh` (behind the admin token, checked by the guard).
pub(crate) async fn refresh(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let run = async {
        // Like the other store routes: without a store nothing can be queued.
        state.store().ok_or_else(crate::stored::no_store)?;
        let asked: RefreshRequest = serde_json::from_slice(&body).map_err(|e| {
            h::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("POST /v1/refresh: expected {{\"provider\": \"…\", \"customer_id\": \"…\"}}: {e}"),
            )
        })?;
        let customer_id = asked.customer_id.trim();
        if customer_id.is_empty() {
            return Err(h::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "POST /v1/refresh: customer_id is empty",
            ));
        }
        if state.intake().provider(&asked.provider).is_none() {
            return Err(h::error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no provider {:?} configured", asked.provider),
            ));
        }
        let work = RefreshWork {
            customer_id: customer_id.to_owned(),
            connection_id: None,
            status: None,
            provider_status: None,
            source: Source::Refresh,
        }
        .into_work(&asked.provider);
        let work_id = enqueue(&state, work).await?;
        tracing::info!(provider = %asked.provider, caller = "admin", "refresh queued");
        if !state.role().is_leading() {
            // A follower answers once the leader has done it (bounded).
            return Ok(crate::replica::await_refresh(&state, work_id).await);
        }
        Ok(h::json_value(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "accepted": true }),
        ))
    };
    run.await.unwrap_or_else(|r| r)
}

/// Items claimed at once. Items about different customers run concurrently; those about one
/// customer run in their queue order.
const WORKER_BATCH: usize = 32;

/// How a handled item ended: the item, its source's label, the error it is released with
/// (`None`: finished) and the result counted.
type Ended<'a> = (&'a WorkItem, &'static str, Option<String>, Refreshed);

/// The customer a queued item is about (its group in a batch).
fn group_key(item: &WorkItem) -> (String, String) {
    let customer = item
        .work
        .payload
        .get("customer_id")
        .and_then(|c| c.as_str())
        .unwrap_or_default();
    (item.work.provider.clone(), customer.to_owned())
}

/// Drain the queue until `stop` says so (the state is shut down, or a replica's leadership
/// ended), handing results to the poller through `tx`. Items in progress then are released
/// (not finished), so the next process (or leader) takes them up at once.
///
/// It looks for work every `sweep` besides being woken ([`SWEEP`] alone; a replica's leader
/// more often, since followers queue work without being able to wake it).
pub(crate) async fn run_worker(
    state: AppState,
    tx: mpsc::Sender<Applied>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    sweep: Duration,
) {
    let Some(store) = state.store().cloned() else {
        return;
    };
    let intake = state.intake();
    let holder = format!("serve-{}", std::process::id());
    loop {
        loop {
            let claimed = store
                .claim_work(
                    &holder,
                    WORKER_BATCH,
                    Utc::now(),
                    chrono::Duration::seconds(LEASE_SECS),
                )
                .await;
            let items = match claimed {
                Ok(items) if items.is_empty() => break,
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim queued work");
                    break;
                }
            };
            let mut groups: Vec<((String, String), Vec<&WorkItem>)> = Vec::new();
            for item in &items {
                let key = group_key(item);
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, g)) => g.push(item),
                    None => groups.push((key, vec![item])),
                }
            }
            // How each handled item ended; all of them are finished in one transaction after
            // the batch (not one write transaction per item).
            let ended: Mutex<Vec<Ended<'_>>> = Mutex::new(Vec::with_capacity(items.len()));
            let released = std::sync::atomic::AtomicBool::new(false);
            let (state, tx) = (&state, &tx);
            let (ended_ref, released_ref) = (&ended, &released);
            let run = futures::future::join_all(groups.iter().map(|(_, group)| async move {
                for item in group {
                    let (source, outcome) = handle(state, item, tx).await;
                    let (finish, result) = match outcome {
                        Err(e) if item.attempts < MAX_ATTEMPTS => {
                            released_ref.store(true, Ordering::Relaxed);
                            (Some(e), Refreshed::Retried)
                        }
                        Err(e) => {
                            tracing::warn!(provider = %item.work.provider, error = %e, attempts = item.attempts, "giving up a refresh");
                            (None, Refreshed::Failed)
                        }
                        Ok(result) => (None, result),
                    };
                    ended_ref
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((item, source, finish, result));
                }
            }));
            let stopping = tokio::select! {
                _ = run => false,
                _ = crate::stopped(&mut stop) => true,
            };
            let ended = ended.into_inner().unwrap_or_else(|e| e.into_inner());
            let mut finishes: Vec<(i64, Option<String>)> = ended
                .iter()
                .map(|(item, _, finish, _)| (item.id, finish.clone()))
                .collect();
            if stopping {
                // Items not handled yet are released, so the next process takes them at once.
                let handled: std::collections::HashSet<i64> =
                    finishes.iter().map(|(id, _)| *id).collect();
                finishes.extend(
                    items
                        .iter()
                        .filter(|i| !handled.contains(&i.id))
                        .map(|i| (i.id, Some("serve stopped before finishing it".to_owned()))),
                );
            }
            match store.finish_works(finishes, Utc::now()).await {
                Ok(()) => {
                    for (item, source, finish, result) in &ended {
                        intake.count_refresh(&item.work.provider, source, *result);
                        if finish.is_none() {
                            intake.release();
                        }
                    }
                }
                // Still claimed: taken up again when the lease ends.
                Err(e) => tracing::warn!(error = %e, "cannot finish queued work"),
            }
            if stopping {
                return;
            }
            if released.into_inner() {
                break;
            }
        }
        tokio::select! {
            _ = intake.wake.notified() => {}
            _ = tokio::time::sleep(sweep) => {}
            _ = crate::stopped(&mut stop) => return,
        }
    }
}

/// Do one item: its source's label and how it ended, or `Err(error)` to release it for a
/// retry (a transient failure).
async fn handle(
    state: &AppState,
    item: &WorkItem,
    tx: &mpsc::Sender<Applied>,
) -> (&'static str, Result<Refreshed, String>) {
    if item.work.kind == crate::replica::ACTION {
        return ("action", crate::replica::perform_relayed(state, item).await);
    }
    if item.work.kind != REFRESH {
        tracing::warn!(kind = %item.work.kind, "unknown queued work; dropped");
        return ("unknown", Ok(Refreshed::Failed));
    }
    let work: RefreshWork = match serde_json::from_value(item.work.payload.clone()) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable queued refresh; dropped");
            return ("unknown", Ok(Refreshed::Failed));
        }
    };
    let source = work.source.as_str();
    let name = item.work.provider.clone();
    let Some(provider) = state.intake().provider(&name) else {
        tracing::info!(provider = %name, "queued refresh for a provider not configured; dropped");
        return (source, Ok(Refreshed::Failed));
    };
    if let (Some(status), Some(connection_id)) = (work.status, work.connection_id.clone()) {
        let _ = tx
            .send(Applied::Status {
                provider: name.clone(),
                customer_id: work.customer_id.clone(),
                connection_id,
                status,
                provider_status: work.provider_status.clone(),
                source: work.source,
            })
            .await;
    }
    let hint = match &work.connection_id {
        Some(id) => RefreshHint::Connection(id.clone()),
        None => RefreshHint::Customer,
    };
    let whole_customer = matches!(hint, RefreshHint::Customer);
    match provider.refresh(&work.customer_id, hint).await {
        Ok(connections) => {
            let _ = tx
                .send(Applied::Read {
                    provider: name,
                    customer_id: work.customer_id,
                    connections,
                    whole_customer,
                    source: work.source,
                    done: None,
                })
                .await;
            (source, Ok(Refreshed::Done))
        }
        Err(e) if e.is_transient() => (source, Err(e.to_string())),
        Err(e) => {
            // E.g. a customer this config does not have: recorded, nothing else.
            tracing::info!(provider = %name, error = %e, "targeted refresh not possible; the next poll shows any change");
            (source, Ok(Refreshed::Failed))
        }
    }
}
