//! [`Journal`]: a watcher's polls into a store, one transaction per poll, through outages.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use connhealth_core::watch::{ProviderState, Tracked, WatchState};
use connhealth_core::{Change, ProviderOutcome};

use crate::error::{Result, StoreError};
use crate::types::{Fence, PollRecord, PruneStats, Retention, Source, StoredEvents};
use crate::Store;

/// Bounds and schedules of a [`Journal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalOptions {
    /// At most this many polls are kept in memory while the store cannot be written
    /// (default 1,000). Past it, the oldest are folded into the next (see [`Journal`]).
    pub max_pending_polls: usize,
    /// At most this many change events are kept in memory while the store cannot be written
    /// (default 200,000: the first poll of a 185,000-connection fleet fits).
    pub max_pending_events: usize,
    /// What [`Store::prune`] keeps.
    pub retention: Retention,
    /// How often [`Store::prune`] runs (default one hour), at a poll that was written.
    pub prune_every: chrono::Duration,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            max_pending_polls: 1000,
            max_pending_events: 200_000,
            retention: Retention::default(),
            prune_every: chrono::Duration::hours(1),
        }
    }
}

/// What one [`Journal::record`] (or [`Journal::flush`]) did.
#[derive(Debug, Default)]
pub struct Written {
    /// The events committed now (this poll's and any kept from before), in id order. Only
    /// these may be announced: an event is announced once, after it is stored.
    pub events: StoredEvents,
    /// Why the store could not be written (nothing after the failed poll was tried).
    pub error: Option<StoreError>,
    /// `error` is the first of a failure streak (say it once).
    pub failure_began: bool,
    /// Writes work again after a failure streak, and nothing is pending any more.
    pub recovered: bool,
    /// Polls kept in memory, not yet written.
    pub pending_polls: usize,
    /// Events kept in memory, not yet written.
    pub pending_events: usize,
    /// Events dropped since the journal was made, because the pending bound was passed.
    pub dropped_events: u64,
    /// The scheduled prune, when it ran at this call.
    pub pruned: Option<Result<PruneStats>>,
}

/// Feeds a watcher's polls into a [`Store`], keeping the store's memory equal to the
/// watcher's:
///
/// - [`Journal::load`] gives the state the watcher starts from ([`Store::load_state`]).
/// - [`Journal::record`] turns each poll into a [`PollRecord`] (only the connections that
///   changed) and commits it in one transaction; the ids assigned come back as
///   [`StoredEvent`]s, in commit order.
/// - When the store cannot be written (disk full, read-only, PostgreSQL down) the poll is kept
///   in memory and every later call first writes what is pending, oldest first, so nothing is
///   written twice or out of order. Past [`JournalOptions`]' bounds the oldest pending poll is
///   folded into the next: its state changes are kept (the store ends up right), its events
///   and outcomes are dropped and counted in [`Written::dropped_events`].
/// - Every [`JournalOptions::prune_every`], [`Store::prune`] runs with the retention.
///
/// If the process dies, what is pending is lost; the restarted watcher compares the
/// providers' answers with the stored state, so those changes are emitted (once) again.
///
/// ```
/// use connhealth_store::{open, Journal, JournalOptions, OpenOptions, Source, StoreUrl};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let url = StoreUrl::parse_relative_to("sqlite://connhealth.db", dir.path())?;
/// let store = open(&url, OpenOptions::default()).await?;
/// let (mut journal, state) = Journal::load(store, JournalOptions::default()).await?;
/// assert!(state.connections.is_empty());
/// let written = journal.record(chrono::Utc::now(), &state, vec![], vec![], Source::Poll).await;
/// assert!(written.error.is_none() && written.events.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Journal {
    store: Arc<dyn Store>,
    router: Option<Router>,
    opts: JournalOptions,
    /// The state after the last recorded poll (written or pending).
    last: Last,
    /// Shared with the write in flight ([`Store::commit_shared`]), never copied for it.
    pending: VecDeque<Arc<PollRecord>>,
    pending_events: usize,
    dropped_events: u64,
    failing: bool,
    last_prune: Option<DateTime<Utc>>,
    fence: Option<Fence>,
}

impl Journal {
    /// A journal over `store`, and the state a watcher must start from.
    pub async fn load(
        store: Arc<dyn Store>,
        opts: JournalOptions,
    ) -> Result<(Journal, WatchState)> {
        let state = store.load_state().await?;
        let journal = Journal {
            store,
            router: None,
            opts,
            last: Last::of(&state),
            pending: VecDeque::new(),
            pending_events: 0,
            dropped_events: 0,
            failing: false,
            last_prune: None,
            fence: None,
        };
        Ok((journal, state))
    }

    /// Name the notification sinks of every event from now on: `route(change)` becomes the
    /// event's sinks ([`crate::EventRef::notify`]), so its outbox rows are written in the event's
    /// transaction (e.g. `connhealth_notify::Notifier::route`).
    pub fn set_router(&mut self, route: impl Fn(&Change) -> Vec<String> + Send + Sync + 'static) {
        self.router = Some(Router(Arc::new(route)));
    }

    /// Write only while holding a lease (a replica's leadership): from now on every commit is
    /// [`Store::commit_poll_fenced`], refused with [`StoreError::LeaseLost`] (and kept
    /// pending, never half-written) once the lease is another's. `None`: unfenced.
    pub fn set_fence(&mut self, fence: Option<Fence>) {
        self.fence = fence;
    }

    /// Start again from what the store holds (a replica that just became the leader): the
    /// stored state is loaded and returned, and anything pending from an earlier term (which
    /// a fenced store refused, or which another leader has superseded) is dropped, counted in
    /// [`Written::dropped_events`].
    pub async fn reload(&mut self) -> Result<WatchState> {
        let state = self.store.load_state().await?;
        self.dropped_events += self.pending_events as u64;
        self.pending.clear();
        self.pending_events = 0;
        self.failing = false;
        self.last = Last::of(&state);
        Ok(state)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether the last write failed.
    pub fn is_failing(&self) -> bool {
        self.failing
    }

    /// Polls kept in memory, not yet written.
    pub fn pending_polls(&self) -> usize {
        self.pending.len()
    }

    /// Record one poll that took the watcher to `next` (its outcomes and changes), then write
    /// everything pending. `at` is the poll's time (the report's `generated_at`).
    pub async fn record(
        &mut self,
        at: DateTime<Utc>,
        next: &WatchState,
        outcomes: Vec<ProviderOutcome>,
        changes: Vec<Change>,
        source: Source,
    ) -> Written {
        let mut rec = self.last.record(at, next, outcomes, changes, source);
        if let Some(Router(route)) = &self.router {
            rec.events.route(|c| route(c));
        }
        // After the record, what is remembered is `next`: its connections, shared.
        self.last.set(next);
        // A record that changes nothing (a refresh that confirmed what was known) is not
        // written: a flood of such refreshes costs no transaction each.
        let empty = rec.outcomes.is_empty()
            && rec.events.is_empty()
            && rec.upserts.is_empty()
            && rec.removed.is_empty()
            && rec.providers.is_empty();
        if empty {
            return self.flush().await;
        }
        self.pending_events += rec.events.len();
        self.pending.push_back(Arc::new(rec));
        self.bound();
        let mut w = self.flush().await;
        if w.error.is_none() {
            let due = self
                .last_prune
                .is_none_or(|p| at - p >= self.opts.prune_every);
            if due {
                self.last_prune = Some(at);
                w.pruned = Some(self.store.prune(self.opts.retention, at).await);
            }
        }
        w
    }

    /// Write what is pending, oldest first, stopping at the first failure.
    pub async fn flush(&mut self) -> Written {
        let was_failing = self.failing;
        let mut w = Written::default();
        while let Some(front) = self.pending.front() {
            let committed = self
                .store
                .commit_shared(front.clone(), self.fence.as_ref(), Utc::now())
                .await;
            match committed {
                Ok(ids) => {
                    let rec = self.pending.pop_front().expect("the front exists");
                    // The write is over: the record is this journal's alone again.
                    let rec = Arc::try_unwrap(rec).unwrap_or_else(|shared| (*shared).clone());
                    self.pending_events -= rec.events.len();
                    w.events.append(rec.events.into_stored(ids));
                }
                Err(e) => {
                    w.error = Some(e);
                    break;
                }
            }
        }
        self.failing = w.error.is_some();
        w.failure_began = self.failing && !was_failing;
        w.recovered = was_failing && !self.failing;
        w.pending_polls = self.pending.len();
        w.pending_events = self.pending_events;
        w.dropped_events = self.dropped_events;
        w
    }

    /// Fold the oldest pending polls into the next while a bound is passed.
    fn bound(&mut self) {
        while self.pending.len() > 1
            && (self.pending.len() > self.opts.max_pending_polls
                || self.pending_events > self.opts.max_pending_events)
        {
            let older = self.pending.pop_front().expect("two pending");
            let older = Arc::try_unwrap(older).unwrap_or_else(|shared| (*shared).clone());
            let newer = Arc::make_mut(self.pending.front_mut().expect("two pending"));
            self.pending_events -= older.events.len();
            self.dropped_events += older.events.len() as u64;
            fold(older, newer);
        }
    }
}

/// What a [`Journal`] remembers of the last recorded state, to write only what changed: the
/// connections in id order, each [`Tracked`] sharing its connection with the watcher's state
/// (one allocation per connection, not two), without a map or key strings of its own (a
/// second `BTreeMap` of ids was ~150 bytes per connection), and the providers.
#[derive(Debug, Default)]
struct Last {
    connections: Vec<Tracked>,
    providers: BTreeMap<String, ProviderState>,
}

impl Last {
    fn of(state: &WatchState) -> Last {
        let mut last = Last::default();
        last.set(state);
        last
    }

    /// Remember `state` (reusing the list's allocation: this runs after every record).
    fn set(&mut self, state: &WatchState) {
        self.connections.clear();
        self.connections.extend(state.connections.values().cloned());
        // A state's keys are its connections' ids, so this is sorted already; the lookup
        // below relies on the order, not on that.
        if !self
            .connections
            .windows(2)
            .all(|w| w[0].connection.id <= w[1].connection.id)
        {
            self.connections
                .sort_by(|a, b| a.connection.id.cmp(&b.connection.id));
        }
        self.providers.clone_from(&state.providers);
    }

    fn get(&self, id: &str) -> Option<&Tracked> {
        self.connections
            .binary_search_by(|t| t.connection.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.connections[i])
    }

    /// [`PollRecord::between`] this and `next`.
    fn record(
        &self,
        at: DateTime<Utc>,
        next: &WatchState,
        outcomes: Vec<ProviderOutcome>,
        changes: Vec<Change>,
        source: Source,
    ) -> PollRecord {
        PollRecord::from_parts(
            at,
            |id| self.get(id),
            self.connections.iter().map(|t| t.connection.id.as_str()),
            &self.providers,
            next,
            outcomes,
            changes,
            source,
        )
    }
}

/// Make `newer` also carry `older`'s state changes (newer ones win); `older`'s events and
/// outcomes are dropped.
fn fold(older: PollRecord, newer: &mut PollRecord) {
    let touched: HashSet<String> = newer
        .upserts
        .iter()
        .map(|t| t.connection.id.clone())
        .chain(newer.removed.iter().cloned())
        .collect();
    newer.upserts.extend(
        older
            .upserts
            .into_iter()
            .filter(|t| !touched.contains(&t.connection.id)),
    );
    newer
        .removed
        .extend(older.removed.into_iter().filter(|id| !touched.contains(id)));
    for (name, p) in older.providers {
        if !newer.providers.iter().any(|(n, _)| *n == name) {
            newer.providers.push((name, p));
        }
    }
}

/// A [`Journal::set_router`] function.
#[derive(Clone)]
struct Router(RouteFn);

type RouteFn = Arc<dyn Fn(&Change) -> Vec<String> + Send + Sync>;

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Router")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connhealth_core::diff::ChangeKind;

    /// The written events keep the watcher's list (see `Events::from_changes`): a second
    /// list beside it was the largest part of a first poll's peak.
    #[tokio::test]
    async fn written_events_keep_the_watchers_change_list_and_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::StoreUrl::parse_relative_to("sqlite://s.db", dir.path()).unwrap();
        let store = crate::open(&url, crate::OpenOptions::default())
            .await
            .unwrap();
        let (mut journal, _) = Journal::load(store, JournalOptions::default())
            .await
            .unwrap();
        let changes: Vec<Change> = (0..1000)
            .map(|i| {
                Change::provider(
                    &format!("p{i}"),
                    ChangeKind::ProviderRecovered,
                    Utc::now(),
                    None,
                )
            })
            .collect();
        let ptr = changes.as_ptr() as usize;
        let w = journal
            .record(
                Utc::now(),
                &WatchState::default(),
                vec![],
                changes,
                Source::Poll,
            )
            .await;
        assert!(w.error.is_none());
        assert_eq!(w.events.len(), 1000);
        let first = w.events.get(0).unwrap();
        assert_eq!(first.change as *const Change as usize, ptr, "the same list");
        let ids: Vec<i64> = w.events.iter().map(|e| e.id).collect();
        assert!(ids.windows(2).all(|p| p[0] < p[1]), "increasing: {ids:?}");
        assert!(w
            .events
            .iter()
            .enumerate()
            .all(|(i, e)| e.change.provider == format!("p{i}") && e.source == Source::Poll));
    }
}
