//! Priority scheduling: who is read when, between and during the sweeps.
//!
//! A sweep (every provider, every customer, [`Watcher::poll`]) runs every `interval`. Between
//! sweeps, and **while one is in flight**, the [`Scheduler`] picks customers for a targeted
//! read ([`Provider::refresh`] with [`RefreshHint::Scheduled`]):
//!
//! - **Not healthy.** A customer with a connection whose status is anything but `healthy` or
//!   `not_connected` (so `pending` and `syncing` too) is re-checked every `recheck_secs`
//!   after its last read (by a sweep or a re-check).
//! - **Front.** [`Scheduler::front`] (a webhook whose status was applied without a read)
//!   makes a customer due now, ahead of every other due customer.
//! - **Stale.** A customer whose last read is older than `max_staleness − recheck_secs` is
//!   read, so that none is ever staler than `max_staleness` even when sweeps are slow or fail.
//! - **Floors.** A provider's [`Provider::recheck_floor`] lengthens its period: Violet's
//!   scheduled re-check is its cached report at most hourly, never `refresh=true`.
//!
//! Customers with a re-check in flight are not due again; a failed re-check waits at least
//! `recheck_secs` (or the error's `Retry-After`) before the next; a provider without a
//! targeted read ([`crate::ErrorKind::Unsupported`]) is left to the sweeps.
//!
//! [`PollLoop`] drives sweeps and re-checks together over one [`Watcher`]: the sweep's
//! fetch runs in its own task without borrowing the watcher, re-check results are applied
//! as they come (through the same anti-flap streaks as a sweep: a scheduled re-check is a
//! poll of one customer, and may catch the same passing blip), and the sweep's result is
//! applied when it ends, skipping customers a re-check or webhook read after it began.
//!
//! ```
//! use std::time::Duration;
//! use connhealth_core::schedule::{ScheduleConfig, Scheduler};
//! use connhealth_core::watch::WatchState;
//! use tokio::time::Instant;
//!
//! let start = Instant::now();
//! let mut s = Scheduler::new(ScheduleConfig::default(), start);
//! s.front("channel3", "cus_1");
//! let plan = s.plan(&WatchState::default(), start);
//! assert_eq!(plan.due[0].customer_id, "cus_1");
//! assert!(plan.next_at.is_none());
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll as TaskPoll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::{Instant, Sleep};
use tokio_util::task::AbortOnDropHandle;

use crate::diff::Change;
use crate::error::{Error, ErrorKind};
use crate::model::{Connection, Status};
use crate::provider::RefreshHint;
use crate::watch::{Poll, Swept, WatchState, Watcher};

/// How often who is read: the keys `recheck_secs` and `max_staleness` (the sweep's
/// `interval` is [`crate::WatchConfig::interval`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    /// How often a customer with a connection that is not healthy is read again (`recheck_secs`,
    /// default 60 s; at least 1 s).
    pub recheck: Duration,
    /// No customer's last read is ever older than this (`max_staleness`, default 24 h).
    pub max_staleness: Duration,
    /// At most this many re-checks in flight at once (default 8; at least 1).
    pub concurrency: usize,
    /// Re-checks at all (default `true`). `false`: sweeps only, as before scheduling.
    pub enabled: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            recheck: Duration::from_secs(60),
            max_staleness: Duration::from_secs(24 * 3600),
            concurrency: 8,
            enabled: true,
        }
    }
}

/// Whether a connection in this status is re-checked every `recheck_secs` (anything but
/// `healthy` and `not_connected`: a problem, an unknown, or a `pending`/`syncing` set-up).
pub fn needs_recheck(status: Status) -> bool {
    !matches!(status, Status::Healthy | Status::NotConnected)
}

/// Why a customer is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DueReason {
    /// Moved to the front ([`Scheduler::front`]).
    Front,
    /// It has a connection that is not healthy (or is pending/syncing).
    NotHealthy,
    /// Its last read nears `max_staleness`.
    Stale,
}

/// One customer to read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The provider's name.
    pub provider: String,
    /// The customer.
    pub customer_id: String,
    /// Why.
    pub reason: DueReason,
}

/// What [`Scheduler::plan`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Customers to read now, most urgent first (front, then the longest overdue).
    pub due: Vec<Due>,
    /// When the next customer that is not due yet becomes due.
    pub next_at: Option<Instant>,
    /// Customers known (provider × customer with a remembered connection).
    pub customers: usize,
    /// The age of the oldest last read among them.
    pub oldest_age: Duration,
}

type Key = (String, String);

/// The pure part of scheduling: given the remembered connections and the clock, who is due.
/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: ScheduleConfig,
    started: Instant,
    last_read: HashMap<Key, Instant>,
    not_before: HashMap<Key, Instant>,
    front: BTreeMap<Key, u64>,
    front_seq: u64,
    in_flight: HashMap<Key, Instant>,
    floors: HashMap<String, Duration>,
    disabled: BTreeSet<String>,
    /// Something was moved to the front since the last plan.
    dirty: bool,
}

impl Scheduler {
    /// A scheduler whose customers count as read at `now` until they are read.
    pub fn new(mut config: ScheduleConfig, now: Instant) -> Self {
        config.recheck = config.recheck.max(Duration::from_secs(1));
        config.concurrency = config.concurrency.max(1);
        Scheduler {
            config,
            started: now,
            last_read: HashMap::new(),
            not_before: HashMap::new(),
            front: BTreeMap::new(),
            front_seq: 0,
            in_flight: HashMap::new(),
            floors: HashMap::new(),
            disabled: BTreeSet::new(),
            dirty: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// Replace the settings (reads remembered so far are kept).
    pub fn set_config(&mut self, mut config: ScheduleConfig) {
        config.recheck = config.recheck.max(Duration::from_secs(1));
        config.concurrency = config.concurrency.max(1);
        self.config = config;
    }

    /// Re-check `provider`'s customers at most once per `floor` (its
    /// [`Provider::recheck_floor`]).
    pub fn set_floor(&mut self, provider: &str, floor: Duration) {
        self.floors.insert(provider.to_owned(), floor);
    }

    /// Never re-check `provider` (it has no targeted read): its sweeps alone read it.
    pub fn disable(&mut self, provider: &str) {
        self.disabled.insert(provider.to_owned());
    }

    /// The period of `provider`'s re-checks: `recheck_secs`, or its floor if longer.
    pub fn period(&self, provider: &str) -> Duration {
        self.floors
            .get(provider)
            .map_or(self.config.recheck, |f| (*f).max(self.config.recheck))
    }

    /// `customer_id` at `provider` was read at `at` (a sweep, a re-check, a webhook's read):
    /// its next re-check counts from there, and it is no longer at the front.
    pub fn read(&mut self, provider: &str, customer_id: &str, at: Instant) {
        let key = (provider.to_owned(), customer_id.to_owned());
        self.front.remove(&key);
        self.not_before.remove(&key);
        let e = self.last_read.entry(key).or_insert(at);
        *e = (*e).max(at);
    }

    /// Move a customer to the front: due now, before every other due customer.
    pub fn front(&mut self, provider: &str, customer_id: &str) {
        self.front_seq += 1;
        let key = (provider.to_owned(), customer_id.to_owned());
        self.not_before.remove(&key);
        self.front.entry(key).or_insert(self.front_seq);
        self.dirty = true;
    }

    /// Whether a customer was moved to the front since the last call (a [`PollLoop`] then
    /// plans at once instead of at its next wake-up).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// A re-check of this customer was sent at `at` (it is not due again until
    /// [`Scheduler::finished`]).
    pub fn started(&mut self, provider: &str, customer_id: &str, at: Instant) {
        self.in_flight
            .insert((provider.to_owned(), customer_id.to_owned()), at);
    }

    /// A re-check of this customer ended: when it answered, the customer counts as read
    /// when the re-check was sent (so the period is kept from request to request); when it
    /// failed (`retry_at`), it is not due again before `retry_at`. Returns when it was sent.
    pub fn finished(
        &mut self,
        provider: &str,
        customer_id: &str,
        retry_at: Option<Instant>,
    ) -> Option<Instant> {
        let key = (provider.to_owned(), customer_id.to_owned());
        let sent = self.in_flight.remove(&key);
        match retry_at {
            Some(t) => {
                self.front.remove(&key);
                self.not_before.insert(key, t);
            }
            None => {
                let at = sent.unwrap_or_else(Instant::now);
                self.read(provider, customer_id, at);
            }
        }
        sent
    }

    /// Re-checks in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// When this customer was last read (the scheduler's start if never).
    pub fn last_read(&self, provider: &str, customer_id: &str) -> Instant {
        self.last_read
            .get(&(provider.to_owned(), customer_id.to_owned()))
            .copied()
            .unwrap_or(self.started)
    }

    /// Forget reads of customers no longer remembered (after a sweep dropped them).
    pub fn retain_known(&mut self, state: &WatchState) {
        let known: HashSet<(&str, &str)> = state
            .connections
            .values()
            .map(|t| {
                (
                    t.connection.provider.as_str(),
                    t.connection.customer.id.as_str(),
                )
            })
            .collect();
        let keep = |k: &Key| known.contains(&(k.0.as_str(), k.1.as_str()));
        self.last_read.retain(|k, _| keep(k));
        self.not_before.retain(|k, _| keep(k));
    }

    /// Who is due at `now`, given the remembered connections. Pure: nothing is marked.
    pub fn plan(&self, state: &WatchState, now: Instant) -> Plan {
        // Provider × customer → whether any of its connections needs re-checking.
        let mut customers: BTreeMap<(&str, &str), bool> = BTreeMap::new();
        for t in state.connections.values() {
            let c = &t.connection;
            let e = customers
                .entry((c.provider.as_str(), c.customer.id.as_str()))
                .or_default();
            *e |= needs_recheck(c.status);
        }
        let stale_after = self
            .config
            .max_staleness
            .checked_sub(self.config.recheck)
            .filter(|d| !d.is_zero())
            .unwrap_or(self.config.max_staleness);
        let mut plan = Plan {
            customers: customers.len(),
            ..Plan::default()
        };
        let mut due: Vec<(DueReason, u64, Instant, Due)> = Vec::new();
        for (key, seq) in &self.front {
            if self.enabled_for(&key.0) && !self.in_flight.contains_key(key) {
                due.push((
                    DueReason::Front,
                    *seq,
                    now,
                    Due {
                        provider: key.0.clone(),
                        customer_id: key.1.clone(),
                        reason: DueReason::Front,
                    },
                ));
            }
        }
        for ((provider, customer), unhealthy) in customers {
            let key = (provider.to_owned(), customer.to_owned());
            let last = self.last_read.get(&key).copied().unwrap_or(self.started);
            plan.oldest_age = plan.oldest_age.max(now.saturating_duration_since(last));
            if !self.enabled_for(provider)
                || self.front.contains_key(&key)
                || self.in_flight.contains_key(&key)
            {
                continue;
            }
            let stale_at = last + stale_after;
            let (mut at, mut reason) = (stale_at, DueReason::Stale);
            if unhealthy {
                let recheck_at = last + self.period(provider);
                if recheck_at <= stale_at {
                    (at, reason) = (recheck_at, DueReason::NotHealthy);
                }
            }
            if let Some(nb) = self.not_before.get(&key) {
                at = at.max(*nb);
            }
            if at <= now {
                due.push((
                    reason,
                    0,
                    at,
                    Due {
                        provider: key.0,
                        customer_id: key.1,
                        reason,
                    },
                ));
            } else {
                plan.next_at = Some(plan.next_at.map_or(at, |n: Instant| n.min(at)));
            }
        }
        // Front first (in the order they were moved there), then the longest overdue.
        due.sort_by(|a, b| {
            let front = |d: &(DueReason, u64, Instant, Due)| d.0 != DueReason::Front;
            front(a)
                .cmp(&front(b))
                .then(a.1.cmp(&b.1))
                .then(a.2.cmp(&b.2))
                .then_with(|| {
                    (&a.3.provider, &a.3.customer_id).cmp(&(&b.3.provider, &b.3.customer_id))
                })
        });
        plan.due = due.into_iter().map(|d| d.3).collect();
        plan
    }

    fn enabled_for(&self, provider: &str) -> bool {
        self.config.enabled && !self.disabled.contains(provider)
    }
}

/// The staleness budget: how stale the slowest customer gets at the sweep rate achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Customers known.
    pub customers: usize,
    /// Customers per second the sweeps achieve (measured), or the configured budget allows.
    pub customers_per_sec: f64,
    /// Whether `customers_per_sec` comes from a configured rate budget (else measured).
    pub configured: bool,
    /// `interval + customers ÷ customers_per_sec`: the age a customer reaches before the next
    /// sweep reads it again.
    pub achievable: Duration,
    /// The bound (`max_staleness`).
    pub max_staleness: Duration,
}

impl Budget {
    /// Whether the sweeps cannot keep every customer within `max_staleness`.
    pub fn exceeded(&self) -> bool {
        self.achievable > self.max_staleness
    }

    /// One line with the numbers, for `/readyz` and logs.
    pub fn message(&self) -> String {
        format!(
            "{} customers at {:.2} customers/s ({}) take {} s per sweep cycle, more than max_staleness {} s",
            self.customers,
            self.customers_per_sec,
            if self.configured {
                "configured rate budget"
            } else {
                "measured sweep rate"
            },
            self.achievable.as_secs(),
            self.max_staleness.as_secs()
        )
    }
}

/// Counters and gauges of the schedule, shared with `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct ScheduleStats {
    due: AtomicU64,
    in_flight: AtomicU64,
    customers: AtomicU64,
    oldest_age_secs: AtomicU64,
    rechecks: Mutex<BTreeMap<String, u64>>,
    budget: Mutex<Option<Budget>>,
}

impl ScheduleStats {
    /// Customers due for a re-check at the last plan (launched or waiting for a slot).
    pub fn due(&self) -> u64 {
        self.due.load(Ordering::Relaxed)
    }
    /// Re-checks in flight at the last plan.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
    /// Customers known at the last plan.
    pub fn customers(&self) -> u64 {
        self.customers.load(Ordering::Relaxed)
    }
    /// The age of the oldest customer's last read at the last plan, in seconds.
    pub fn oldest_age_secs(&self) -> u64 {
        self.oldest_age_secs.load(Ordering::Relaxed)
    }
    /// Re-checks done (answered or failed), by provider.
    pub fn rechecks(&self) -> BTreeMap<String, u64> {
        lock(&self.rechecks).clone()
    }
    /// The staleness budget after the last sweep (`None` before one read anything).
    pub fn budget(&self) -> Option<Budget> {
        *lock(&self.budget)
    }
    /// The `/readyz` warning (code `staleness_budget`) if the budget cannot meet
    /// `max_staleness`.
    pub fn budget_warning(&self) -> Option<String> {
        self.budget().filter(Budget::exceeded).map(|b| b.message())
    }

    fn record_plan(&self, plan: &Plan, in_flight: usize) {
        self.due.store(plan.due.len() as u64, Ordering::Relaxed);
        self.in_flight.store(in_flight as u64, Ordering::Relaxed);
        self.customers
            .store(plan.customers as u64, Ordering::Relaxed);
        self.oldest_age_secs
            .store(plan.oldest_age.as_secs(), Ordering::Relaxed);
    }

    fn count_recheck(&self, provider: &str) {
        *lock(&self.rechecks).entry(provider.to_owned()).or_default() += 1;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one step of a [`PollLoop`] did.
#[derive(Debug)]
pub enum Step {
    /// A sweep finished and was applied.
    Swept {
        /// Its result, as [`Watcher::poll`] returns it.
        poll: Poll,
        /// How long it took.
        elapsed: Duration,
    },
    /// A scheduled re-check finished (and, if it answered, was applied).
    Rechecked {
        /// The provider.
        provider: String,
        /// The customer.
        customer_id: String,
        /// What it changed (empty if it failed).
        changes: Vec<Change>,
        /// When it was applied.
        at: DateTime<Utc>,
        /// Why it failed, if it did (the connections are kept as they were).
        error: Option<Error>,
    },
}

type Recheck = BoxFuture<'static, (String, String, Result<Vec<Connection>, Error>)>;

/// Sweeps every `interval` and scheduled re-checks, over one [`Watcher`]. See the
/// [module docs](self). [`PollLoop::next`] is cancel-safe: the sweep and the re-checks run
/// in tasks owned by the loop, so a `select!` that drops the call loses nothing.
pub struct PollLoop {
    sweep: Option<(AbortOnDropHandle<Swept>, Instant)>,
    next_sweep: Pin<Box<Sleep>>,
    rechecks: FuturesUnordered<Recheck>,
    wake: Pin<Box<Sleep>>,
    replan: bool,
    stats: Arc<ScheduleStats>,
    configured_rate: Option<f64>,
}

impl std::fmt::Debug for PollLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollLoop")
            .field("sweeping", &self.sweep.is_some())
            .field("rechecks", &self.rechecks.len())
            .finish_non_exhaustive()
    }
}

impl Default for PollLoop {
    fn default() -> Self {
        PollLoop::new()
    }
}

/// The shortest pause between two plans (a plan is one pass over the remembered connections).
const MIN_REPLAN: Duration = Duration::from_secs(1);

impl PollLoop {
    /// A loop whose first sweep starts at once.
    pub fn new() -> Self {
        let now = Instant::now();
        PollLoop {
            sweep: None,
            next_sweep: Box::pin(tokio::time::sleep_until(now)),
            rechecks: FuturesUnordered::new(),
            wake: Box::pin(tokio::time::sleep_until(now)),
            replan: true,
            stats: Arc::new(ScheduleStats::default()),
            configured_rate: None,
        }
    }

    /// The hook for a configured rate budget: the customers per second it allows (a
    /// provider's `rate_limit` ÷ requests per customer). The staleness budget is then judged
    /// on it instead of the sweep rate measured.
    pub fn with_configured_rate(mut self, customers_per_sec: Option<f64>) -> Self {
        self.configured_rate = customers_per_sec.filter(|r| r.is_finite() && *r > 0.0);
        self
    }

    /// The schedule's counters (for `/metrics` and `/readyz`).
    pub fn stats(&self) -> Arc<ScheduleStats> {
        self.stats.clone()
    }

    /// Whether a sweep is in flight.
    pub fn sweeping(&self) -> bool {
        self.sweep.is_some()
    }

    /// Wait for the next thing done: a sweep or a re-check, applied to `watcher`.
    pub async fn next(&mut self, watcher: &mut Watcher) -> Step {
        std::future::poll_fn(|cx| self.poll_step(cx, watcher)).await
    }

    fn poll_step(&mut self, cx: &mut Context<'_>, w: &mut Watcher) -> TaskPoll<Step> {
        loop {
            if let Some((handle, started)) = self.sweep.as_mut() {
                if let TaskPoll::Ready(joined) = Pin::new(handle).poll(cx) {
                    let started = *started;
                    self.sweep = None;
                    let now = Instant::now();
                    let elapsed = now.saturating_duration_since(started);
                    let poll = match joined {
                        Ok(swept) => {
                            let read = swept.customers_answered();
                            let poll = w.finish_sweep(swept);
                            self.record_budget(w, read, elapsed);
                            poll
                        }
                        // The sweep's task panicked or was cancelled: nothing was applied; the
                        // watcher's view stays, and the next sweep comes after the interval.
                        Err(e) => {
                            tracing::error!(error = %e, "the sweep's task failed");
                            w.abandon_sweep();
                            Poll {
                                report: w.report(Utc::now()),
                                changes: Vec::new(),
                            }
                        }
                    };
                    self.next_sweep.as_mut().reset(now + w.next_delay());
                    self.replan = true;
                    return TaskPoll::Ready(Step::Swept { poll, elapsed });
                }
            } else if self.next_sweep.as_mut().poll(cx).is_ready() {
                let sweep = w.begin_sweep();
                let started = Instant::now();
                self.sweep = Some((AbortOnDropHandle::new(tokio::spawn(sweep.fetch())), started));
                continue;
            }
            if let TaskPoll::Ready(Some((provider, customer_id, result))) =
                self.rechecks.poll_next_unpin(cx)
            {
                let at = Utc::now();
                self.stats.count_recheck(&provider);
                let (changes, error) = w.apply_recheck(&provider, &customer_id, result, at);
                self.replan = true;
                return TaskPoll::Ready(Step::Rechecked {
                    provider,
                    customer_id,
                    changes,
                    at,
                    error,
                });
            }
            if w.schedule_mut().take_dirty() {
                self.replan = true;
            }
            if self.replan || self.wake.as_mut().poll(cx).is_ready() {
                self.replan = false;
                let now = Instant::now();
                self.launch(w, now);
                continue;
            }
            return TaskPoll::Pending;
        }
    }

    /// Plan, start the due re-checks that fit, and set the wake-up for the next.
    fn launch(&mut self, w: &mut Watcher, now: Instant) {
        let plan = w.schedule().plan(w.state(), now);
        let limit = w.schedule().config().concurrency;
        let recheck = w.schedule().config().recheck;
        let mut waiting = false;
        for due in &plan.due {
            if self.rechecks.len() >= limit {
                // The next re-check to finish plans again.
                break;
            }
            let Some((provider, timeout)) = w.recheck_target(&due.provider, now) else {
                waiting = true;
                continue;
            };
            w.schedule_mut()
                .started(&due.provider, &due.customer_id, now);
            let (name, customer) = (due.provider.clone(), due.customer_id.clone());
            let task = AbortOnDropHandle::new(tokio::spawn(async move {
                match tokio::time::timeout(
                    timeout,
                    provider.refresh(&customer, RefreshHint::Scheduled),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(Error::new(
                        provider.name(),
                        "refresh",
                        ErrorKind::Timeout,
                        format!(
                            "a scheduled re-check did not finish within {} ms",
                            timeout.as_millis()
                        ),
                    )
                    .with_customer(&customer)),
                }
            }));
            let (n, c) = (name.clone(), due.customer_id.clone());
            self.rechecks.push(Box::pin(async move {
                let result = match task.await {
                    Ok(r) => r,
                    Err(e) => Err(Error::new(
                        &n,
                        "refresh",
                        ErrorKind::Panicked,
                        format!("a scheduled re-check's task failed: {e}"),
                    )
                    .with_customer(&c)),
                };
                (n, c, result)
            }));
        }
        self.stats.record_plan(&plan, self.rechecks.len());
        let mut wake = plan.next_at.unwrap_or(now + recheck);
        if waiting {
            // Due customers of a provider that is resting (rate limited, unavailable).
            wake = wake.min(now + recheck.min(Duration::from_secs(10)));
        }
        self.wake.as_mut().reset(wake.max(now + MIN_REPLAN));
    }

    fn record_budget(&self, w: &Watcher, read: usize, elapsed: Duration) {
        let customers = w
            .state()
            .connections
            .values()
            .map(|t| (&t.connection.provider, &t.connection.customer.id))
            .collect::<HashSet<_>>()
            .len()
            .max(read);
        let measured =
            (read > 0 && !elapsed.is_zero()).then(|| read as f64 / elapsed.as_secs_f64());
        let configured_rate = self
            .configured_rate
            .or_else(|| budgeted_customers_per_sec(w, customers));
        let (rate, configured) = match (configured_rate, measured) {
            (Some(r), _) => (r, true),
            (None, Some(r)) => (r, false),
            // Nothing read (or instantly): no figure to judge by; keep the last one.
            (None, None) => return,
        };
        let cycle = w.config().interval.as_secs_f64() + customers as f64 / rate;
        let budget = Budget {
            customers,
            customers_per_sec: rate,
            configured,
            achievable: Duration::try_from_secs_f64(cycle).unwrap_or(Duration::MAX),
            max_staleness: w.schedule().config().max_staleness,
        };
        if budget.exceeded() {
            tracing::warn!(message = %budget.message(), "staleness budget exceeded");
        }
        *lock(&self.stats.budget) = Some(budget);
    }
}

/// The customers per second the providers' configured `rate_limit`s allow for a sweep of
/// `customers`, when every provider with customers has one (else `None`: the measured rate is
/// used). Providers are swept concurrently, so the slowest one decides: the sweep takes
/// `max(customers of p ÷ budget of p)`. One request per customer is assumed (a Channel3 or
/// Subtotal read; Violet's pages hold many merchants, so this errs on the safe side).
fn budgeted_customers_per_sec(w: &Watcher, customers: usize) -> Option<f64> {
    let mut per_provider: HashMap<&str, HashSet<&str>> = HashMap::new();
    for t in w.state().connections.values() {
        per_provider
            .entry(t.connection.provider.as_str())
            .or_default()
            .insert(t.connection.customer.id.as_str());
    }
    let mut slowest = 0.0_f64;
    for p in w.providers() {
        let n = per_provider.get(p.name()).map_or(0, HashSet::len);
        if n == 0 {
            continue;
        }
        let rate = p.http_stats()?.configured_rate()?;
        slowest = slowest.max(n as f64 / rate);
    }
    (slowest > 0.0).then(|| customers as f64 / slowest)
}

/// Whether a re-check's error says the provider has no targeted read at all.
pub(crate) fn unsupported(e: &Error) -> bool {
    e.kind() == ErrorKind::Unsupported
}

/// How long a failed re-check of a customer waits before the next.
pub(crate) fn retry_wait(e: &Error, recheck: Duration) -> Duration {
    e.retry_after().map_or(recheck, |d| d.max(recheck))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Customer;
    use crate::watch::Tracked;

    fn conn(provider: &str, customer: &str, n: usize, status: Status) -> Connection {
        Connection::new(
            provider,
            None,
            Customer::new(customer),
            format!("p{n}"),
            crate::model::Role::Source,
            status,
            chrono::DateTime::UNIX_EPOCH,
        )
    }

    fn state(conns: &[Connection]) -> WatchState {
        let mut s = WatchState::default();
        for c in conns {
            s.connections.insert(
                c.id.clone(),
                Tracked {
                    connection: std::sync::Arc::new(c.clone()),
                    since: chrono::DateTime::UNIX_EPOCH,
                    streak: 0,
                    worsening: false,
                },
            );
        }
        s
    }

    fn keys(plan: &Plan) -> Vec<(&str, &str, DueReason)> {
        plan.due
            .iter()
            .map(|d| (d.provider.as_str(), d.customer_id.as_str(), d.reason))
            .collect()
    }

    const MIN: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn not_healthy_pending_and_syncing_are_due_every_recheck_healthy_ones_are_not() {
        let t0 = Instant::now();
        let s = Scheduler::new(ScheduleConfig::default(), t0);
        let st = state(&[
            conn("c3", "healthy", 0, Status::Healthy),
            conn("c3", "off", 0, Status::NotConnected),
            conn("c3", "pending", 0, Status::Pending),
            conn("c3", "syncing", 0, Status::Syncing),
            conn("c3", "broken", 0, Status::ActionRequired),
            // One bad connection of two is enough.
            conn("c3", "mixed", 0, Status::Healthy),
            conn("c3", "mixed", 1, Status::Degraded),
        ]);
        let plan = s.plan(&st, t0 + MIN - Duration::from_secs(1));
        assert!(plan.due.is_empty(), "{plan:?}");
        assert_eq!(plan.next_at, Some(t0 + MIN));
        assert_eq!(plan.customers, 6);
        let plan = s.plan(&st, t0 + MIN);
        let mut due: Vec<&str> = plan.due.iter().map(|d| d.customer_id.as_str()).collect();
        due.sort();
        assert_eq!(due, ["broken", "mixed", "pending", "syncing"]);
        assert!(plan.due.iter().all(|d| d.reason == DueReason::NotHealthy));
        // The healthy ones next become due when they near max_staleness.
        assert_eq!(
            plan.next_at,
            Some(t0 + Duration::from_secs(24 * 3600) - MIN)
        );
        assert_eq!(plan.oldest_age, MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_restarts_the_period_and_in_flight_customers_are_not_due() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(ScheduleConfig::default(), t0);
        let st = state(&[
            conn("c3", "a", 0, Status::Disconnected),
            conn("c3", "b", 0, Status::Disconnected),
        ]);
        s.read("c3", "a", t0 + Duration::from_secs(30));
        let plan = s.plan(&st, t0 + MIN);
        assert_eq!(keys(&plan), [("c3", "b", DueReason::NotHealthy)]);
        assert_eq!(plan.next_at, Some(t0 + Duration::from_secs(90)));
        s.started("c3", "b", t0 + MIN);
        assert!(s.plan(&st, t0 + MIN).due.is_empty());
        // An older read never moves the clock back.
        s.read("c3", "a", t0);
        assert_eq!(s.last_read("c3", "a"), t0 + Duration::from_secs(30));
        // A failure waits a period (or its Retry-After) before the next try.
        s.finished("c3", "b", Some(t0 + Duration::from_secs(200)));
        let plan = s.plan(&st, t0 + Duration::from_secs(120));
        assert_eq!(keys(&plan), [("c3", "a", DueReason::NotHealthy)]);
        assert_eq!(plan.next_at, Some(t0 + Duration::from_secs(200)));
    }

    #[tokio::test(start_paused = true)]
    async fn front_goes_first_in_order_even_for_healthy_or_unknown_customers() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(ScheduleConfig::default(), t0);
        let st = state(&[
            conn("c3", "late", 0, Status::Disconnected),
            conn("c3", "calm", 0, Status::Healthy),
        ]);
        s.front("c3", "calm");
        s.front("c3", "new-from-a-webhook");
        s.front("c3", "calm"); // already there: keeps its place
        let plan = s.plan(&st, t0 + Duration::from_secs(600));
        assert_eq!(
            keys(&plan),
            [
                ("c3", "calm", DueReason::Front),
                ("c3", "new-from-a-webhook", DueReason::Front),
                ("c3", "late", DueReason::NotHealthy),
            ]
        );
        s.read("c3", "calm", t0 + Duration::from_secs(600));
        let plan = s.plan(&st, t0 + Duration::from_secs(600));
        assert_eq!(plan.due.len(), 2);
        assert!(!plan.due.iter().any(|d| d.customer_id == "calm"));
    }

    #[tokio::test(start_paused = true)]
    async fn violet_is_rechecked_at_most_by_its_floor_and_stale_customers_are_read() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(
            ScheduleConfig {
                max_staleness: Duration::from_secs(2 * 3600),
                ..ScheduleConfig::default()
            },
            t0,
        );
        s.set_floor("violet", Duration::from_secs(3600));
        s.disable("plain");
        let st = state(&[
            conn("violet", "m1", 0, Status::ActionRequired),
            conn("c3", "ok", 0, Status::Healthy),
            conn("plain", "x", 0, Status::Disconnected),
        ]);
        assert_eq!(s.period("violet"), Duration::from_secs(3600));
        assert_eq!(s.period("c3"), MIN);
        let plan = s.plan(&st, t0 + Duration::from_secs(3599));
        assert!(plan.due.is_empty());
        assert_eq!(plan.next_at, Some(t0 + Duration::from_secs(3600)));
        let plan = s.plan(&st, t0 + Duration::from_secs(3600));
        assert_eq!(keys(&plan), [("violet", "m1", DueReason::NotHealthy)]);
        // Healthy: read before max_staleness (2 h − recheck_secs), never by a disabled provider.
        let plan = s.plan(&st, t0 + Duration::from_secs(2 * 3600 - 60));
        assert_eq!(
            keys(&plan),
            [
                ("violet", "m1", DueReason::NotHealthy),
                ("c3", "ok", DueReason::Stale)
            ]
        );
        assert_eq!(plan.oldest_age, Duration::from_secs(2 * 3600 - 60));
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_schedule_is_sweeps_only() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(
            ScheduleConfig {
                enabled: false,
                ..ScheduleConfig::default()
            },
            t0,
        );
        s.front("c3", "a");
        let st = state(&[conn("c3", "a", 0, Status::Disconnected)]);
        let plan = s.plan(&st, t0 + Duration::from_secs(48 * 3600));
        assert!(plan.due.is_empty() && plan.next_at.is_none());
    }

    #[test]
    fn the_budget_says_the_numbers() {
        let b = Budget {
            customers: 5000,
            customers_per_sec: 0.05,
            configured: false,
            achievable: Duration::from_secs(100_300),
            max_staleness: Duration::from_secs(86_400),
        };
        assert!(b.exceeded());
        assert_eq!(
            b.message(),
            "5000 customers at 0.05 customers/s (measured sweep rate) take 100300 s per sweep cycle, more than max_staleness 86400 s"
        );
        assert!(!Budget {
            achievable: Duration::from_secs(86_400),
            ..b
        }
        .exceeded());
    }
}
