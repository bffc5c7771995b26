//! The normalized model: what every provider's answer is mapped onto.
//!
//! The JSON names of these types are a public contract (see `ARCHITECTURE.md`): dashboards and
//! monitoring consume them. Every enum serializes in `snake_case`; optional fields serialize
//! as `null` rather than disappearing, so consumers can rely on every key being present.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

/// The normalized health of one connection.
///
/// Ordered by [`Status::severity`] (ties broken by declaration order), so `max()` over a set
/// of statuses is the roll-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Connected and delivering.
    Healthy,
    /// The platform is available but the customer never connected it (informational).
    NotConnected,
    /// Set-up begun, nothing delivered yet, nothing wrong yet.
    Pending,
    /// Connected, first or ongoing delivery in progress.
    Syncing,
    /// The provider said something we cannot classify.
    Unknown,
    /// Working, with problems (partial sync, invalid products, a failing non-blocking check).
    Degraded,
    /// The link is gone (revoked, uninstalled, disconnected).
    Disconnected,
    /// Someone must act (re-auth, missing scopes, a follow-up step, payout set-up).
    ActionRequired,
}

impl Status {
    /// Every status, from least to most severe.
    pub const ALL: [Status; 8] = [
        Status::Healthy,
        Status::NotConnected,
        Status::Pending,
        Status::Syncing,
        Status::Unknown,
        Status::Degraded,
        Status::Disconnected,
        Status::ActionRequired,
    ];

    /// Severity used by roll-ups: 0 (fine) to 5 (someone must act).
    pub const fn severity(self) -> u8 {
        match self {
            Status::Healthy | Status::NotConnected => 0,
            Status::Pending | Status::Syncing => 1,
            Status::Unknown => 2,
            Status::Degraded => 3,
            Status::Disconnected => 4,
            Status::ActionRequired => 5,
        }
    }

    /// The JSON / display name (`"action_required"`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::NotConnected => "not_connected",
            Status::Pending => "pending",
            Status::Syncing => "syncing",
            Status::Unknown => "unknown",
            Status::Degraded => "degraded",
            Status::Disconnected => "disconnected",
            Status::ActionRequired => "action_required",
        }
    }

    /// `true` for the statuses that need no explanation (`healthy`, `not_connected`).
    pub const fn is_ok(self) -> bool {
        self.severity() == 0
    }

    fn rank(self) -> u8 {
        // Position in `ALL`: severity first, declaration order within a severity.
        self as u8
    }
}

impl PartialOrd for Status {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Status {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Error returned when parsing a [`Status`] from a string that is not one of the eight names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}; expected one of healthy, not_connected, pending, syncing, unknown, degraded, disconnected, action_required")]
pub struct ParseStatusError(pub String);

impl FromStr for Status {
    type Err = ParseStatusError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ParseStatusError(s.to_owned()))
    }
}

/// The customer a connection belongs to (Channel3 `customer_id`, Violet `merchant_id`,
/// Subtotal `customer_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Customer {
    /// The provider's customer identifier.
    pub id: String,
    /// Display name, where the provider gives one (boxed `str`s here: each 8 bytes smaller
    /// than a `String`, in every remembered connection).
    #[serde(default)]
    pub name: Option<Box<str>>,
    /// E-mail address, only where the provider gives one and the caller opted in (personal data).
    #[serde(default)]
    pub email: Option<Box<str>>,
}

impl Customer {
    /// A customer known only by id.
    pub fn new(id: impl Into<String>) -> Self {
        Customer {
            id: id.into(),
            name: None,
            email: None,
        }
    }
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// A catalog source (e.g. a Shopify store feeding products in).
    Source,
    /// A distribution destination (e.g. Google, OpenAI).
    Destination,
    /// A customer's account link (e.g. a Subtotal retailer account).
    Account,
}

impl Role {
    /// The JSON / display name (`"source"`, `"destination"`, `"account"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Destination => "destination",
            Role::Account => "account",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Delivery lifecycle of a connection's data sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncState {
    /// Nothing delivered yet.
    Pending,
    /// Delivery in progress.
    Syncing,
    /// Delivered and confirmed.
    Live,
    /// The last delivery failed.
    Failed,
    /// The provider reported a state we do not know.
    Unknown,
}

impl SyncState {
    /// The JSON / display name (`"pending"`, `"syncing"`, `"live"`, `"failed"`, `"unknown"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            SyncState::Pending => "pending",
            SyncState::Syncing => "syncing",
            SyncState::Live => "live",
            SyncState::Failed => "failed",
            SyncState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Sync progress of a connection (the `sync` key of a [`Connection`] in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncProgress {
    /// Lifecycle state.
    pub state: SyncState,
    /// Items the provider is delivering, where known.
    #[serde(default)]
    pub total: Option<u64>,
    /// Items delivered, where known.
    #[serde(default)]
    pub synced: Option<u64>,
    /// Most recent sync activity, where known.
    #[serde(default)]
    pub last_synced_at: Option<DateTime<Utc>>,
}

/// One sub-check a provider reports about a connection (Violet reports eight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// The check's name as the provider calls it, snake_case (`scope_validation`).
    pub name: String,
    /// The check's outcome, normalized.
    pub status: Status,
    /// What the provider said, where it said something.
    #[serde(default)]
    pub detail: Option<String>,
}

/// What someone can do about a problem. Tagged by `kind` in JSON, so a dashboard can
/// render a button without knowing the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Remediation {
    /// The customer must sign in again.
    Reauthenticate {
        /// A link where the provider gives one (else how to get one is in the problem message).
        #[serde(default)]
        url: Option<String>,
    },
    /// The customer must grant these permissions.
    GrantScopes {
        /// The missing scopes, as the provider names them.
        missing: Vec<String>,
    },
    /// The link must be re-established.
    Reconnect {
        /// A link where the provider gives one.
        #[serde(default)]
        url: Option<String>,
    },
    /// A set-up step must be completed (payout account, platform plan, migration, …).
    CompleteSetup {
        /// Which step.
        step: String,
    },
    /// Nothing to do but wait for the sync to finish.
    WaitForSync,
    /// Only the provider can help.
    ContactProvider {
        /// What to tell them.
        detail: String,
    },
}

/// One reason a connection is not healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable snake_case code (`missing_scopes`, `partial_sync`, `reauthentication_required`,
    /// `unrecognized_value`, …).
    pub code: String,
    /// The status this problem alone implies.
    pub severity: Status,
    /// Human-readable explanation.
    pub message: String,
    /// What to do about it, where something can be done.
    #[serde(default)]
    pub remediation: Option<Remediation>,
}

impl Problem {
    /// A problem without remediation.
    pub fn new(code: impl Into<String>, severity: Status, message: impl Into<String>) -> Self {
        Problem {
            code: code.into(),
            severity,
            message: message.into(),
            remediation: None,
        }
    }

    /// Attach a remediation.
    pub fn with_remediation(mut self, remediation: Remediation) -> Self {
        self.remediation = Some(remediation);
        self
    }

    /// The standard problem for a value a mapping does not know: `unrecognized_value`,
    /// severity `unknown`, naming the field and the value.
    pub fn unrecognized(field: &str, value: &str) -> Self {
        Problem::new(
            "unrecognized_value",
            Status::Unknown,
            format!("unrecognized value {value:?} for {field}"),
        )
    }
}

/// A platform-side account attached to a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The platform's account id.
    pub id: String,
    /// Display name, where known.
    #[serde(default)]
    pub name: Option<String>,
    /// Store URL, where known.
    #[serde(default)]
    pub store_url: Option<String>,
}

/// When a [`Connection`] was read: a UTC time, to the nanosecond, that can be moved through a
/// shared reference.
///
/// A watcher remembers each connection once, and the reports it serves, the journal that
/// writes it and the watcher's own state all point at that one allocation. A poll re-reads
/// every connection and usually finds it unchanged but for this time; moving it in place
/// ([`ObservedAt::set`]) is what lets an unchanged connection stay one allocation instead of
/// being copied (for a moment, twice over) at every poll.
///
/// Serialized exactly as a [`DateTime<Utc>`] (RFC 3339). Holds 1677-09-21 to 2262-04-11;
/// [`ObservedAt::new`] saturates outside that range, and deserializing a time outside it
/// fails. Reads and writes are relaxed atomics: it orders nothing else.
///
/// ```
/// use connhealth_core::ObservedAt;
/// let t: chrono::DateTime<chrono::Utc> = "2026-12-01T10:00:00.5Z".parse().unwrap();
/// let at = ObservedAt::new(t);
/// assert_eq!(at, t);
/// at.set(t + chrono::Duration::seconds(60));
/// assert_eq!(at.get().to_rfc3339(), "2026-12-01T10:01:00.500+00:00");
/// assert_eq!(serde_json::to_string(&at).unwrap(), "\"2026-12-01T10:01:00.500Z\"");
/// ```
pub struct ObservedAt(std::sync::atomic::AtomicI64);

impl ObservedAt {
    /// `at`, saturated to the range above.
    pub fn new(at: DateTime<Utc>) -> ObservedAt {
        ObservedAt(std::sync::atomic::AtomicI64::new(ObservedAt::nanos(at)))
    }

    /// The time.
    pub fn get(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Move it to `at` (saturated), seen at once by everyone sharing the connection.
    pub fn set(&self, at: DateTime<Utc>) {
        self.0
            .store(ObservedAt::nanos(at), std::sync::atomic::Ordering::Relaxed);
    }

    fn nanos(at: DateTime<Utc>) -> i64 {
        at.timestamp_nanos_opt().unwrap_or(if at.timestamp() < 0 {
            i64::MIN
        } else {
            i64::MAX
        })
    }
}

impl From<DateTime<Utc>> for ObservedAt {
    fn from(at: DateTime<Utc>) -> ObservedAt {
        ObservedAt::new(at)
    }
}

impl Clone for ObservedAt {
    fn clone(&self) -> ObservedAt {
        ObservedAt::new(self.get())
    }
}

impl PartialEq for ObservedAt {
    fn eq(&self, other: &ObservedAt) -> bool {
        self.get() == other.get()
    }
}

impl Eq for ObservedAt {}

impl PartialEq<DateTime<Utc>> for ObservedAt {
    fn eq(&self, other: &DateTime<Utc>) -> bool {
        self.get() == *other
    }
}

impl fmt::Debug for ObservedAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

impl fmt::Display for ObservedAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.get(), f)
    }
}

impl Serialize for ObservedAt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ObservedAt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ObservedAt, D::Error> {
        let at = DateTime::<Utc>::deserialize(d)?;
        if at.timestamp_nanos_opt().is_none() {
            return Err(serde::de::Error::custom(format!(
                "observed_at {at} is outside 1677-09-21..2262-04-11"
            )));
        }
        Ok(ObservedAt::new(at))
    }
}

/// One connection: one customer × provider × platform/retailer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Connection {
    /// Stable across polls: `"{provider}:{provider_connection_id}"`, or
    /// `"{provider}:{customer_id}:{platform}"` when the provider gives no id.
    /// Build it with [`Connection::make_id`].
    pub id: String,
    /// The provider's name (`channel3`, `violet`, `subtotal`, or a configured name).
    pub provider: String,
    /// The provider's own id for the connection, where it has one (a boxed `str`: 8 bytes
    /// smaller than a `String`, in every remembered connection).
    pub provider_connection_id: Option<Box<str>>,
    /// Whose connection this is.
    pub customer: Customer,
    /// Lowercase platform slug (`shopify`, `google`, …); unknown values are kept, lowercased.
    pub platform: String,
    /// What the connection is for.
    pub role: Role,
    /// Normalized status: the worst of everything known about the connection.
    pub status: Status,
    /// The provider's raw top-level status, verbatim.
    pub provider_status: String,
    /// When the connection was made, where known.
    pub connected_at: Option<DateTime<Utc>>,
    /// Sync progress, where the provider reports one.
    /// Boxed: most connections have none, and an unboxed one made every connection 40 bytes
    /// larger.
    pub sync: Option<Box<SyncProgress>>,
    /// Sub-checks the provider reports. [`ThinVec`]: one pointer, and no allocation while
    /// empty (most connections have no checks, problems or accounts; three `Vec`s were 48
    /// bytes more in every connection).
    pub checks: ThinVec<Check>,
    /// Every reason the status is not healthy.
    pub problems: ThinVec<Problem>,
    /// Platform-side accounts.
    pub accounts: ThinVec<Account>,
    /// When we read it. The one field that moves without a copy: a re-read that finds the
    /// connection otherwise unchanged sets it in place ([`ObservedAt::set`]), so every report
    /// sharing the connection shows its latest read.
    pub observed_at: ObservedAt,
    /// How old the provider's own data is, where it says (stale is not unhealthy).
    pub data_as_of: Option<DateTime<Utc>>,
}

impl Connection {
    /// A connection with the fields every connection has; the others start empty (no sync,
    /// checks, problems, accounts or times, an empty `provider_status`) and are set on the
    /// value. `id` is [`Connection::make_id`] of the parts.
    ///
    /// ```
    /// use connhealth_core::{Connection, Customer, Role, Status};
    /// let mut c = Connection::new("example", Some("c1"), Customer::new("cus_1"), "shopify",
    ///     Role::Source, Status::Healthy, chrono::Utc::now());
    /// c.provider_status = "active".into();
    /// assert_eq!(c.id, "example:c1");
    /// ```
    pub fn new(
        provider: impl Into<String>,
        provider_connection_id: Option<&str>,
        customer: Customer,
        platform: impl Into<String>,
        role: Role,
        status: Status,
        observed_at: DateTime<Utc>,
    ) -> Self {
        let provider = provider.into();
        let platform = platform.into();
        Connection {
            id: Connection::make_id(&provider, provider_connection_id, &customer.id, &platform),
            provider,
            provider_connection_id: provider_connection_id.map(Box::from),
            customer,
            platform,
            role,
            status,
            provider_status: String::new(),
            connected_at: None,
            sync: None,
            checks: ThinVec::new(),
            problems: ThinVec::new(),
            accounts: ThinVec::new(),
            observed_at: ObservedAt::new(observed_at),
            data_as_of: None,
        }
    }

    /// Give back the spare capacity of every string and list in it (what a decoder's or a
    /// builder's growth left over), so that a connection kept for long holds only its bytes.
    /// [`HealthReport::new`] does it for every connection it takes in.
    ///
    /// ```
    /// use connhealth_core::{Connection, Customer, Role, Status};
    /// let mut c = Connection::new("example", Some("c1"), Customer::new("cus_1"), "shopify",
    ///     Role::Source, Status::Healthy, chrono::Utc::now());
    /// c.provider_status.reserve(100);
    /// c.shrink_to_fit();
    /// assert_eq!(c.provider_status.capacity(), c.provider_status.len());
    /// ```
    pub fn shrink_to_fit(&mut self) {
        fn text(s: &mut String) {
            s.shrink_to_fit();
        }
        fn opt(s: &mut Option<String>) {
            if let Some(s) = s {
                s.shrink_to_fit();
            }
        }
        // Exhaustive: a new field must be added here too.
        let Connection {
            id,
            provider,
            provider_connection_id: _,
            customer,
            platform,
            role: _,
            status: _,
            provider_status,
            connected_at: _,
            sync: _,
            checks,
            problems,
            accounts,
            observed_at: _,
            data_as_of: _,
        } = self;
        text(id);
        text(provider);
        text(&mut customer.id);
        text(platform);
        text(provider_status);
        checks.shrink_to_fit();
        for c in checks {
            text(&mut c.name);
            opt(&mut c.detail);
        }
        problems.shrink_to_fit();
        for p in problems {
            text(&mut p.code);
            text(&mut p.message);
        }
        accounts.shrink_to_fit();
        for a in accounts {
            text(&mut a.id);
            opt(&mut a.name);
            opt(&mut a.store_url);
        }
    }

    /// Whether `self` and `other` are equal in everything but `observed_at` (which moves on
    /// every read): what decides whether a remembered connection changed. Compares in place,
    /// without a copy of either.
    pub fn same_except_observed_at(&self, other: &Connection) -> bool {
        // Exhaustive: a new field must be added here too.
        let Connection {
            id,
            provider,
            provider_connection_id,
            customer,
            platform,
            role,
            status,
            provider_status,
            connected_at,
            sync,
            checks,
            problems,
            accounts,
            observed_at: _,
            data_as_of,
        } = self;
        *id == other.id
            && *provider == other.provider
            && *provider_connection_id == other.provider_connection_id
            && *customer == other.customer
            && *platform == other.platform
            && *role == other.role
            && *status == other.status
            && *provider_status == other.provider_status
            && *connected_at == other.connected_at
            && *sync == other.sync
            && *checks == other.checks
            && *problems == other.problems
            && *accounts == other.accounts
            && *data_as_of == other.data_as_of
    }

    /// The stable connection id: `"{provider}:{provider_connection_id}"` when the provider gives
    /// an id, else `"{provider}:{customer_id}:{platform}"`.
    pub fn make_id(
        provider: &str,
        provider_connection_id: Option<&str>,
        customer_id: &str,
        platform: &str,
    ) -> String {
        // Built with `push_str` rather than `format!`: this runs once per connection per poll.
        let parts: &[&str] = match provider_connection_id {
            Some(pid) => &[provider, ":", pid],
            None => &[provider, ":", customer_id, ":", platform],
        };
        let mut id = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            id.push_str(p);
        }
        id
    }

    /// The worst severity among `problems` and `checks`, or `healthy` when there are none.
    ///
    /// Adapters usually set `status` to `max(base, worst_reported())`.
    pub fn worst_reported(&self) -> Status {
        self.problems
            .iter()
            .map(|p| p.severity)
            .chain(self.checks.iter().map(|c| c.status))
            .max()
            .unwrap_or(Status::Healthy)
    }
}

/// How completely one provider answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Every request succeeded.
    Ok,
    /// Some customers answered and some did not.
    Partial,
    /// Nothing usable came back.
    Failed,
    /// The provider did not finish within its timeout (what arrived before is kept).
    TimedOut,
}

impl Outcome {
    /// The JSON / display name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One error in a [`ProviderOutcome`], as it appears in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportError {
    /// Stable error kind (see [`crate::ErrorKind`]).
    pub kind: crate::ErrorKind,
    /// Human-readable message: provider, endpoint and what went wrong. Never a secret.
    pub message: String,
    /// The HTTP status, when there was a response.
    #[serde(default)]
    pub http_status: Option<u16>,
    /// The customer whose request failed, when only one customer was affected.
    #[serde(default)]
    pub customer_id: Option<String>,
}

/// One provider's part of a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderOutcome {
    /// The provider's name.
    pub provider: String,
    /// How completely it answered.
    pub outcome: Outcome,
    /// How many connections it contributed to the report.
    pub connections: usize,
    /// How long its fetch took.
    pub elapsed_ms: u64,
    /// What went wrong; empty when `outcome` is `ok`.
    pub errors: Vec<ReportError>,
}

/// Count of connections per status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// All connections.
    pub total: usize,
    /// `healthy` connections.
    pub healthy: usize,
    /// `not_connected` connections.
    pub not_connected: usize,
    /// `pending` connections.
    pub pending: usize,
    /// `syncing` connections.
    pub syncing: usize,
    /// `unknown` connections.
    pub unknown: usize,
    /// `degraded` connections.
    pub degraded: usize,
    /// `disconnected` connections.
    pub disconnected: usize,
    /// `action_required` connections.
    pub action_required: usize,
}

impl Summary {
    /// Count the statuses of `connections`.
    pub fn of<'a>(connections: impl IntoIterator<Item = &'a Connection>) -> Self {
        let mut s = Summary::default();
        for c in connections {
            s.add(c.status);
        }
        s
    }

    /// Count one more connection of `status`.
    pub fn add(&mut self, status: Status) {
        self.total += 1;
        *self.slot(status) += 1;
    }

    /// The count for one status.
    pub fn count(&self, status: Status) -> usize {
        match status {
            Status::Healthy => self.healthy,
            Status::NotConnected => self.not_connected,
            Status::Pending => self.pending,
            Status::Syncing => self.syncing,
            Status::Unknown => self.unknown,
            Status::Degraded => self.degraded,
            Status::Disconnected => self.disconnected,
            Status::ActionRequired => self.action_required,
        }
    }

    fn slot(&mut self, status: Status) -> &mut usize {
        match status {
            Status::Healthy => &mut self.healthy,
            Status::NotConnected => &mut self.not_connected,
            Status::Pending => &mut self.pending,
            Status::Syncing => &mut self.syncing,
            Status::Unknown => &mut self.unknown,
            Status::Degraded => &mut self.degraded,
            Status::Disconnected => &mut self.disconnected,
            Status::ActionRequired => &mut self.action_required,
        }
    }
}

/// The merged answer of every provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// When the report was assembled.
    pub generated_at: DateTime<Utc>,
    /// The roll-up (see [`HealthReport::roll_up`]).
    pub overall: Status,
    /// Counts per status.
    pub summary: Summary,
    /// One entry per provider, in the order the providers were configured.
    pub providers: Vec<ProviderOutcome>,
    /// Every connection, sorted by `id`. Shared, not copied: a watcher's report points to
    /// the connections it remembers (one allocation each, however many reports, journals and
    /// served views hold it); serialized exactly as a plain `Connection`.
    #[serde(with = "shared::vec")]
    pub connections: Vec<Arc<Connection>>,
}

impl HealthReport {
    /// Assemble a report: sorts connections by `id`, counts them, and rolls up `overall`.
    pub fn new(
        generated_at: DateTime<Utc>,
        providers: Vec<ProviderOutcome>,
        connections: Vec<Connection>,
    ) -> Self {
        // Not `collect()`: it would reuse the list's allocation in place, keeping the whole
        // buffer of inline connections alive behind a vector of pointers.
        let mut shared = Vec::with_capacity(connections.len());
        shared.extend(connections.into_iter().map(|mut c| {
            c.shrink_to_fit();
            Arc::new(c)
        }));
        Self::from_shared(generated_at, providers, shared)
    }

    /// [`HealthReport::new`] over connections already shared (e.g. a watcher's memory):
    /// the report points to them, no connection is copied.
    pub fn from_shared(
        generated_at: DateTime<Utc>,
        providers: Vec<ProviderOutcome>,
        mut connections: Vec<Arc<Connection>>,
    ) -> Self {
        // The aggregator hands over lists that are already sorted: check (n comparisons)
        // before sorting (which would allocate scratch space for half the list).
        if !connections.is_sorted_by(|a, b| a.id <= b.id) {
            connections.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let summary = Summary::of(connections.iter().map(|c| &**c));
        let overall = Self::roll_up(&providers, &connections);
        HealthReport {
            generated_at,
            overall,
            summary,
            providers,
            connections,
        }
    }

    /// The roll-up rule: the most severe status among connections (`not_connected` counts as
    /// fine); if any provider did not fully answer (`partial`, `failed`, `timed_out`), at least
    /// `unknown`. No connections and every provider `ok` is `healthy`.
    /// `connections` may be plain or shared (`&[Connection]`, `&[Arc<Connection>]`).
    pub fn roll_up<C: Borrow<Connection>>(
        providers: &[ProviderOutcome],
        connections: &[C],
    ) -> Status {
        let worst = connections
            .iter()
            .map(|c| c.borrow().status)
            // `not_connected` is informational: it never makes a report look other than healthy.
            .map(|s| {
                if s == Status::NotConnected {
                    Status::Healthy
                } else {
                    s
                }
            })
            .max()
            .unwrap_or(Status::Healthy);
        if providers.iter().any(|p| p.outcome != Outcome::Ok) {
            worst.max(Status::Unknown)
        } else {
            worst
        }
    }

    /// The connections of one provider.
    pub fn connections_of<'a>(
        &'a self,
        provider: &'a str,
    ) -> impl Iterator<Item = &'a Connection> + 'a {
        self.connections
            .iter()
            .filter(move |c| c.provider == provider)
            .map(|c| &**c)
    }

    /// Look a connection up by id (connections are sorted by id).
    pub fn connection(&self, id: &str) -> Option<&Connection> {
        self.connections
            .binary_search_by(|c| c.id.as_str().cmp(id))
            .ok()
            .map(|i| &*self.connections[i])
    }
}

/// Serde for shared connections (`Arc<Connection>`), written and read exactly as a plain
/// [`Connection`]: the JSON of reports and `--state` files does not change. (serde's own
/// `rc` feature would do the same, but turning it on rebuilds every crate that depends on
/// serde; two functions per shape are all that is needed.)
pub mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Connection;

    /// `#[serde(with = "connhealth_core::shared")]` on an `Arc<Connection>` field.
    pub fn serialize<S: Serializer>(c: &Arc<Connection>, s: S) -> Result<S::Ok, S::Error> {
        Connection::serialize(c, s)
    }

    /// See [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Connection>, D::Error> {
        Connection::deserialize(d).map(Arc::new)
    }

    /// `#[serde(with = "connhealth_core::shared::vec")]` on a `Vec<Arc<Connection>>` field.
    pub mod vec {
        use std::sync::Arc;

        use serde::{Deserialize, Deserializer, Serializer};

        use super::Connection;

        /// Write the connections as a sequence of plain connections.
        pub fn serialize<S: Serializer>(v: &[Arc<Connection>], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|c| &**c))
        }

        /// Read a sequence of plain connections.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<Arc<Connection>>, D::Error> {
            let plain = Vec::<Connection>::deserialize(d)?;
            // `extend`, not `collect()` (which would keep `plain`'s buffer alive in place).
            let mut shared = Vec::with_capacity(plain.len());
            shared.extend(plain.into_iter().map(Arc::new));
            Ok(shared)
        }
    }
}
