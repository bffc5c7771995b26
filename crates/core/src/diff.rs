//! Changes between two reports.
//!
//! [`diff`] compares two [`HealthReport`]s connection by connection (keyed by
//! [`Connection::id`]) and lists what changed. The [`crate::watch::Watcher`] builds on it with
//! anti-flap thresholds and provider-outage handling.
//!
//! Events serialize as one flat JSON object with an `event` tag:
//!
//! | `event` | extra fields |
//! | --- | --- |
//! | `appeared` | `status` |
//! | `disappeared` | `last_status` |
//! | `status_changed` | `from`, `to` |
//! | `problem_raised` | `problem` (`{code, severity, message, remediation}`) |
//! | `problem_cleared` | `code` |
//! | `sync_progressed` | `synced`, `total` |
//! | `provider_unavailable` | `outcome`, `errors` (watcher only) |
//! | `provider_recovered` | (watcher only) |
//!
//! and every event has `connection_id` (null for provider events), `provider`, `customer_id`,
//! `platform`, `at` (when the change was seen) and `since` (when the previous state began, where
//! known).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Connection, HealthReport, Outcome, Problem, ReportError, Status};

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeKind {
    /// A connection seen for the first time.
    Appeared {
        /// Its status.
        status: Status,
    },
    /// A connection no longer reported by a provider that answered fully.
    Disappeared {
        /// Its status when last seen.
        last_status: Status,
    },
    /// The normalized status changed.
    StatusChanged {
        /// Before.
        from: Status,
        /// After.
        to: Status,
    },
    /// A problem (by code) that was not there before.
    ProblemRaised {
        /// The problem (boxed: it is the largest variant, and a first poll holds one
        /// `Change` per connection, every one as large as the largest variant).
        problem: Box<Problem>,
    },
    /// A problem (by code) that is gone.
    ProblemCleared {
        /// Its code.
        code: String,
    },
    /// Sync counts moved.
    SyncProgressed {
        /// Items synced now.
        synced: Option<u64>,
        /// Items to sync now.
        total: Option<u64>,
    },
    /// A provider did not answer (its connections count as `unknown` until it does).
    ProviderUnavailable {
        /// How it failed.
        outcome: Outcome,
        /// Why.
        errors: Vec<ReportError>,
    },
    /// A provider that was unavailable answered again.
    ProviderRecovered,
}

impl ChangeKind {
    /// The `event` name.
    pub fn name(&self) -> &'static str {
        match self {
            ChangeKind::Appeared { .. } => "appeared",
            ChangeKind::Disappeared { .. } => "disappeared",
            ChangeKind::StatusChanged { .. } => "status_changed",
            ChangeKind::ProblemRaised { .. } => "problem_raised",
            ChangeKind::ProblemCleared { .. } => "problem_cleared",
            ChangeKind::SyncProgressed { .. } => "sync_progressed",
            ChangeKind::ProviderUnavailable { .. } => "provider_unavailable",
            ChangeKind::ProviderRecovered => "provider_recovered",
        }
    }
}

/// One change event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// What changed.
    #[serde(flatten)]
    pub kind: ChangeKind,
    /// The connection (None for provider events).
    pub connection_id: Option<String>,
    /// The provider.
    pub provider: String,
    /// The customer (None for provider events).
    pub customer_id: Option<String>,
    /// The platform (None for provider events).
    pub platform: Option<String>,
    /// When the change was seen.
    pub at: DateTime<Utc>,
    /// When the previous state began, where known.
    pub since: Option<DateTime<Utc>>,
}

impl Change {
    /// An event about one connection.
    pub fn about(
        conn: &Connection,
        kind: ChangeKind,
        at: DateTime<Utc>,
        since: Option<DateTime<Utc>>,
    ) -> Self {
        Change {
            kind,
            connection_id: Some(conn.id.clone()),
            provider: conn.provider.clone(),
            customer_id: Some(conn.customer.id.clone()),
            platform: Some(conn.platform.clone()),
            at,
            since,
        }
    }

    /// An event about a whole provider.
    pub fn provider(
        provider: &str,
        kind: ChangeKind,
        at: DateTime<Utc>,
        since: Option<DateTime<Utc>>,
    ) -> Self {
        Change {
            kind,
            connection_id: None,
            provider: provider.to_owned(),
            customer_id: None,
            platform: None,
            at,
            since,
        }
    }
}

/// The changes of one connection between two observations (same id), in a fixed order:
/// status, problems cleared, problems raised, sync.
pub fn connection_changes(
    prev: &Connection,
    cur: &Connection,
    at: DateTime<Utc>,
    since: Option<DateTime<Utc>>,
) -> Vec<Change> {
    let mut out = Vec::new();
    if prev.status != cur.status {
        out.push(Change::about(
            cur,
            ChangeKind::StatusChanged {
                from: prev.status,
                to: cur.status,
            },
            at,
            since,
        ));
    }
    let before: BTreeSet<&str> = prev.problems.iter().map(|p| p.code.as_str()).collect();
    let after: BTreeSet<&str> = cur.problems.iter().map(|p| p.code.as_str()).collect();
    for code in before.difference(&after) {
        out.push(Change::about(
            cur,
            ChangeKind::ProblemCleared {
                code: (*code).to_owned(),
            },
            at,
            since,
        ));
    }
    let mut raised = BTreeSet::new();
    for p in &cur.problems {
        if !before.contains(p.code.as_str()) && raised.insert(p.code.as_str()) {
            out.push(Change::about(
                cur,
                ChangeKind::ProblemRaised {
                    problem: Box::new(p.clone()),
                },
                at,
                since,
            ));
        }
    }
    let counts = |c: &Connection| c.sync.as_ref().map(|s| (s.synced, s.total));
    if let (Some(a), Some(b)) = (counts(prev), counts(cur)) {
        if a != b {
            out.push(Change::about(
                cur,
                ChangeKind::SyncProgressed {
                    synced: b.0,
                    total: b.1,
                },
                at,
                since,
            ));
        }
    }
    out
}

/// Every change from `previous` to `current`, keyed by connection id, sorted by id (then in
/// the order of [`connection_changes`]). `at` is `current.generated_at`; `since` is not known
/// to a plain diff (the [`crate::watch::Watcher`] tracks it) and is `None`.
///
/// A connection missing from `current` is `disappeared` only if its provider answered fully
/// (`ok`) in `current`; otherwise nothing is said about it.
pub fn diff(previous: &HealthReport, current: &HealthReport) -> Vec<Change> {
    let at = current.generated_at;
    let complete: BTreeSet<&str> = current
        .providers
        .iter()
        .filter(|p| p.outcome == Outcome::Ok)
        .map(|p| p.provider.as_str())
        .collect();
    let prev: BTreeMap<&str, &Connection> = previous
        .connections
        .iter()
        .map(|c| (c.id.as_str(), &**c))
        .collect();
    let cur: BTreeMap<&str, &Connection> = current
        .connections
        .iter()
        .map(|c| (c.id.as_str(), &**c))
        .collect();
    let ids: BTreeSet<&str> = prev.keys().chain(cur.keys()).copied().collect();
    let mut out = Vec::new();
    for id in ids {
        match (prev.get(id), cur.get(id)) {
            (None, Some(c)) => out.push(Change::about(
                c,
                ChangeKind::Appeared { status: c.status },
                at,
                None,
            )),
            (Some(p), None) if complete.contains(p.provider.as_str()) => out.push(Change::about(
                p,
                ChangeKind::Disappeared {
                    last_status: p.status,
                },
                at,
                None,
            )),
            (Some(_), None) => {}
            (Some(p), Some(c)) => out.extend(connection_changes(p, c, at, None)),
            (None, None) => {}
        }
    }
    out
}

/// Replays `changes` onto a map of connection id → status: what a consumer that only listens
/// to events believes. `apply(statuses(a), diff(a, b)) == statuses(b)` for reports whose
/// providers all answered.
pub fn apply(statuses: &mut BTreeMap<String, Status>, changes: &[Change]) {
    for c in changes {
        let Some(id) = &c.connection_id else { continue };
        match &c.kind {
            ChangeKind::Appeared { status } => {
                statuses.insert(id.clone(), *status);
            }
            ChangeKind::Disappeared { .. } => {
                statuses.remove(id);
            }
            ChangeKind::StatusChanged { to, .. } => {
                statuses.insert(id.clone(), *to);
            }
            _ => {}
        }
    }
}

/// Connection id → status of a report.
pub fn statuses(report: &HealthReport) -> BTreeMap<String, Status> {
    report
        .connections
        .iter()
        .map(|c| (c.id.clone(), c.status))
        .collect()
}
