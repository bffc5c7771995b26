//! # connhealth-server
//!
//! The HTTP face of connhealth (`connhealth serve`): a [`Server`] owns a [`Watcher`], polls it
//! in the background (one poll at once, then one every [`Watcher::next_delay`]) and serves what
//! it learns:
//!
//! | route | what |
//! | --- | --- |
//! | `GET /v1/report` | the current [`HealthReport`](connhealth_core::HealthReport) (the JSON of ARCHITECTURE.md), strong `ETag`, `If-None-Match` → 304, filters `provider`, `status`, `customer` |
//! | `GET /v1/summary` | counts by status and by provider × status, provider outcomes, last poll, `last_webhook_at` |
//! | `GET /v1/connections/{id}` | one [`Connection`](connhealth_core::Connection) (the id percent-encoded as one path segment) |
//! | `GET /v1/events` | Server-Sent Events: every [`Change`](connhealth_core::Change), `Last-Event-ID` resume |
//! | `GET /v1/connections`, `GET /v1/connections/{id}/history`, `GET /v1/uptime`, `GET /v1/events?after=` | from the store, with [`Server::with_store`] (paged connections with `since`, grouped by customer with `group=customer`, 30-day status timelines with `timeline=30d`; history, uptime, stored events); 503 `no_store` without one |
//! | `GET /metrics` | Prometheus text exposition 0.0.4 |
//! | `GET /healthz`, `GET /readyz` | liveness (always 200) and readiness (200 once the first poll finished) |
//! | `GET /openapi.json` | an OpenAPI 3.1 document of all of the above |
//! | `GET /` | the dashboard: one self-contained HTML page over `/v1/summary` and `/v1/connections` pages, live over `/v1/events` |
//!
//! JSON bodies are compressed (gzip, br) when asked; the event stream never is.
//!
//! With a PostgreSQL store several servers are replicas of one another ([`replica`]): the
//! holder of the store lease `leader` polls, drains the queue and commits (fenced by the
//! lease); the others serve every route from the store and relay refreshes and actions to it.
//!
//! The [`routes`] module documents each route's exact behaviour, the filters, the event stream
//! and the security rules (bearer token, closed CORS, no request bodies, CSP).
//!
//! ## Example
//!
//! Serve a watcher (here without providers) on a free loopback port, ask `/healthz`, stop:
//!
//! ```
//! use connhealth_core::watch::{WatchConfig, Watcher};
//! use connhealth_server::{Server, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let watcher = Watcher::new(WatchConfig::default());
//! let config = ServerConfig::new("127.0.0.1:0".parse()?);
//! let bound = Server::new(config, watcher)?.bind().await?;
//! let addr = bound.local_addr();
//!
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(bound.serve(async {
//!     let _ = stopped.await;
//! }));
//!
//! let body: serde_json::Value = reqwest::get(format!("http://{addr}/healthz"))
//!     .await?
//!     .json()
//!     .await?;
//! assert_eq!(body, serde_json::json!({ "status": "ok" }));
//!
//! stop.send(()).ok();
//! serving.await??; // graceful: the poller and every open event stream end with the server
//! # Ok(())
//! # }
//! ```
//!
//! A non-loopback address without a token is refused, so health data is never served
//! unauthenticated off this machine:
//!
//! ```
//! use connhealth_core::watch::{WatchConfig, Watcher};
//! use connhealth_core::Secret;
//! use connhealth_server::{Server, ServerConfig, ServerError};
//!
//! let open = ServerConfig::new("0.0.0.0:8080".parse().unwrap());
//! let err = Server::new(open, Watcher::new(WatchConfig::default())).unwrap_err();
//! assert!(matches!(err, ServerError::TokenRequired { .. }));
//!
//! let mut guarded = ServerConfig::new("0.0.0.0:8080".parse().unwrap());
//! guarded.token = Some(Secret::new("a-long-random-token"));
//! assert!(Server::new(guarded, Watcher::new(WatchConfig::default())).is_ok());
//! ```
#![forbid(unsafe_code)]

pub(crate) mod action;
mod conn;
mod http;
mod metrics;
mod notifications;
mod page_cache;
pub mod replica;
pub mod routes;
mod schedule;
mod sse;
mod state;
mod stored;
mod webhook;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use connhealth_core::http::HttpStats;
use connhealth_core::schedule::{PollLoop, Step};
use connhealth_core::watch::{Poll, WatchState, Watcher};
use connhealth_core::Secret;
use connhealth_store::{Journal, Source, Written};
use tokio::net::TcpListener;

pub use conn::overflow_connections;
pub use routes::router;
pub use state::{AppState, Warning};
pub use webhook::DEFAULT_QUEUE_BOUND;

/// The default size of the event ring buffer that `Last-Event-ID` resumes from.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;
/// The default [`ServerConfig::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default [`ServerConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default [`ServerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// The shortest bearer token accepted off loopback, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen. Port 0 picks a free port (see [`Bound::local_addr`]).
    pub listen: SocketAddr,
    /// The bearer token every route except `/healthz` requires. Mandatory unless `listen` is a
    /// loopback address.
    pub token: Option<Secret>,
    /// How many change events are kept for `Last-Event-ID` resume (default
    /// [`DEFAULT_EVENT_BUFFER`]; at least 1).
    pub event_buffer: usize,
    /// How long a client may take to send a complete request head, from when the connection
    /// opens or the previous response ended (default [`DEFAULT_HEADER_READ_TIMEOUT`]). A
    /// slow-loris client is closed after it.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves for this long is closed (default
    /// [`DEFAULT_IDLE_TIMEOUT`]). Event streams send a keep-alive comment often enough never
    /// to be idle.
    pub idle_timeout: Duration,
    /// At most this many connections are served at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`]; at least 1). Past it, up to
    /// [`overflow_connections`]`(max_connections)` more answer `/healthz` only (503 `busy`
    /// elsewhere); past that, a connection is closed at once. Hitting the cap is logged.
    pub max_connections: usize,
    /// At most this many targeted refreshes (from webhooks) wait in the store's queue
    /// (default [`DEFAULT_QUEUE_BOUND`]; at least 1); past it a webhook that needs one is
    /// answered 429 with `Retry-After` and nothing is recorded.
    pub queue_bound: usize,
    /// The admin token: `POST /v1/refresh` needs it (`Authorization: Bearer`), on loopback
    /// too (none: those routes answer 403); it also opens every `GET`. At least
    /// [`MIN_TOKEN_BYTES`].
    pub admin_token: Option<Secret>,
}

impl ServerConfig {
    /// Listen on `listen`, no token, the default event buffer.
    pub fn new(listen: SocketAddr) -> Self {
        ServerConfig {
            listen,
            token: None,
            event_buffer: DEFAULT_EVENT_BUFFER,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            queue_bound: DEFAULT_QUEUE_BOUND,
            admin_token: None,
        }
    }
}

/// Why a server could not be set up or stopped serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// `listen` is not a loopback address and no token is configured.
    #[error("refusing to serve health data on {listen} without a token: set a bearer token, or listen on a loopback address (127.0.0.1, ::1)")]
    TokenRequired {
        /// The address that was asked for.
        listen: SocketAddr,
    },
    /// The configured token is empty (or only whitespace).
    #[error("the bearer token is empty")]
    EmptyToken,
    /// Off loopback, the token is shorter than [`MIN_TOKEN_BYTES`].
    #[error("the bearer token is too short to serve off loopback: use at least {min} random bytes", min = MIN_TOKEN_BYTES)]
    TokenTooShort,
    /// The admin token is shorter than [`MIN_TOKEN_BYTES`] (it guards state-changing routes,
    /// on loopback too).
    #[error("the admin token is too short: use at least {min} random bytes", min = MIN_TOKEN_BYTES)]
    AdminTokenTooShort,
    /// A timeout is zero.
    #[error("{0} must be positive")]
    ZeroTimeout(&'static str),
    /// The address could not be bound.
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        /// The address that was asked for.
        listen: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
    /// The background poller panicked.
    #[error("the background poller panicked: {0}")]
    PollerPanicked(String),
}

pub(crate) type PollHook = Box<dyn FnMut(&Poll, &WatchState) + Send + 'static>;
pub(crate) type StoreHook = Box<dyn FnMut(&Written) + Send + 'static>;
pub(crate) type PersistHook = Box<dyn FnMut(&WatchState) -> Result<(), String> + Send + 'static>;

/// A configured server, not yet listening. See the [crate docs](crate) for an example.
pub struct Server {
    config: ServerConfig,
    watcher: Watcher,
    state: AppState,
    hook: Option<PollHook>,
    persist: Option<PersistHook>,
    journal: Option<(Journal, Option<StoreHook>)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("watcher", &self.watcher)
            .field("poll_hook", &self.hook.is_some())
            .field("persist", &self.persist.is_some())
            .field(
                "store",
                &self.journal.as_ref().map(|(j, _)| j.store().name()),
            )
            .finish()
    }
}

/// Whether `addr` only accepts connections from this machine (IPv4-mapped IPv6 included).
fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

impl Server {
    /// Check the settings and take the watcher.
    ///
    /// A non-loopback `listen` without a token is [`ServerError::TokenRequired`]; an empty
    /// token is [`ServerError::EmptyToken`]; off loopback, a token shorter than
    /// [`MIN_TOKEN_BYTES`] is [`ServerError::TokenTooShort`]; a zero timeout is
    /// [`ServerError::ZeroTimeout`]. `event_buffer` and `max_connections` 0 are raised to 1.
    pub fn new(mut config: ServerConfig, watcher: Watcher) -> Result<Server, ServerError> {
        if config.token.as_ref().is_some_and(Secret::is_empty) {
            return Err(ServerError::EmptyToken);
        }
        let loopback = is_loopback(&config.listen);
        if config.token.is_none() && !loopback {
            return Err(ServerError::TokenRequired {
                listen: config.listen,
            });
        }
        if !loopback
            && config
                .token
                .as_ref()
                .is_some_and(|t| t.expose().len() < MIN_TOKEN_BYTES)
        {
            return Err(ServerError::TokenTooShort);
        }
        if config
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose().trim().len() < MIN_TOKEN_BYTES)
        {
            return Err(ServerError::AdminTokenTooShort);
        }
        if config.header_read_timeout.is_zero() {
            return Err(ServerError::ZeroTimeout("header_read_timeout"));
        }
        if config.idle_timeout.is_zero() {
            return Err(ServerError::ZeroTimeout("idle_timeout"));
        }
        config.event_buffer = config.event_buffer.max(1);
        config.max_connections = config.max_connections.max(1);
        let state = AppState::new(config.token.clone(), config.event_buffer);
        state
            .intake()
            .set_providers(watcher.providers().cloned().collect());
        state.intake().set_bound(config.queue_bound);
        if let Some(admin) = &config.admin_token {
            state.set_admin_token(admin.clone());
        }
        for p in watcher.providers() {
            if let Some(stats) = p.http_stats() {
                state.add_http_stats(p.name().to_owned(), stats);
            }
        }
        // Event streams must never look idle: a keep-alive comment at least three times per
        // idle timeout.
        state.set_keep_alive(
            sse::KEEP_ALIVE
                .min(config.idle_timeout / 3)
                .max(Duration::from_millis(100)),
        );
        Ok(Server {
            config,
            watcher,
            state,
            hook: None,
            persist: None,
            journal: None,
        })
    }

    /// Export `connhealth_http_retries_total{provider}` from these counters instead of the
    /// ones the provider of that name reports through [`connhealth_core::Provider::http_stats`]
    /// (which [`Server::new`] registers by itself). Without any, the metric is left out.
    pub fn with_http_stats(self, provider: impl Into<String>, stats: Arc<HttpStats>) -> Self {
        self.state.add_http_stats(provider.into(), stats);
        self
    }

    /// Call `hook` after every poll, with the poll and the watcher's memory (e.g. to persist
    /// [`WatchState`] with [`WatchState::save`]). It runs on the poller task: keep it short.
    pub fn on_poll(mut self, hook: impl FnMut(&Poll, &WatchState) + Send + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// Persist the watcher's memory after every poll with `save` (e.g.
    /// [`StateFile::save`](connhealth_core::watch::StateFile::save)). A failure (`Err(message)`) never stops
    /// serving: it is counted in `/metrics` (`connhealth_state_save_failures_total`,
    /// `connhealth_state_save_failing`), shown as the `/readyz` warning `state_save_failed`
    /// until a save works again, and logged at `error` once per failure streak. Runs on the
    /// poller task after the [`Server::on_poll`] hook.
    pub fn persist(
        mut self,
        save: impl FnMut(&WatchState) -> Result<(), String> + Send + 'static,
    ) -> Self {
        self.persist = Some(Box::new(save));
        self
    }

    /// Remember through a store: after every poll the journal commits the poll in one
    /// transaction ([`Journal::record`]); its events are published only once stored, with the
    /// store's ids as SSE ids (instead of this server's numbering), `Last-Event-ID` resumes from
    /// the store, and the store-backed routes (`/v1/connections`, `/v1/connections/{id}/history`,
    /// `/v1/uptime`, `/v1/events?after=`) are served. The watcher should start from the state
    /// [`Journal::load`] returned.
    ///
    /// A failed write never stops serving (the poll's report is served at once): it shows in
    /// `/metrics` and `/readyz` (see [`AppState::record_written`]) and the poll is written
    /// with the next one that works. `on_write` sees every [`Written`] (e.g. to say failures
    /// on stderr once per streak); it runs on the poller task.
    pub fn with_store(
        mut self,
        journal: Journal,
        on_write: impl FnMut(&Written) + Send + 'static,
    ) -> Self {
        self.state.set_store(journal.store().clone());
        self.journal = Some((journal, Some(Box::new(on_write))));
        self
    }

    /// Deliver notifications with `notifier` (over the same store as [`Server::with_store`]):
    /// at serve start its 410-disabled sinks are restored from the store
    /// ([`Notifier::restore`](connhealth_notify::Notifier::restore)), then it delivers every
    /// second and whenever a poll stored events, holding the store's lease `notify` (so with
    /// PostgreSQL replicas one process delivers). `/v1/notifications`, `/v1/mutes` and the
    /// `connhealth_notify_*` metrics come from it.
    pub fn with_notifier(self, notifier: Arc<connhealth_notify::Notifier>) -> Self {
        self.state.set_notifier(notifier);
        self
    }

    /// This process's name among replicas on one PostgreSQL store (`serve --replica-id`):
    /// the holder of the store lease [`replica::LEADER_LEASE`] while it leads, shown in
    /// `/readyz` and `/metrics`. Default: `pid{pid}-{start time in µs}`.
    pub fn with_replica_id(self, id: impl Into<String>) -> Self {
        self.state.role().set_holder(id.into());
        self
    }

    /// Set [`ServerConfig::queue_bound`] after construction (at least 1).
    pub fn with_queue_bound(self, bound: usize) -> Self {
        self.state.intake().set_bound(bound);
        self
    }

    /// The shared state the routes serve from.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Bind the listening socket (nothing is served and nothing is polled yet).
    pub async fn bind(self) -> Result<Bound, ServerError> {
        let listen = self.config.listen;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServerError::Bind { listen, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { listen, source })?;
        Ok(Bound {
            listener,
            local_addr,
            watcher: self.watcher,
            state: self.state,
            hook: self.hook,
            persist: self.persist,
            journal: self.journal,
            limits: conn::Limits {
                header_read_timeout: self.config.header_read_timeout,
                idle_timeout: self.config.idle_timeout,
                max_connections: self.config.max_connections,
            },
        })
    }

    /// [`Server::bind`], then [`Bound::serve`].
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        self.bind().await?.serve(shutdown).await
    }
}

/// A server with its socket bound: ask its address, then [`Bound::serve`].
pub struct Bound {
    listener: TcpListener,
    local_addr: SocketAddr,
    watcher: Watcher,
    state: AppState,
    hook: Option<PollHook>,
    persist: Option<PersistHook>,
    journal: Option<(Journal, Option<StoreHook>)>,
    limits: conn::Limits,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("local_addr", &self.local_addr)
            .field("watcher", &self.watcher)
            .finish_non_exhaustive()
    }
}

impl Bound {
    /// The address actually bound (the real port when the configured one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared state the routes serve from.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Start the background poller and serve until `shutdown` resolves.
    ///
    /// Connections are served under the limits of [`ServerConfig`] (header-read and idle
    /// timeouts, the connection cap with its `/healthz`-only overflow).
    ///
    /// On shutdown, new connections are refused, every open event stream ends, in-flight
    /// requests finish, and the poller stops (an in-flight poll is cancelled). Returns when all
    /// of that is done.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Bound {
            listener,
            local_addr,
            watcher,
            state,
            hook,
            persist,
            journal,
            limits,
        } = self;
        tracing::info!(addr = %local_addr, "serving");
        // Before the first request: the queue's count and `last_webhook_at` start from the
        // store (work a previous process left counts against the bound; the worker drains it).
        if journal.is_some() {
            if let Some(store) = state.store() {
                match store.webhook_overview().await {
                    Ok(o) => state.intake().restore(&o),
                    Err(e) => tracing::warn!(error = %e, "cannot read the stored webhook queue"),
                }
            }
        }
        let (applied_tx, applied_rx) = tokio::sync::mpsc::channel(APPLY_BATCH);
        state.intake().set_applied(applied_tx.clone());
        // With a PostgreSQL store this process is one of several replicas: it polls and drains
        // the queue only while it holds the leader lease (see [`replica`]). Otherwise (no store,
        // or SQLite, held by this process alone) it always leads.
        let replicated = journal.is_some()
            && state
                .store()
                .is_some_and(|s| s.backend() == connhealth_store::Backend::Postgres);
        let worker = (journal.is_some() && !replicated).then(|| {
            tokio::spawn(webhook::run_worker(
                state.clone(),
                applied_tx.clone(),
                state.stop_signal(),
                webhook::SWEEP,
            ))
        });
        let deliverer = match state.notifier().cloned() {
            Some(n) => {
                match n.restore().await {
                    Ok(off) if !off.is_empty() => {
                        tracing::warn!(sinks = ?off, "notify: sinks disabled by a 410 stay disabled")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "notify: cannot read the disabled sinks from the store")
                    }
                }
                // Its own lease (`notify`), held by the same name as the leader lease.
                Some(n.spawn_leased(NOTIFY_EVERY, state.role().holder(), NOTIFY_LEASE))
            }
            None => None,
        };
        let prewarmer = tokio::spawn(stored::run_prewarmer(state.clone()));
        let poller = if replicated {
            tokio::spawn(replica::run(
                replica::Parts {
                    watcher,
                    hook,
                    persist,
                    journal,
                    applied_tx,
                    applied_rx,
                },
                state.clone(),
            ))
        } else {
            let state = state.clone();
            tokio::spawn(async move {
                let (mut watcher, mut hook, mut persist, mut journal, mut applied_rx) =
                    (watcher, hook, persist, journal, applied_rx);
                let stop = state.stop_signal();
                run_poller(
                    &mut watcher,
                    &state,
                    &mut hook,
                    &mut persist,
                    &mut journal,
                    &mut applied_rx,
                    stop,
                )
                .await;
            })
        };
        let stopping = state.clone();
        conn::serve(
            listener,
            router(state.clone()),
            routes::busy_router(state.clone()),
            state.clone(),
            limits,
            async move {
                shutdown.await;
                stopping.shutdown();
            },
        )
        .await;
        state.shutdown();
        if let Some(w) = worker {
            let _ = w.await;
        }
        let polled = poller.await;
        let _ = prewarmer.await;
        if let Some(d) = deliverer {
            d.abort();
            let _ = d.await;
        }
        match polled {
            Ok(()) => Ok(()),
            Err(e) if e.is_panic() => {
                Err(ServerError::PollerPanicked(panic_message(e.into_panic())))
            }
            Err(_) => Ok(()),
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// How often the notifier looks for due deliveries (besides being woken by stored events).
const NOTIFY_EVERY: Duration = Duration::from_secs(1);
/// How long the delivery lease lasts without renewal (a dead holder is replaced after it).
const NOTIFY_LEASE: Duration = Duration::from_secs(30);

/// Resolves once the state is shut down (holding no borrow of the flag afterwards).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The most targeted refreshes applied together (one report, one store write per source).
const APPLY_BATCH: usize = 256;

/// Feed targeted refreshes (from the webhook worker, in their order) to the watcher, serve
/// the view after them and record their changes with their source — one store write per run
/// of one source, so a burst of webhooks is not one transaction each; the changes are
/// published once stored.
async fn apply_refreshes(
    batch: Vec<webhook::Applied>,
    watcher: &mut Watcher,
    state: &AppState,
    journal: &mut Option<(Journal, Option<StoreHook>)>,
) {
    let mut batch = batch.into_iter().peekable();
    while let Some(first) = batch.next() {
        let mut first = first;
        let source = first.source();
        let at = Utc::now();
        // Actions wait for their change to be recorded: answered after the store write.
        let mut done: Vec<_> = first.take_done().into_iter().collect();
        let mut changes = first.apply(watcher, at);
        while let Some(mut next) = batch.next_if(|a| a.source() == source) {
            done.extend(next.take_done());
            changes.append(&mut next.apply(watcher, at));
        }
        // One view per run of a source, not one per item (each is a copy of every connection).
        let report = watcher.report(at);
        let generated_at = report.generated_at;
        state.serve_report(report, Duration::ZERO);
        if let Some((journal, on_write)) = journal.as_mut() {
            let written = journal
                .record(generated_at, watcher.state(), Vec::new(), changes, source)
                .await;
            state.record_written(&written);
            if let Some(h) = on_write.as_mut() {
                h(&written);
            }
        }
        tracing::debug!(source = source.as_str(), "refresh applied");
        for d in done {
            let _ = d.send(());
        }
    }
}

/// Sweep at once, then after every [`Watcher::next_delay`], with the scheduled re-checks
/// in between and during sweeps ([`PollLoop`]), until `stop` says so (the state is shut
/// down, or a replica's leadership ended). Targeted refreshes from webhooks and actions are
/// applied as they come once the term's first sweep has been served, also while a sweep is
/// in flight.
pub(crate) async fn run_poller(
    watcher: &mut Watcher,
    state: &AppState,
    hook: &mut Option<PollHook>,
    persist: &mut Option<PersistHook>,
    journal: &mut Option<(Journal, Option<StoreHook>)>,
    applied: &mut tokio::sync::mpsc::Receiver<webhook::Applied>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rounds = PollLoop::new();
    state.set_schedule_stats(rounds.stats());
    let mut served = false;
    loop {
        tokio::select! {
            step = rounds.next(watcher) => match step {
                Step::Swept { poll, elapsed } => {
                    record_sweep(poll, elapsed, watcher, state, hook, journal).await;
                    served = true;
                    schedule::update_warning(state, &rounds.stats());
                }
                Step::Rechecked { changes, at, .. } => {
                    if changes.is_empty() {
                        continue;
                    }
                    record_recheck(changes, at, watcher, state, served, journal).await;
                }
            },
            Some(a) = applied.recv(), if served => {
                let mut batch = vec![a];
                while batch.len() < APPLY_BATCH {
                    match applied.try_recv() {
                        Ok(a) => batch.push(a),
                        Err(_) => break,
                    }
                }
                apply_refreshes(batch, watcher, state, journal).await;
            }
            _ = stopped(&mut stop) => break,
        }
        if let Some(save) = persist.as_mut() {
            state.record_save(save(watcher.state()));
        }
    }
    tracing::debug!("poller stopped");
}

/// Serve a finished sweep's report, record it in the store (its events published once
/// stored) and call the poll hook.
async fn record_sweep(
    mut poll: Poll,
    elapsed: Duration,
    watcher: &Watcher,
    state: &AppState,
    hook: &mut Option<PollHook>,
    journal: &mut Option<(Journal, Option<StoreHook>)>,
) {
    let announced = poll.changes.len();
    match journal.as_mut() {
        None => state.record_poll(&poll, elapsed),
        Some((journal, on_write)) => {
            // The report is served at once; the events once stored.
            state.record_report(&poll, elapsed);
            // The changes go to the journal; a copy stays only for a poll hook (a first poll
            // announces every connection: two copies of that were a tenth of serve's peak).
            let changes = if hook.is_some() {
                poll.changes.clone()
            } else {
                std::mem::take(&mut poll.changes)
            };
            let written = journal
                .record(
                    poll.report.generated_at,
                    watcher.state(),
                    poll.report.providers.clone(),
                    changes,
                    Source::Poll,
                )
                .await;
            state.record_written(&written);
            if let Some(Err(e)) = &written.pruned {
                tracing::warn!(error = %e, "pruning the store failed");
            }
            if let Some(h) = on_write.as_mut() {
                h(&written);
            }
        }
    }
    if let Some(h) = hook.as_mut() {
        h(&poll, watcher.state());
    }
    tracing::debug!(
        elapsed_ms = elapsed.as_millis() as u64,
        changes = announced,
        "poll finished"
    );
}

/// Serve the view after a scheduled re-check that changed something (once the first sweep
/// was served) and record its changes in the store as a poll's (`source: "poll"`).
async fn record_recheck(
    changes: Vec<connhealth_core::Change>,
    at: chrono::DateTime<Utc>,
    watcher: &Watcher,
    state: &AppState,
    served: bool,
    journal: &mut Option<(Journal, Option<StoreHook>)>,
) {
    if served {
        state.serve_report(watcher.report(at), Duration::ZERO);
    }
    match journal.as_mut() {
        Some((journal, on_write)) => {
            let written = journal
                .record(at, watcher.state(), Vec::new(), changes, Source::Poll)
                .await;
            state.record_written(&written);
            if let Some(h) = on_write.as_mut() {
                h(&written);
            }
        }
        None => state.publish_changes(&changes),
    }
}
