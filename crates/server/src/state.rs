//! What the routes serve from: the latest report, the event log, the counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use connhealth_core::http::HttpStats;
use connhealth_core::watch::Poll;
use connhealth_core::{HealthReport, ProviderOutcome, Secret};
use connhealth_store::{Store, Written};
use tokio::sync::{broadcast, watch};

use crate::http::etag_of;

/// The latest report, serialized at most once: on the first read that needs its JSON, not
/// when it is served (a burst of webhook refreshes replaces it many times between reads).
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) report: HealthReport,
    /// `report` as JSON (the unfiltered `/v1/report` body) and its strong ETag, once asked.
    json: OnceLock<Option<(Bytes, String)>>,
    /// When the poll finished.
    pub(crate) polled_at: DateTime<Utc>,
    /// How long it took.
    pub(crate) duration: Duration,
    /// The `/v1/summary` counts, computed once per report (without `last_webhook_at`, which
    /// is the store's).
    pub(crate) summary: SummaryView,
}

/// Counts by status and by provider × status, and the providers' outcomes: what
/// `/v1/summary` serves, computed once when a report comes in (one pass over it).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct SummaryView {
    pub(crate) generated_at: DateTime<Utc>,
    pub(crate) overall: connhealth_core::Status,
    /// `total` and a count per status, over every connection.
    pub(crate) summary: connhealth_core::Summary,
    pub(crate) providers: Vec<ProviderSummary>,
}

/// One provider in `/v1/summary`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ProviderSummary {
    pub(crate) provider: String,
    pub(crate) outcome: connhealth_core::Outcome,
    pub(crate) elapsed_ms: u64,
    pub(crate) errors: Vec<connhealth_core::ReportError>,
    /// When this provider's outcome was last taken in (the poll's `generated_at`).
    pub(crate) last_poll_at: DateTime<Utc>,
    /// Its connections' `total` and count per status.
    pub(crate) summary: connhealth_core::Summary,
    /// Filled in per request from the store.
    pub(crate) last_webhook_at: Option<DateTime<Utc>>,
}

impl SummaryView {
    pub(crate) fn of(report: &HealthReport) -> SummaryView {
        let mut by: BTreeMap<&str, connhealth_core::Summary> = BTreeMap::new();
        for c in &report.connections {
            by.entry(c.provider.as_str()).or_default().add(c.status);
        }
        let mut providers: Vec<ProviderSummary> = report
            .providers
            .iter()
            .map(|p| ProviderSummary {
                provider: p.provider.clone(),
                outcome: p.outcome,
                elapsed_ms: p.elapsed_ms,
                errors: p.errors.clone(),
                last_poll_at: report.generated_at,
                summary: by.remove(p.provider.as_str()).unwrap_or_default(),
                last_webhook_at: None,
            })
            .collect();
        // Connections of a provider without an outcome entry still count somewhere.
        for (name, summary) in by {
            providers.push(ProviderSummary {
                provider: name.to_owned(),
                outcome: connhealth_core::Outcome::Ok,
                elapsed_ms: 0,
                errors: Vec::new(),
                last_poll_at: report.generated_at,
                summary,
                last_webhook_at: None,
            });
        }
        SummaryView {
            generated_at: report.generated_at,
            overall: report.overall,
            summary: report.summary,
            providers,
        }
    }
}

impl Snapshot {
    pub(crate) fn new(report: HealthReport, duration: Duration) -> Snapshot {
        Snapshot {
            summary: SummaryView::of(&report),
            report,
            json: OnceLock::new(),
            polled_at: Utc::now(),
            duration,
        }
    }

    /// `report` as JSON and its strong ETag, serialized on the first call and kept; `None`
    /// if it cannot be serialized (cannot happen for the model's types; logged).
    pub(crate) fn json(&self) -> Option<(&Bytes, &str)> {
        self.json
            .get_or_init(|| match serde_json::to_vec(&self.report) {
                Ok(b) => {
                    let body = Bytes::from(b);
                    Some((body.clone(), etag_of(&body)))
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot serialize the report");
                    None
                }
            })
            .as_ref()
            .map(|(b, e)| (b, e.as_str()))
    }
}

/// One change event with its sequence number, serialized once.
#[derive(Debug)]
pub(crate) struct SeqEvent {
    pub(crate) id: u64,
    pub(crate) name: &'static str,
    pub(crate) data: String,
}

#[derive(Debug)]
struct EventLog {
    /// The id the next event gets.
    next_id: u64,
    ring: VecDeque<Arc<SeqEvent>>,
    capacity: usize,
}

/// What a new event-stream subscriber gets.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// `Some(reason)` when the asked-for id cannot be resumed from: send `reset` first.
    pub(crate) reset: Option<String>,
    /// The id of the last event issued so far (what `reset` carries as its `id`).
    pub(crate) latest_id: u64,
    /// Buffered events after the asked-for id.
    pub(crate) backlog: Vec<Arc<SeqEvent>>,
    /// Everything published after the backlog.
    pub(crate) live: broadcast::Receiver<Arc<SeqEvent>>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) polls: u64,
    /// (provider, error kind) → errors seen.
    pub(crate) poll_errors: BTreeMap<(String, String), u64>,
    /// event name → events published.
    pub(crate) events: BTreeMap<&'static str, u64>,
    /// Provider → its last outcome entry, to tell a fresh answer from a carried-over one.
    last_outcomes: BTreeMap<String, ProviderOutcome>,
}

/// A condition `/readyz` reports without failing readiness (DESIGN.md: warnings are never a
/// 503 that would empty a load balancer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// Stable snake_case code, e.g. `state_save_failed`.
    pub code: String,
    /// What is wrong, for people.
    pub message: String,
}

/// State-save bookkeeping for `/metrics` and `/readyz`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SaveStats {
    /// Whether a persist hook is configured (the metrics are left out otherwise).
    pub(crate) configured: bool,
    pub(crate) failures: u64,
    pub(crate) failing: bool,
}

/// Store-write bookkeeping for `/metrics` and `/readyz`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StoreStats {
    /// Whether a store is configured (the metrics are left out otherwise).
    pub(crate) configured: bool,
    /// Polls whose write failed (each attempt counts).
    pub(crate) failures: u64,
    pub(crate) failing: bool,
    pub(crate) pending_polls: usize,
    pub(crate) pending_events: usize,
    pub(crate) dropped_events: u64,
}

/// Connection counts for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ConnStats {
    pub(crate) open: AtomicU64,
    pub(crate) over_cap: AtomicU64,
}

/// Decrements the open-connection gauge when the connection ends.
#[derive(Debug)]
pub(crate) struct OpenGuard(AppState);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.inner.conns.open.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Inner {
    page_cache: Mutex<crate::page_cache::PageCache>,
    /// Asks `serve`'s prewarmer to build the dashboard's first page again (after a store write).
    prewarm: tokio::sync::Notify,
    token: Option<Secret>,
    warnings: Mutex<BTreeMap<String, String>>,
    save: Mutex<SaveStats>,
    store: OnceLock<Arc<dyn Store>>,
    store_stats: Mutex<StoreStats>,
    conns: ConnStats,
    keep_alive: Mutex<Duration>,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    events: Mutex<EventLog>,
    tx: broadcast::Sender<Arc<SeqEvent>>,
    counters: Mutex<Counters>,
    http_stats: Mutex<Vec<(String, Arc<HttpStats>)>>,
    stop: watch::Sender<bool>,
    intake: crate::webhook::Intake,
    admin: OnceLock<Secret>,
    notifier: OnceLock<Arc<connhealth_notify::Notifier>>,
    /// The poll loop's schedule counters (`connhealth_schedule_*`).
    schedule: OnceLock<Arc<connhealth_core::schedule::ScheduleStats>>,
    role: crate::replica::Role,
}

/// The state the routes serve from, shared (cheap to clone) between the poller and the
/// handlers.
///
/// A [`crate::Server`] makes and feeds one; to embed [`crate::router`] elsewhere (or test it
/// without a socket), make one with [`AppState::new`] and feed it with
/// [`AppState::record_poll`].
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("token", &self.inner.token)
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

/// Poisoning only means another thread panicked mid-update of plain data: keep serving.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AppState {
    /// Empty state: not ready until the first [`AppState::record_poll`]. `token` guards every
    /// route but `/healthz`; `event_buffer` (at least 1) events are kept for resume.
    ///
    /// Event ids start at the current time in microseconds since the Unix epoch and go up by
    /// one per event, so they keep increasing across restarts and a `Last-Event-ID` from a
    /// previous process is recognised as out of the buffer.
    pub fn new(token: Option<Secret>, event_buffer: usize) -> AppState {
        let capacity = event_buffer.max(1);
        let (tx, _) = broadcast::channel(capacity);
        let (stop, _) = watch::channel(false);
        let first_id = u64::try_from(Utc::now().timestamp_micros())
            .unwrap_or(0)
            .max(1);
        AppState {
            inner: Arc::new(Inner {
                page_cache: Mutex::new(Default::default()),
                prewarm: tokio::sync::Notify::new(),
                token,
                warnings: Mutex::new(BTreeMap::new()),
                save: Mutex::new(SaveStats::default()),
                store: OnceLock::new(),
                store_stats: Mutex::new(StoreStats::default()),
                conns: ConnStats::default(),
                keep_alive: Mutex::new(crate::sse::KEEP_ALIVE),
                snapshot: RwLock::new(None),
                events: Mutex::new(EventLog {
                    next_id: first_id,
                    ring: VecDeque::with_capacity(capacity.min(4096)),
                    capacity,
                }),
                tx,
                counters: Mutex::new(Counters::default()),
                http_stats: Mutex::new(Vec::new()),
                stop,
                intake: crate::webhook::Intake::default(),
                admin: OnceLock::new(),
                notifier: OnceLock::new(),
                schedule: OnceLock::new(),
                role: crate::replica::Role::default(),
            }),
        }
    }

    /// Whether a poll has finished (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.snapshot().is_some()
    }

    /// Show a warning in `/readyz` under `code` (replacing one with the same code).
    pub fn set_warning(&self, code: impl Into<String>, message: impl Into<String>) {
        lock(&self.inner.warnings).insert(code.into(), message.into());
    }

    /// Take the warning with this code off `/readyz`.
    pub fn clear_warning(&self, code: &str) {
        lock(&self.inner.warnings).remove(code);
    }

    /// The current `/readyz` warnings, by code.
    pub fn warnings(&self) -> Vec<Warning> {
        lock(&self.inner.warnings)
            .iter()
            .map(|(code, message)| Warning {
                code: code.clone(),
                message: message.clone(),
            })
            .collect()
    }

    /// Take in the result of one state save (see [`crate::Server::persist`]).
    pub(crate) fn record_save(&self, result: Result<(), String>) {
        let mut s = lock(&self.inner.save);
        s.configured = true;
        match result {
            Ok(()) => {
                if s.failing {
                    s.failing = false;
                    self.clear_warning("state_save_failed");
                    tracing::info!("the watch state is saved again");
                }
            }
            Err(message) => {
                s.failures += 1;
                if !s.failing {
                    s.failing = true;
                    tracing::error!(error = %message, "cannot save the watch state");
                }
                self.set_warning(
                    "state_save_failed",
                    format!("cannot save the watch state: {message}"),
                );
            }
        }
    }

    pub(crate) fn save_stats(&self) -> SaveStats {
        *lock(&self.inner.save)
    }

    /// Serve the store-backed routes (`/v1/connections`, history, uptime, `/v1/events?after=`)
    /// from `store`, and resume event streams from it. Event ids are then the store's: publish
    /// with [`AppState::record_written`] instead of letting [`AppState::record_poll`] number
    /// them. Only the first call counts.
    pub fn set_store(&self, store: Arc<dyn Store>) {
        let _ = self.inner.store.set(store);
        lock(&self.inner.store_stats).configured = true;
    }

    /// The store, when one is configured.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.inner.store.get()
    }

    /// The cached page for `query`, and the generation to hand back to
    /// [`AppState::cache_page`] (so a page read before a write is never cached after it).
    pub(crate) fn cached_page(
        &self,
        query: &str,
    ) -> (Option<Arc<crate::page_cache::CachedPage>>, u64) {
        lock(&self.inner.page_cache).get(query)
    }

    /// Keep `page` for `query`, unless the store was written since `generation`.
    pub(crate) fn cache_page(
        &self,
        query: &str,
        generation: u64,
        page: Arc<crate::page_cache::CachedPage>,
    ) {
        lock(&self.inner.page_cache).put(query, generation, page);
    }

    /// The gate a miss of `query` holds while building its page (see
    /// [`crate::page_cache::PageCache::gate`]).
    pub(crate) fn page_gate(&self, query: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.page_cache).gate(query)
    }

    /// Forget every cached page (the store changed).
    pub(crate) fn invalidate_pages(&self) {
        lock(&self.inner.page_cache).invalidate();
    }

    pub(crate) fn store_stats(&self) -> StoreStats {
        *lock(&self.inner.store_stats)
    }

    /// Take in what a [`connhealth_store::Journal`] wrote: its events are published with
    /// their store ids, and a failure shows in `/metrics` and as the `/readyz` warnings
    /// `store_write_failed` (while writes fail) and `store_events_dropped` (once events were
    /// dropped past the journal's bound).
    pub fn record_written(&self, w: &Written) {
        if !w.events.is_empty() {
            // Their outbox rows were written with them.
            if let Some(n) = self.notifier() {
                n.wake();
            }
        }
        {
            let mut s = lock(&self.inner.store_stats);
            s.configured = true;
            s.failing = w.error.is_some();
            if s.failing {
                s.failures += 1;
            }
            s.pending_polls = w.pending_polls;
            s.pending_events = w.pending_events;
            s.dropped_events = w.dropped_events;
        }
        match &w.error {
            Some(e) => {
                if w.failure_began {
                    tracing::error!(error = %e, "cannot write the store; polls are kept in memory");
                }
                self.set_warning(
                    "store_write_failed",
                    format!(
                        "cannot write the store ({} polls, {} events kept in memory until it works): {e}",
                        w.pending_polls, w.pending_events
                    ),
                );
            }
            None => {
                if w.recovered {
                    tracing::info!("the store is written again");
                }
                self.clear_warning("store_write_failed");
            }
        }
        if w.dropped_events > 0 {
            self.set_warning(
                "store_events_dropped",
                format!(
                    "{} change events were never stored: the store could not be written for longer than the in-memory bound (their state changes were stored)",
                    w.dropped_events
                ),
            );
        }
        // A successful write may have changed a stored connection without an event (a
        // problem's message, say): every write that reached the store, or brought events,
        // drops the cached pages.
        if w.error.is_none() || !w.events.is_empty() {
            self.invalidate_pages();
            self.inner.prewarm.notify_one();
        }
        let mut log = lock(&self.inner.events);
        for e in w.events.iter() {
            let data = match serde_json::to_string(&e) {
                Ok(d) => d,
                Err(err) => {
                    tracing::error!(error = %err, "cannot serialize a change event");
                    continue;
                }
            };
            let id = u64::try_from(e.id).unwrap_or(0);
            log.next_id = log.next_id.max(id + 1);
            self.push_event(
                &mut log,
                Arc::new(SeqEvent {
                    id,
                    name: e.change.kind.name(),
                    data,
                }),
            );
        }
    }

    fn push_event(&self, log: &mut EventLog, event: Arc<SeqEvent>) {
        if log.ring.len() == log.capacity {
            log.ring.pop_front();
        }
        log.ring.push_back(event.clone());
        // No subscriber is not an error.
        let _ = self.inner.tx.send(event);
    }

    /// Count one open connection until the guard is dropped.
    pub(crate) fn connection_opened(&self) -> OpenGuard {
        self.inner.conns.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self.clone())
    }

    /// Count one connection that arrived past the connection cap.
    pub(crate) fn count_over_cap(&self) {
        self.inner.conns.over_cap.fetch_add(1, Ordering::Relaxed);
    }

    /// (open connections, connections that arrived past the cap).
    pub(crate) fn connection_counts(&self) -> (u64, u64) {
        (
            self.inner.conns.open.load(Ordering::Relaxed),
            self.inner.conns.over_cap.load(Ordering::Relaxed),
        )
    }

    /// How often an idle event stream sends a keep-alive comment.
    pub(crate) fn keep_alive(&self) -> Duration {
        *lock(&self.inner.keep_alive)
    }

    pub(crate) fn set_keep_alive(&self, every: Duration) {
        *lock(&self.inner.keep_alive) = every;
    }

    /// Take in one poll that took `elapsed`: the report becomes the one served, then its
    /// changes are published to event-stream subscribers (in that order, so a subscriber that
    /// re-fetches the report on an event sees the new state), numbered by this server.
    pub fn record_poll(&self, poll: &Poll, elapsed: Duration) {
        self.record_report(poll, elapsed);
        self.publish_changes(&poll.changes);
    }

    /// Publish changes as events numbered by this server (no store: a scheduled re-check's
    /// changes, like a poll's).
    pub(crate) fn publish_changes(&self, changes: &[connhealth_core::Change]) {
        let mut log = lock(&self.inner.events);
        for change in changes {
            let data = match serde_json::to_string(change) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot serialize a change event");
                    continue;
                }
            };
            let event = Arc::new(SeqEvent {
                id: log.next_id,
                name: change.kind.name(),
                data,
            });
            log.next_id += 1;
            self.push_event(&mut log, event);
        }
    }

    /// The report part of [`AppState::record_poll`]: serve the poll's report and count it,
    /// publishing no event (with a store, events are published once stored, by
    /// [`AppState::record_written`]).
    pub fn record_report(&self, poll: &Poll, elapsed: Duration) {
        self.serve_report(poll.report.clone(), elapsed);
        self.count_poll(poll);
    }

    /// Serve `report` from now on (also after a targeted refresh, which is not counted as a
    /// poll): no copy and no serialization here, its JSON is made on the first read that
    /// needs it ([`Snapshot::json`]).
    pub(crate) fn serve_report(&self, report: HealthReport, elapsed: Duration) {
        let snapshot = Snapshot::new(report, elapsed);
        *self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(snapshot));
    }

    fn count_poll(&self, poll: &Poll) {
        {
            let mut c = lock(&self.inner.counters);
            c.polls += 1;
            for p in &poll.report.providers {
                // The watcher's view repeats the last outcome of a provider it did not ask this
                // time (rate limited): count errors only of an entry that changed.
                if c.last_outcomes.get(&p.provider) == Some(p) {
                    continue;
                }
                for e in &p.errors {
                    *c.poll_errors
                        .entry((p.provider.clone(), e.kind.as_str().to_owned()))
                        .or_default() += 1;
                }
                c.last_outcomes.insert(p.provider.clone(), p.clone());
            }
            for change in &poll.changes {
                *c.events.entry(change.kind.name()).or_default() += 1;
            }
        }
    }

    /// Register one provider's HTTP counters for `connhealth_http_retries_total` (replacing
    /// any registered under the same name).
    pub fn add_http_stats(&self, provider: String, stats: Arc<HttpStats>) {
        let mut all = lock(&self.inner.http_stats);
        all.retain(|(name, _)| name != &provider);
        all.push((provider, stats));
    }

    /// End every open event stream and the poller of a [`crate::Server`] on this state.
    /// Irreversible.
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Resolves when a store write asked for the dashboard's first page to be built again.
    pub(crate) async fn prewarm_wanted(&self) {
        self.inner.prewarm.notified().await;
    }

    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    /// The webhook intake: the providers webhooks are verified with, and the queue's count.
    /// This process's place among replicas (leader or follower).
    pub(crate) fn role(&self) -> &crate::replica::Role {
        &self.inner.role
    }

    pub(crate) fn intake(&self) -> &crate::webhook::Intake {
        &self.inner.intake
    }

    /// When the last webhook `provider` sent that `serve` accepted (a 202) arrived: accepted
    /// by this process, or — with a store — the latest stored event id's arrival when `serve`
    /// started (ids older than the store's retention are gone). `None` if none is known.
    /// Replays (200), rejections and 429s do not count.
    pub fn last_webhook_at(&self, provider: &str) -> Option<chrono::DateTime<Utc>> {
        self.inner.intake.last_webhook_at(provider)
    }

    /// Set the admin token (`POST` routes; it also opens every `GET`). Only the first call
    /// counts.
    pub fn set_admin_token(&self, token: Secret) {
        let _ = self.inner.admin.set(token);
    }

    /// Deliver notifications with `notifier`: `/v1/notifications` lists its sinks, `/v1/mutes`
    /// its config mutes, `/metrics` its counters, and every stored event wakes it. Only the
    /// first call counts.
    pub fn set_notifier(&self, notifier: Arc<connhealth_notify::Notifier>) {
        let _ = self.inner.notifier.set(notifier);
    }

    /// Export the schedule's counters (`connhealth_schedule_*` in `/metrics`); the poller
    /// sets them when it starts.
    pub fn set_schedule_stats(&self, stats: Arc<connhealth_core::schedule::ScheduleStats>) {
        let _ = self.inner.schedule.set(stats);
    }

    /// The schedule's counters, once the poller started.
    pub fn schedule_stats(&self) -> Option<&Arc<connhealth_core::schedule::ScheduleStats>> {
        self.inner.schedule.get()
    }

    /// The notifier, when one is set.
    pub fn notifier(&self) -> Option<&Arc<connhealth_notify::Notifier>> {
        self.inner.notifier.get()
    }

    pub(crate) fn admin_token(&self) -> Option<&Secret> {
        self.inner.admin.get()
    }

    pub(crate) fn token(&self) -> Option<&Secret> {
        self.inner.token.as_ref()
    }

    pub(crate) fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.inner
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn with_counters<R>(&self, f: impl FnOnce(&Counters) -> R) -> R {
        f(&lock(&self.inner.counters))
    }

    pub(crate) fn http_stats(&self) -> Vec<(String, Arc<HttpStats>)> {
        lock(&self.inner.http_stats).clone()
    }

    /// Subscribe to what is published from now on.
    pub(crate) fn subscribe_live(&self) -> broadcast::Receiver<Arc<SeqEvent>> {
        let _log = lock(&self.inner.events);
        self.inner.tx.subscribe()
    }

    /// Subscribe to events after `last_event_id` (None: only new ones).
    ///
    /// Done under the event log's lock, which publishing also holds, so no event falls between
    /// the backlog and the live receiver.
    pub(crate) fn subscribe(&self, last_event_id: Option<u64>) -> Subscription {
        let log = lock(&self.inner.events);
        let live = self.inner.tx.subscribe();
        let latest_id = log.next_id - 1;
        let oldest = log.ring.front().map_or(log.next_id, |e| e.id);
        let mut sub = Subscription {
            reset: None,
            latest_id,
            backlog: Vec::new(),
            live,
        };
        match last_event_id {
            None => {}
            Some(last) if last > latest_id => {
                sub.reset = Some(format!(
                    "event id {last} was not issued by this server (latest is {latest_id})"
                ));
            }
            Some(last) if last.saturating_add(1) < oldest => {
                sub.reset = Some(format!(
                    "events after {last} are no longer buffered (oldest kept is {oldest})"
                ));
            }
            Some(last) => {
                sub.backlog = log.ring.iter().filter(|e| e.id > last).cloned().collect();
            }
        }
        sub
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connhealth_core::{Change, ChangeKind, HealthReport};

    fn poll_with(n: usize) -> Poll {
        let at = Utc::now();
        let changes = (0..n)
            .map(|i| Change::provider(&format!("p{i}"), ChangeKind::ProviderRecovered, at, None))
            .collect();
        Poll {
            report: HealthReport::new(at, vec![], vec![]),
            changes,
        }
    }

    #[test]
    fn resume_replays_only_later_events_and_resets_when_out_of_the_buffer() {
        let state = AppState::new(None, 3);
        assert!(!state.is_ready());
        state.record_poll(&poll_with(5), Duration::from_millis(1));
        assert!(state.is_ready());
        let latest = state.subscribe(None).latest_id;

        let sub = state.subscribe(Some(latest - 2));
        assert!(sub.reset.is_none());
        let ids: Vec<u64> = sub.backlog.iter().map(|e| e.id).collect();
        assert_eq!(ids, [latest - 1, latest]);

        // The oldest kept is latest - 2: resuming after latest - 3 is still complete.
        assert_eq!(state.subscribe(Some(latest - 3)).backlog.len(), 3);
        assert!(state.subscribe(Some(latest - 4)).reset.is_some());
        assert!(state.subscribe(Some(latest + 1)).reset.is_some());
        assert!(state.subscribe(Some(0)).reset.is_some());
        let sub = state.subscribe(Some(latest));
        assert!(sub.reset.is_none() && sub.backlog.is_empty());
    }

    #[test]
    fn the_served_report_points_to_the_polls_connections() {
        use connhealth_core::{Connection, Customer, Role, Status};
        let c = Connection::new(
            "p",
            Some("1"),
            Customer::new("cus_1"),
            "shopify",
            Role::Source,
            Status::Healthy,
            Utc::now(),
        );
        let poll = Poll {
            report: HealthReport::new(Utc::now(), vec![], vec![c]),
            changes: vec![],
        };
        let state = AppState::new(None, 8);
        state.record_report(&poll, Duration::ZERO);
        let served = state.snapshot().expect("served");
        assert!(Arc::ptr_eq(
            &served.report.connections[0],
            &poll.report.connections[0]
        ));
    }

    #[test]
    fn a_carried_over_provider_outcome_is_not_counted_twice() {
        use connhealth_core::{ErrorKind, Outcome, ProviderOutcome, ReportError};
        let failing = ProviderOutcome {
            provider: "p".into(),
            outcome: Outcome::Failed,
            connections: 0,
            elapsed_ms: 3,
            errors: vec![ReportError {
                kind: ErrorKind::ServerError,
                message: "503".into(),
                http_status: Some(503),
                customer_id: None,
            }],
        };
        let poll = Poll {
            report: HealthReport::new(Utc::now(), vec![failing.clone()], vec![]),
            changes: vec![],
        };
        let state = AppState::new(None, 8);
        state.record_poll(&poll, Duration::ZERO);
        state.record_poll(&poll, Duration::ZERO);
        let mut again = poll.clone();
        again.report.providers[0].elapsed_ms = 4;
        state.record_poll(&again, Duration::ZERO);
        let n =
            state.with_counters(|c| c.poll_errors[&("p".to_owned(), "server_error".to_owned())]);
        assert_eq!(n, 2);
    }
}
