//! The model's JSON contract and the roll-up rules.

use chrono::{TimeZone, Utc};
use connhealth_core::{
    Account, Check, Connection, Customer, ErrorKind, HealthReport, ObservedAt, Outcome, Problem,
    ProviderOutcome, Remediation, ReportError, Role, Status, Summary, SyncProgress, SyncState,
};

fn t(h: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, h, 0, 0).unwrap()
}

fn conn(provider: &str, pid: &str, status: Status) -> Connection {
    let mut built = Connection::new(
        provider,
        None,
        Customer::new("cus_1"),
        "shopify",
        Role::Source,
        status,
        t(12),
    );
    built.id = Connection::make_id(provider, Some(pid), "cus_1", "shopify");
    built.provider_connection_id = Some(pid.into());
    built.provider_status = "active".into();
    built
}

fn ok(provider: &str, n: usize) -> ProviderOutcome {
    ProviderOutcome {
        provider: provider.into(),
        outcome: Outcome::Ok,
        connections: n,
        elapsed_ms: 10,
        errors: vec![],
    }
}

/// A report touching every type and every remediation kind.
fn representative() -> HealthReport {
    let mut google = conn("channel3", "conn-1234-google", Status::Degraded);
    google.platform = "google".into();
    google.role = Role::Destination;
    google.customer = Customer {
        id: "cus_123".into(),
        name: Some("Acme Corp".into()),
        email: None,
    };
    google.connected_at = Some(t(9));
    google.sync = Some(Box::new(SyncProgress {
        state: SyncState::Live,
        total: Some(150),
        synced: Some(148),
        last_synced_at: Some(t(11)),
    }));
    google.data_as_of = Some(t(11));
    google.accounts = connhealth_core::thin_vec![Account {
        id: "acct-5678".into(),
        name: Some("Acme Corp Main Account".into()),
        store_url: Some("https://store.google.com/acmecorp".into()),
    }];
    google.problems = connhealth_core::thin_vec![Problem::new(
        "partial_sync",
        Status::Degraded,
        "148 of 150 products synced",
    )];

    let mut not_conn = conn("channel3", "x", Status::NotConnected);
    not_conn.id = Connection::make_id("channel3", None, "cus_123", "channel3");
    not_conn.provider_connection_id = None;
    not_conn.platform = "channel3".into();
    not_conn.provider_status = "not_connected".into();

    let mut violet = conn("violet", "123", Status::ActionRequired);
    violet.provider_status = "ACTIVE".into();
    violet.checks = connhealth_core::thin_vec![
        Check {
            name: "connection".into(),
            status: Status::Healthy,
            detail: None,
        },
        Check {
            name: "scope_validation".into(),
            status: Status::ActionRequired,
            detail: Some("scopes missing".into()),
        },
    ];
    violet.problems = connhealth_core::thin_vec![
        Problem::new(
            "missing_scopes",
            Status::ActionRequired,
            "missing scopes: read_orders",
        )
        .with_remediation(Remediation::GrantScopes {
            missing: vec!["read_orders".into()],
        }),
        Problem::new(
            "payout_account_missing",
            Status::ActionRequired,
            "no payout account",
        )
        .with_remediation(Remediation::CompleteSetup {
            step: "payout_account".into(),
        }),
        Problem::new(
            "store_disconnected",
            Status::Disconnected,
            "store not connected",
        )
        .with_remediation(Remediation::Reconnect { url: None }),
        Problem::new("sync_in_progress", Status::Syncing, "catalog sync running")
            .with_remediation(Remediation::WaitForSync),
        Problem::new(
            "merchant_disabled",
            Status::Disconnected,
            "merchant disabled",
        )
        .with_remediation(Remediation::ContactProvider {
            detail: "ask Violet why".into(),
        }),
    ];

    let mut subtotal = conn(
        "subtotal",
        "01J51S0JYV6N7K1030CV1ZKSCA",
        Status::ActionRequired,
    );
    subtotal.role = Role::Account;
    subtotal.platform = "walmart".into();
    subtotal.provider_status = "unauthenticated".into();
    subtotal.problems = connhealth_core::thin_vec![Problem::new(
        "reauthentication_required",
        Status::ActionRequired,
        "the customer must sign in to walmart again",
    )
    .with_remediation(Remediation::Reauthenticate {
        url: Some("https://link.subtotal.com/abc?connection_id=01J51S0JYV6N7K1030CV1ZKSCA".into()),
    })];

    let providers = vec![
        ok("channel3", 2),
        ok("violet", 1),
        ProviderOutcome {
            provider: "subtotal".into(),
            outcome: Outcome::Partial,
            connections: 1,
            elapsed_ms: 42,
            errors: vec![ReportError {
                kind: ErrorKind::Forbidden,
                message: "subtotal: GET /connections: forbidden (HTTP 403): Invalid API key".into(),
                http_status: Some(403),
                customer_id: Some("cus_9".into()),
            }],
        },
    ];
    HealthReport::new(t(12), providers, vec![subtotal, violet, google, not_conn])
}

#[test]
fn report_json_names_match_the_contract() {
    let report = representative();
    insta::with_settings!({ snapshot_path => "../../../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_json_snapshot!("core__representative_report", report);
    });
}

#[test]
fn report_round_trips_through_json() {
    let report = representative();
    let json = serde_json::to_string(&report).unwrap();
    let back: HealthReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn every_status_and_kind_has_its_contract_name() {
    let names: Vec<String> = Status::ALL
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "healthy",
            "not_connected",
            "pending",
            "syncing",
            "unknown",
            "degraded",
            "disconnected",
            "action_required"
        ]
    );
    for s in Status::ALL {
        assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        assert_eq!(s.to_string(), s.as_str());
    }
    assert!("broken".parse::<Status>().is_err());
    let severities: Vec<u8> = Status::ALL.iter().map(|s| s.severity()).collect();
    assert_eq!(severities, [0, 0, 1, 1, 2, 3, 4, 5]);
    for (k, name) in [
        (ErrorKind::Authentication, "authentication"),
        (ErrorKind::Forbidden, "forbidden"),
        (ErrorKind::NotFound, "not_found"),
        (ErrorKind::RateLimited, "rate_limited"),
        (ErrorKind::ServerError, "server_error"),
        (ErrorKind::Timeout, "timeout"),
        (ErrorKind::Connection, "connection"),
        (ErrorKind::Decode, "decode"),
        (ErrorKind::TooLarge, "too_large"),
        (ErrorKind::Config, "config"),
        (ErrorKind::Panicked, "panicked"),
        (ErrorKind::Unsupported, "unsupported"),
    ] {
        assert_eq!(serde_json::to_value(k).unwrap(), name);
    }
}

#[test]
fn remediations_are_tagged_by_kind() {
    let v = serde_json::to_value(Remediation::GrantScopes {
        missing: vec!["a".into()],
    })
    .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"kind": "grant_scopes", "missing": ["a"]})
    );
    let v = serde_json::to_value(Remediation::WaitForSync).unwrap();
    assert_eq!(v, serde_json::json!({"kind": "wait_for_sync"}));
    let v = serde_json::to_value(Remediation::Reauthenticate { url: None }).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"kind": "reauthenticate", "url": null})
    );
}

#[test]
fn roll_up_takes_the_worst_status() {
    for worst in Status::ALL {
        let conns: Vec<Connection> = Status::ALL
            .iter()
            .filter(|s| s.severity() <= worst.severity())
            .enumerate()
            .map(|(i, s)| conn("p", &i.to_string(), *s))
            .filter(|c| c.status <= worst)
            .collect();
        let report = HealthReport::new(t(1), vec![ok("p", conns.len())], conns);
        let expected = if worst == Status::NotConnected {
            Status::Healthy
        } else {
            worst
        };
        assert_eq!(report.overall, expected, "worst {worst}");
    }
}

#[test]
fn not_connected_never_makes_a_report_unhealthy() {
    let conns = vec![
        conn("p", "a", Status::NotConnected),
        conn("p", "b", Status::Healthy),
        conn("p", "c", Status::NotConnected),
    ];
    let report = HealthReport::new(t(1), vec![ok("p", 3)], conns);
    assert_eq!(report.overall, Status::Healthy);
    assert_eq!(report.summary.not_connected, 2);
}

#[test]
fn a_provider_that_did_not_answer_makes_the_report_at_least_unknown() {
    for outcome in [Outcome::Partial, Outcome::Failed, Outcome::TimedOut] {
        let mut p = ok("q", 0);
        p.outcome = outcome;
        let report = HealthReport::new(
            t(1),
            vec![ok("p", 1), p.clone()],
            vec![conn("p", "a", Status::Healthy)],
        );
        assert_eq!(report.overall, Status::Unknown, "{outcome}");
        // … but never hides something worse.
        let report = HealthReport::new(t(1), vec![p], vec![conn("p", "a", Status::Disconnected)]);
        assert_eq!(report.overall, Status::Disconnected);
    }
    let empty = HealthReport::new(t(1), vec![], vec![]);
    assert_eq!(empty.overall, Status::Healthy);
}

#[test]
fn connections_are_sorted_counted_and_found_by_id() {
    let conns = vec![
        conn("p", "c", Status::Degraded),
        conn("p", "a", Status::Healthy),
        conn("p", "b", Status::Pending),
    ];
    let report = HealthReport::new(t(1), vec![ok("p", 3)], conns);
    let ids: Vec<&str> = report.connections.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["p:a", "p:b", "p:c"]);
    assert_eq!(
        report.summary,
        Summary {
            total: 3,
            healthy: 1,
            pending: 1,
            degraded: 1,
            ..Summary::default()
        }
    );
    assert_eq!(report.connection("p:b").unwrap().status, Status::Pending);
    assert!(report.connection("p:z").is_none());
    assert_eq!(report.connections_of("p").count(), 3);
}

#[test]
fn ids_fall_back_to_customer_and_platform() {
    assert_eq!(
        Connection::make_id("channel3", Some("conn-1"), "cus", "google"),
        "channel3:conn-1"
    );
    assert_eq!(
        Connection::make_id("channel3", None, "cus", "google"),
        "channel3:cus:google"
    );
}

#[test]
fn worst_reported_covers_problems_and_checks() {
    let mut c = conn("p", "a", Status::Healthy);
    assert_eq!(c.worst_reported(), Status::Healthy);
    c.checks.push(Check {
        name: "x".into(),
        status: Status::Degraded,
        detail: None,
    });
    assert_eq!(c.worst_reported(), Status::Degraded);
    c.problems.push(Problem::unrecognized("status", "weird"));
    assert_eq!(c.worst_reported(), Status::Degraded);
    c.problems
        .push(Problem::new("x", Status::ActionRequired, "m"));
    assert_eq!(c.worst_reported(), Status::ActionRequired);
    assert_eq!(
        Problem::unrecognized("status", "weird").message,
        "unrecognized value \"weird\" for status"
    );
}

/// Relabelling an error keeps every other field (Channel3's old `rename` rebuilt the error and
/// dropped status, `Retry-After` and source).
#[test]
fn errors_are_relabelled_without_losing_fields() {
    use std::error::Error as _;
    use std::time::Duration;
    let e = connhealth_core::Error::new("p", "path", ErrorKind::RateLimited, "slow down")
        .with_status(429)
        .with_customer("cus_1")
        .with_retry_after(Duration::from_secs(7))
        .with_provider_code(11)
        .with_source(std::io::Error::other("cause"));
    let e = e
        .with_endpoint("GET /v0/x")
        .map_message(|m| format!("customer list: {m}"));
    assert_eq!(e.endpoint(), "GET /v0/x");
    assert_eq!(e.message(), "customer list: slow down");
    assert_eq!(e.http_status(), Some(429));
    assert_eq!(e.customer_id(), Some("cus_1"));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(e.provider_code(), Some(11));
    assert_eq!(e.source().unwrap().to_string(), "cause");
    let e = e
        .with_kind(ErrorKind::Authentication)
        .with_message("refused");
    assert_eq!(
        (e.kind(), e.message()),
        (ErrorKind::Authentication, "refused")
    );
    assert_eq!(e.http_status(), Some(429));
}

#[test]
fn same_except_observed_at_ignores_only_the_read_time() {
    let a = conn("p", "1", Status::Degraded);
    let mut b = a.clone();
    b.observed_at = t(9).into();
    assert!(a.same_except_observed_at(&b));
    assert_ne!(a, b);
    let mut c = b.clone();
    c.provider_status = "paused".into();
    assert!(!a.same_except_observed_at(&c));
    let mut d = b.clone();
    d.problems
        .push(Problem::new("token_expired", Status::ActionRequired, "x"));
    assert!(!a.same_except_observed_at(&d));
    let mut e = b;
    e.data_as_of = Some(t(8));
    assert!(!a.same_except_observed_at(&e));
}

#[test]
fn a_report_of_shared_connections_serializes_as_plain_ones() {
    let plain = HealthReport::new(t(1), vec![], vec![conn("p", "1", Status::Healthy)]);
    let shared = HealthReport::from_shared(t(1), vec![], plain.connections.clone());
    assert!(std::sync::Arc::ptr_eq(
        &plain.connections[0],
        &shared.connections[0]
    ));
    let json = serde_json::to_value(&shared).unwrap();
    assert_eq!(json["connections"][0]["id"], "p:1");
    let back: HealthReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, plain);
}

#[test]
fn observed_at_reads_and_writes_as_the_time_it_holds() {
    let nanos = Utc.timestamp_opt(1_780_000_000, 123_456_789).unwrap();
    for at in [t(3), nanos, chrono::DateTime::UNIX_EPOCH] {
        let o = ObservedAt::new(at);
        assert_eq!(o.get(), at);
        // The JSON is the plain time's, both ways.
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, serde_json::to_string(&at).unwrap());
        let back: ObservedAt = serde_json::from_str(&json).unwrap();
        assert_eq!(back, o);
        assert_eq!(format!("{o:?}"), format!("{at:?}"));
    }
    // A clone is its own: moving one leaves the other.
    let o = ObservedAt::new(t(3));
    let copy = o.clone();
    o.set(t(4));
    assert_eq!((o.get(), copy.get()), (t(4), t(3)));
    // Shared, it moves for everyone holding it.
    let mut c = Connection::new(
        "p",
        Some("x"),
        Customer::new("c"),
        "shopify",
        Role::Source,
        Status::Healthy,
        t(1),
    );
    c.provider_status = "active".into();
    let shared = std::sync::Arc::new(c);
    let other = shared.clone();
    shared.observed_at.set(t(5));
    assert_eq!(other.observed_at, t(5));
    assert!(other.same_except_observed_at(&Connection::clone(&shared)));
}

#[test]
fn observed_at_outside_its_range_saturates_when_made_and_fails_when_read() {
    let far = Utc.with_ymd_and_hms(2400, 1, 1, 0, 0, 0).unwrap();
    let early = Utc.with_ymd_and_hms(1500, 1, 1, 0, 0, 0).unwrap();
    assert_eq!(
        ObservedAt::new(far).get().timestamp_nanos_opt(),
        Some(i64::MAX)
    );
    assert_eq!(
        ObservedAt::new(early).get().timestamp_nanos_opt(),
        Some(i64::MIN)
    );
    let err = serde_json::from_str::<ObservedAt>("\"2400-01-01T00:00:00Z\"").unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
    assert!(serde_json::from_str::<ObservedAt>("\"yesterday\"").is_err());
}

/// Every remembered connection is one `Arc` block: its two counters and the connection. At a
/// 370,000-connection fleet that block is most of `serve`'s memory, and an allocator serves it
/// from a size class (mimalloc's are 256, 320, 384 … bytes), so the connection is kept at or
/// under 240 bytes: the block in the 256-byte class (it was 352 bytes, a 384-byte block).
#[cfg(target_pointer_width = "64")]
#[test]
fn a_connection_fits_a_256_byte_shared_block() {
    let block = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Connection>();
    assert!(block <= 256, "Arc<Connection> block is {block} bytes");
}
