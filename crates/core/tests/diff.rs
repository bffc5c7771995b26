//! diff(): one table row per event kind, plus properties over generated reports.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use connhealth_core::diff::{apply, statuses};
use connhealth_core::{
    diff, Change, ChangeKind, Connection, Customer, HealthReport, Outcome, Problem,
    ProviderOutcome, Role, Status, SyncProgress, SyncState,
};
use proptest::prelude::*;

fn at(m: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 10, m, 0).unwrap()
}

fn conn(id: &str, status: Status) -> Connection {
    let mut built = Connection::new(
        "p",
        None,
        Customer::new(format!("cus_{id}")),
        "shopify",
        Role::Source,
        status,
        at(0),
    );
    built.id = format!("p:{id}");
    built.provider_connection_id = Some(id.into());
    built.provider_status = "x".into();
    built
}

fn report(minute: u32, outcome: Outcome, conns: Vec<Connection>) -> HealthReport {
    HealthReport::new(
        at(minute),
        vec![ProviderOutcome {
            provider: "p".into(),
            outcome,
            connections: conns.len(),
            elapsed_ms: 1,
            errors: vec![],
        }],
        conns,
    )
}

fn with_problem(mut c: Connection, code: &str, sev: Status) -> Connection {
    c.problems
        .push(Problem::new(code, sev, format!("{code} happened")));
    c
}

fn with_sync(mut c: Connection, synced: u64, total: u64) -> Connection {
    c.sync = Some(Box::new(SyncProgress {
        state: SyncState::Syncing,
        total: Some(total),
        synced: Some(synced),
        last_synced_at: None,
    }));
    c
}

fn kinds(changes: &[Change]) -> Vec<(String, ChangeKind)> {
    changes
        .iter()
        .map(|c| (c.connection_id.clone().unwrap_or_default(), c.kind.clone()))
        .collect()
}

#[test]
fn one_row_per_event_kind() {
    let healthy = conn("a", Status::Healthy);
    let degraded = with_problem(
        conn("a", Status::Degraded),
        "partial_sync",
        Status::Degraded,
    );
    type Row = (
        &'static str,
        Vec<Connection>,
        Outcome,
        Vec<Connection>,
        Vec<(String, ChangeKind)>,
    );
    let rows: Vec<Row> = vec![
        (
            "nothing changed",
            vec![healthy.clone()],
            Outcome::Ok,
            vec![healthy.clone()],
            vec![],
        ),
        (
            "appeared",
            vec![],
            Outcome::Ok,
            vec![healthy.clone()],
            vec![(
                "p:a".into(),
                ChangeKind::Appeared {
                    status: Status::Healthy,
                },
            )],
        ),
        (
            "disappeared",
            vec![healthy.clone()],
            Outcome::Ok,
            vec![],
            vec![(
                "p:a".into(),
                ChangeKind::Disappeared {
                    last_status: Status::Healthy,
                },
            )],
        ),
        (
            "missing while the provider failed is not disappeared",
            vec![healthy.clone()],
            Outcome::Failed,
            vec![],
            vec![],
        ),
        (
            "missing while the provider was partial is not disappeared",
            vec![healthy.clone()],
            Outcome::Partial,
            vec![],
            vec![],
        ),
        (
            "status changed and problem raised",
            vec![healthy.clone()],
            Outcome::Ok,
            vec![degraded.clone()],
            vec![
                (
                    "p:a".into(),
                    ChangeKind::StatusChanged {
                        from: Status::Healthy,
                        to: Status::Degraded,
                    },
                ),
                (
                    "p:a".into(),
                    ChangeKind::ProblemRaised {
                        problem: Box::new(degraded.problems[0].clone()),
                    },
                ),
            ],
        ),
        (
            "problem cleared",
            vec![degraded.clone()],
            Outcome::Ok,
            vec![healthy.clone()],
            vec![
                (
                    "p:a".into(),
                    ChangeKind::StatusChanged {
                        from: Status::Degraded,
                        to: Status::Healthy,
                    },
                ),
                (
                    "p:a".into(),
                    ChangeKind::ProblemCleared {
                        code: "partial_sync".into(),
                    },
                ),
            ],
        ),
        (
            "problem replaced at the same status",
            vec![degraded.clone()],
            Outcome::Ok,
            vec![with_problem(
                conn("a", Status::Degraded),
                "invalid_products",
                Status::Degraded,
            )],
            vec![
                (
                    "p:a".into(),
                    ChangeKind::ProblemCleared {
                        code: "partial_sync".into(),
                    },
                ),
                (
                    "p:a".into(),
                    ChangeKind::ProblemRaised {
                        problem: Box::new(Problem::new(
                            "invalid_products",
                            Status::Degraded,
                            "invalid_products happened",
                        )),
                    },
                ),
            ],
        ),
        (
            "sync progressed",
            vec![with_sync(conn("a", Status::Syncing), 10, 100)],
            Outcome::Ok,
            vec![with_sync(conn("a", Status::Syncing), 60, 100)],
            vec![(
                "p:a".into(),
                ChangeKind::SyncProgressed {
                    synced: Some(60),
                    total: Some(100),
                },
            )],
        ),
    ];
    for (name, before, outcome, after, want) in rows {
        let changes = diff(&report(0, Outcome::Ok, before), &report(5, outcome, after));
        assert_eq!(kinds(&changes), want, "{name}");
        for c in &changes {
            assert_eq!(c.at, at(5), "{name}");
            assert_eq!(c.provider, "p");
        }
    }
}

#[test]
fn events_serialize_flat_with_an_event_tag() {
    let c = Change::about(
        &conn("a", Status::Degraded),
        ChangeKind::StatusChanged {
            from: Status::Healthy,
            to: Status::Degraded,
        },
        at(5),
        Some(at(1)),
    );
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "event": "status_changed",
            "from": "healthy",
            "to": "degraded",
            "connection_id": "p:a",
            "provider": "p",
            "customer_id": "cus_a",
            "platform": "shopify",
            "at": "2026-11-25T10:05:00Z",
            "since": "2026-11-25T10:01:00Z"
        })
    );
    let back: Change = serde_json::from_value(v).unwrap();
    assert_eq!(back, c);
    assert_eq!(c.kind.name(), "status_changed");
}

fn arb_status() -> impl Strategy<Value = Status> {
    prop::sample::select(Status::ALL.to_vec())
}

fn arb_report(minute: u32) -> impl Strategy<Value = HealthReport> {
    prop::collection::btree_map(0u8..24, (arb_status(), prop::bool::ANY, 0u64..5), 0..16).prop_map(
        move |m| {
            let conns = m
                .into_iter()
                .map(|(id, (status, problem, synced))| {
                    let mut c = with_sync(conn(&id.to_string(), status), synced, 4);
                    if problem {
                        c = with_problem(c, "x", status);
                    }
                    c
                })
                .collect();
            report(minute, Outcome::Ok, conns)
        },
    )
}

proptest! {
    #[test]
    fn a_report_compared_with_itself_has_no_changes(a in arb_report(0)) {
        prop_assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn replaying_the_changes_reaches_the_new_statuses(a in arb_report(0), b in arb_report(5)) {
        let mut seen: BTreeMap<String, Status> = statuses(&a);
        apply(&mut seen, &diff(&a, &b));
        prop_assert_eq!(seen, statuses(&b));
    }
}
