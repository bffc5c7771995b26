//! The Watcher over the real adapters and the testkit simulators, on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use connhealth::simulators;
use connhealth::watch::{Poll, WatchConfig, WatchState, Watcher};
use connhealth::{ChangeKind, Outcome, Status};
use connhealth_testkit::{Fault, Fleet};

const DOC_CUSTOMER: &str = "8a46e581-48ba-498a-9ad0-2ee72582e1af";
const DOC_CONNECTION: &str = "01J51S0JYV6N7K1030CV1ZKSCA";

fn watcher(fleet: &Fleet, trip: u32, clear: u32) -> Watcher {
    let mut w = Watcher::new(WatchConfig {
        interval: Duration::from_secs(60),
        jitter: 0.0,
        trip,
        clear,
        timeout: Duration::from_secs(600),
    });
    let c3 = simulators::channel3(&fleet.channel3)
        .customers(fleet.channel3.customer_ids())
        .build()
        .unwrap();
    let violet = simulators::violet(&fleet.violet).build().unwrap();
    let subtotal = simulators::subtotal(&fleet.subtotal)
        .customers(vec![DOC_CUSTOMER.to_owned()])
        .build()
        .unwrap();
    w.add(Arc::new(c3), None);
    w.add(Arc::new(violet), None);
    w.add(Arc::new(subtotal), None);
    w
}

fn events(poll: &Poll) -> Vec<String> {
    poll.changes
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.kind.name(),
                c.connection_id.as_deref().unwrap_or(&c.provider)
            )
        })
        .collect()
}

fn doc_status(poll: &Poll) -> Status {
    poll.report
        .connection(&format!("subtotal:{DOC_CONNECTION}"))
        .expect("the documented connection is in the view")
        .status
}

#[tokio::test(start_paused = true)]
async fn flapping_bad_good_bad_with_trip_two_emits_nothing() {
    let fleet = Fleet::start(3, 11).await.unwrap();
    let mut w = watcher(&fleet, 2, 2);
    let first = w.poll().await;
    assert!(first
        .changes
        .iter()
        .all(|c| matches!(c.kind, ChangeKind::Appeared { .. })));
    assert_eq!(first.changes.len(), first.report.summary.total);
    assert_eq!(doc_status(&first), Status::Healthy);
    for status in [
        "unauthenticated",
        "active",
        "disconnected",
        "active",
        "unauthenticated",
    ] {
        assert!(fleet.subtotal.set_status(DOC_CONNECTION, status));
        let poll = w.poll().await;
        assert!(
            poll.changes.is_empty(),
            "after {status}: {:?}",
            events(&poll)
        );
    }
    // A second bad poll in a row trips it.
    let poll = w.poll().await;
    assert_eq!(
        events(&poll),
        [
            format!("status_changed subtotal:{DOC_CONNECTION}"),
            format!("problem_raised subtotal:{DOC_CONNECTION}")
        ]
    );
    assert_eq!(doc_status(&poll), Status::ActionRequired);
}

#[tokio::test(start_paused = true)]
async fn a_provider_outage_emits_one_unavailable_and_one_recovered() {
    let fleet = Fleet::start(3, 12).await.unwrap();
    let mut w = watcher(&fleet, 1, 1);
    let first = w.poll().await;
    let c3_count = first.report.connections_of("channel3").count();
    assert!(c3_count > 0);

    fleet.channel3.faults().on_all(Fault::status(503));
    let poll = w.poll().await;
    assert_eq!(events(&poll), ["provider_unavailable channel3"]);
    match &poll.changes[0].kind {
        ChangeKind::ProviderUnavailable { outcome, errors } => {
            assert_eq!(*outcome, Outcome::Failed);
            assert!(!errors.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // Its connections are kept, shown as unknown; the others are untouched.
    assert_eq!(poll.report.connections_of("channel3").count(), c3_count);
    assert!(poll
        .report
        .connections_of("channel3")
        .all(|c| c.status == Status::Unknown));
    assert_eq!(doc_status(&poll), Status::Healthy);
    for _ in 0..2 {
        let poll = w.poll().await;
        assert!(poll.changes.is_empty(), "{:?}", events(&poll));
    }

    fleet.channel3.faults().clear();
    let poll = w.poll().await;
    assert_eq!(events(&poll), ["provider_recovered channel3"]);
    assert_eq!(poll.report.connections_of("channel3").count(), c3_count);
    assert_eq!(poll.report.summary, first.report.summary);
}

#[tokio::test(start_paused = true)]
async fn a_429_storm_changes_no_status() {
    let fleet = Fleet::start(3, 13).await.unwrap();
    let mut w = watcher(&fleet, 1, 1);
    let first = w.poll().await;
    fleet.channel3.faults().on_all(Fault::too_many_requests(1));
    fleet.subtotal.faults().on_all(Fault::too_many_requests(1));
    for _ in 0..3 {
        let poll = w.poll().await;
        assert!(poll.changes.is_empty(), "{:?}", events(&poll));
        assert_eq!(poll.report.summary, first.report.summary);
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    fleet.channel3.faults().clear();
    fleet.subtotal.faults().clear();
    let poll = w.poll().await;
    assert!(poll.changes.is_empty(), "{:?}", events(&poll));
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_saved_state_emits_nothing_new() {
    let fleet = Fleet::start(3, 14).await.unwrap();
    let dir = std::env::temp_dir().join(format!("connhealth-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let mut w = watcher(&fleet, 1, 1);
    assert!(!w.poll().await.changes.is_empty());
    w.state().save(&path).unwrap();
    drop(w);

    let mut restarted = watcher(&fleet, 1, 1).with_state(WatchState::load(&path).unwrap());
    let poll = restarted.poll().await;
    assert!(poll.changes.is_empty(), "{:?}", events(&poll));
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "disconnected"));
    assert_eq!(
        events(&restarted.poll().await),
        [
            format!("status_changed subtotal:{DOC_CONNECTION}"),
            format!("problem_raised subtotal:{DOC_CONNECTION}")
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
