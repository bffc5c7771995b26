//! Channel3 vocabulary → the normalized model. Pure: no I/O, no clock.
//!
//! The rules are written once, in the crate documentation ("How an answer maps"); the
//! code here follows them.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use connhealth_core::lenient::Losses;
use connhealth_core::{
    Account, Connection, Customer, Problem, Remediation, Role, Status, SyncProgress,
};

use crate::wire::{
    ConnectionStatus, ConnectionSync, PartnerConnection, PartnerConnectionsResponse,
    PlatformCategory, SkippedItem, SyncState,
};

/// The connections of one customer, and what was left out of them (core's one way of
/// reporting it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mapped {
    /// One connection per usable entry, in the provider's order.
    pub(crate) connections: Vec<Connection>,
    /// Entries left out: undecodable ones (from the wire) and ones without `platform`; ids of
    /// entries collapsed into an earlier one with the same connection id (the most severe of
    /// them is kept), once per collapsed entry.
    pub(crate) losses: Losses,
}

/// Maps one customer's List connections answer.
///
/// `provider` is the configured provider name (it prefixes every connection id).
pub(crate) fn map_connections(
    provider: &str,
    customer: &Customer,
    response: &PartnerConnectionsResponse,
    observed_at: DateTime<Utc>,
) -> Mapped {
    let mut skipped = response.skipped.clone();
    let mut connections: Vec<Connection> = Vec::with_capacity(response.connections.len());
    let mut duplicates = Vec::new();
    let mut seen = None;
    for (index, item) in response.connections.iter().enumerate() {
        // `index` counts decoded entries only; undecodable ones carry their own position.
        match map_connection(provider, customer, item, observed_at) {
            Some(c) => match position(&connections, &mut seen, &c.id) {
                None => connections.push(c),
                Some(i) => {
                    duplicates.push(c.id.clone());
                    if c.status > connections[i].status {
                        connections[i] = c;
                    }
                }
            },
            None => skipped.push(SkippedItem {
                index,
                id: item.id.clone(),
                reason: "platform is missing".to_owned(),
            }),
        }
    }
    Mapped {
        connections,
        losses: Losses {
            skipped,
            duplicates,
        },
    }
}

/// Where in `kept` a connection with `id` is, remembering a new one as taken at the end.
/// Answers are short (one entry per platform), so `kept` is scanned; an index of the ids is
/// built only for long ones.
fn position(
    kept: &[Connection],
    seen: &mut Option<HashMap<String, usize>>,
    id: &str,
) -> Option<usize> {
    const SCAN_BELOW: usize = 32;
    if kept.len() < SCAN_BELOW && seen.is_none() {
        return kept.iter().position(|k| k.id == id);
    }
    let map = seen.get_or_insert_with(|| {
        kept.iter()
            .enumerate()
            .map(|(i, k)| (k.id.clone(), i))
            .collect()
    });
    match map.get(id) {
        Some(&i) => Some(i),
        None => {
            map.insert(id.to_owned(), kept.len());
            None
        }
    }
}

/// Maps one `PartnerConnection`. `None` when it has no `platform` (it cannot be identified).
pub(crate) fn map_connection(
    provider: &str,
    customer: &Customer,
    wire: &PartnerConnection,
    observed_at: DateTime<Utc>,
) -> Option<Connection> {
    let platform = wire.platform.as_ref()?.as_str().trim().to_lowercase();
    if platform.is_empty() {
        return None;
    }
    let label = Label {
        platform: &platform,
        display_name: wire
            .display_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case(&platform)),
    };
    let pid = wire.id.as_deref().filter(|s| !s.is_empty());
    let mut problems = Vec::new();

    let role = match &wire.category {
        Some(PlatformCategory::Distribution) => Role::Destination,
        Some(PlatformCategory::Ingestion) => Role::Source,
        Some(PlatformCategory::Other(v)) => {
            problems.push(Problem::unrecognized("category", v));
            Role::Source
        }
        None => {
            problems.push(missing("category", &label));
            Role::Source
        }
    };

    let sync_state = wire.sync.as_ref().map(|s| s.state.as_ref());
    // An unknown sync state is reported wherever it appears.
    if let Some(Some(SyncState::Other(v))) = sync_state {
        problems.push(Problem::unrecognized("sync.state", v));
    }

    let base = match &wire.status {
        Some(ConnectionStatus::NotConnected) => Status::NotConnected,
        Some(ConnectionStatus::ActionRequired) => {
            problems.push(action_required(&label, &platform, &customer.id));
            Status::ActionRequired
        }
        Some(ConnectionStatus::Active) => match &wire.category {
            Some(PlatformCategory::Distribution) => {
                active_distribution(&label, wire.sync.as_ref(), &mut problems)
            }
            // Ingestion is healthy when active (its sync, if any, only matters when unknown,
            // reported above). An unknown category was reported above.
            _ => Status::Healthy,
        },
        Some(ConnectionStatus::Other(v)) => {
            problems.push(Problem::unrecognized("status", v));
            Status::Unknown
        }
        None => {
            problems.push(missing("status", &label));
            Status::Unknown
        }
    };

    let sync = wire.sync.as_ref().map(map_sync);
    let mut accounts: Vec<Account> = Vec::new();
    for a in wire.accounts.iter().flatten() {
        let Some(id) = a.id.as_deref().filter(|s| !s.is_empty()) else {
            continue;
        };
        // An account listed twice is one account (the first entry wins).
        if accounts.iter().any(|k| k.id == id) {
            continue;
        }
        accounts.push(Account {
            id: id.to_owned(),
            name: a.name.clone(),
            store_url: a.store_url.clone(),
        });
    }

    let mut conn = Connection::new(
        provider,
        pid,
        customer.clone(),
        platform,
        role,
        base,
        observed_at,
    );
    conn.provider_status = wire
        .status
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    conn.connected_at = wire.connected_at.as_deref().and_then(parse_time);
    conn.data_as_of = sync.as_ref().and_then(|s| s.last_synced_at);
    conn.sync = sync.map(Box::new);
    conn.problems = problems.into();
    conn.accounts = accounts.into();
    conn.status = base.max(conn.worst_reported());
    Some(conn)
}

fn active_distribution(
    label: &Label<'_>,
    sync: Option<&ConnectionSync>,
    problems: &mut Vec<Problem>,
) -> Status {
    let Some(sync) = sync else {
        problems.push(Problem::new(
            "sync_status_missing",
            Status::Unknown,
            format!("{label} is active but Channel3 reported no sync status for it"),
        ));
        return Status::Unknown;
    };
    match &sync.state {
        Some(SyncState::Pending) => {
            problems.push(
                Problem::new(
                    "sync_pending",
                    Status::Pending,
                    format!("{label} is connected; Channel3 has not delivered any products yet"),
                )
                .with_remediation(Remediation::WaitForSync),
            );
            Status::Pending
        }
        Some(SyncState::Syncing) => {
            let progress = match counts(sync) {
                (Some(total), Some(synced)) => {
                    format!(" ({synced} of {total} products synced so far)")
                }
                _ => String::new(),
            };
            problems.push(
                Problem::new(
                    "sync_in_progress",
                    Status::Syncing,
                    format!("{label}: products were delivered and await confirmation{progress}"),
                )
                .with_remediation(Remediation::WaitForSync),
            );
            Status::Syncing
        }
        Some(SyncState::Live) => match counts(sync) {
            (Some(total), Some(synced)) if synced < total => {
                problems.push(Problem::new(
                    "partial_sync",
                    Status::Degraded,
                    format!(
                        "{label}: {synced} of {total} products synced ({} not synced; see the Channel3 Observability dashboard)",
                        total - synced
                    ),
                ));
                Status::Degraded
            }
            _ => Status::Healthy,
        },
        // Reported by the caller (unrecognized_value).
        Some(SyncState::Other(_)) => Status::Unknown,
        None => {
            problems.push(Problem::new(
                "sync_status_missing",
                Status::Unknown,
                format!("{label} is active but its sync status has no state"),
            ));
            Status::Unknown
        }
    }
}

/// How messages name a connection: `google (Acme Corp Google Store)`, or just the platform.
/// Formatted only when a problem is raised.
struct Label<'a> {
    platform: &'a str,
    display_name: Option<&'a str>,
}

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.display_name {
            Some(name) => write!(f, "{} ({name})", self.platform),
            None => f.write_str(self.platform),
        }
    }
}

fn action_required(label: &Label<'_>, platform: &str, customer_id: &str) -> Problem {
    Problem::new(
        "action_required",
        Status::ActionRequired,
        format!(
            "{label} needs a follow-up step from the merchant: mint a connect session \
             (POST /v0/partner/merchants/{customer_id}/connections/sessions with platform \"{platform}\") \
             and send the merchant to its url"
        ),
    )
    .with_remediation(Remediation::Reconnect { url: None })
}

fn missing(field: &str, label: &Label<'_>) -> Problem {
    Problem::new(
        "missing_value",
        Status::Unknown,
        format!("Channel3 sent no {field} for {label}"),
    )
}

/// `(total, synced)`, each `None` when absent or negative.
fn counts(sync: &ConnectionSync) -> (Option<u64>, Option<u64>) {
    let c = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok());
    (c(sync.total_products), c(sync.synced_products))
}

fn map_sync(sync: &ConnectionSync) -> SyncProgress {
    let (total, synced) = counts(sync);
    SyncProgress {
        state: match &sync.state {
            Some(SyncState::Pending) => connhealth_core::SyncState::Pending,
            Some(SyncState::Syncing) => connhealth_core::SyncState::Syncing,
            Some(SyncState::Live) => connhealth_core::SyncState::Live,
            Some(SyncState::Other(_)) | None => connhealth_core::SyncState::Unknown,
        },
        total,
        synced,
        last_synced_at: sync.last_synced_at.as_deref().and_then(parse_time),
    }
}

/// Parses an RFC 3339 date-time; one without offset is read as UTC (core's one time parser).
pub(crate) use connhealth_core::lenient::parse_time;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PlatformSlug;

    fn entry(platform: &str, id: &str) -> PartnerConnection {
        PartnerConnection {
            platform: Some(PlatformSlug::from(platform)),
            category: Some(PlatformCategory::Ingestion),
            status: Some(ConnectionStatus::Active),
            id: Some(id.to_owned()),
            ..PartnerConnection::default()
        }
    }

    #[test]
    fn repeated_ids_are_skipped_in_short_and_long_answers() {
        let customer = Customer::new("cus_1");
        for n in [3usize, 31, 32, 33, 100] {
            // Every id appears twice: entries 0..n, then the same ids again.
            let connections: Vec<PartnerConnection> = (0..2 * n)
                .map(|i| entry(&format!("p{i}"), &format!("conn_{}", i % n)))
                .collect();
            let response = PartnerConnectionsResponse {
                connections,
                skipped: Vec::new(),
            };
            let mapped = map_connections("channel3", &customer, &response, Utc::now());
            assert_eq!(mapped.connections.len(), n, "n = {n}");
            assert!(mapped.losses.skipped.is_empty(), "n = {n}");
            assert_eq!(mapped.losses.duplicates.len(), n, "n = {n}");
            let platforms: Vec<String> = mapped
                .connections
                .iter()
                .map(|c| c.platform.clone())
                .collect();
            let expected: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
            assert_eq!(platforms, expected, "the first of each id wins");
        }
    }
}
