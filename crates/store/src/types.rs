//! What goes into the store and what comes out of it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use connhealth_core::watch::{ProviderState, Tracked, WatchState};
use connhealth_core::{Change, Connection, ProviderOutcome, Status};
use serde::{Deserialize, Serialize};

/// Where a change came from (the event's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A scheduled poll.
    Poll,
    /// A provider's webhook (confirmed by a targeted pull).
    Webhook,
    /// A targeted refresh (`POST /v1/refresh`).
    Refresh,
    /// An action performed through the API.
    Action,
}

impl Source {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Poll => "poll",
            Source::Webhook => "webhook",
            Source::Refresh => "refresh",
            Source::Action => "action",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Source> {
        Some(match s {
            "poll" => Source::Poll,
            "webhook" => Source::Webhook,
            "refresh" => Source::Refresh,
            "action" => Source::Action,
            _ => return None,
        })
    }
}

/// One change to store, with the notification sinks that must announce it (an outbox row per
/// sink is written in the same transaction as the event).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The change, as the watcher emitted it.
    pub change: Change,
    /// Its source.
    pub source: Source,
    /// Names of the sinks to notify (empty: none).
    pub notify: Vec<String>,
}

impl NewEvent {
    /// An event that no sink is told about.
    pub fn new(change: Change, source: Source) -> Self {
        NewEvent {
            change,
            source,
            notify: Vec::new(),
        }
    }
}

/// Everything one poll (or webhook, refresh, action) writes, committed in ONE transaction by
/// [`crate::Store::commit_poll`]: either all of it is stored or none of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollRecord {
    /// When the poll's report was generated.
    pub at: DateTime<Utc>,
    /// The providers' outcomes of this poll (may be empty for a webhook-driven change).
    pub outcomes: Vec<ProviderOutcome>,
    /// The changes, in emission order.
    pub events: Vec<NewEvent>,
    /// Connections whose remembered state changed (new, or different other than in
    /// `observed_at`).
    pub upserts: Vec<Tracked>,
    /// Connections no longer remembered.
    pub removed: Vec<String>,
    /// Providers whose availability state changed (or all of them: unchanged ones cost little).
    pub providers: Vec<(String, ProviderState)>,
}

impl PollRecord {
    /// The record that takes a store holding `prev` to `next`: only connections that changed
    /// other than in `observed_at` are written (a steady poll writes ~nothing), so the stored
    /// connection is the last *materially* changed one.
    pub fn between(
        at: DateTime<Utc>,
        prev: &WatchState,
        next: &WatchState,
        outcomes: Vec<ProviderOutcome>,
        changes: impl IntoIterator<Item = Change>,
        source: Source,
    ) -> PollRecord {
        PollRecord::from_parts(
            at,
            |id| prev.connections.get(id),
            prev.connections.keys().map(String::as_str),
            &prev.providers,
            next,
            outcomes,
            changes,
            source,
        )
    }

    /// [`PollRecord::between`] with the previous state's connections given as a lookup by id
    /// and the ids it holds (a [`crate::Journal`] keeps them in a sorted list, not a map).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts<'p>(
        at: DateTime<Utc>,
        prev: impl Fn(&str) -> Option<&'p Tracked>,
        prev_ids: impl Iterator<Item = &'p str>,
        prev_providers: &BTreeMap<String, ProviderState>,
        next: &WatchState,
        outcomes: Vec<ProviderOutcome>,
        changes: impl IntoIterator<Item = Change>,
        source: Source,
    ) -> PollRecord {
        // The events first: the change list they are made from is let go before the upserts
        // are made, so the two are never live together (on a first poll each is a list as
        // long as the fleet, at that poll's peak).
        let events: Vec<NewEvent> = changes
            .into_iter()
            .map(|c| NewEvent::new(c, source))
            .collect();
        // Counted first, then sized once: a first poll upserts every connection, and a list
        // grown by doubling held up to twice its length (and both buffers while it grew) at
        // that poll's peak. The second look is cheap: most are the same allocation.
        let changed = |(id, t): &(&String, &Tracked)| !prev(id).is_some_and(|o| same_tracked(o, t));
        let mut upserts = Vec::with_capacity(next.connections.iter().filter(changed).count());
        upserts.extend(
            next.connections
                .iter()
                .filter(changed)
                .map(|(_, t)| t.clone()),
        );
        let removed = prev_ids
            .filter(|id| !next.connections.contains_key(*id))
            .map(str::to_owned)
            .collect();
        let providers = next
            .providers
            .iter()
            .filter(|(name, s)| prev_providers.get(*name) != Some(*s))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        PollRecord {
            at,
            outcomes,
            events,
            upserts,
            removed,
            providers,
        }
    }
}

fn same_tracked(a: &Tracked, b: &Tracked) -> bool {
    if a.since != b.since || a.streak != b.streak || a.worsening != b.worsening {
        return false;
    }
    // Everything but `observed_at`, which moves every poll; compared in place, without a
    // copy (a batch of refreshes compares every remembered connection). The same
    // allocation (a connection no poll or refresh replaced) is equal without a look.
    std::sync::Arc::ptr_eq(&a.connection, &b.connection)
        || a.connection.same_except_observed_at(&b.connection)
}

/// A stored change event: the change as `watch` prints it, plus `id` (increasing in commit
/// order) and `source`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Store-assigned, increasing in commit order; also the SSE `id`.
    pub id: i64,
    /// Where it came from.
    pub source: Source,
    /// The change.
    pub change: Change,
}

impl Serialize for StoredEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let body = serde_json::to_value(&self.change).map_err(S::Error::custom)?;
        let serde_json::Value::Object(fields) = body else {
            return Err(S::Error::custom("a change serializes to an object"));
        };
        let mut m = s.serialize_map(Some(fields.len() + 2))?;
        m.serialize_entry("id", &self.id)?;
        if let Some(e) = fields.get("event") {
            m.serialize_entry("event", e)?;
        }
        m.serialize_entry("source", &self.source)?;
        for (k, v) in &fields {
            if k != "event" {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for StoredEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut v = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let id = v
            .remove("id")
            .and_then(|x| x.as_i64())
            .ok_or_else(|| D::Error::missing_field("id"))?;
        let source: Source = serde_json::from_value(
            v.remove("source")
                .ok_or_else(|| D::Error::missing_field("source"))?,
        )
        .map_err(D::Error::custom)?;
        let change =
            serde_json::from_value(serde_json::Value::Object(v)).map_err(D::Error::custom)?;
        Ok(StoredEvent { id, source, change })
    }
}

/// A page of events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventPage {
    /// The events (oldest first for [`crate::Store::events_after`], newest first for
    /// [`crate::Store::history`]).
    pub items: Vec<StoredEvent>,
    /// For `events_after`: the `after` of the next page (the last id, or the given one when
    /// empty). For `history`: the `before` of the next page, `None` at the end.
    pub next: Option<i64>,
}

/// Filters of [`crate::Store::connections`] (empty lists match everything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionFilter {
    /// Any of these statuses.
    pub status: Vec<Status>,
    /// Any of these providers.
    pub provider: Vec<String>,
    /// Any of these customer ids (or `{provider}:{customer_id}` keys).
    pub customer: Vec<String>,
    /// A case-insensitive substring of the id, customer id or name, platform or a problem code.
    pub q: Option<String>,
}

/// One connection as stored, with when its current status began.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionItem {
    /// The connection as last announced.
    #[serde(flatten)]
    pub connection: Connection,
    /// When its current status began.
    pub since: DateTime<Utc>,
    /// With [`crate::Store::connections_by_customer`]: the worst status among its
    /// customer's matching connections (`None` elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_status: Option<Status>,
}

/// One status change of a connection, for a timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// When it was seen.
    pub at: DateTime<Utc>,
    /// The status before (`None`: the connection appeared).
    pub from: Option<Status>,
    /// The status after.
    pub to: Status,
}

/// A page of connections, worst first then by id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionPage {
    /// The connections.
    pub items: Vec<ConnectionItem>,
    /// Pass as `cursor` for the next page; `None` at the end.
    pub next_cursor: Option<String>,
    /// How many match the filter in all.
    pub total: u64,
}

/// What a restarted watcher needs.
pub type LoadedState = WatchState;

/// An uptime window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Window {
    /// 24 hours.
    #[serde(rename = "24h")]
    Day,
    /// 7 days.
    #[serde(rename = "7d")]
    Week,
    /// 30 days.
    #[serde(rename = "30d")]
    Month,
    /// 90 days.
    #[serde(rename = "90d")]
    Quarter,
}

impl Window {
    /// The route's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Day => "24h",
            Window::Week => "7d",
            Window::Month => "30d",
            Window::Quarter => "90d",
        }
    }

    /// Its length in hours.
    pub fn hours(self) -> i64 {
        match self {
            Window::Day => 24,
            Window::Week => 24 * 7,
            Window::Month => 24 * 30,
            Window::Quarter => 24 * 90,
        }
    }
}

impl std::str::FromStr for Window {
    type Err = crate::StoreError;
    fn from_str(s: &str) -> crate::Result<Window> {
        Ok(match s {
            "24h" | "1d" => Window::Day,
            "7d" => Window::Week,
            "30d" => Window::Month,
            "90d" => Window::Quarter,
            _ => {
                return Err(crate::StoreError::Invalid(format!(
                    "window {s:?}: expected 24h, 7d, 30d or 90d"
                )))
            }
        })
    }
}

/// What uptime is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// One item per provider.
    Provider,
    /// One item per `{provider}:{customer_id}`.
    Customer,
    /// One item per connection id.
    Connection,
}

/// An uptime question.
#[derive(Debug, Clone, PartialEq)]
pub struct UptimeQuery {
    /// How far back.
    pub window: Window,
    /// Grouped by.
    pub by: GroupBy,
    /// Only these providers (empty: all).
    pub provider: Vec<String>,
    /// Only these customers: a customer id or a `{provider}:{customer_id}` key (empty: all).
    pub customer: Vec<String>,
}

/// The answer of [`crate::Store::uptime`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UptimeReport {
    /// The window asked.
    pub window: Window,
    /// Start (inclusive): `to` minus the window.
    pub from: DateTime<Utc>,
    /// End (exclusive): the end of the last hour rolled up (the last poll's hour start).
    pub to: DateTime<Utc>,
    /// One per key, sorted by key.
    pub items: Vec<UptimeItem>,
}

/// Uptime of one key over the window (DESIGN.md "Uptime").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UptimeItem {
    /// Provider name, `{provider}:{customer_id}` or connection id.
    pub key: String,
    /// `good / (good + bad)`; `None` when both are zero.
    pub uptime: Option<f64>,
    /// Time in healthy, not_connected, pending, syncing.
    pub good_seconds: i64,
    /// Time in degraded, disconnected, action_required.
    pub bad_seconds: i64,
    /// Time in unknown, or while the provider did not answer.
    pub unknown_seconds: i64,
    /// Incidents that began in the window.
    pub incidents: i64,
    /// Mean length of those of them that ended; `None` when none did.
    pub mttr_seconds: Option<f64>,
}

/// Retention of [`crate::Store::prune`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw events, provider outcomes, webhook ids, finished work and deliveries (default 90).
    pub retention_days: u32,
    /// Hourly roll-ups, status spans and incidents (default 400).
    pub rollup_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            retention_days: 90,
            rollup_days: 400,
        }
    }
}

/// What [`crate::Store::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneStats {
    /// Rows removed per table.
    pub removed: BTreeMap<String, u64>,
}

/// One row of the stored provider outcomes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredOutcome {
    /// When that poll ran.
    pub at: DateTime<Utc>,
    /// The outcome.
    #[serde(flatten)]
    pub outcome: ProviderOutcome,
}

/// A unit of queued work (a webhook's targeted refresh, a follower's request to the leader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewWork {
    /// What to do, e.g. `refresh`.
    pub kind: String,
    /// The provider it concerns.
    pub provider: String,
    /// Its arguments (no secrets, no webhook bodies).
    pub payload: serde_json::Value,
}

/// Who may write: the lease a fenced commit checks
/// ([`Store::commit_poll_fenced`](crate::Store::commit_poll_fenced),
/// [`Journal::set_fence`](crate::Journal::set_fence)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease's name (e.g. `leader`).
    pub lease: String,
    /// The holder that must have it.
    pub holder: String,
}

/// Where a queued item is ([`Store::take_work_result`](crate::Store::take_work_result)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkState {
    /// No item with that id (never queued, or pruned).
    Unknown,
    /// Not finished yet (maybe claimed, maybe failed and released with `last_error`).
    Pending {
        /// The last failure, when an attempt failed.
        last_error: Option<String>,
    },
    /// Finished; its result, if one was set and not read before.
    Done {
        /// The result's JSON text.
        result: Option<String>,
    },
}

/// Queued work as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkItem {
    /// Its id.
    pub id: i64,
    /// What.
    #[serde(flatten)]
    pub work: NewWork,
    /// When queued.
    pub created_at: DateTime<Utc>,
    /// Attempts so far (claims).
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// One webhook to record ([`Store::accept_webhooks`](crate::Store::accept_webhooks)): its
/// provider, event id and the work it queues (ids only, never the body).
#[derive(Debug, Clone, PartialEq)]
pub struct NewWebhook {
    /// The configured provider's name.
    pub provider: String,
    /// The provider's event id.
    pub event_id: String,
    /// The work to queue with it, if any.
    pub work: Option<NewWork>,
}

/// The answer to a webhook's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAccept {
    /// New: recorded, its work (if any) queued with this id.
    Accepted {
        /// The queued work's id.
        work_id: Option<i64>,
    },
    /// Seen before: nothing recorded.
    Duplicate,
}

/// The stored webhook intake at a glance ([`Store::webhook_overview`](crate::Store::webhook_overview)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WebhookOverview {
    /// Queued work not yet done (any kind, claimed or not).
    pub pending_work: u64,
    /// Per provider, when its last accepted webhook arrived (among the ids retention keeps).
    pub last_received: std::collections::BTreeMap<String, DateTime<Utc>>,
}

/// A notification delivery's state (DESIGN.md's outbox states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its (next) attempt.
    Pending,
    /// An attempt is under way.
    Delivering,
    /// Done.
    Delivered,
    /// Given up.
    Failed,
    /// Not sent: a mute matched.
    Muted,
    /// Not sent: the sink is disabled (a 410).
    SinkDisabled,
}

impl DeliveryState {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivering => "delivering",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Muted => "muted",
            DeliveryState::SinkDisabled => "sink_disabled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryState::Pending,
            "delivering" => DeliveryState::Delivering,
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            "muted" => DeliveryState::Muted,
            "sink_disabled" => DeliveryState::SinkDisabled,
            _ => return None,
        })
    }
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// Its id.
    pub id: i64,
    /// The event it announces.
    pub event_id: i64,
    /// The sink's name.
    pub sink: String,
    /// Stable across retries: the Standard Webhooks `webhook-id`.
    pub message_id: String,
    /// State.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due.
    pub next_attempt_at: DateTime<Utc>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// A change of a delivery's state after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryUpdate {
    /// The new state.
    pub state: DeliveryState,
    /// When to try next (for `pending`).
    pub next_attempt_at: DateTime<Utc>,
    /// Why the attempt failed, if it did.
    pub last_error: Option<String>,
}

/// One action attempt for the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Who (the token's name, e.g. `admin`).
    pub actor: String,
    /// The action kind, e.g. `disconnect`.
    pub action: String,
    /// The connection acted on.
    pub connection_id: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// The outcome as a code (`serve` writes `done`, `failed`, `rate_limited`,
    /// `unsupported`, `not_found`).
    pub outcome: String,
    /// What happened, in words (no secrets, no URLs with tokens).
    #[serde(default)]
    pub message: String,
}

/// An audit row as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Its id, increasing.
    pub id: i64,
    /// The record.
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    /// The rows.
    pub items: Vec<AuditEntry>,
    /// The `before` of the next page; `None` at the end.
    pub next_before: Option<i64>,
}

/// A mute to store (`POST /v1/mutes`): matching events are stored, their deliveries become
/// `muted`, until `until`. Every field given must match; at least one is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMute {
    /// A provider name.
    pub provider: Option<String>,
    /// A `customer_id` or `{provider}:{customer_id}`.
    pub customer: Option<String>,
    /// A connection id.
    pub connection: Option<String>,
    /// Until when.
    pub until: DateTime<Utc>,
    /// Why.
    pub reason: String,
}

/// A stored mute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredMute {
    /// Its id (for `DELETE /v1/mutes/{id}`).
    pub id: i64,
    /// What and until when.
    #[serde(flatten)]
    pub mute: NewMute,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A sink disabled by a 410 Gone, durably: it stays disabled across restarts while its
/// configuration keeps the same `fingerprint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisabledSink {
    /// The sink's name.
    pub sink: String,
    /// A digest of the sink's configuration when it was disabled (never the URL itself).
    #[serde(skip)]
    pub fingerprint: String,
    /// When.
    pub disabled_at: DateTime<Utc>,
    /// Why (e.g. "the sink answered 410 Gone").
    pub reason: String,
}

/// How far the `remind_after` reminders of one sink went for one connection that stays bad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReminderMark {
    /// The connection.
    pub connection_id: String,
    /// When its current (bad) status began: a new status starts counting again.
    pub since: DateTime<Utc>,
    /// Reminders delivered for this status.
    pub sent: i64,
    /// Not before this time (after a failed attempt).
    pub next_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use connhealth_core::{Connection, Customer, Role, Status};

    fn tracked(i: usize, status: Status) -> Tracked {
        let c = Connection::new(
            "p",
            Some(&format!("c{i:04}")),
            Customer::new(format!("cus_{}", i % 7)),
            "shopify",
            Role::Source,
            status,
            Utc::now(),
        );
        Tracked {
            connection: std::sync::Arc::new(c),
            since: Utc::now(),
            streak: 0,
            worsening: false,
        }
    }

    /// A first poll upserts every connection into a list sized once (it grew by doubling,
    /// holding up to twice the fleet's pointers at that poll's peak); a later poll upserts
    /// only what changed, also sized to it.
    #[test]
    fn upserts_are_what_changed_in_a_list_sized_to_them() {
        let mut next = WatchState::default();
        for i in 0..1000 {
            let t = tracked(i, Status::Healthy);
            next.connections.insert(t.connection.id.clone(), t);
        }
        let first = PollRecord::between(
            Utc::now(),
            &WatchState::default(),
            &next,
            Vec::new(),
            Vec::new(),
            Source::Poll,
        );
        assert_eq!(first.upserts.len(), 1000);
        assert_eq!(first.upserts.capacity(), 1000);

        let prev = next.clone();
        for i in (0..1000).step_by(100) {
            let t = tracked(i, Status::Degraded);
            next.connections.insert(t.connection.id.clone(), t);
        }
        let later = PollRecord::between(
            Utc::now(),
            &prev,
            &next,
            Vec::new(),
            Vec::new(),
            Source::Poll,
        );
        let ids: Vec<&str> = later
            .upserts
            .iter()
            .map(|t| t.connection.id.as_str())
            .collect();
        let want: Vec<String> = (0..1000)
            .step_by(100)
            .map(|i| format!("p:c{i:04}"))
            .collect();
        assert_eq!(ids, want);
        assert_eq!(later.upserts.capacity(), 10);
        assert!(later.removed.is_empty());
    }
}
