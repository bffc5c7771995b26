//! The delivery worker over the store's outbox.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use connhealth_core::{Change, ChangeKind, Status};
use connhealth_store::{
    ConnectionFilter, ConnectionItem, Delivery, DeliveryState, DeliveryUpdate, ReminderMark, Store,
    StoredEvent,
};
use reqwest::dns::Resolve;
use serde::Serialize;

use crate::config::{Mute, Sink, SinkKind};
use crate::guard::{Guard, PrivateAddress, SystemResolver};
use crate::message;
use crate::NotifyError;

/// More than this many unsent events of one sink become one digest.
pub const DIGEST_THRESHOLD: usize = 10;

/// Where the worker's "now" comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that starts at `base` and moves with tokio's clock (so a test on tokio's paused
/// clock moves it with `tokio::time::advance`).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starting now at `base`.
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let d = tokio::time::Instant::now() - self.start;
        self.base + chrono::Duration::from_std(d).unwrap_or_default()
    }
}

/// How to build a [`Notifier`].
#[derive(Clone)]
pub struct NotifierOptions {
    /// The resolver behind the SSRF guard (default: the system's).
    pub resolver: Arc<dyn Resolve>,
    /// The clock (default: the system's).
    pub clock: Arc<dyn Clock>,
    /// How many due deliveries one tick reads at most.
    pub batch_limit: usize,
    /// How much of a response body is read (then ignored).
    pub body_cap: usize,
}

impl std::fmt::Debug for NotifierOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifierOptions")
            .field("clock", &self.clock)
            .field("batch_limit", &self.batch_limit)
            .field("body_cap", &self.body_cap)
            .finish_non_exhaustive()
    }
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            resolver: Arc::new(SystemResolver),
            clock: Arc::new(SystemClock),
            batch_limit: 50_000,
            body_cap: 64 * 1024,
        }
    }
}

/// Outcomes counted by [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricOutcome {
    /// An outbox row delivered (alone, in a digest, or announced by its provider's outage).
    Delivered,
    /// An attempt failed and a retry is scheduled.
    Retried,
    /// Given up (a 4xx, a refused address, the schedule exhausted).
    Failed,
    /// Silenced by a mute.
    Muted,
    /// Not sent: the sink answered 410 Gone.
    SinkDisabled,
    /// One HTTP request sent (whatever its outcome).
    Request,
    /// A still-bad connection announced in a `connhealth.reminder` (`remind_after`).
    Reminded,
}

impl MetricOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricOutcome::Delivered => "delivered",
            MetricOutcome::Retried => "retried",
            MetricOutcome::Failed => "failed",
            MetricOutcome::Muted => "muted",
            MetricOutcome::SinkDisabled => "sink_disabled",
            MetricOutcome::Request => "request",
            MetricOutcome::Reminded => "reminded",
        }
    }
}

/// One counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricRow {
    /// The sink.
    pub sink: String,
    /// The outcome.
    pub outcome: MetricOutcome,
    /// How many.
    pub count: u64,
}

/// Delivery counters by sink and outcome (since the worker started).
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(String, MetricOutcome), u64>>,
}

impl Metrics {
    fn add(&self, sink: &str, outcome: MetricOutcome, n: u64) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((sink.to_owned(), outcome)).or_default() += n;
    }

    /// A copy of every counter, sorted by sink then outcome.
    pub fn snapshot(&self) -> Vec<MetricRow> {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.iter()
            .map(|((sink, outcome), count)| MetricRow {
                sink: sink.clone(),
                outcome: *outcome,
                count: *count,
            })
            .collect()
    }

    /// One counter's value.
    pub fn get(&self, sink: &str, outcome: MetricOutcome) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&(sink.to_owned(), outcome)).copied().unwrap_or(0)
    }

    /// The Prometheus text form (`connhealth_notify_deliveries_total{sink,outcome}`; requests
    /// as `connhealth_notify_requests_total{sink}`).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::from(
            "# TYPE connhealth_notify_deliveries_total counter\n\
             # TYPE connhealth_notify_requests_total counter\n",
        );
        for r in self.snapshot() {
            let sink = r.sink.replace('\\', "\\\\").replace('"', "\\\"");
            if r.outcome == MetricOutcome::Request {
                out.push_str(&format!(
                    "connhealth_notify_requests_total{{sink=\"{sink}\"}} {}\n",
                    r.count
                ));
            } else {
                out.push_str(&format!(
                    "connhealth_notify_deliveries_total{{sink=\"{sink}\",outcome=\"{}\"}} {}\n",
                    r.outcome.as_str(),
                    r.count
                ));
            }
        }
        out
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    /// HTTP requests sent.
    pub requests: usize,
    /// Outbox rows delivered.
    pub delivered: usize,
    /// Rows rescheduled.
    pub retried: usize,
    /// Rows given up.
    pub failed: usize,
    /// Rows muted.
    pub muted: usize,
    /// Rows not sent because their sink is disabled.
    pub sink_disabled: usize,
    /// Rows held for their digest window.
    pub held: usize,
    /// Connections announced in a `connhealth.reminder`.
    pub reminded: usize,
}

/// The result of one HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx.
    Delivered(u16),
    /// Try again later: connection error, timeout, 5xx, 429, 3xx.
    Retry {
        /// Why.
        error: String,
        /// A `Retry-After` the sink sent.
        retry_after: Option<Duration>,
    },
    /// Give up on this delivery (another 4xx, a refused address).
    Fail(String),
    /// 410 Gone: the sink is disabled.
    Gone,
}

struct SinkRt {
    sink: Sink,
    client: reqwest::Client,
    disabled: AtomicBool,
}

/// The notification worker: reads due outbox rows from the store, sends them (alone, as a
/// digest, or folded into their provider's outage message), records every outcome back. It
/// keeps no state of its own beyond a sink's 410 flag, so a restart resumes from the store.
pub struct Notifier {
    store: Arc<dyn Store>,
    sinks: Vec<SinkRt>,
    mutes: RwLock<Vec<Mute>>,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    wake: tokio::sync::Notify,
    batch_limit: usize,
    body_cap: usize,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("store", &self.store.name())
            .field(
                "sinks",
                &self.sinks.iter().map(|s| &s.sink.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// One message to send and the rows it settles.
struct Unit<'a> {
    message_id: String,
    /// The rows whose events are the message (one, or a digest's).
    events: Vec<&'a (Delivery, StoredEvent)>,
    /// Rows announced by this message without being listed (a provider outage's connections).
    covered: Vec<&'a (Delivery, StoredEvent)>,
}

impl<'a> Unit<'a> {
    fn rows(&self) -> impl Iterator<Item = &'a (Delivery, StoredEvent)> + '_ {
        self.events.iter().chain(self.covered.iter()).copied()
    }
}

fn is_outage_unknown(c: &Change, outage: &Change) -> bool {
    c.provider == outage.provider
        && c.at == outage.at
        && matches!(
            c.kind,
            ChangeKind::StatusChanged {
                to: Status::Unknown,
                ..
            }
        )
}

impl Notifier {
    /// Validate the `[[notify]]` and `[[mute]]` tables against the process environment and
    /// build the worker: what `serve` calls at start, so a bad table stops it in one line.
    pub fn from_config(
        store: Arc<dyn Store>,
        sinks: &[crate::SinkConfig],
        mutes: Vec<Mute>,
        opts: NotifierOptions,
    ) -> Result<Notifier, NotifyError> {
        let sinks = crate::validate_all(sinks, &mutes, |k| std::env::var(k).ok())?;
        Notifier::new(store, sinks, mutes, opts)
    }

    /// Build the worker; one HTTP client per sink (no redirects, no proxy, its timeout, the
    /// SSRF guard around `opts.resolver`).
    pub fn new(
        store: Arc<dyn Store>,
        sinks: Vec<Sink>,
        mutes: Vec<Mute>,
        opts: NotifierOptions,
    ) -> Result<Notifier, NotifyError> {
        let mut rts = Vec::new();
        for sink in sinks {
            let client = client_for(&sink, &opts)?;
            rts.push(SinkRt {
                sink,
                client,
                disabled: AtomicBool::new(false),
            });
        }
        for m in &mutes {
            m.validate()?;
        }
        Ok(Notifier {
            store,
            sinks: rts,
            mutes: RwLock::new(mutes),
            metrics: Metrics::default(),
            clock: opts.clock,
            wake: tokio::sync::Notify::new(),
            batch_limit: opts.batch_limit.max(1),
            body_cap: opts.body_cap,
        })
    }

    /// The sinks whose filters pass `change`: the `notify` list of its
    /// `connhealth_store::NewEvent`, so the outbox row is written with the event.
    pub fn route(&self, change: &Change) -> Vec<String> {
        crate::route(self.sinks.iter().map(|s| &s.sink), change)
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The sinks.
    pub fn sinks(&self) -> impl Iterator<Item = &Sink> {
        self.sinks.iter().map(|s| &s.sink)
    }

    /// Whether a sink was disabled by a 410 (since this worker started).
    pub fn is_disabled(&self, sink: &str) -> bool {
        self.sinks
            .iter()
            .any(|s| s.sink.name == sink && s.disabled.load(Ordering::Relaxed))
    }

    /// Read which sinks the store says a 410 disabled: a sink whose configuration is unchanged
    /// (same [`Sink::fingerprint`]) stays disabled; one whose configuration changed is
    /// re-enabled (that is the only way back). Call it once at start, before delivering; both
    /// outcomes are logged. Returns the names that stay disabled.
    pub async fn restore(&self) -> Result<Vec<String>, NotifyError> {
        let mut still = Vec::new();
        for d in self.store.disabled_sinks().await? {
            let Some(rt) = self.rt(&d.sink) else {
                continue;
            };
            if rt.sink.fingerprint == d.fingerprint {
                rt.disabled.store(true, Ordering::Relaxed);
                tracing::warn!(
                    sink = %d.sink,
                    since = %d.disabled_at.to_rfc3339(),
                    "notify: the sink stays disabled (it answered 410 Gone); change its url or secret to re-enable it"
                );
                still.push(d.sink);
            } else {
                self.store.enable_sink(&d.sink).await?;
                tracing::warn!(
                    sink = %d.sink,
                    "notify: the sink was disabled by a 410 Gone; its configuration changed, so it is enabled again"
                );
            }
        }
        Ok(still)
    }

    /// The Prometheus text of [`Notifier::metrics`] plus `connhealth_notify_sink_disabled{sink}`
    /// (1 while a 410 keeps the sink disabled) for every configured sink.
    pub fn render_prometheus(&self) -> String {
        let mut out = self.metrics.render_prometheus();
        out.push_str("# TYPE connhealth_notify_sink_disabled gauge\n");
        for rt in &self.sinks {
            let sink = rt.sink.name.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!(
                "connhealth_notify_sink_disabled{{sink=\"{sink}\"}} {}\n",
                u8::from(rt.disabled.load(Ordering::Relaxed))
            ));
        }
        out
    }

    /// Replace the mutes from the config (the store's mutes, `POST /v1/mutes`, are read at
    /// every tick and apply as well).
    pub fn set_mutes(&self, mutes: Vec<Mute>) -> Result<(), NotifyError> {
        for m in &mutes {
            m.validate()?;
        }
        *self.mutes.write().unwrap_or_else(|p| p.into_inner()) = mutes;
        Ok(())
    }

    /// The config's mutes (see [`Notifier::set_mutes`]).
    pub fn mutes(&self) -> Vec<Mute> {
        self.mutes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Make a running [`Notifier::spawn`] loop tick now (after a commit with outbox rows).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Tick every `every` (and on [`Notifier::wake`]) until the handle is aborted. Errors of a
    /// tick are logged and the loop goes on.
    pub fn spawn(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.tick().await {
                    tracing::warn!(error = %e, "notify: a delivery tick failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = self.wake.notified() => {}
                }
            }
        })
    }

    /// Like [`Notifier::spawn`], but with several replicas on one PostgreSQL store only the
    /// holder of the store's lease `notify` delivers: each round takes or renews the lease
    /// for `holder` (for `ttl`) and ticks only when it has it; a holder that dies loses it
    /// `ttl` later, and another replica takes over.
    pub fn spawn_leased(
        self: Arc<Self>,
        every: Duration,
        holder: String,
        ttl: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(30));
        tokio::spawn(async move {
            let mut leading = false;
            loop {
                match self
                    .store
                    .try_lease(LEASE, &holder, ttl, self.clock.now())
                    .await
                {
                    Ok(true) => {
                        if !leading {
                            tracing::info!(%holder, "notify: this process delivers notifications (it holds the lease)");
                        }
                        leading = true;
                        if let Err(e) = self.tick().await {
                            tracing::warn!(error = %e, "notify: a delivery tick failed");
                        }
                    }
                    Ok(false) => {
                        if leading {
                            tracing::info!(%holder, "notify: another replica delivers notifications now");
                        }
                        leading = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "notify: cannot take the delivery lease"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = self.wake.notified() => {}
                }
            }
        })
    }

    fn rt(&self, name: &str) -> Option<&SinkRt> {
        self.sinks.iter().find(|s| s.sink.name == name)
    }

    async fn set(
        &self,
        rows: impl IntoIterator<Item = &(Delivery, StoredEvent)>,
        state: DeliveryState,
        next: DateTime<Utc>,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<usize, NotifyError> {
        let ids: Vec<i64> = rows.into_iter().map(|(d, _)| d.id).collect();
        let n = ids.len();
        if n > 0 {
            self.store
                .update_deliveries(
                    ids,
                    DeliveryUpdate {
                        state,
                        next_attempt_at: next,
                        last_error: error,
                    },
                    now,
                )
                .await?;
        }
        Ok(n)
    }

    /// [`Notifier::set`] and count the rows under `outcome`.
    async fn settle(
        &self,
        sink: &str,
        rows: impl IntoIterator<Item = &(Delivery, StoredEvent)>,
        state: DeliveryState,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<usize, NotifyError> {
        let n = self.set(rows, state, now, error, now).await?;
        let outcome = match state {
            DeliveryState::Delivered => MetricOutcome::Delivered,
            DeliveryState::Muted => MetricOutcome::Muted,
            DeliveryState::SinkDisabled => MetricOutcome::SinkDisabled,
            _ => MetricOutcome::Failed,
        };
        self.metrics.add(sink, outcome, n as u64);
        Ok(n)
    }

    /// One pass over the due deliveries.
    pub async fn tick(&self) -> Result<TickReport, NotifyError> {
        let now = self.clock.now();
        let due = self.store.due_deliveries(now, self.batch_limit).await?;
        let mut report = TickReport::default();
        let mut by_sink: BTreeMap<&str, Vec<&(Delivery, StoredEvent)>> = BTreeMap::new();
        for row in &due {
            by_sink.entry(row.0.sink.as_str()).or_default().push(row);
        }
        let mut mutes = self.mutes();
        let reminds = self.sinks.iter().any(|s| s.sink.remind_after.is_some());
        if !due.is_empty() || reminds {
            mutes.extend(self.store.mutes(now).await?.iter().map(Mute::from));
        }
        for (name, rows) in by_sink {
            let Some(rt) = self.rt(name) else {
                let n = self
                    .set(
                        rows,
                        DeliveryState::Failed,
                        now,
                        Some(format!("no sink named {name:?} is configured")),
                        now,
                    )
                    .await?;
                report.failed += n;
                continue;
            };
            if rt.disabled.load(Ordering::Relaxed) {
                report.sink_disabled += self
                    .settle(
                        name,
                        rows,
                        DeliveryState::SinkDisabled,
                        Some(GONE.into()),
                        now,
                    )
                    .await?;
                continue;
            }
            // Mutes first: muted rows are settled (one transaction per mute), never sent.
            let mut live = Vec::new();
            let mut muted: BTreeMap<usize, Vec<&(Delivery, StoredEvent)>> = BTreeMap::new();
            for row in rows {
                match mutes.iter().position(|m| m.silences(&row.1.change, now)) {
                    Some(i) => muted.entry(i).or_default().push(row),
                    None => live.push(row),
                }
            }
            for (i, rows) in muted {
                let m = &mutes[i];
                let why = if m.reason.is_empty() {
                    format!("muted until {}", m.until.to_rfc3339())
                } else {
                    format!("muted until {}: {}", m.until.to_rfc3339(), m.reason)
                };
                report.muted += self
                    .settle(name, rows, DeliveryState::Muted, Some(why), now)
                    .await?;
            }
            // A provider outage is one message: its connections' moves to `unknown` in the
            // same poll are announced by it.
            let outages: Vec<&(Delivery, StoredEvent)> = live
                .iter()
                .copied()
                .filter(|r| matches!(r.1.change.kind, ChangeKind::ProviderUnavailable { .. }))
                .collect();
            let mut covered: BTreeMap<i64, Vec<&(Delivery, StoredEvent)>> = BTreeMap::new();
            let mut listed = Vec::new();
            for row in live {
                match outages
                    .iter()
                    .find(|o| is_outage_unknown(&row.1.change, &o.1.change))
                {
                    Some(o) => covered.entry(o.0.id).or_default().push(row),
                    None => listed.push(row),
                }
            }
            if listed.is_empty() {
                continue;
            }
            // The digest window: hold a few fresh events until the oldest is that old.
            if let Some(window) = rt.sink.digest {
                let oldest = listed.iter().map(|r| r.1.change.at).min().unwrap_or(now);
                let fresh = listed.iter().all(|r| r.0.attempts == 0);
                let window = chrono::Duration::from_std(window).unwrap_or_default();
                if listed.len() <= DIGEST_THRESHOLD && fresh && oldest + window > now {
                    report.held += listed.len() + covered.values().map(Vec::len).sum::<usize>();
                    continue;
                }
            }
            let units: Vec<Unit<'_>> = if listed.len() > DIGEST_THRESHOLD {
                let first = listed.iter().map(|r| r.0.id).min().unwrap_or_default();
                let last = listed.iter().map(|r| r.0.id).max().unwrap_or_default();
                let cov = listed
                    .iter()
                    .flat_map(|r| covered.remove(&r.0.id).unwrap_or_default())
                    .collect();
                vec![Unit {
                    message_id: format!("msg_digest_{first}_{last}"),
                    events: listed,
                    covered: cov,
                }]
            } else {
                listed
                    .into_iter()
                    .map(|r| Unit {
                        message_id: r.0.message_id.clone(),
                        covered: covered.remove(&r.0.id).unwrap_or_default(),
                        events: vec![r],
                    })
                    .collect()
            };
            for unit in units {
                if rt.disabled.load(Ordering::Relaxed) {
                    report.sink_disabled += self
                        .settle(
                            name,
                            unit.rows(),
                            DeliveryState::SinkDisabled,
                            Some(GONE.into()),
                            now,
                        )
                        .await?;
                    continue;
                }
                self.send_unit(rt, &unit, now, &mut report).await?;
            }
        }
        if reminds {
            self.remind(&mutes, now, &mut report).await?;
        }
        Ok(report)
    }

    async fn send_unit(
        &self,
        rt: &SinkRt,
        unit: &Unit<'_>,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), NotifyError> {
        let name = rt.sink.name.as_str();
        let body = if unit.events.len() == 1 {
            let e = &unit.events[0].1;
            match rt.sink.kind {
                SinkKind::Webhook => message::event_body(e, now),
                SinkKind::Slack => message::slack_event(e),
            }
        } else {
            let evs: Vec<&StoredEvent> = unit.events.iter().map(|r| &r.1).collect();
            match rt.sink.kind {
                SinkKind::Webhook => message::digest_body(&evs, now),
                SinkKind::Slack => message::slack_digest(&evs),
            }
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| NotifyError::Internal(format!("encoding a message: {e}")))?;
        let attempt = self.attempt(rt, &unit.message_id, &body, now).await;
        // A retry counts from the attempt's end (a hang took the whole timeout).
        let now = self.clock.now();
        report.requests += 1;
        self.metrics.add(name, MetricOutcome::Request, 1);
        let attempts = unit.rows().map(|r| r.0.attempts).max().unwrap_or(0);
        match attempt {
            Attempt::Delivered(_) => {
                report.delivered += self
                    .settle(name, unit.rows(), DeliveryState::Delivered, None, now)
                    .await?;
            }
            Attempt::Retry { error, retry_after } => {
                let step = rt.sink.retry_schedule.get(attempts as usize).copied();
                match step {
                    Some(step) => {
                        let (delay, error) = match retry_after {
                            Some(ra) if ra > step => (
                                step,
                                format!(
                                    "{error} (Retry-After {}s capped at {}s, the next step)",
                                    ra.as_secs(),
                                    step.as_secs()
                                ),
                            ),
                            Some(ra) => (ra, format!("{error} (Retry-After {}s)", ra.as_secs())),
                            None => (step, error),
                        };
                        tracing::warn!(
                            sink = name,
                            message_id = %unit.message_id,
                            attempt = attempts + 1,
                            retry_in_secs = delay.as_secs(),
                            %error,
                            "notify: delivery failed, will retry"
                        );
                        let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
                        let n = self
                            .set(unit.rows(), DeliveryState::Pending, next, Some(error), now)
                            .await?;
                        self.metrics.add(name, MetricOutcome::Retried, n as u64);
                        report.retried += n;
                    }
                    None => {
                        let error = format!("{error}; gave up after {} attempts", attempts + 1);
                        tracing::warn!(sink = name, message_id = %unit.message_id, %error, "notify: delivery failed");
                        report.failed += self
                            .settle(name, unit.rows(), DeliveryState::Failed, Some(error), now)
                            .await?;
                    }
                }
            }
            Attempt::Fail(error) => {
                tracing::warn!(sink = name, message_id = %unit.message_id, %error, "notify: delivery failed, not retried");
                report.failed += self
                    .settle(name, unit.rows(), DeliveryState::Failed, Some(error), now)
                    .await?;
            }
            Attempt::Gone => {
                let mut n = self
                    .set(
                        unit.rows(),
                        DeliveryState::SinkDisabled,
                        now,
                        Some(GONE.into()),
                        now,
                    )
                    .await?;
                n += self.disable_on_gone(rt, now).await?;
                self.metrics
                    .add(name, MetricOutcome::SinkDisabled, n as u64);
                report.sink_disabled += n;
            }
        }
        Ok(())
    }

    /// A 410: the sink is disabled, durably (in the store, with its fingerprint), said in
    /// the log, and its other pending rows are settled `sink_disabled`; how many.
    async fn disable_on_gone(&self, rt: &SinkRt, now: DateTime<Utc>) -> Result<usize, NotifyError> {
        let name = rt.sink.name.as_str();
        rt.disabled.store(true, Ordering::Relaxed);
        self.store
            .disable_sink(connhealth_store::DisabledSink {
                sink: name.to_owned(),
                fingerprint: rt.sink.fingerprint.clone(),
                disabled_at: now,
                reason: GONE.into(),
            })
            .await?;
        tracing::error!(
            sink = name,
            "notify: the sink answered 410 Gone; it is disabled (kept in the store, across restarts) until its url or secret changes in the config"
        );
        let mut n = 0;
        // Its other pending rows (retries not yet due) are settled too.
        loop {
            let pending = self
                .store
                .deliveries(Some(name), Some(DeliveryState::Pending), 10_000)
                .await?;
            if pending.is_empty() {
                break;
            }
            let ids: Vec<i64> = pending.iter().map(|d| d.id).collect();
            n += ids.len();
            self.store
                .update_deliveries(
                    ids,
                    DeliveryUpdate {
                        state: DeliveryState::SinkDisabled,
                        next_attempt_at: now,
                        last_error: Some(GONE.into()),
                    },
                    now,
                )
                .await?;
        }
        Ok(n)
    }

    /// `remind_after`: one `connhealth.reminder` per sink listing the connections still bad
    /// (degraded, disconnected, action_required) for another `remind_after` since their status
    /// began, through the sink's filters and the mutes. What was sent is kept in the store per
    /// (sink, connection, status start), so a reminder goes once per `remind_after` across
    /// restarts; a failed attempt is tried again after the schedule's first step.
    async fn remind(
        &self,
        mutes: &[Mute],
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), NotifyError> {
        let mut bad: Option<Vec<ConnectionItem>> = None;
        for rt in &self.sinks {
            let Some(every) = rt.sink.remind_after.filter(|d| !d.is_zero()) else {
                continue;
            };
            if rt.disabled.load(Ordering::Relaxed) {
                continue;
            }
            let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
            if bad.is_none() {
                bad = Some(self.bad_connections().await?);
            }
            let items = bad.as_deref().unwrap_or_default();
            if items.is_empty() {
                continue;
            }
            let name = rt.sink.name.as_str();
            let marks: BTreeMap<String, ReminderMark> = self
                .store
                .reminder_marks(name)
                .await?
                .into_iter()
                .map(|m| (m.connection_id.clone(), m))
                .collect();
            let mut due: Vec<(&ConnectionItem, i64, i64)> = Vec::new();
            for it in items {
                let age = now - it.since;
                if age < every {
                    continue;
                }
                let c = &it.connection;
                let change = Change {
                    kind: ChangeKind::StatusChanged {
                        from: c.status,
                        to: c.status,
                    },
                    connection_id: Some(c.id.clone()),
                    provider: c.provider.clone(),
                    customer_id: Some(c.customer.id.clone()),
                    platform: Some(c.platform.clone()),
                    at: now,
                    since: Some(it.since),
                };
                if !rt.sink.filter.matches(&change)
                    || mutes.iter().any(|m| m.silences(&change, now))
                {
                    continue;
                }
                let k = age.num_milliseconds() / every.num_milliseconds().max(1);
                let (sent, next) = match marks.get(&c.id) {
                    Some(m) if m.since == it.since => (m.sent, m.next_at),
                    _ => (0, it.since),
                };
                if sent < k && next <= now {
                    due.push((it, k, sent));
                }
            }
            if due.is_empty() {
                continue;
            }
            let listed: Vec<&ConnectionItem> = due.iter().map(|(it, _, _)| *it).collect();
            let body = match rt.sink.kind {
                SinkKind::Webhook => message::reminder_body(&listed, now),
                SinkKind::Slack => message::slack_reminder(&listed, now),
            };
            let body = serde_json::to_vec(&body)
                .map_err(|e| NotifyError::Internal(format!("encoding a message: {e}")))?;
            let id = format!("msg_remind_{}", now.timestamp_millis());
            let a = attempt(rt, self.body_cap, &id, &body, now).await;
            report.requests += 1;
            self.metrics.add(name, MetricOutcome::Request, 1);
            let n = due.len();
            let marks_after = |delivered: bool, next: DateTime<Utc>| -> Vec<ReminderMark> {
                due.iter()
                    .map(|(it, k, sent)| ReminderMark {
                        connection_id: it.connection.id.clone(),
                        since: it.since,
                        sent: if delivered { *k } else { *sent },
                        next_at: next,
                    })
                    .collect()
            };
            match a {
                Attempt::Delivered(_) => {
                    self.store
                        .set_reminder_marks(name, marks_after(true, now))
                        .await?;
                    self.metrics.add(name, MetricOutcome::Reminded, n as u64);
                    report.reminded += n;
                }
                Attempt::Retry { error, .. } | Attempt::Fail(error) => {
                    let step = rt
                        .sink
                        .retry_schedule
                        .first()
                        .copied()
                        .unwrap_or(Duration::from_secs(5));
                    let next = now + chrono::Duration::from_std(step).unwrap_or_default();
                    tracing::warn!(sink = name, %error, connections = n, "notify: a reminder failed, will try again");
                    self.store
                        .set_reminder_marks(name, marks_after(false, next))
                        .await?;
                }
                Attempt::Gone => {
                    let n = self.disable_on_gone(rt, now).await?;
                    self.metrics
                        .add(name, MetricOutcome::SinkDisabled, n as u64);
                    report.sink_disabled += n;
                }
            }
        }
        Ok(())
    }

    /// Every stored connection in a bad status.
    async fn bad_connections(&self) -> Result<Vec<ConnectionItem>, NotifyError> {
        let filter = ConnectionFilter {
            status: vec![
                Status::Degraded,
                Status::Disconnected,
                Status::ActionRequired,
            ],
            ..ConnectionFilter::default()
        };
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .store
                .connections(&filter, cursor.as_deref(), 1000)
                .await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Send one message to a sink (signed for a webhook sink) and classify the answer.
    async fn attempt(
        &self,
        rt: &SinkRt,
        message_id: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Attempt {
        attempt(rt, self.body_cap, message_id, body, now).await
    }

    /// Send one signed test event to a sink now (`connhealth notify test --sink NAME`),
    /// outside the outbox.
    pub async fn send_test(&self, sink: &str) -> Result<Attempt, NotifyError> {
        let rt = self
            .rt(sink)
            .ok_or_else(|| NotifyError::Config(format!("no sink named {sink:?}")))?;
        let a = test_attempt(rt, sink, self.body_cap, self.clock.now()).await?;
        self.metrics.add(sink, MetricOutcome::Request, 1);
        Ok(a)
    }
}

/// One sink's HTTP client: no redirects, no proxy, its timeout, the SSRF guard.
fn client_for(sink: &Sink, opts: &NotifierOptions) -> Result<reqwest::Client, NotifyError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(sink.timeout)
        .connect_timeout(sink.timeout)
        .user_agent(concat!("connhealth-notify/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(Guard {
            inner: opts.resolver.clone(),
            allow_private: sink.allow_private,
        }))
        .build()
        .map_err(|e| {
            NotifyError::Config(format!(
                "notify {:?}: HTTP client: {}",
                sink.name,
                e.without_url()
            ))
        })
}

/// Send one signed test event to `sink` now (`connhealth notify test --sink NAME`), without a
/// store: the same client, signature and classification as a real delivery.
pub async fn send_test(sink: Sink, opts: NotifierOptions) -> Result<Attempt, NotifyError> {
    let name = sink.name.clone();
    let client = client_for(&sink, &opts)?;
    let rt = SinkRt {
        sink,
        client,
        disabled: AtomicBool::new(false),
    };
    test_attempt(&rt, &name, opts.body_cap, opts.clock.now()).await
}

async fn test_attempt(
    rt: &SinkRt,
    sink: &str,
    body_cap: usize,
    now: DateTime<Utc>,
) -> Result<Attempt, NotifyError> {
    let id = format!("msg_test_{}", now.timestamp_micros());
    let body = match rt.sink.kind {
        SinkKind::Webhook => serde_json::json!({
            "type": "connhealth.test",
            "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "data": {"message": "a test notification from connhealth", "sink": sink},
        }),
        SinkKind::Slack => serde_json::json!({
            "text": format!("connhealth: a test notification for sink {}", message::slack_escape(sink)),
        }),
    };
    let body = serde_json::to_vec(&body)
        .map_err(|e| NotifyError::Internal(format!("encoding a message: {e}")))?;
    Ok(attempt(rt, body_cap, &id, &body, now).await)
}

/// Send one message (signed for a webhook sink) and classify the answer.
async fn attempt(
    rt: &SinkRt,
    body_cap: usize,
    message_id: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Attempt {
    let ts = now.timestamp();
    let mut req = rt
        .client
        .post(rt.sink.url.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec());
    if let Some(signer) = &rt.sink.signer {
        req = req
            .header("webhook-id", message_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signer.sign(message_id, ts, body));
    }
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return classify_error(&e, rt.sink.timeout),
    };
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now));
    // Read (capped) and ignore the body: it is never logged or stored.
    let mut read = 0usize;
    while read < body_cap {
        match resp.chunk().await {
            Ok(Some(c)) => read += c.len(),
            _ => break,
        }
    }
    drop(resp);
    let code = status.as_u16();
    if status.is_success() {
        Attempt::Delivered(code)
    } else if code == 410 {
        Attempt::Gone
    } else if status.is_redirection() {
        Attempt::Retry {
            error: format!("HTTP {code}: a redirect (not followed)"),
            retry_after: None,
        }
    } else if code == 429 || status.is_server_error() {
        Attempt::Retry {
            error: format!("HTTP {code}"),
            retry_after,
        }
    } else {
        Attempt::Fail(format!("HTTP {code}"))
    }
}

const GONE: &str = "the sink answered 410 Gone and is disabled";

/// The store lease whose holder delivers (see [`Notifier::spawn_leased`]).
pub const LEASE: &str = "notify";

fn classify_error(e: &reqwest::Error, timeout: Duration) -> Attempt {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut chain = Vec::new();
    while let Some(s) = src {
        if s.downcast_ref::<PrivateAddress>().is_some() {
            return Attempt::Fail(PrivateAddress.to_string());
        }
        chain.push(s.to_string());
        src = s.source();
    }
    if e.is_timeout() {
        return Attempt::Retry {
            error: format!("timed out after {}s", timeout.as_secs_f64()),
            retry_after: None,
        };
    }
    // reqwest's own text names the URL (a Slack URL is a credential): only its sources.
    let detail = chain.iter().skip(1).cloned().collect::<Vec<_>>().join(": ");
    Attempt::Retry {
        error: if detail.is_empty() {
            "connection error".to_owned()
        } else {
            format!("connection error: {detail}")
        },
        retry_after: None,
    }
}

/// `Retry-After`: seconds or an HTTP date.
pub fn parse_retry_after(v: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at: DateTime<Utc> = httpdate::parse_http_date(v).ok()?.into();
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}
