//! The [`Journal`]: polls kept in memory while the store cannot be written, written in order
//! and without duplicates when it is back, folded (and counted) past the bound; on a real
//! SQLite file made full with `max_page_count`, and on a real PostgreSQL cluster stopped with
//! `pg_ctl stop`.

mod common;

use std::sync::Arc;

use common::*;
use connhealth_core::diff::{Change, ChangeKind};
use connhealth_core::watch::WatchState;
use connhealth_core::Status;
use connhealth_store::*;

/// The next watcher state: `n` connections appear (degraded), and `remove` disappear.
fn step(
    prev: &WatchState,
    tag: &str,
    n: usize,
    minute: i64,
    remove: &[&str],
) -> (WatchState, Vec<Change>) {
    let mut next = prev.clone();
    let mut changes = Vec::new();
    for i in 0..n {
        let c = conn(
            "channel3",
            &format!("{tag}-{i}"),
            "shopify",
            Status::Degraded,
            at(minute),
        );
        changes.push(Change::about(
            &c,
            ChangeKind::Appeared { status: c.status },
            at(minute),
            None,
        ));
        next.connections
            .insert(c.id.clone(), tracked(c, at(minute)));
    }
    for id in remove {
        let t = next.connections.remove(*id).expect("a known connection");
        changes.push(Change::about(
            &t.connection,
            ChangeKind::Disappeared {
                last_status: t.connection.status,
            },
            at(minute),
            Some(t.since),
        ));
    }
    (next, changes)
}

fn ids_of(w: &Written) -> Vec<i64> {
    w.events.iter().map(|e| e.id).collect()
}

fn increasing(ids: &[i64]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

async fn sqlite_store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("connhealth.db"), &OpenOptions::default())
        .await
        .unwrap();
    (dir, Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_polls_in_memory_and_writes_them_in_order_when_space_returns() {
    let (_dir, sqlite) = sqlite_store().await;
    let store: Arc<dyn Store> = sqlite.clone();
    let (mut j, s0) = Journal::load(store.clone(), JournalOptions::default())
        .await
        .unwrap();
    let (s1, c1) = step(&s0, "a", 5, 0, &[]);
    let w = j.record(at(0), &s1, vec![], c1, Source::Poll).await;
    assert!(w.error.is_none(), "{:?}", w.error);
    assert_eq!(w.events.len(), 5);
    assert!(
        w.pruned.as_ref().is_some_and(|p| p.is_ok()),
        "the first write prunes"
    );

    let (pages, _) = sqlite.page_stats().await.unwrap();
    sqlite.set_max_page_count(pages + 1).await.unwrap();
    let (s2, c2) = step(&s1, "b", 2_000, 5, &[]);
    let w = j.record(at(5), &s2, vec![], c2.clone(), Source::Poll).await;
    assert!(
        matches!(w.error, Some(StoreError::Full { .. })),
        "{:?}",
        w.error
    );
    assert!(w.failure_began && w.events.is_empty());
    assert_eq!((w.pending_polls, w.pending_events), (1, 2_000));
    let (s3, c3) = step(&s2, "c", 3, 10, &["channel3:a-0:shopify"]);
    let w = j
        .record(at(10), &s3, vec![], c3.clone(), Source::Poll)
        .await;
    assert!(
        w.error.is_some() && !w.failure_began,
        "said once per streak"
    );
    assert!(w.pruned.is_none(), "no prune while failing");
    assert_eq!((w.pending_polls, w.pending_events), (2, 2_004));
    // Nothing half-written meanwhile.
    assert_eq!(store.load_state().await.unwrap(), s1);

    sqlite.set_max_page_count(1 << 30).await.unwrap();
    let (s4, c4) = step(&s3, "d", 1, 15, &[]);
    let w = j
        .record(at(15), &s4, vec![], c4.clone(), Source::Poll)
        .await;
    assert!(w.error.is_none() && w.recovered, "{:?}", w.error);
    assert_eq!(
        (w.pending_polls, w.pending_events, w.dropped_events),
        (0, 0, 0)
    );
    let expected: Vec<Change> = c2.into_iter().chain(c3).chain(c4).collect();
    assert_eq!(
        w.events
            .iter()
            .map(|e| e.change.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert!(increasing(&ids_of(&w)) && w.events.get(0).unwrap().id > 5);
    assert_eq!(store.load_state().await.unwrap(), s4);
    let all = store.events_after(0, 10_000).await.unwrap().items;
    assert_eq!(
        all.len(),
        5 + 2_000 + 4 + 1,
        "no event lost or written twice"
    );
    assert!(increasing(&all.iter().map(|e| e.id).collect::<Vec<_>>()));
    store.integrity_check().await.unwrap();

    // One connection by its exact id, with `since`.
    let item = store
        .connection("channel3:d-0:shopify")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (item.connection.status, item.since),
        (Status::Degraded, at(15))
    );
    assert!(
        store
            .connection("channel3:a-0:shopify")
            .await
            .unwrap()
            .is_none(),
        "removed"
    );
    assert!(
        store.connection("channel3:d-").await.unwrap().is_none(),
        "exact, not a prefix"
    );

    // A restart takes its memory from the store.
    drop(j);
    let (_, loaded) = Journal::load(store, JournalOptions::default())
        .await
        .unwrap();
    assert_eq!(loaded, s4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_the_oldest_polls_are_folded_and_their_events_counted() {
    let (_dir, sqlite) = sqlite_store().await;
    let store: Arc<dyn Store> = sqlite.clone();
    let opts = JournalOptions {
        max_pending_polls: 2,
        ..JournalOptions::default()
    };
    let (mut j, s0) = Journal::load(store.clone(), opts).await.unwrap();
    let (s1, c1) = step(&s0, "a", 3, 0, &[]);
    assert!(j
        .record(at(0), &s1, vec![], c1, Source::Poll)
        .await
        .error
        .is_none());

    let (pages, _) = sqlite.page_stats().await.unwrap();
    sqlite.set_max_page_count(pages).await.unwrap();
    // Poll 2 adds b-*, poll 3 removes one of them and a-0, poll 4 adds c-*: 2 polls fit.
    let (s2, c2) = step(&s1, "b", 400, 5, &[]);
    let (s3, c3) = step(
        &s2,
        "x",
        0,
        10,
        &["channel3:b-0:shopify", "channel3:a-0:shopify"],
    );
    let (s4, c4) = step(&s3, "c", 2, 15, &[]);
    for (t, s, c) in [
        (5, &s2, c2.clone()),
        (10, &s3, c3.clone()),
        (15, &s4, c4.clone()),
    ] {
        let w = j.record(at(t), s, vec![], c, Source::Poll).await;
        assert!(w.error.is_some());
        assert!(w.pending_polls <= 2);
    }
    assert_eq!(j.pending_polls(), 2);

    sqlite.set_max_page_count(1 << 30).await.unwrap();
    let w = j.flush().await;
    assert!(w.error.is_none() && w.recovered);
    assert_eq!(
        w.dropped_events,
        c2.len() as u64,
        "poll 2's events were dropped"
    );
    let expected: Vec<Change> = c3.into_iter().chain(c4).collect();
    assert_eq!(
        w.events
            .iter()
            .map(|e| e.change.clone())
            .collect::<Vec<_>>(),
        expected
    );
    // Its state changes were not: the store is the watcher's state.
    assert_eq!(store.load_state().await.unwrap(), s4);
    store.integrity_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_keeps_polls_and_writes_them_when_it_is_back() {
    if skip_postgres() {
        return;
    }
    // A cluster of its own: this test stops it.
    let cluster = Cluster::start();
    let db = cluster.create_db();
    let store = open(&cluster.url(&db), OpenOptions::default())
        .await
        .unwrap();
    let (mut j, s0) = Journal::load(store.clone(), JournalOptions::default())
        .await
        .unwrap();
    let (s1, c1) = step(&s0, "a", 4, 0, &[]);
    assert!(j
        .record(at(0), &s1, vec![], c1, Source::Poll)
        .await
        .error
        .is_none());

    cluster.pg_ctl_stop();
    let (s2, c2) = step(&s1, "b", 3, 5, &[]);
    let w = j.record(at(5), &s2, vec![], c2.clone(), Source::Poll).await;
    assert!(
        matches!(w.error, Some(StoreError::Unavailable { .. })),
        "{:?}",
        w.error
    );
    assert!(w.failure_began);
    let (s3, c3) = step(&s2, "c", 1, 10, &["channel3:a-1:shopify"]);
    let w = j
        .record(at(10), &s3, vec![], c3.clone(), Source::Poll)
        .await;
    assert!(w.error.is_some() && !w.failure_began && w.pending_polls == 2);

    cluster.pg_ctl_start();
    let w = j.flush().await;
    assert!(w.error.is_none() && w.recovered, "{:?}", w.error);
    let expected: Vec<Change> = c2.into_iter().chain(c3).collect();
    assert_eq!(
        w.events
            .iter()
            .map(|e| e.change.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert!(increasing(&ids_of(&w)));
    assert_eq!(store.load_state().await.unwrap(), s3);
    assert_eq!(
        store.events_after(0, 100).await.unwrap().items.len(),
        4 + 3 + 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_runs_on_its_schedule() {
    let (_dir, sqlite) = sqlite_store().await;
    let opts = JournalOptions {
        retention: Retention {
            retention_days: 1,
            rollup_days: 400,
        },
        ..JournalOptions::default()
    };
    let (mut j, s0) = Journal::load(sqlite.clone(), opts).await.unwrap();
    let (s1, c1) = step(&s0, "a", 2, 0, &[]);
    assert!(j
        .record(at(0), &s1, vec![], c1, Source::Poll)
        .await
        .pruned
        .is_some());
    let (s2, c2) = step(&s1, "b", 1, 30, &[]);
    assert!(j
        .record(at(30), &s2, vec![], c2, Source::Poll)
        .await
        .pruned
        .is_none());
    // Two days later the first events are past retention_days and go.
    let later = at(60 * 48);
    let (s3, c3) = step(&s2, "c", 1, 60 * 48, &[]);
    let w = j.record(later, &s3, vec![], c3, Source::Poll).await;
    let stats = w.pruned.expect("an hour passed").unwrap();
    assert!(
        stats.removed.get("events").copied().unwrap_or(0) >= 3,
        "{stats:?}"
    );
    let left = sqlite.events_after(0, 100).await.unwrap().items;
    assert_eq!(left.len(), 1);
}

/// The journal remembers what the store holds without a copy of its own: after a record it
/// points to the watcher's connections (a connection re-read with only a new `observed_at`
/// included), and lets go of the older ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_shares_the_watchers_connections_instead_of_copying_them() {
    let (_dir, sqlite) = sqlite_store().await;
    let store: Arc<dyn Store> = sqlite.clone();
    let (mut j, s0) = Journal::load(store.clone(), JournalOptions::default())
        .await
        .unwrap();
    let (s1, changes) = step(&s0, "a", 3, 1, &[]);
    let w = j.record(at(1), &s1, vec![], changes, Source::Poll).await;
    assert!(w.error.is_none());
    for t in s1.connections.values() {
        // s1 and the journal.
        assert_eq!(Arc::strong_count(&t.connection), 2, "{}", t.connection.id);
    }

    // The next poll reads every connection again: new allocations, only `observed_at` moved.
    let mut s2 = s1.clone();
    for t in s2.connections.values_mut() {
        let mut c = connhealth_core::Connection::clone(&t.connection);
        c.observed_at = at(2).into();
        t.connection = Arc::new(c);
    }
    let w = j.record(at(2), &s2, vec![], vec![], Source::Poll).await;
    assert!(w.error.is_none() && w.events.is_empty());
    for (id, t) in &s2.connections {
        assert_eq!(
            Arc::strong_count(&t.connection),
            2,
            "{id}: the journal kept its own"
        );
        // Only s1 holds the older one now.
        assert_eq!(Arc::strong_count(&s1.connections[id].connection), 1, "{id}");
    }
    // Nothing material changed, so the store still holds the first read.
    let stored = store.load_state().await.unwrap();
    assert_eq!(stored.connections.len(), 3);
    assert!(stored
        .connections
        .values()
        .all(|t| t.connection.observed_at == at(1)));
}
