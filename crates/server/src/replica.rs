//! Replicas on one PostgreSQL store: who leads, who follows (ARCHITECTURE.md, "Replicas: who
//! polls, who serves, what the lease guards").
//!
//! With a PostgreSQL store every `serve` is a replica. The holder of the store lease
//! [`LEADER_LEASE`] is the **leader**: it runs the poller (the one [`Watcher`] that calls
//! providers), drains the stored webhook/refresh queue and commits every poll *fenced* by that
//! lease ([`Journal::set_fence`]), so once another replica took the lease over a paused old
//! leader cannot write an event. The others **follow**: they call no provider, keep their view
//! equal to the store's by tailing the events table by id (only the connections those events
//! name are read again; the whole state only at start and every [`RELOAD_EVERY`]), publish
//! those events on their own event streams, and try to take the lease every
//! [`RENEW_EVERY`]. A dead leader's lease runs out after [`LEASE_TTL`], so a follower leads
//! within `LEASE_TTL + RENEW_EVERY` (18 s) whatever the poll `interval` is.
//!
//! A SQLite store is held by one process (its lock), which is always the leader: nothing here
//! runs for it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use connhealth_core::watch::{Tracked, Watcher};
use connhealth_store::{Fence, Journal, Store, StoreError, Written};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::state::AppState;
use crate::{run_poller, webhook, PersistHook, PollHook, StoreHook};

/// The store lease whose holder leads.
pub const LEADER_LEASE: &str = "leader";
/// How long a leader's lease lasts unrenewed: a dead leader is replaced after it.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often the leader renews its lease and a follower tries to take it.
pub const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How often a follower reads what the leader committed (its view's lag bound).
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How often a follower reloads the whole stored state (what changed without an event, e.g.
/// a problem's message, shows within this).
pub const RELOAD_EVERY: Duration = Duration::from_secs(300);
/// Events a follower reads per store query.
const PAGE: usize = 1000;

/// This process's place among the replicas (for `/readyz` and `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct Role {
    /// Whether this process takes part in an election (a PostgreSQL store).
    replicated: AtomicBool,
    /// Whether it leads now (always, when not replicated).
    leading: AtomicBool,
    /// Times it became the leader.
    terms: AtomicU64,
    /// A follower could not read the store at its last try (`/readyz` 503).
    unreachable: AtomicBool,
    inner: Mutex<RoleInner>,
}

#[derive(Debug, Default)]
struct RoleInner {
    holder: String,
    leader: Option<String>,
    synced_at: Option<DateTime<Utc>>,
}

impl Role {
    fn lock(&self) -> std::sync::MutexGuard<'_, RoleInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Name this process in the election (`serve --replica-id`).
    pub(crate) fn set_holder(&self, holder: String) {
        self.lock().holder = holder;
    }

    /// This process's name in the election.
    pub(crate) fn holder(&self) -> String {
        let mut inner = self.lock();
        if inner.holder.is_empty() {
            inner.holder = format!(
                "pid{}-{}",
                std::process::id(),
                Utc::now().timestamp_micros()
            );
        }
        inner.holder.clone()
    }

    /// Whether this process takes part in an election.
    pub(crate) fn is_replicated(&self) -> bool {
        self.replicated.load(Ordering::Relaxed)
    }

    /// Whether this process leads (polls providers, drains the queue).
    pub(crate) fn is_leading(&self) -> bool {
        !self.is_replicated() || self.leading.load(Ordering::Relaxed)
    }

    /// Times this process became the leader.
    pub(crate) fn terms(&self) -> u64 {
        self.terms.load(Ordering::Relaxed)
    }

    /// Who leads, as far as this process knows.
    pub(crate) fn leader(&self) -> Option<String> {
        self.lock().leader.clone()
    }

    /// When a follower last read the store successfully.
    pub(crate) fn synced_at(&self) -> Option<DateTime<Utc>> {
        self.lock().synced_at
    }

    /// A follower that cannot read the store is not ready (its view may be stale).
    pub(crate) fn cannot_reach_store(&self) -> bool {
        self.is_replicated() && !self.is_leading() && self.unreachable.load(Ordering::Relaxed)
    }
}

/// What the leader runs and a follower keeps for when it leads.
pub(crate) struct Parts {
    pub(crate) watcher: Watcher,
    pub(crate) hook: Option<PollHook>,
    pub(crate) persist: Option<PersistHook>,
    pub(crate) journal: Option<(Journal, Option<StoreHook>)>,
    pub(crate) applied_tx: mpsc::Sender<webhook::Applied>,
    pub(crate) applied_rx: mpsc::Receiver<webhook::Applied>,
}

/// Follow until the lease is ours, lead until it is lost, follow again… until shutdown; the
/// lease is given up at shutdown (a successor need not wait for it to run out).
pub(crate) async fn run(mut parts: Parts, state: AppState) {
    let Some(store) = parts.journal.as_ref().map(|(j, _)| j.store().clone()) else {
        return;
    };
    let role = state.role();
    role.replicated.store(true, Ordering::Relaxed);
    let holder = role.holder();
    let mut view = FollowerView::default();
    loop {
        if !follow(&mut parts.watcher, &mut view, &state, &store, &holder).await {
            break;
        }
        // The old leader can no longer commit (fenced): publish on this replica's event
        // streams what it committed since the last sync, so live subscribers miss nothing.
        if view.has_synced() {
            if let Err(e) = view.sync(&mut parts.watcher, &state, &store).await {
                tracing::warn!(error = %e, "cannot read the last leader's final events");
            }
        }
        let lost = lead(&mut parts, &state, &store, &holder).await;
        // A view built afresh from the store the next time this process follows.
        view = FollowerView::default();
        if !lost {
            break;
        }
    }
    if role.leading.swap(false, Ordering::Relaxed) {
        if let Err(e) = store.release_lease(LEADER_LEASE, &holder).await {
            tracing::warn!(error = %e, "cannot give up the leader lease; it runs out by itself");
        }
    }
    tracing::debug!("replica stopped");
}

/// Say who leads in `/readyz` (a warning on a follower, never a 503).
fn show_follower(state: &AppState, leader: Option<String>) {
    let message = match &leader {
        Some(l) => format!(
            "this replica follows: {l} leads (polls providers, drains the webhook queue, performs refreshes); reads are served from the store"
        ),
        None => "this replica follows: no replica holds the leader lease right now (one takes it within 18 s)".to_owned(),
    };
    state.role().lock().leader = leader;
    state.set_warning("follower", message);
}

/// Serve from the store and try to take the lease every [`RENEW_EVERY`]; `true` once taken,
/// `false` at shutdown.
async fn follow(
    watcher: &mut Watcher,
    view: &mut FollowerView,
    state: &AppState,
    store: &Arc<dyn Store>,
    holder: &str,
) -> bool {
    let role = state.role();
    let mut stop = state.stop_signal();
    loop {
        if *stop.borrow() {
            return false;
        }
        let now = Utc::now();
        match store
            .try_lease(LEADER_LEASE, holder, to_chrono(LEASE_TTL), now)
            .await
        {
            Ok(true) => return true,
            Ok(false) => {
                let leader = store.lease_holder(LEADER_LEASE, now).await.ok().flatten();
                show_follower(state, leader);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the store to ask for the leader lease");
                role.unreachable.store(true, Ordering::Relaxed);
            }
        }
        let until = Instant::now() + RENEW_EVERY;
        loop {
            match view.sync(watcher, state, store).await {
                Ok(()) => {
                    role.unreachable.store(false, Ordering::Relaxed);
                    role.lock().synced_at = Some(Utc::now());
                }
                Err(e) => {
                    if !role.unreachable.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "follower: cannot read the store");
                    }
                }
            }
            let wait = FOLLOW_EVERY.min(until.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = crate::stopped(&mut stop) => return false,
            }
            if Instant::now() >= until {
                break;
            }
        }
    }
}

/// Lead: start from what the store holds, poll and drain the queue with every commit fenced
/// by the lease, renew it every [`RENEW_EVERY`]; `true` when the lease was lost (then the
/// poller and the worker have stopped), `false` at shutdown.
async fn lead(parts: &mut Parts, state: &AppState, store: &Arc<dyn Store>, holder: &str) -> bool {
    let role = state.role();
    let Some((journal, _)) = parts.journal.as_mut() else {
        return false;
    };
    journal.set_fence(Some(Fence {
        lease: LEADER_LEASE.to_owned(),
        holder: holder.to_owned(),
    }));
    // What the last leader committed (its in-flight commit, if any, ended before our lease
    // was granted: the fence check locks the lease row).
    match journal.reload().await {
        Ok(loaded) => parts.watcher.set_state(loaded),
        Err(e) => {
            tracing::warn!(error = %e, "took the leader lease but cannot load the stored state; following again");
            let _ = store.release_lease(LEADER_LEASE, holder).await;
            return true;
        }
    }
    role.leading.store(true, Ordering::Relaxed);
    role.terms.fetch_add(1, Ordering::Relaxed);
    role.unreachable.store(false, Ordering::Relaxed);
    role.lock().leader = Some(holder.to_owned());
    state.clear_warning("follower");
    tracing::info!(holder, "leading: this replica polls the providers");
    // The queue's count from the store (followers accepted webhooks into it).
    match store.webhook_overview().await {
        Ok(o) => state.intake().restore(&o),
        Err(e) => tracing::warn!(error = %e, "cannot read the stored webhook queue"),
    }
    let (term_tx, term_rx) = watch::channel(false);
    let renewer = tokio::spawn(renew(
        store.clone(),
        holder.to_owned(),
        term_tx,
        state.stop_signal(),
    ));
    let worker = tokio::spawn(webhook::run_worker(
        state.clone(),
        parts.applied_tx.clone(),
        term_rx.clone(),
        // Followers queue work without waking this worker: it looks every second.
        FOLLOW_EVERY,
    ));
    run_poller(
        &mut parts.watcher,
        state,
        &mut parts.hook,
        &mut parts.persist,
        &mut parts.journal,
        &mut parts.applied_rx,
        term_rx,
    )
    .await;
    let _ = worker.await;
    let lost = renewer.await.unwrap_or(true);
    if lost {
        role.leading.store(false, Ordering::Relaxed);
        tracing::warn!(holder, "lost the leader lease: following");
        show_follower(state, None);
    }
    lost
}

/// Renew the lease until shutdown (`false`) or until it is another's or could not be renewed
/// for nearly its TTL (`true`); either way `term` is told, which stops the poller and the
/// worker.
async fn renew(
    store: Arc<dyn Store>,
    holder: String,
    term: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let mut renewed = Instant::now();
    let lost = loop {
        tokio::select! {
            _ = tokio::time::sleep(RENEW_EVERY) => {}
            _ = crate::stopped(&mut stop) => break false,
        }
        match store
            .try_lease(LEADER_LEASE, &holder, to_chrono(LEASE_TTL), Utc::now())
            .await
        {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => break true,
            // Past this another replica may have it: stop before it runs out.
            Err(e) if renewed.elapsed() + RENEW_EVERY >= LEASE_TTL => {
                tracing::warn!(error = %e, "cannot renew the leader lease");
                break true;
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the leader lease; trying again"),
        }
    };
    let _ = term.send(true);
    lost
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A follower's copy of the store: the id of the last event it took in, and when it last
/// loaded the whole state.
#[derive(Debug, Default)]
pub(crate) struct FollowerView {
    last_id: Option<i64>,
    reloaded: Option<Instant>,
    outcomes_at: Option<DateTime<Utc>>,
}

impl FollowerView {
    /// Whether it took in the store at least once.
    fn has_synced(&self) -> bool {
        self.last_id.is_some()
    }

    /// Take in what the leader committed since the last call: the events after the last id
    /// (each named connection read again, or dropped when the store no longer has it), the
    /// latest provider outcomes, the queue's count; serve the view, then publish the events
    /// (so a subscriber that re-fetches on an event sees the new state).
    pub(crate) async fn sync(
        &mut self,
        watcher: &mut Watcher,
        state: &AppState,
        store: &Arc<dyn Store>,
    ) -> Result<(), StoreError> {
        let mut changed = false;
        if self.last_id.is_none() || self.reloaded.is_none_or(|r| r.elapsed() >= RELOAD_EVERY) {
            // The id first: an event committed between the two reads is read again below,
            // which is harmless (the connection is read as it is now).
            let last = store.last_event_id().await?;
            let loaded = store.load_state().await?;
            watcher.set_state(loaded);
            // A periodic reload keeps tailing from where it was, so no event goes unpublished.
            self.last_id.get_or_insert(last);
            self.reloaded = Some(Instant::now());
            changed = true;
        }
        let mut events = Vec::new();
        let mut after = self.last_id.unwrap_or_default();
        loop {
            let page = store.events_after(after, PAGE).await?;
            let full = page.items.len() == PAGE;
            let ids: BTreeSet<String> = page
                .items
                .iter()
                .filter_map(|e| e.change.connection_id.clone())
                .collect();
            for id in ids {
                match store.connection(&id).await? {
                    Some(item) => {
                        watcher.state_mut().connections.insert(
                            id,
                            Tracked {
                                connection: std::sync::Arc::new(item.connection),
                                since: item.since,
                                streak: 0,
                                worsening: false,
                            },
                        );
                    }
                    None => {
                        watcher.state_mut().connections.remove(&id);
                    }
                }
            }
            if let Some(last) = page.items.last() {
                after = last.id;
            }
            events.extend(page.items);
            if !full {
                break;
            }
        }
        self.last_id = Some(after);
        changed |= !events.is_empty();
        // The providers' latest outcomes (one row per provider and poll, newest first).
        let outcomes = store.outcomes(64).await?;
        if let Some(newest) = outcomes.first() {
            if self.outcomes_at != Some(newest.at) {
                self.outcomes_at = Some(newest.at);
                let mut seen = BTreeSet::new();
                let providers = &mut watcher.state_mut().providers;
                for o in outcomes {
                    if !seen.insert(o.outcome.provider.clone()) {
                        continue;
                    }
                    if let Some(p) = providers.get_mut(&o.outcome.provider) {
                        p.last = Some(o.outcome);
                    }
                }
                changed = true;
            }
        }
        // Webhooks accepted here or elsewhere count against the bound until the leader
        // drains them: the count is the store's.
        state.intake().restore(&store.webhook_overview().await?);
        if changed || !state.is_ready() {
            state.serve_report(watcher.report(Utc::now()), Duration::ZERO);
            // Drops the cached dashboard pages and publishes the events, with their store ids.
            state.record_written(&Written {
                events: events.into(),
                ..Written::default()
            });
        }
        Ok(())
    }
}

/// `connhealth_leader{holder}` (1 leading, 0 following; always 1 without replicas),
/// `connhealth_leader_terms_total` and, on a follower, how long ago it read the store
/// (`connhealth_follower_sync_age_seconds`: its view's lag bound).
pub(crate) fn render_metrics(out: &mut String, state: &AppState) {
    use std::fmt::Write as _;

    use crate::metrics::{escape_label, float, header};
    let role = state.role();
    header(
        out,
        "connhealth_leader",
        "gauge",
        "1 while this process leads (polls providers, drains the webhook queue), 0 while it follows another replica; holder is its name in the election, leader the lease holder it knows of.",
    );
    let holder = role.holder();
    let leader = if role.is_leading() {
        Some(holder.clone())
    } else {
        role.leader()
    };
    let _ = writeln!(
        out,
        "connhealth_leader{{holder=\"{}\",leader=\"{}\"}} {}",
        escape_label(&holder),
        escape_label(leader.as_deref().unwrap_or("")),
        u8::from(role.is_leading())
    );
    if !role.is_replicated() {
        return;
    }
    header(
        out,
        "connhealth_leader_terms_total",
        "counter",
        "Times this process became the leader.",
    );
    let _ = writeln!(out, "connhealth_leader_terms_total {}", role.terms());
    if !role.is_leading() {
        if let Some(at) = role.synced_at() {
            header(
                out,
                "connhealth_follower_sync_age_seconds",
                "gauge",
                "Seconds since this follower last read what the leader committed.",
            );
            let age = (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0;
            let _ = writeln!(out, "connhealth_follower_sync_age_seconds {}", float(age));
        }
    }
}

/// The queued work kind of an action a follower relays to the leader.
pub(crate) const ACTION: &str = "action";
/// How long a follower waits for the leader to do what it relayed, before answering 202
/// `queued` (the caller can look later: the audit log, the connection's history).
pub const RELAY_WAIT: Duration = Duration::from_secs(15);
/// How often a follower looks whether the leader has done it.
const RELAY_POLL: Duration = Duration::from_millis(100);

/// A relayed action's arguments (ids only).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RelayedAction {
    connection_id: String,
    kind: String,
}

/// The leader's answer to a relayed action, kept in the item's result until the follower
/// reads it (it may hold a connect link: it is cleared by that read).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RelayedAnswer {
    status: u16,
    #[serde(default)]
    retry_after: Option<String>,
    body: serde_json::Value,
}

/// 202 `{accepted, queued: true, work_id, message}`: a relayed refresh the leader has not
/// done within [`RELAY_WAIT`].
fn queued(work_id: i64) -> axum::response::Response {
    crate::http::json_value(
        axum::http::StatusCode::ACCEPTED,
        &serde_json::json!({
            "accepted": true,
            "queued": true,
            "work_id": work_id,
            "message": format!("queued for the leader, which has not done it within {} s; its change shows in the connection's history", RELAY_WAIT.as_secs()),
        }),
    )
}

fn store_unavailable(e: &StoreError) -> axum::response::Response {
    crate::http::error(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        e.to_string(),
    )
}

/// How waiting for the leader ended.
enum Waited {
    /// It finished the item; its result, if it kept one.
    Done(Option<String>),
    /// Not within [`RELAY_WAIT`].
    TimedOut,
    /// The store could not be read.
    Failed(axum::response::Response),
}

/// Wait (at most [`RELAY_WAIT`]) until the leader finished item `work_id`.
async fn wait_done(store: &Arc<dyn Store>, work_id: i64) -> Waited {
    let deadline = Instant::now() + RELAY_WAIT;
    loop {
        match store.take_work_result(work_id).await {
            Ok(connhealth_store::WorkState::Done { result }) => return Waited::Done(result),
            Ok(_) => {}
            Err(e) => return Waited::Failed(store_unavailable(&e)),
        }
        if Instant::now() >= deadline {
            return Waited::TimedOut;
        }
        tokio::time::sleep(RELAY_POLL).await;
    }
}

/// A follower's `POST /v1/refresh`, queued as `work_id`: 202 `{accepted, done: true}` once the
/// leader has done it, else 202 `queued` after [`RELAY_WAIT`].
pub(crate) async fn await_refresh(state: &AppState, work_id: i64) -> axum::response::Response {
    let Some(store) = state.store().cloned() else {
        return crate::stored::no_store();
    };
    match wait_done(&store, work_id).await {
        Waited::Done(_) => crate::http::json_value(
            axum::http::StatusCode::ACCEPTED,
            &serde_json::json!({ "accepted": true, "done": true, "work_id": work_id }),
        ),
        Waited::TimedOut => queued(work_id),
        Waited::Failed(r) => r,
    }
}

/// A follower's action: queued for the leader (kind [`ACTION`]), answered with the leader's
/// answer (the same status and body as the leader's own route gives) once it is done, else
/// 503 `queued` (with `Retry-After`) after [`RELAY_WAIT`]: the leader does it later, and its
/// outcome is in the audit log. The follower calls no provider.
pub(crate) async fn relay_action(
    state: &AppState,
    id: &str,
    kind: &str,
) -> axum::response::Response {
    let provider = id.split(':').next().unwrap_or_default().to_owned();
    let work = connhealth_store::NewWork {
        kind: ACTION.to_owned(),
        provider,
        payload: serde_json::to_value(RelayedAction {
            connection_id: id.to_owned(),
            kind: kind.to_owned(),
        })
        .unwrap_or_default(),
    };
    let work_id = match webhook::enqueue(state, work).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    tracing::info!(connection_id = %id, action = %kind, work_id, "action relayed to the leader");
    let Some(store) = state.store().cloned() else {
        return crate::stored::no_store();
    };
    let result = match wait_done(&store, work_id).await {
        Waited::Done(r) => r,
        Waited::Failed(r) => return r,
        Waited::TimedOut => {
            let mut r = crate::http::error(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "queued",
                format!(
                    "queued for the leader (work {work_id}), which has not done it within {} s; its outcome will be in GET /v1/audit: look there before trying again",
                    RELAY_WAIT.as_secs()
                ),
            );
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("15"),
            );
            return r;
        }
    };
    let answer = result.and_then(|r| serde_json::from_str::<RelayedAnswer>(&r).ok());
    let Some(answer) = answer else {
        return crate::http::error(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_done",
            "the leader finished the queued action without an answer (it may have stopped while doing it); see GET /v1/audit before trying again",
        );
    };
    let status = axum::http::StatusCode::from_u16(answer.status)
        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let mut resp = crate::http::json_value(status, &answer.body);
    if let Some(v) = answer
        .retry_after
        .and_then(|v| axum::http::HeaderValue::from_str(&v).ok())
    {
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    resp
}

/// The leader's side of a relayed action (a queued item of kind [`ACTION`]): do it as the
/// route would ([`crate::action::carry_out`]) and keep the answer for the follower. Never
/// retried (an action is not idempotent): an item claimed again after a leader died while
/// doing it finishes without an answer (the follower says so; the audit log tells).
pub(crate) async fn perform_relayed(
    state: &AppState,
    item: &connhealth_store::WorkItem,
) -> Result<webhook::Refreshed, String> {
    let Ok(asked) = serde_json::from_value::<RelayedAction>(item.work.payload.clone()) else {
        tracing::warn!("unreadable relayed action; dropped");
        return Ok(webhook::Refreshed::Failed);
    };
    if item.attempts > 1 {
        tracing::warn!(connection_id = %asked.connection_id, "a relayed action was claimed again after its first attempt; not repeated");
        return Ok(webhook::Refreshed::Failed);
    }
    let resp = crate::action::carry_out(state, asked.connection_id, asked.kind).await;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(axum::http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    let answer = RelayedAnswer {
        status: status.as_u16(),
        retry_after,
        body,
    };
    let Some(store) = state.store() else {
        return Ok(webhook::Refreshed::Failed);
    };
    let text = serde_json::to_string(&answer).unwrap_or_default();
    match store.set_work_result(item.id, text).await {
        Ok(_) => Ok(if status.is_success() {
            webhook::Refreshed::Done
        } else {
            webhook::Refreshed::Failed
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep a relayed action's answer for the follower");
            Ok(webhook::Refreshed::Failed)
        }
    }
}
