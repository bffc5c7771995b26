//! # connhealth-store
//!
//! connhealth's memory, behind one [`Store`] trait with two backends chosen by URL:
//! **SQLite** (`sqlite://connhealth.db`: one file, WAL, held by one process) and **PostgreSQL**
//! (`postgres://user@host:5432/db`: shared by replicas). It keeps the current state of every
//! connection with `since`, every change event with an increasing `id` and a `source`, every
//! poll's provider outcomes, hourly uptime roll-ups, the webhook dedupe ids and queued work, the
//! notification outbox, the action audit log and leader leases. Migrations are embedded and run
//! at open; a store written by a newer schema is refused.
//!
//! A poll is committed in ONE transaction ([`Store::commit_poll`]): its outcomes, events,
//! outbox rows, state changes and any hourly roll-up that came due are all written, or nothing.
//!
//! **Uptime.** Every change of a connection's uptime class (good / bad / unknown, DESIGN.md
//! "Uptime") closes one *status span* and opens the next; provider outages are spans of their
//! own (their time counts as unknown); incidents (from the first bad status to the next good
//! one) are rows with a start and an end. When a commit crosses an hour boundary, the hours
//! since the last roll-up are rolled up per provider (one row per provider and hour), so
//! [`Store::uptime`] by provider reads a few hundred rows whatever the fleet size. By customer
//! and by connection it is computed exactly from the spans of the window (one row per class
//! change, which is far smaller than hourly rows for connections that stay bad for weeks). The
//! window ends at the last rolled-up hour (`to`), and time while nothing polled counts as the
//! status the connection was left in.
//!
//! ```
//! use connhealth_store::{open, OpenOptions, PollRecord, Source, StoreUrl};
//! use connhealth_core::watch::WatchState;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! // A relative path is taken from the config file's folder.
//! let url = StoreUrl::parse_relative_to("sqlite://connhealth.db", dir.path())?;
//! let store = open(&url, OpenOptions::default()).await?;
//!
//! let at = chrono::Utc::now();
//! let ids = store
//!     .commit_poll(PollRecord::between(at, &WatchState::default(), &WatchState::default(), vec![], vec![], Source::Poll))
//!     .await?;
//! assert!(ids.is_empty());
//! assert!(store.load_state().await?.connections.is_empty());
//! store.integrity_check().await?;
//!
//! // A second process (or handle) cannot hold the same SQLite store.
//! let second = open(&url, OpenOptions::default()).await.unwrap_err();
//! assert!(second.to_string().contains("in use by another process"));
//! # Ok(()) }
//! ```
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_code)]

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use connhealth_core::watch::WatchState;
use connhealth_core::Secret;
use futures::future::BoxFuture;

mod db;
mod error;
mod journal;
mod logic;
mod postgres;
mod schema;
mod sqlite;
mod types;
mod url;

pub use error::{Result, StoreError};
pub use journal::{Journal, JournalOptions, Written};
pub use postgres::PgStore;
pub use schema::VERSION as SCHEMA_VERSION;
pub use sqlite::SqliteStore;
pub use types::*;
pub use url::{SecretEq, StoreUrl};

use db::Tx;

/// How to open a store.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The PostgreSQL password (e.g. from `store_password_env`); else `PGPASSWORD`, else one
    /// inside the URL.
    pub password: Option<Secret>,
    /// Open read-only: every write fails with [`StoreError::ReadOnly`]; an SQLite store is then
    /// not locked (it can be read beside its writer).
    pub read_only: bool,
}

/// Open the store a URL names, running migrations (unless read-only).
pub async fn open(url: &StoreUrl, opts: OpenOptions) -> Result<Arc<dyn Store>> {
    Ok(match url {
        StoreUrl::Sqlite { path } => Arc::new(SqliteStore::open(path, &opts).await?),
        StoreUrl::Postgres { .. } => Arc::new(PgStore::open(url, &opts).await?),
    })
}

/// Which backend a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// connhealth's store. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which backend.
    fn backend(&self) -> Backend;

    /// The store's name as it may be shown (no password).
    fn name(&self) -> &str;

    /// What a restarted watcher needs: every remembered connection with `since` and its
    /// anti-flap streak, and every provider's availability.
    async fn load_state(&self) -> Result<WatchState>;

    /// Write one poll in one transaction; the assigned event ids, in the order of
    /// `poll.events`. On error nothing of it was written.
    async fn commit_poll(&self, poll: PollRecord) -> Result<Vec<i64>>;

    /// [`Store::commit_poll`] only while `fence.holder` holds the lease `fence.lease`
    /// (unexpired at `now`), checked *inside* the write transaction: otherwise
    /// [`StoreError::LeaseLost`] and nothing written. On PostgreSQL the check locks the lease
    /// row until the commit, so a replica taking the lease over waits for this commit to end
    /// and then reads it in [`Store::load_state`]: a takeover never re-emits what the old
    /// leader committed, and an old leader that lost its lease (paused, partitioned) writes
    /// nothing after the takeover.
    async fn commit_poll_fenced(
        &self,
        poll: PollRecord,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>>;

    /// [`Store::commit_poll`] (or, with a fence, [`Store::commit_poll_fenced`]) of a record
    /// the caller keeps until it is written, as a [`Journal`] does: the record is shared with
    /// the write, not copied (a first poll's record holds every connection and event).
    async fn commit_shared(
        &self,
        poll: Arc<PollRecord>,
        fence: Option<&Fence>,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>>;

    /// The newest stored event's id (0 when there is none): where a follower starts tailing
    /// [`Store::events_after`].
    async fn last_event_id(&self) -> Result<i64>;

    /// Events with an id above `after`, oldest first (`next` = the last id).
    async fn events_after(&self, after: i64, limit: usize) -> Result<EventPage>;

    /// One connection's events with an id below `before`, newest first.
    async fn history(
        &self,
        connection_id: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<EventPage>;

    /// A page of connections, worst first then by id, with the total matching the filter.
    async fn connections(
        &self,
        filter: &ConnectionFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ConnectionPage>;

    /// Like [`Store::connections`], grouped by customer: customers worst first (their worst
    /// status among the matching connections, in each item's `customer_status`), then by
    /// `{provider}:{customer_id}`; within a customer worst first, then by id. Its cursors are
    /// its own.
    async fn connections_by_customer(
        &self,
        filter: &ConnectionFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ConnectionPage>;

    /// The status changes (`appeared`, `status_changed`) of these connections at or after
    /// `from`, oldest first, by connection id (connections without any are left out).
    async fn timelines(
        &self,
        ids: &[String],
        from: DateTime<Utc>,
    ) -> Result<std::collections::HashMap<String, Vec<TimelinePoint>>>;

    /// Per provider, when its latest accepted webhook was received (providers without any
    /// are left out).
    async fn last_webhooks(&self) -> Result<std::collections::BTreeMap<String, DateTime<Utc>>>;

    /// One stored connection (as last materially changed) with `since`, by its exact id.
    async fn connection(&self, id: &str) -> Result<Option<ConnectionItem>>;

    /// Uptime over a window, from the hourly roll-ups.
    async fn uptime(&self, query: &UptimeQuery) -> Result<UptimeReport>;

    /// The latest stored provider outcomes, newest first.
    async fn outcomes(&self, limit: usize) -> Result<Vec<StoredOutcome>>;

    /// Remove what retention no longer keeps.
    async fn prune(&self, retention: Retention, now: DateTime<Utc>) -> Result<PruneStats>;

    /// Check the database's integrity (SQLite `PRAGMA integrity_check`; PostgreSQL: the
    /// schema is readable). An error says what is wrong.
    async fn integrity_check(&self) -> Result<()>;

    /// Record a webhook's event id and its queued work in one transaction;
    /// [`WebhookAccept::Duplicate`] (and nothing recorded) for an id seen before.
    async fn accept_webhook(
        &self,
        provider: &str,
        event_id: &str,
        work: Option<NewWork>,
        now: DateTime<Utc>,
    ) -> Result<WebhookAccept>;

    /// Record several webhooks in ONE transaction (group commit): each answer as
    /// [`Store::accept_webhook`] would give it, in order. A duplicate id (seen before, or twice
    /// in `batch`) is [`WebhookAccept::Duplicate`] and records nothing; any error fails the
    /// whole batch and records none of it.
    async fn accept_webhooks(
        &self,
        batch: Vec<NewWebhook>,
        now: DateTime<Utc>,
    ) -> Result<Vec<WebhookAccept>>;

    /// Whether `provider`'s webhook `event_id` was accepted before (a read, records nothing):
    /// the duplicate check that comes before the queue bound.
    async fn webhook_seen(&self, provider: &str, event_id: &str) -> Result<bool>;

    /// Queued work not yet done, and the time the last accepted webhook arrived per provider
    /// (what a restarted `serve` starts its queue count and `last_webhook_at` from).
    async fn webhook_overview(&self) -> Result<WebhookOverview>;

    /// Queue work (e.g. a follower's refresh for the leader).
    async fn enqueue_work(&self, work: NewWork, now: DateTime<Utc>) -> Result<i64>;

    /// Keep a queued item's result (JSON text) for the replica that queued it (a follower's
    /// relayed action): read once with [`Store::take_work_result`]. `false`: no such item.
    async fn set_work_result(&self, id: i64, result: String) -> Result<bool>;

    /// A queued item's state for the replica that queued it: [`WorkState::Pending`] until it
    /// is finished, then [`WorkState::Done`] with its result, which is cleared by this read
    /// (it may hold a secret link), so a second read gives `Done { result: None }`.
    async fn take_work_result(&self, id: i64) -> Result<WorkState>;

    /// Claim up to `limit` unfinished items no one holds (or whose claim expired) for `lease`.
    async fn claim_work(
        &self,
        holder: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Vec<WorkItem>>;

    /// Finish a claimed item: done, or released again with the error.
    async fn finish_work(&self, id: i64, error: Option<String>, now: DateTime<Utc>) -> Result<()>;

    /// Finish several claimed items in one transaction (each as [`Store::finish_work`]).
    async fn finish_works(
        &self,
        items: Vec<(i64, Option<String>)>,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Outbox rows, newest first, optionally of one sink and/or state.
    async fn deliveries(
        &self,
        sink: Option<&str>,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<Delivery>>;

    /// Pending deliveries due at `now`, with their events, oldest due first.
    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Delivery, StoredEvent)>>;

    /// Record an attempt's result (a `pending`/`failed`/`delivered` state counts an attempt).
    async fn update_delivery(
        &self,
        id: i64,
        update: DeliveryUpdate,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Record one result for many deliveries in ONE transaction (a digest's rows, a disabled
    /// sink's pending rows); fails, changing nothing, if any id is unknown.
    async fn update_deliveries(
        &self,
        ids: Vec<i64>,
        update: DeliveryUpdate,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Append an audit row; its id.
    async fn append_audit(&self, record: AuditRecord) -> Result<i64>;

    /// The audit log, newest first.
    async fn audit(&self, before: Option<i64>, limit: usize) -> Result<AuditPage>;

    /// Take or renew the lease `name` for `holder` until `now + ttl`; `false` while another
    /// holder's lease is unexpired.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// Give the lease up (if `holder` has it).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool>;

    /// Who holds the lease at `now`.
    async fn lease_holder(&self, name: &str, now: DateTime<Utc>) -> Result<Option<String>>;

    /// Store a mute (`POST /v1/mutes`); its id.
    async fn add_mute(&self, mute: NewMute, now: DateTime<Utc>) -> Result<i64>;

    /// The stored mutes still in force at `now`, oldest first.
    async fn mutes(&self, now: DateTime<Utc>) -> Result<Vec<StoredMute>>;

    /// Remove a stored mute; `false` when there is none with that id.
    async fn delete_mute(&self, id: i64) -> Result<bool>;

    /// Record that a sink is disabled (a 410 Gone), with its configuration's fingerprint.
    async fn disable_sink(&self, disabled: DisabledSink) -> Result<()>;

    /// The sinks recorded as disabled.
    async fn disabled_sinks(&self) -> Result<Vec<DisabledSink>>;

    /// Re-enable a sink; `false` when it was not disabled.
    async fn enable_sink(&self, sink: &str) -> Result<bool>;

    /// The `remind_after` marks of a sink.
    async fn reminder_marks(&self, sink: &str) -> Result<Vec<ReminderMark>>;

    /// Write (insert or replace) `remind_after` marks of a sink, in one transaction.
    async fn set_reminder_marks(&self, sink: &str, marks: Vec<ReminderMark>) -> Result<()>;
}

/// A unit of work run in one transaction on a backend.
pub(crate) type Job<T> =
    Box<dyn for<'a> FnOnce(&'a mut dyn Tx) -> BoxFuture<'a, Result<T>> + Send + 'static>;

pub(crate) fn job<T, F>(f: F) -> Job<T>
where
    F: for<'a> FnOnce(&'a mut dyn Tx) -> BoxFuture<'a, Result<T>> + Send + 'static,
{
    Box::new(f)
}

/// What a backend provides: running a job in a (read or write) transaction.
#[async_trait]
pub(crate) trait Run: Send + Sync + std::fmt::Debug + 'static {
    fn kind(&self) -> Backend;
    fn store_name(&self) -> &str;
    async fn run<T: Send + 'static>(&self, write: bool, job: Job<T>) -> Result<T>;
    async fn check(&self) -> Result<()>;
}

macro_rules! read {
    ($s:expr, |$tx:ident| $body:expr) => {
        $s.run(false, job(move |$tx| Box::pin(async move { $body.await })))
            .await
    };
}
macro_rules! write {
    ($s:expr, |$tx:ident| $body:expr) => {
        $s.run(true, job(move |$tx| Box::pin(async move { $body.await })))
            .await
    };
}

#[async_trait]
impl<B: Run> Store for B {
    fn backend(&self) -> Backend {
        self.kind()
    }
    fn name(&self) -> &str {
        self.store_name()
    }
    async fn load_state(&self) -> Result<WatchState> {
        read!(self, |tx| logic::load_state(tx))
    }
    async fn commit_poll(&self, poll: PollRecord) -> Result<Vec<i64>> {
        write!(
            self,
            |tx| async move { logic::commit_poll(tx, &poll).await }
        )
    }
    async fn commit_shared(
        &self,
        poll: Arc<PollRecord>,
        fence: Option<&Fence>,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>> {
        let fence = fence.cloned();
        write!(self, |tx| async move {
            if let Some(fence) = &fence {
                logic::check_fence(tx, fence, now).await?;
            }
            logic::commit_poll(tx, &poll).await
        })
    }
    async fn commit_poll_fenced(
        &self,
        poll: PollRecord,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>> {
        let fence = fence.clone();
        write!(self, |tx| async move {
            logic::check_fence(tx, &fence, now).await?;
            logic::commit_poll(tx, &poll).await
        })
    }
    async fn last_event_id(&self) -> Result<i64> {
        read!(self, |tx| logic::last_event_id(tx))
    }
    async fn events_after(&self, after: i64, limit: usize) -> Result<EventPage> {
        read!(self, |tx| logic::events_after(tx, after, limit))
    }
    async fn history(&self, id: &str, before: Option<i64>, limit: usize) -> Result<EventPage> {
        let id = id.to_owned();
        read!(self, |tx| logic::history(tx, &id, before, limit))
    }
    async fn connections(
        &self,
        filter: &ConnectionFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ConnectionPage> {
        let (f, c) = (filter.clone(), cursor.map(str::to_owned));
        read!(self, |tx| logic::connections(tx, &f, c.as_deref(), limit))
    }
    async fn connections_by_customer(
        &self,
        filter: &ConnectionFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ConnectionPage> {
        let (f, c) = (filter.clone(), cursor.map(str::to_owned));
        read!(self, |tx| logic::connections_by_customer(
            tx,
            &f,
            c.as_deref(),
            limit
        ))
    }
    async fn timelines(
        &self,
        ids: &[String],
        from: DateTime<Utc>,
    ) -> Result<std::collections::HashMap<String, Vec<TimelinePoint>>> {
        let ids = ids.to_vec();
        read!(self, |tx| logic::timelines(tx, &ids, from))
    }
    async fn last_webhooks(&self) -> Result<std::collections::BTreeMap<String, DateTime<Utc>>> {
        read!(self, |tx| logic::last_webhooks(tx))
    }
    async fn connection(&self, id: &str) -> Result<Option<ConnectionItem>> {
        let id = id.to_owned();
        read!(self, |tx| logic::connection(tx, &id))
    }
    async fn uptime(&self, query: &UptimeQuery) -> Result<UptimeReport> {
        let q = query.clone();
        read!(self, |tx| logic::uptime(tx, &q))
    }
    async fn outcomes(&self, limit: usize) -> Result<Vec<StoredOutcome>> {
        read!(self, |tx| logic::outcomes(tx, limit))
    }
    async fn prune(&self, retention: Retention, now: DateTime<Utc>) -> Result<PruneStats> {
        write!(self, |tx| logic::prune(tx, retention, now))
    }
    async fn integrity_check(&self) -> Result<()> {
        self.check().await
    }
    async fn accept_webhook(
        &self,
        provider: &str,
        event_id: &str,
        work: Option<NewWork>,
        now: DateTime<Utc>,
    ) -> Result<WebhookAccept> {
        let (p, e) = (provider.to_owned(), event_id.to_owned());
        write!(self, |tx| logic::accept_webhook(tx, &p, &e, work, now))
    }
    async fn accept_webhooks(
        &self,
        batch: Vec<NewWebhook>,
        now: DateTime<Utc>,
    ) -> Result<Vec<WebhookAccept>> {
        write!(self, |tx| logic::accept_webhooks(tx, batch, now))
    }
    async fn webhook_seen(&self, provider: &str, event_id: &str) -> Result<bool> {
        let (p, e) = (provider.to_owned(), event_id.to_owned());
        read!(self, |tx| logic::webhook_seen(tx, &p, &e))
    }
    async fn webhook_overview(&self) -> Result<WebhookOverview> {
        read!(self, |tx| logic::webhook_overview(tx))
    }
    async fn enqueue_work(&self, work: NewWork, now: DateTime<Utc>) -> Result<i64> {
        write!(self, |tx| logic::enqueue(tx, work, now))
    }
    async fn set_work_result(&self, id: i64, result: String) -> Result<bool> {
        write!(self, |tx| logic::set_work_result(tx, id, result))
    }
    async fn take_work_result(&self, id: i64) -> Result<WorkState> {
        write!(self, |tx| logic::take_work_result(tx, id))
    }
    async fn claim_work(
        &self,
        holder: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Vec<WorkItem>> {
        let h = holder.to_owned();
        write!(self, |tx| logic::claim_work(tx, &h, limit, now, lease))
    }
    async fn finish_work(&self, id: i64, error: Option<String>, now: DateTime<Utc>) -> Result<()> {
        write!(self, |tx| logic::finish_work(tx, id, error, now))
    }
    async fn finish_works(
        &self,
        items: Vec<(i64, Option<String>)>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        write!(self, |tx| logic::finish_works(tx, items, now))
    }
    async fn deliveries(
        &self,
        sink: Option<&str>,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let s = sink.map(str::to_owned);
        read!(self, |tx| logic::deliveries(tx, s.as_deref(), state, limit))
    }
    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Delivery, StoredEvent)>> {
        read!(self, |tx| logic::due_deliveries(tx, now, limit))
    }
    async fn update_delivery(
        &self,
        id: i64,
        update: DeliveryUpdate,
        now: DateTime<Utc>,
    ) -> Result<()> {
        write!(self, |tx| logic::update_delivery(tx, id, update, now))
    }
    async fn update_deliveries(
        &self,
        ids: Vec<i64>,
        update: DeliveryUpdate,
        now: DateTime<Utc>,
    ) -> Result<()> {
        write!(self, |tx| async move {
            for id in ids {
                logic::update_delivery(&mut *tx, id, update.clone(), now).await?;
            }
            Ok(())
        })
    }
    async fn append_audit(&self, record: AuditRecord) -> Result<i64> {
        write!(self, |tx| logic::append_audit(tx, record))
    }
    async fn audit(&self, before: Option<i64>, limit: usize) -> Result<AuditPage> {
        read!(self, |tx| logic::audit(tx, before, limit))
    }
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (n, h) = (name.to_owned(), holder.to_owned());
        write!(self, |tx| logic::try_lease(tx, &n, &h, ttl, now))
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        let (n, h) = (name.to_owned(), holder.to_owned());
        write!(self, |tx| logic::release_lease(tx, &n, &h))
    }
    async fn lease_holder(&self, name: &str, now: DateTime<Utc>) -> Result<Option<String>> {
        let n = name.to_owned();
        read!(self, |tx| logic::lease_holder(tx, &n, now))
    }
    async fn add_mute(&self, mute: NewMute, now: DateTime<Utc>) -> Result<i64> {
        write!(self, |tx| logic::add_mute(tx, mute, now))
    }
    async fn mutes(&self, now: DateTime<Utc>) -> Result<Vec<StoredMute>> {
        read!(self, |tx| logic::mutes(tx, now))
    }
    async fn delete_mute(&self, id: i64) -> Result<bool> {
        write!(self, |tx| logic::delete_mute(tx, id))
    }
    async fn disable_sink(&self, disabled: DisabledSink) -> Result<()> {
        write!(self, |tx| logic::disable_sink(tx, disabled))
    }
    async fn disabled_sinks(&self) -> Result<Vec<DisabledSink>> {
        read!(self, |tx| logic::disabled_sinks(tx))
    }
    async fn enable_sink(&self, sink: &str) -> Result<bool> {
        let s = sink.to_owned();
        write!(self, |tx| logic::enable_sink(tx, &s))
    }
    async fn reminder_marks(&self, sink: &str) -> Result<Vec<ReminderMark>> {
        let s = sink.to_owned();
        read!(self, |tx| logic::reminder_marks(tx, &s))
    }
    async fn set_reminder_marks(&self, sink: &str, marks: Vec<ReminderMark>) -> Result<()> {
        let s = sink.to_owned();
        write!(self, |tx| logic::set_reminder_marks(tx, &s, marks))
    }
}
