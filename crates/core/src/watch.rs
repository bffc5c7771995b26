//! Polling with memory: emit only what changed, without flapping.
//!
//! A [`Watcher`] polls its providers on an interval (with jitter), keeps the last *announced*
//! state of every connection, and emits [`Change`]s:
//!
//! - **Anti-flap.** A connection whose status gets worse is announced only after `trip` polls
//!   in a row show it worse; one that gets better, after `clear` polls in a row show it better
//!   (both default 1). Until then nothing is said about it — not its problems either.
//! - **Outages.** A provider that fails or times out emits one `provider_unavailable`, its
//!   connections are kept (shown as `unknown` in [`Poll::report`]), never `disappeared`; when it
//!   answers again, one `provider_recovered`. A `partial` answer keeps the connections of the
//!   customers that failed.
//! - **Rate limits.** A provider that answered only `429`s is transient: no event, no status
//!   change; it is not asked again before its `Retry-After` (at least one more interval).
//! - **Persistence.** [`WatchState`] serializes to JSON; [`WatchState::save`] writes atomically
//!   and durably (temp file, fsync, rename, fsync of the folder), so a restarted watcher does
//!   not re-announce everything. [`StateFile`] holds a state file for one process (an
//!   advisory lock) and removes the temp files of killed saves.
//! - **Providers not polled.** A provider this watcher was not given (`watch --provider`, or
//!   a state file written for another config) is left alone: its connections are neither
//!   `disappeared` nor dropped from the state, and they are not in [`Poll::report`].
//! - **Targeted refreshes.** [`Watcher::apply_refresh`] takes what a webhook's confirming
//!   pull or `POST /v1/refresh` read for one provider × customer and returns the changes
//!   against what was announced. It is applied **at once**, without the anti-flap streaks:
//!   the streaks guard against a poll that happens to catch a passing blip, while a targeted
//!   read is the provider's answer to "is this connection really so now?" (a webhook said
//!   it changed). Any streak of a refreshed connection is reset.
//! - **Sweeps and re-checks.** [`Watcher::poll`] is one sweep; [`Watcher::begin_sweep`] /
//!   [`Sweep::fetch`] / [`Watcher::finish_sweep`] split it so the fetch borrows nothing, and
//!   [`Watcher::apply_recheck`] applies a scheduled re-check of one customer (through the
//!   anti-flap streaks, unlike a targeted refresh). [`crate::schedule`] decides who is due
//!   and its `PollLoop` runs both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use futures::StreamExt;

use crate::aggregator::{Aggregator, Known, ProviderResult, Unchanged};
use crate::diff::{connection_changes, Change, ChangeKind};
use crate::error::ErrorKind;
use crate::model::{Connection, HealthReport, Outcome, Problem, ProviderOutcome, Status};
use crate::provider::Provider;
use crate::schedule::{ScheduleConfig, Scheduler};

/// Watcher settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// Time between polls.
    pub interval: Duration,
    /// Random spread of the interval, as a fraction (0.1 = ±10 %).
    pub jitter: f64,
    /// Polls in a row a worse status must be seen before it is announced (≥ 1).
    pub trip: u32,
    /// Polls in a row a better status must be seen before it is announced (≥ 1).
    pub clear: u32,
    /// Timeout of one provider's fetch.
    pub timeout: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            interval: Duration::from_secs(300),
            jitter: 0.1,
            trip: 1,
            clear: 1,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Rebuild a large map of remembered connections from its sorted entries at once. Filled one
/// insert at a time in id order (a first sweep, a state loaded from a store or a file), a
/// `BTreeMap` keeps its nodes about half full; built at once it fills them (~50 bytes less
/// per connection). Small maps are left alone.
fn compact(map: &mut BTreeMap<String, Tracked>) {
    if map.len() > 1024 {
        *map = std::mem::take(map).into_iter().collect();
    }
}

/// What the watcher remembers about one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    /// The connection as last announced: shared with the reports ([`Poll::report`],
    /// [`Watcher::report`]) and with whatever else keeps this state (a store's journal), so
    /// each remembered connection is one allocation. Replace it, never change it in place
    /// (`Arc::make_mut` would copy it), but for its read time: a re-read that finds it
    /// otherwise unchanged moves `observed_at` ([`crate::ObservedAt::set`]) for every sharer.
    #[serde(with = "crate::model::shared")]
    pub connection: Arc<Connection>,
    /// When its announced status began.
    pub since: DateTime<Utc>,
    /// Polls in a row that disagreed with the announced status in the same direction.
    #[serde(default)]
    pub streak: u32,
    /// The direction of that streak: `true` worse, `false` better.
    #[serde(default)]
    pub worsening: bool,
}

/// What the watcher remembers about one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderState {
    /// Whether it answered last time.
    pub available: bool,
    /// Since when that is so.
    pub since: DateTime<Utc>,
    /// Its last outcome entry.
    pub last: Option<ProviderOutcome>,
}

/// Everything a watcher remembers; persisted with `--state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchState {
    /// Connection id → what was announced.
    pub connections: BTreeMap<String, Tracked>,
    /// Provider name → availability.
    pub providers: BTreeMap<String, ProviderState>,
}

impl WatchState {
    /// Load a state file; a missing file is an empty state.
    pub fn load(path: &Path) -> std::io::Result<WatchState> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: not a connhealth state file: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WatchState::default()),
            Err(e) => Err(e),
        }
    }

    /// Write the state atomically and durably: a temp file beside `path` (`.NAME.tmp.PID`),
    /// flushed to disk, renamed over `path`, then the folder flushed, so a crash or a power
    /// loss leaves either the old state or the new one, never a torn file. A temp file left by
    /// a killed save is removed by [`StateFile::open`].
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let dir = parent_dir(path);
        let tmp = dir.join(format!("{}{}", temp_prefix(path), std::process::id()));
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(dir)
    }
}

/// The name of the temp file [`WatchState::save`] writes beside `path` before renaming it.
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    format!(".{name}.tmp.")
}

/// The folder a state file lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Flush a folder's entries (a rename inside it) to disk. Only Unix can open a folder for
/// this; elsewhere the rename is as durable as the platform makes it.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A state file held by this process: an advisory lock on a sidecar `.NAME.lock` file beside
/// it (the state file itself is replaced by a rename on every save, so it cannot carry the
/// lock), taken for as long as the `StateFile` lives. A second process (a second `watch`, or
/// `serve --state`) on the same file is refused with one line instead of announcing the same
/// transitions twice. Opening it also removes the temp files a killed save left behind
/// (`.NAME.tmp.PID`): with the lock held, no other save can be in flight.
///
/// The lock is `flock(2)` on Unix and `LockFileEx` on Windows (through `fs4`); it is released
/// when the process ends, however it ends, so a crash never leaves a stale lock.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    _lock: std::fs::File,
}

impl StateFile {
    /// Lock `path` for this process and clean up after killed saves. A state file locked by
    /// another process is an error of kind [`std::io::ErrorKind::WouldBlock`] whose message
    /// is one line naming the file.
    pub fn open(path: &Path) -> std::io::Result<StateFile> {
        let dir = parent_dir(path);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".into());
        let lock_path = dir.join(format!(".{name}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot lock {}: {e}", path.display()))
            })?;
        match fs4::FileExt::try_lock(&lock) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another connhealth process (watch or serve); one state file, one watcher",
                        path.display()
                    ),
                ))
            }
            Err(fs4::TryLockError::Error(e)) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot lock {}: {e}", path.display()),
                ))
            }
        }
        let prefix = temp_prefix(path);
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let file_name = file_name.to_string_lossy();
                let is_ours = file_name
                    .strip_prefix(&prefix)
                    .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
                if is_ours {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => {
                            tracing::info!(file = %entry.path().display(), "removed a temp file left by an interrupted state save")
                        }
                        Err(e) => {
                            tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a stale temp file")
                        }
                    }
                }
            }
        }
        Ok(StateFile {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`WatchState::load`] from this file.
    pub fn load(&self) -> std::io::Result<WatchState> {
        WatchState::load(&self.path)
    }

    /// [`WatchState::save`] to this file.
    pub fn save(&self, state: &WatchState) -> std::io::Result<()> {
        state.save(&self.path)
    }
}

/// The result of one poll.
#[derive(Debug, Clone)]
pub struct Poll {
    /// The current view: fresh connections where providers answered, the last known ones
    /// otherwise (as `unknown` for providers that are unavailable).
    pub report: HealthReport,
    /// What changed, as announced.
    pub changes: Vec<Change>,
}

struct Entry {
    provider: Arc<dyn Provider>,
    timeout: Option<Duration>,
    not_before: Option<Instant>,
}

/// Polls providers and emits changes. See the module docs.
pub struct Watcher {
    entries: Vec<Entry>,
    config: WatchConfig,
    state: WatchState,
    /// Who is re-checked when ([`crate::schedule`]).
    schedule: Scheduler,
    /// While a sweep is in flight ([`Watcher::begin_sweep`]): the customers (provider ×
    /// customer) a targeted read was applied for since it began. The sweep's older answer
    /// for them is not applied.
    read_during_sweep: Option<BTreeSet<(String, String)>>,
}

/// A sweep begun by [`Watcher::begin_sweep`]: the providers that are due, to be fetched by
/// [`Sweep::fetch`] without borrowing the watcher.
pub struct Sweep {
    aggregator: Aggregator,
    polled: Vec<String>,
    started: Instant,
}

impl std::fmt::Debug for Sweep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweep")
            .field("polled", &self.polled)
            .finish_non_exhaustive()
    }
}

impl Sweep {
    /// Fetch every due provider (concurrently, each under its timeout).
    pub async fn fetch(self) -> Swept {
        let results: Vec<ProviderResult> = self.aggregator.run_stream().collect().await;
        Swept {
            results,
            polled: self.polled,
            started: self.started,
        }
    }
}

/// A fetched sweep, to apply with [`Watcher::finish_sweep`].
#[derive(Debug)]
pub struct Swept {
    results: Vec<ProviderResult>,
    polled: Vec<String>,
    started: Instant,
}

impl Swept {
    /// Customers (provider × customer) the sweep brought connections of, from providers
    /// that answered: the sweep's throughput.
    pub fn customers_answered(&self) -> usize {
        self.results
            .iter()
            .filter(|r| !matches!(r.outcome.outcome, Outcome::Failed | Outcome::TimedOut))
            .flat_map(|r| {
                r.connections
                    .iter()
                    .chain(r.unchanged.iter().map(|u| &*u.known))
                    .map(|c| (c.provider.as_str(), c.customer.id.as_str()))
            })
            .collect::<BTreeSet<_>>()
            .len()
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field(
                "providers",
                &self
                    .entries
                    .iter()
                    .map(|e| e.provider.name())
                    .collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .field("tracked", &self.state.connections.len())
            .finish()
    }
}

impl Watcher {
    /// A watcher with no providers and the given settings (`trip`/`clear` are raised to 1).
    pub fn new(mut config: WatchConfig) -> Self {
        config.trip = config.trip.max(1);
        config.clear = config.clear.max(1);
        Watcher {
            entries: Vec::new(),
            config,
            state: WatchState::default(),
            schedule: Scheduler::new(ScheduleConfig::default(), Instant::now()),
            read_during_sweep: None,
        }
    }

    /// Add a provider (optionally with its own fetch timeout).
    pub fn add(&mut self, provider: Arc<dyn Provider>, timeout: Option<Duration>) {
        if let Some(floor) = provider.recheck_floor() {
            self.schedule.set_floor(provider.name(), floor);
        }
        self.entries.push(Entry {
            provider,
            timeout,
            not_before: None,
        });
    }

    /// The providers, in the order they were added.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn Provider>> + '_ {
        self.entries.iter().map(|e| &e.provider)
    }

    /// Start from a remembered state (e.g. loaded from `--state`).
    pub fn with_state(mut self, state: WatchState) -> Self {
        self.set_state(state);
        self
    }

    /// Replace the memory (e.g. with one loaded from `--state`).
    pub fn set_state(&mut self, state: WatchState) {
        self.state = state;
        compact(&mut self.state.connections);
    }

    /// The current memory (to persist).
    pub fn state(&self) -> &WatchState {
        &self.state
    }

    /// The memory, to change in place (a `serve` replica that follows another keeps its view
    /// equal to the store's this way, one changed connection at a time).
    pub fn state_mut(&mut self) -> &mut WatchState {
        &mut self.state
    }

    /// The settings.
    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// Re-check settings (`recheck_secs`, `max_staleness`; see [`crate::schedule`]).
    pub fn with_schedule(mut self, config: ScheduleConfig) -> Self {
        self.schedule.set_config(config);
        self
    }

    /// The scheduler: who is due for a re-check.
    pub fn schedule(&self) -> &Scheduler {
        &self.schedule
    }

    /// The scheduler, to mark customers ([`Scheduler::front`], ...).
    pub fn schedule_mut(&mut self) -> &mut Scheduler {
        &mut self.schedule
    }

    /// Move a customer to the front of the re-checks (a webhook or an action that did not
    /// read it): its next scheduled re-check is now.
    pub fn move_to_front(&mut self, provider: &str, customer_id: &str) {
        self.schedule.front(provider, customer_id);
    }

    /// The delay before the next poll: the interval, spread by the jitter.
    pub fn next_delay(&self) -> Duration {
        let j = self.config.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + j * (fastrand::f64() * 2.0 - 1.0);
        self.config.interval.mul_f64(factor.max(0.0))
    }

    /// Poll every provider that is due once, update the memory and return the changes:
    /// [`Watcher::begin_sweep`], [`Sweep::fetch`], [`Watcher::finish_sweep`].
    pub async fn poll(&mut self) -> Poll {
        let sweep = self.begin_sweep();
        let swept = sweep.fetch().await;
        self.finish_sweep(swept)
    }

    /// Begin a sweep of every provider that is due. Fetch it with [`Sweep::fetch`] (which
    /// does not borrow the watcher: re-checks and webhook reads may be applied meanwhile),
    /// then apply it with [`Watcher::finish_sweep`].
    pub fn begin_sweep(&mut self) -> Sweep {
        let now = Instant::now();
        let mut aggregator = Aggregator::new().with_timeout(self.config.timeout);
        let mut polled = Vec::new();
        for e in &self.entries {
            if e.not_before.is_some_and(|t| t > now) {
                continue;
            }
            aggregator.push(e.provider.clone(), e.timeout);
            polled.push(e.provider.name().to_owned());
        }
        // What is remembered of the due providers: an answer equal to it (but for when it
        // was read) is kept as a pointer while the sweep runs, not as a second copy.
        let known = Known::new(
            self.state
                .connections
                .values()
                .filter(|t| polled.iter().any(|p| *p == t.connection.provider))
                .map(|t| t.connection.clone()),
        );
        let aggregator = aggregator.with_known(known);
        self.read_during_sweep = Some(BTreeSet::new());
        Sweep {
            aggregator,
            polled,
            started: now,
        }
    }

    /// Forget a begun sweep that will not be finished (its fetch failed to run).
    pub fn abandon_sweep(&mut self) {
        self.read_during_sweep = None;
    }

    /// Apply a fetched sweep, exactly as [`Watcher::poll`] does, except for customers a
    /// targeted read (a re-check, a webhook) was applied for since the sweep began: the
    /// sweep's answer for them is older, and is left out (neither observed nor
    /// `disappeared`). Every other customer it answered for counts as read when it began.
    pub fn finish_sweep(&mut self, swept: Swept) -> Poll {
        let Swept {
            results,
            polled,
            started: now,
        } = swept;
        let remembered_before = self.state.connections.len();
        let skip = self.read_during_sweep.take().unwrap_or_default();
        // Empty unless refreshes ran during the sweep: then two keys are built per connection.
        let skipped = |c: &Connection| {
            !skip.is_empty() && skip.contains(&(c.provider.clone(), c.customer.id.clone()))
        };
        let retry_after: BTreeMap<String, Option<Duration>> = results
            .iter()
            .map(|r| (r.outcome.provider.clone(), r.retry_after))
            .collect();
        // What `Aggregator::assemble` does, without turning the unchanged answers back into
        // copies: the outcomes in configuration order; the changed connections in id order.
        let mut results = results;
        results.sort_by_key(|r| r.index);
        let mut providers = Vec::with_capacity(results.len());
        // Each provider's answers become shared connections as they are taken, into a list
        // of pointers sized once: concatenating the answers first (a list of whole
        // connections that grew by doubling, then copied into the `Arc`s) held the fleet
        // two to three times over at the end of a first sweep.
        let mut fresh: Vec<Arc<Connection>> =
            Vec::with_capacity(results.iter().map(|r| r.connections.len()).sum());
        let mut unchanged: Vec<Unchanged> =
            Vec::with_capacity(results.iter().map(|r| r.unchanged.len()).sum());
        for r in results {
            providers.push(r.outcome);
            fresh.extend(r.connections.into_iter().map(|mut c| {
                c.shrink_to_fit();
                Arc::new(c)
            }));
            unchanged.extend(r.unchanged);
        }
        if !fresh.is_sorted_by(|a, b| a.id <= b.id) {
            fresh.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let at = Utc::now();
        // A first sweep announces every connection once (`appeared`): room for those and
        // the providers' own events, so the list is not regrown (and copied) as it fills.
        let mut changes = Vec::with_capacity(if remembered_before == 0 {
            fresh.len() + 2 * providers.len()
        } else {
            0
        });

        // Provider availability and rate limits.
        let mut answered: BTreeMap<String, &ProviderOutcome> = BTreeMap::new();
        let mut keep_customers: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
        for p in &providers {
            let rate_limited =
                !p.errors.is_empty() && p.errors.iter().all(|e| e.kind == ErrorKind::RateLimited);
            let failed = matches!(p.outcome, Outcome::Failed | Outcome::TimedOut);
            let prev = self.state.providers.get(&p.provider).cloned();
            if rate_limited {
                let wait = retry_after
                    .get(&p.provider)
                    .copied()
                    .flatten()
                    .unwrap_or(self.config.interval)
                    .max(self.config.interval);
                if let Some(e) = self
                    .entries
                    .iter_mut()
                    .find(|e| e.provider.name() == p.provider)
                {
                    // A provider's error may carry any delay: one past the clock's range
                    // means "much later", never a panic.
                    e.not_before = Some(
                        now.checked_add(wait)
                            .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX))),
                    );
                }
                tracing::info!(provider = %p.provider, wait_s = wait.as_secs(), "rate limited; polling this provider less often");
            }
            if failed && !rate_limited {
                let was_available = prev.as_ref().is_none_or(|s| s.available);
                if was_available {
                    changes.push(Change::provider(
                        &p.provider,
                        ChangeKind::ProviderUnavailable {
                            outcome: p.outcome,
                            errors: p.errors.clone(),
                        },
                        at,
                        prev.as_ref().map(|s| s.since),
                    ));
                }
                self.state.providers.insert(
                    p.provider.clone(),
                    ProviderState {
                        available: false,
                        since: if was_available {
                            at
                        } else {
                            prev.map(|s| s.since).unwrap_or(at)
                        },
                        last: Some(p.clone()),
                    },
                );
                keep_customers.insert(p.provider.clone(), None);
                continue;
            }
            if failed {
                // Rate limited only: as if not polled, but a provider seen for the first time
                // gets an entry so the view can say why it has no connections yet.
                if prev.is_none() {
                    self.state.providers.insert(
                        p.provider.clone(),
                        ProviderState {
                            available: true,
                            since: at,
                            last: Some(p.clone()),
                        },
                    );
                }
                keep_customers.insert(p.provider.clone(), None);
                continue;
            }
            if let Some(s) = prev.as_ref().filter(|s| !s.available) {
                changes.push(Change::provider(
                    &p.provider,
                    ChangeKind::ProviderRecovered,
                    at,
                    Some(s.since),
                ));
            }
            let since = match &prev {
                Some(s) if s.available => s.since,
                _ => at,
            };
            self.state.providers.insert(
                p.provider.clone(),
                ProviderState {
                    available: true,
                    since,
                    last: Some(p.clone()),
                },
            );
            answered.insert(p.provider.clone(), p);
            if p.outcome == Outcome::Partial {
                // Keep connections of customers that failed; if an error names no customer we
                // cannot tell which are missing, so keep them all.
                let failed_customers: Option<BTreeSet<String>> =
                    p.errors.iter().map(|e| e.customer_id.clone()).collect();
                keep_customers.insert(p.provider.clone(), failed_customers);
            }
        }

        // Connections seen now.
        let mut seen: std::collections::HashSet<&str> =
            std::collections::HashSet::with_capacity(fresh.len() + unchanged.len());
        for c in &fresh {
            if !answered.contains_key(&c.provider) || skipped(c) {
                continue;
            }
            seen.insert(c.id.as_str());
            self.schedule.read(&c.provider, &c.customer.id, now);
            self.observe(c, at, &mut changes);
        }
        for u in &unchanged {
            let c = &*u.known;
            if !answered.contains_key(&c.provider) || skipped(c) {
                continue;
            }
            seen.insert(c.id.as_str());
            self.schedule.read(&c.provider, &c.customer.id, now);
            self.observe_unchanged(u, at, &mut changes);
        }

        // Connections not seen now.
        let missing: Vec<String> = self
            .state
            .connections
            .iter()
            .filter(|(id, _)| !seen.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in missing {
            let t = &self.state.connections[&id];
            let provider = t.connection.provider.as_str();
            // A provider this watcher does not poll (`watch --provider OTHER`, or a state
            // file from another config), is not due, or did not answer: its connections are
            // left exactly as they were.
            let gone = if !polled.iter().any(|p| p == provider)
                || !answered.contains_key(provider)
                || skipped(&t.connection)
            {
                false
            } else {
                match keep_customers.get(provider) {
                    None => true,        // answered fully
                    Some(None) => false, // partial, cannot tell
                    Some(Some(failed)) => !failed.contains(&t.connection.customer.id),
                }
            };
            if gone {
                let t = self.state.connections.remove(&id).expect("listed above");
                changes.push(disappeared(&t, at));
            }
        }
        // A sweep that added many connections (the first) inserted them one by one.
        let grown = self
            .state
            .connections
            .len()
            .saturating_sub(remembered_before);
        if grown.saturating_mul(8) > self.state.connections.len() {
            compact(&mut self.state.connections);
        }
        self.schedule.retain_known(&self.state);
        Poll {
            report: self.view(at),
            changes,
        }
    }

    /// The provider to re-check `provider`'s customers with, and its timeout; `None` while
    /// it rests (rate limited, unavailable, not configured here): its sweep comes first.
    pub fn recheck_target(
        &self,
        provider: &str,
        now: Instant,
    ) -> Option<(Arc<dyn Provider>, Duration)> {
        let e = self
            .entries
            .iter()
            .find(|e| e.provider.name() == provider)?;
        if e.not_before.is_some_and(|t| t > now)
            || self
                .state
                .providers
                .get(provider)
                .is_some_and(|s| !s.available)
        {
            return None;
        }
        Some((e.provider.clone(), e.timeout.unwrap_or(self.config.timeout)))
    }

    /// Apply a scheduled re-check of one customer ([`crate::schedule`]) and return its
    /// changes. An answer replaces that customer's connections of that provider (one
    /// remembered but not answered is `disappeared`), **through the anti-flap streaks**, as
    /// a sweep would: a re-check is a poll of one customer. A failure changes nothing (the
    /// sweep decides whether a provider is unavailable); the customer waits `recheck_secs`
    /// (or the error's `Retry-After`) before the next try, and a provider without a
    /// targeted read is not re-checked again.
    pub fn apply_recheck(
        &mut self,
        provider: &str,
        customer_id: &str,
        result: Result<Vec<Connection>, crate::Error>,
        at: DateTime<Utc>,
    ) -> (Vec<Change>, Option<crate::Error>) {
        let now = Instant::now();
        let connections = match result {
            Ok(c) => c,
            Err(e) => {
                let retry = now + crate::schedule::retry_wait(&e, self.schedule.config().recheck);
                self.schedule.finished(provider, customer_id, Some(retry));
                if crate::schedule::unsupported(&e) {
                    self.schedule.disable(provider);
                }
                tracing::info!(provider, error = %e, "scheduled re-check failed");
                return (Vec::new(), Some(e));
            }
        };
        self.schedule.finished(provider, customer_id, None);
        if let Some(read) = self.read_during_sweep.as_mut() {
            read.insert((provider.to_owned(), customer_id.to_owned()));
        }
        let mut changes = Vec::new();
        let mut seen = BTreeSet::new();
        for c in connections
            .into_iter()
            .filter(|c| c.provider == provider && c.customer.id == customer_id)
        {
            // The answer's allocation becomes the remembered one (no copy).
            let c = Arc::new(c);
            seen.insert(c.id.clone());
            self.observe(&c, at, &mut changes);
        }
        self.drop_unseen(provider, customer_id, &seen, at, &mut changes);
        (changes, None)
    }

    /// Forget `customer_id`'s connections at `provider` that a whole-customer read did not
    /// return (`seen` holds the ids it did), each a `disappeared` change.
    fn drop_unseen(
        &mut self,
        provider: &str,
        customer_id: &str,
        seen: &BTreeSet<String>,
        at: DateTime<Utc>,
        changes: &mut Vec<Change>,
    ) {
        let gone: Vec<String> = self
            .state
            .connections
            .iter()
            .filter(|(id, t)| {
                t.connection.provider == provider
                    && t.connection.customer.id == customer_id
                    && !seen.contains(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(t) = self.state.connections.remove(&id) {
                changes.push(disappeared(&t, at));
            }
        }
    }

    /// Take the result of a targeted refresh of `customer_id` at `provider` (a webhook's
    /// confirming pull, `POST /v1/refresh`) and return the changes against what was
    /// announced, with the view after it (see the module docs: applied at once, no anti-flap).
    ///
    /// With `whole_customer` (a [`RefreshHint::Customer`](crate::RefreshHint) read) the
    /// result replaces that customer's connections of that provider: one remembered but not
    /// in `connections` is `disappeared`. Without it (a read of one connection), only the
    /// connections given are updated. Connections of another provider or customer in
    /// `connections` are ignored: a targeted read speaks only for its target.
    pub fn apply_refresh(
        &mut self,
        provider: &str,
        customer_id: &str,
        connections: &[Connection],
        whole_customer: bool,
        at: DateTime<Utc>,
    ) -> Poll {
        let changes =
            self.apply_refresh_changes(provider, customer_id, connections, whole_customer, at);
        Poll {
            report: self.view(at),
            changes,
        }
    }

    /// [`Watcher::apply_refresh`] without building the view: only the changes. Several
    /// refreshes applied in a row then need one [`Watcher::report`] at the end, not a copy
    /// of every connection per refresh.
    pub fn apply_refresh_changes(
        &mut self,
        provider: &str,
        customer_id: &str,
        connections: &[Connection],
        whole_customer: bool,
        at: DateTime<Utc>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut seen = BTreeSet::new();
        // A targeted read is the freshest word on this customer: its next re-check counts
        // from now, and a sweep in flight does not overwrite it with an older answer.
        self.schedule.read(provider, customer_id, Instant::now());
        if let Some(read) = self.read_during_sweep.as_mut() {
            read.insert((provider.to_owned(), customer_id.to_owned()));
        }
        for c in connections
            .iter()
            .filter(|c| c.provider == provider && c.customer.id == customer_id)
        {
            seen.insert(c.id.clone());
            match self.state.connections.get_mut(&c.id) {
                Some(t) if t.connection.same_except_observed_at(c) => {
                    // Confirmed as remembered: only the read time moves (in place).
                    t.connection.observed_at.set(c.observed_at.get());
                    t.streak = 0;
                }
                Some(t) => {
                    let status_changed = t.connection.status != c.status;
                    changes.extend(connection_changes(&t.connection, c, at, Some(t.since)));
                    t.connection = Arc::new(c.clone());
                    if status_changed {
                        t.since = at;
                    }
                    t.streak = 0;
                }
                None => self.observe(&Arc::new(c.clone()), at, &mut changes),
            }
        }
        if whole_customer {
            self.drop_unseen(provider, customer_id, &seen, at, &mut changes);
        }
        changes
    }

    /// [`Watcher::observe`] of an answer equal to the remembered connection it points to,
    /// but for when it was read: the streak ends, nothing is announced, and `observed_at`
    /// moves in place ([`crate::ObservedAt::set`]): the served report and the journal
    /// share the connection, and a copy per unchanged connection per poll is what doubled the
    /// memory at every poll. If the remembered connection changed meanwhile, it is observed
    /// as any answer.
    fn observe_unchanged(&mut self, u: &Unchanged, at: DateTime<Utc>, changes: &mut Vec<Change>) {
        let Some(t) = self
            .state
            .connections
            .get_mut(&u.known.id)
            .filter(|t| Arc::ptr_eq(&t.connection, &u.known))
        else {
            return self.observe(&Arc::new(u.to_connection()), at, changes);
        };
        t.streak = 0;
        t.connection.observed_at.set(u.observed_at);
    }

    /// Compare one fresh connection with what was announced, under the anti-flap rules.
    /// The fresh connection's allocation is kept as is (no copy) when it becomes the one
    /// remembered; an answer equal but for its read time only moves `observed_at`.
    fn observe(&mut self, c: &Arc<Connection>, at: DateTime<Utc>, changes: &mut Vec<Change>) {
        let Some(t) = self.state.connections.get_mut(&c.id) else {
            changes.push(Change::about(
                c,
                ChangeKind::Appeared { status: c.status },
                at,
                None,
            ));
            self.state.connections.insert(
                c.id.clone(),
                Tracked {
                    connection: c.clone(),
                    since: at,
                    streak: 0,
                    worsening: false,
                },
            );
            return;
        };
        let announced = t.connection.status;
        if c.status == announced {
            t.streak = 0;
            if t.connection.same_except_observed_at(c) {
                // Unchanged but for the read time: moved in place, the shared one kept.
                t.connection.observed_at.set(c.observed_at.get());
                return;
            }
            changes.extend(connection_changes(&t.connection, c, at, Some(t.since)));
            t.connection = c.clone();
            return;
        }
        let worsening = c.status > announced;
        if t.streak > 0 && t.worsening == worsening {
            t.streak += 1;
        } else {
            t.streak = 1;
            t.worsening = worsening;
        }
        let needed = if worsening {
            self.config.trip
        } else {
            self.config.clear
        };
        if t.streak >= needed {
            changes.extend(connection_changes(&t.connection, c, at, Some(t.since)));
            t.connection = c.clone();
            t.since = at;
            t.streak = 0;
        }
    }

    /// The current view: announced connections, `unknown` for providers that are unavailable.
    /// The view at `at`: the report a poll at `at` would serve (remembered connections of
    /// the configured providers, those of an unavailable provider shown `unknown`).
    pub fn report(&self, at: DateTime<Utc>) -> HealthReport {
        self.view(at)
    }

    fn view(&self, at: DateTime<Utc>) -> HealthReport {
        let mut providers = Vec::new();
        for e in &self.entries {
            let name = e.provider.name();
            match self.state.providers.get(name).and_then(|s| s.last.clone()) {
                Some(last) => providers.push(last),
                None => providers.push(ProviderOutcome {
                    provider: name.to_owned(),
                    outcome: Outcome::Failed,
                    connections: 0,
                    elapsed_ms: 0,
                    errors: vec![],
                }),
            }
        }
        let unavailable: BTreeSet<&str> = self
            .state
            .providers
            .iter()
            .filter(|(_, s)| !s.available)
            .map(|(k, _)| k.as_str())
            .collect();
        let polled: BTreeSet<&str> = self.entries.iter().map(|e| e.provider.name()).collect();
        let connections = self
            .state
            .connections
            .values()
            .filter(|t| polled.contains(t.connection.provider.as_str()))
            .map(|t| {
                if !unavailable.contains(t.connection.provider.as_str()) {
                    // The remembered connection itself, not a copy.
                    return t.connection.clone();
                }
                let mut c = Connection::clone(&t.connection);
                c.status = Status::Unknown;
                c.problems = thin_vec::thin_vec![Problem::new(
                    "provider_unavailable",
                    Status::Unknown,
                    format!(
                        "{} did not answer; last known status {}",
                        c.provider, t.connection.status
                    ),
                )];
                Arc::new(c)
            })
            .collect();
        HealthReport::from_shared(at, providers, connections)
    }

    /// Poll forever: each poll's result goes to `on_poll`; returns when it returns `false`.
    pub async fn run(&mut self, mut on_poll: impl FnMut(&Poll) -> bool) {
        loop {
            let poll = self.poll().await;
            if !on_poll(&poll) {
                return;
            }
            tokio::time::sleep(self.next_delay()).await;
        }
    }
}

/// The `disappeared` change of a remembered connection no read returns any more.
fn disappeared(t: &Tracked, at: DateTime<Utc>) -> Change {
    Change::about(
        &t.connection,
        ChangeKind::Disappeared {
            last_status: t.connection.status,
        },
        at,
        Some(t.since),
    )
}
