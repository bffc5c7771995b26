//! kill -9 at random moments while a process commits polls in a loop, 20 times: after each
//! kill the store opens, passes its integrity check, and every connection's transitions form
//! one unbroken chain (no duplicated, missing or half-written poll), ending at its stored
//! status.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use common::*;
use connhealth_core::diff::{connection_changes, ChangeKind};
use connhealth_core::watch::WatchState;
use connhealth_core::Status;
use connhealth_store::*;

const CHILD_ENV: &str = "CONNHEALTH_STORE_CRASH_CHILD";

/// The child: commit polls forever, continuing from what the store remembers (as a restarted
/// watcher does). Run only by `kill_9_during_polls_never_corrupts_or_duplicates`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of kill_9_during_polls_never_corrupts_or_duplicates"]
async fn crash_child() {
    let path = std::env::var(CHILD_ENV).expect("run by the crash test");
    let store = SqliteStore::open(std::path::Path::new(&path), &OpenOptions::default())
        .await
        .unwrap();
    let mut prev = store.load_state().await.unwrap();
    if prev.connections.is_empty() {
        let mut next = WatchState::default();
        let mut changes = Vec::new();
        for i in 0..500 {
            let c = conn(
                "channel3",
                &format!("m{i:03}"),
                "shopify",
                Status::Healthy,
                Utc::now(),
            );
            changes.push(connhealth_core::Change::about(
                &c,
                ChangeKind::Appeared { status: c.status },
                Utc::now(),
                None,
            ));
            next.connections
                .insert(c.id.clone(), tracked(c, Utc::now()));
        }
        let rec = PollRecord::between(Utc::now(), &prev, &next, vec![], changes, Source::Poll);
        store.commit_poll(rec).await.unwrap();
        prev = next;
    }
    let ids: Vec<String> = prev.connections.keys().cloned().collect();
    let mut rng = fastrand::Rng::new();
    loop {
        let now = Utc::now();
        let mut next = prev.clone();
        let mut changes = Vec::new();
        for _ in 0..100 {
            let id = &ids[rng.usize(..ids.len())];
            let t = next.connections.get_mut(id).unwrap();
            let old = t.connection.clone();
            let to = if old.status == Status::Healthy {
                Status::Degraded
            } else {
                Status::Healthy
            };
            let new = conn("channel3", &old.customer.id, "shopify", to, now);
            changes.extend(connection_changes(&old, &new, now, Some(t.since)));
            t.connection = new.into();
            t.since = now;
        }
        let rec = PollRecord::between(now, &prev, &next, vec![], changes, Source::Poll);
        store.commit_poll(rec).await.unwrap();
        prev = next;
    }
}

#[test]
fn kill_9_during_polls_never_corrupts_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(17);
    let mut last_max = 0;
    for round in 0..20 {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A random moment to kill it (choosing the moment is all the wall clock does here).
        std::thread::sleep(Duration::from_millis(150 + rng.u64(..600)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let max = rt.block_on(async {
            let store = SqliteStore::open(&path, &OpenOptions::default())
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            store
                .integrity_check()
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            verify_chains(&store, round).await
        });
        assert!(max >= last_max, "round {round}: events went backwards");
        last_max = max;
    }
    assert!(
        last_max > 500,
        "the child committed polls ({last_max} events)"
    );
}

/// Every connection's status events chain: appeared(s0), s0→s1, s1→s2, … and the stored
/// status is the last one. Returns the highest event id.
async fn verify_chains(store: &SqliteStore, round: usize) -> i64 {
    let mut status: BTreeMap<String, Status> = BTreeMap::new();
    let mut after = 0;
    let mut last_id = 0;
    loop {
        let page = store.events_after(after, 5000).await.unwrap();
        if page.items.is_empty() {
            break;
        }
        for e in &page.items {
            assert!(e.id > last_id, "round {round}: ids increase");
            last_id = e.id;
            let id = e.change.connection_id.clone().unwrap();
            match &e.change.kind {
                ChangeKind::Appeared { status: s } => {
                    assert!(
                        status.insert(id, *s).is_none(),
                        "round {round}: appeared twice"
                    );
                }
                ChangeKind::StatusChanged { from, to } => {
                    let cur = status.get_mut(&id).expect("appeared first");
                    assert_eq!(
                        cur, from,
                        "round {round}: event {} of {id} does not follow the previous one",
                        e.id
                    );
                    *cur = *to;
                }
                _ => {}
            }
        }
        after = page.next.unwrap();
    }
    let state = store.load_state().await.unwrap();
    if state.connections.is_empty() {
        assert!(status.is_empty());
        return last_id;
    }
    assert_eq!(state.connections.len(), status.len(), "round {round}");
    for (id, t) in &state.connections {
        assert_eq!(
            t.connection.status, status[id],
            "round {round}: {id}'s stored status is its last event's"
        );
    }
    last_id
}
