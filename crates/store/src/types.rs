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

/// A record's change events, in emission order: the changes as the watcher emitted them,
/// with each one's [`Source`] and the sinks to tell beside them rather than inside a larger
/// element. A first poll has one event per connection, and wrapping the watcher's list into
/// a list of [`NewEvent`]s was a second list as long as the fleet, live beside the first at
/// that poll's peak; [`Events::from_changes`] keeps the watcher's list as it is.
///
/// ```
/// use connhealth_core::{diff::ChangeKind, Change};
/// use connhealth_store::{Events, NewEvent, Source};
///
/// let at = chrono::Utc::now();
/// let down = Change::provider("violet", ChangeKind::ProviderRecovered, at, None);
/// let mut events = Events::from_changes(vec![down.clone()], Source::Poll);
/// events.push(NewEvent { notify: vec!["ops".into()], ..NewEvent::new(down, Source::Webhook) });
/// assert_eq!(events.len(), 2);
/// let second = events.get(1).unwrap();
/// assert_eq!((second.source, second.notify), (Source::Webhook, &["ops".to_string()][..]));
/// assert!(events.get(0).unwrap().notify.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Events {
    changes: Vec<Change>,
    /// One per change.
    sources: Vec<Source>,
    /// The changes that have sinks: (position, sink names), positions increasing.
    notify: Vec<(usize, Vec<String>)>,
}

/// One of [`Events`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventRef<'a> {
    /// The change.
    pub change: &'a Change,
    /// Its source.
    pub source: Source,
    /// The sinks to notify (empty: none).
    pub notify: &'a [String],
}

impl Events {
    /// No events.
    pub fn new() -> Events {
        Events::default()
    }

    /// `changes`, all from `source`, told to no sink; the list is kept, not copied.
    pub fn from_changes(changes: Vec<Change>, source: Source) -> Events {
        Events {
            sources: vec![source; changes.len()],
            changes,
            notify: Vec::new(),
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Room for `n` more.
    pub fn reserve(&mut self, n: usize) {
        self.changes.reserve(n);
        self.sources.reserve(n);
    }

    /// Add one at the end.
    pub fn push(&mut self, event: NewEvent) {
        let at = self.changes.len();
        self.changes.push(event.change);
        self.sources.push(event.source);
        if !event.notify.is_empty() {
            self.notify.push((at, event.notify));
        }
    }

    /// The one at position `i`.
    pub fn get(&self, i: usize) -> Option<EventRef<'_>> {
        let change = self.changes.get(i)?;
        let notify = match self.notify.binary_search_by_key(&i, |(at, _)| *at) {
            Ok(k) => self.notify[k].1.as_slice(),
            Err(_) => &[],
        };
        Some(EventRef {
            change,
            source: self.sources[i],
            notify,
        })
    }

    /// All of them, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EventRef<'_>> + '_ {
        let mut sinks = self.notify.iter().peekable();
        self.changes
            .iter()
            .zip(&self.sources)
            .enumerate()
            .map(move |(i, (change, source))| {
                let notify = match sinks.next_if(|(at, _)| *at == i) {
                    Some((_, names)) => names.as_slice(),
                    None => &[],
                };
                EventRef {
                    change,
                    source: *source,
                    notify,
                }
            })
    }

    /// The changes, in order.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Tell the sinks `sinks` about the one at position `i` (replacing whom it told before;
    /// empty: none). Returns false, changing nothing, when there is no such event.
    pub fn set_notify(&mut self, i: usize, sinks: Vec<String>) -> bool {
        if i >= self.changes.len() {
            return false;
        }
        match self.notify.binary_search_by_key(&i, |(at, _)| *at) {
            Ok(k) if sinks.is_empty() => {
                self.notify.remove(k);
            }
            Ok(k) => self.notify[k].1 = sinks,
            Err(_) if sinks.is_empty() => {}
            Err(k) => self.notify.insert(k, (i, sinks)),
        }
        true
    }

    /// Set every event's sinks to what `route` says of its change.
    pub fn route(&mut self, mut route: impl FnMut(&Change) -> Vec<String>) {
        self.notify.clear();
        for (i, c) in self.changes.iter().enumerate() {
            let sinks = route(c);
            if !sinks.is_empty() {
                self.notify.push((i, sinks));
            }
        }
    }

    /// The events as stored under `ids` (one per event, in order), in this list's own
    /// allocation: their sinks are let go (the outbox rows hold them).
    pub(crate) fn into_stored(self, ids: Vec<i64>) -> StoredEvents {
        debug_assert_eq!(ids.len(), self.changes.len());
        StoredEvents {
            changes: self.changes,
            sources: self.sources,
            ids,
        }
    }
}

impl From<Vec<NewEvent>> for Events {
    fn from(events: Vec<NewEvent>) -> Events {
        events.into_iter().collect()
    }
}

impl FromIterator<NewEvent> for Events {
    fn from_iter<I: IntoIterator<Item = NewEvent>>(iter: I) -> Events {
        let mut events = Events::new();
        events.extend(iter);
        events
    }
}

impl Extend<NewEvent> for Events {
    fn extend<I: IntoIterator<Item = NewEvent>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        self.reserve(iter.size_hint().0);
        for e in iter {
            self.push(e);
        }
    }
}

/// Events as stored, with their ids, in id order: what [`crate::Journal`] reports as
/// written. Like [`Events`], the changes stay in the list they came in (a first poll's is as
/// long as the fleet); [`StoredEvents::iter`] lends each as a [`StoredEventRef`], and
/// [`StoredEvents::into_vec`] makes owned [`StoredEvent`]s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredEvents {
    changes: Vec<Change>,
    sources: Vec<Source>,
    ids: Vec<i64>,
}

/// One of [`StoredEvents`], borrowed; it serializes as a [`StoredEvent`] does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredEventRef<'a> {
    /// Store-assigned, increasing in commit order; also the SSE `id`.
    pub id: i64,
    /// Where it came from.
    pub source: Source,
    /// The change.
    pub change: &'a Change,
}

impl StoredEventRef<'_> {
    /// An owned copy.
    pub fn to_stored(&self) -> StoredEvent {
        StoredEvent {
            id: self.id,
            source: self.source,
            change: self.change.clone(),
        }
    }
}

impl StoredEvents {
    /// How many.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The one at position `i`.
    pub fn get(&self, i: usize) -> Option<StoredEventRef<'_>> {
        Some(StoredEventRef {
            id: *self.ids.get(i)?,
            source: self.sources[i],
            change: &self.changes[i],
        })
    }

    /// All of them, in id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = StoredEventRef<'_>> + '_ {
        self.ids
            .iter()
            .zip(&self.sources)
            .zip(&self.changes)
            .map(|((id, source), change)| StoredEventRef {
                id: *id,
                source: *source,
                change,
            })
    }

    /// Add `later` (stored after these) at the end; an empty list takes `later`'s own.
    pub fn append(&mut self, mut later: StoredEvents) {
        if self.is_empty() {
            *self = later;
            return;
        }
        self.changes.append(&mut later.changes);
        self.sources.append(&mut later.sources);
        self.ids.append(&mut later.ids);
    }

    /// Owned events.
    pub fn into_vec(self) -> Vec<StoredEvent> {
        self.into_iter().collect()
    }
}

impl From<Vec<StoredEvent>> for StoredEvents {
    fn from(events: Vec<StoredEvent>) -> StoredEvents {
        events.into_iter().collect()
    }
}

impl FromIterator<StoredEvent> for StoredEvents {
    fn from_iter<I: IntoIterator<Item = StoredEvent>>(iter: I) -> StoredEvents {
        let iter = iter.into_iter();
        let n = iter.size_hint().0;
        let mut out = StoredEvents {
            changes: Vec::with_capacity(n),
            sources: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
        };
        for e in iter {
            out.changes.push(e.change);
            out.sources.push(e.source);
            out.ids.push(e.id);
        }
        out
    }
}

/// The owned iterator of [`StoredEvents`]: each event is made as it is taken, not into a
/// second list first.
type StoredEventsIntoIter = std::iter::Map<
    std::iter::Zip<
        std::iter::Zip<std::vec::IntoIter<i64>, std::vec::IntoIter<Source>>,
        std::vec::IntoIter<Change>,
    >,
    fn(((i64, Source), Change)) -> StoredEvent,
>;

impl IntoIterator for StoredEvents {
    type Item = StoredEvent;
    type IntoIter = StoredEventsIntoIter;

    fn into_iter(self) -> Self::IntoIter {
        let make: fn(((i64, Source), Change)) -> StoredEvent =
            |((id, source), change)| StoredEvent { id, source, change };
        self.ids
            .into_iter()
            .zip(self.sources)
            .zip(self.changes)
            .map(make)
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
    /// The changes, in emission order, each with its source and sinks.
    pub events: Events,
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
        // The watcher's change list becomes the events as it is (collecting a `Vec`'s own
        // iterator keeps its allocation): on a first poll it is as long as the fleet, and a
        // second list of wrapped events was the largest part of that poll's peak.
        let events = Events::from_changes(changes.into_iter().collect(), source);
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

impl StoredEvent {
    /// Borrowed, as [`StoredEvents::iter`] lends them.
    pub fn borrowed(&self) -> StoredEventRef<'_> {
        StoredEventRef {
            id: self.id,
            source: self.source,
            change: &self.change,
        }
    }
}

impl Serialize for StoredEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.borrowed().serialize(s)
    }
}

impl Serialize for StoredEventRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let body = serde_json::to_value(self.change).map_err(S::Error::custom)?;
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

    fn recovered(i: usize) -> Change {
        Change::provider(
            &format!("p{i}"),
            connhealth_core::diff::ChangeKind::ProviderRecovered,
            Utc::now(),
            None,
        )
    }

    /// A record keeps the watcher's change list as its events (a first poll's is as long
    /// as the fleet: a second list of wrapped events beside it was that poll's peak), and
    /// the written events keep it too.
    #[test]
    fn a_records_events_are_the_watchers_change_list() {
        let changes: Vec<Change> = (0..1000).map(recovered).collect();
        let ptr = changes.as_ptr();
        let rec = PollRecord::between(
            Utc::now(),
            &WatchState::default(),
            &WatchState::default(),
            Vec::new(),
            changes,
            Source::Refresh,
        );
        assert_eq!(rec.events.changes().as_ptr(), ptr);
        assert!(rec.events.iter().all(|e| e.source == Source::Refresh));
        let stored = rec.events.into_stored((101..1101).collect());
        assert_eq!(stored.get(0).map(|e| e.change as *const Change), Some(ptr));
        let owned = stored.clone().into_vec();
        assert_eq!(owned.len(), 1000);
        assert!(owned
            .iter()
            .enumerate()
            .all(|(i, e)| e.id == 101 + i as i64 && e.change == recovered_like(&e.change, i)));
        assert_eq!(StoredEvents::from(owned), stored);
    }

    fn recovered_like(c: &Change, i: usize) -> Change {
        Change {
            at: c.at,
            ..recovered(i)
        }
    }

    /// Sinks sit beside the changes: each event answers with its own, whether they came
    /// with a pushed event, were set one by one, or routed all at once.
    #[test]
    fn each_event_has_its_own_sinks() {
        let mut events = Events::new();
        events.push(NewEvent::new(recovered(0), Source::Poll));
        events.push(NewEvent {
            notify: vec!["ops".into()],
            ..NewEvent::new(recovered(1), Source::Webhook)
        });
        events.push(NewEvent::new(recovered(2), Source::Action));
        let sinks = |e: &Events| -> Vec<(Source, Vec<String>)> {
            e.iter().map(|r| (r.source, r.notify.to_vec())).collect()
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let as_pushed = vec![
            (Source::Poll, s(&[])),
            (Source::Webhook, s(&["ops"])),
            (Source::Action, s(&[])),
        ];
        assert_eq!(sinks(&events), as_pushed);
        assert!(events.set_notify(2, s(&["slack", "ops"])));
        assert!(events.set_notify(0, s(&["pager"])));
        assert!(events.set_notify(1, Vec::new()));
        assert!(!events.set_notify(3, s(&["ops"])), "no such event");
        let want = vec![
            (Source::Poll, s(&["pager"])),
            (Source::Webhook, s(&[])),
            (Source::Action, s(&["slack", "ops"])),
        ];
        assert_eq!(sinks(&events), want);
        let by_get: Vec<_> = (0..3)
            .map(|i| {
                events
                    .get(i)
                    .map(|r| (r.source, r.notify.to_vec()))
                    .unwrap()
            })
            .collect();
        assert_eq!(by_get, want, "get agrees with iter");
        assert!(events.get(3).is_none());

        events.route(|c| {
            if c.provider == "p1" {
                s(&["ops"])
            } else {
                Vec::new()
            }
        });
        assert_eq!(sinks(&events), as_pushed, "routed: only p1 to ops");
        let collected: Events = (0..3)
            .map(|i| NewEvent {
                notify: if i == 1 { s(&["ops"]) } else { Vec::new() },
                ..NewEvent::new(
                    recovered(i),
                    [Source::Poll, Source::Webhook, Source::Action][i],
                )
            })
            .collect();
        assert_eq!(sinks(&collected), sinks(&events));
    }

    /// Events written by two commits are reported in commit order, the first list kept.
    #[test]
    fn stored_events_append_in_order() {
        let a = Events::from_changes((0..3).map(recovered).collect(), Source::Poll);
        let b = Events::from_changes((3..5).map(recovered).collect(), Source::Webhook);
        let mut w = StoredEvents::default();
        w.append(a.into_stored(vec![1, 2, 3]));
        let kept = w.get(0).map(|e| e.change as *const Change);
        w.append(b.into_stored(vec![7, 8]));
        let ids: Vec<(i64, Source, String)> = w
            .iter()
            .map(|e| (e.id, e.source, e.change.provider.clone()))
            .collect();
        assert_eq!(
            ids,
            vec![
                (1, Source::Poll, "p0".into()),
                (2, Source::Poll, "p1".into()),
                (3, Source::Poll, "p2".into()),
                (7, Source::Webhook, "p3".into()),
                (8, Source::Webhook, "p4".into()),
            ]
        );
        assert!(kept.is_some());
        let json = serde_json::to_value(w.get(3).unwrap()).unwrap();
        let owned = serde_json::to_value(w.get(3).unwrap().to_stored()).unwrap();
        assert_eq!(json, owned, "a borrowed event serializes as an owned one");
        assert_eq!(
            (json["id"].clone(), json["source"].clone()),
            (7.into(), "webhook".into())
        );
    }
}
