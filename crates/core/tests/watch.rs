//! The Watcher's rules with scripted providers (the simulator-backed tests are in the
//! workspace's tests/watch.rs).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use connhealth_core::futures::stream::{self, BoxStream, StreamExt};
use connhealth_core::watch::{WatchConfig, WatchState, Watcher};
use connhealth_core::{
    Batch, ChangeKind, Connection, Customer, Error, ErrorKind, Problem, Provider, Role, Status,
};

/// A provider whose next answer the test sets.
#[derive(Debug, Clone)]
struct Scripted {
    name: &'static str,
    next: Arc<Mutex<Vec<Batch2>>>,
}

#[derive(Debug, Clone)]
enum Batch2 {
    Ok(Vec<(&'static str, &'static str, Status)>),
    Err(ErrorKind, Option<&'static str>, Option<u64>),
}

impl Scripted {
    fn new(name: &'static str) -> Self {
        Scripted {
            name,
            next: Arc::new(Mutex::new(vec![])),
        }
    }
    fn answer(&self, batches: Vec<Batch2>) {
        *self.next.lock().unwrap() = batches;
    }
    fn statuses(&self, conns: &[(&'static str, Status)]) {
        self.answer(vec![Batch2::Ok(
            conns.iter().map(|(id, s)| (*id, "cus_1", *s)).collect(),
        )]);
    }
}

fn conn(provider: &str, id: &str, customer: &str, status: Status) -> Connection {
    let problems = if status.is_ok() {
        vec![]
    } else {
        vec![Problem::new(format!("is_{status}"), status, "scripted")]
    };
    let mut built = Connection::new(
        provider,
        None,
        Customer::new(customer),
        "shopify",
        Role::Source,
        status,
        Utc::now(),
    );
    built.id = format!("{provider}:{id}");
    built.provider_connection_id = Some(id.into());
    built.provider_status = status.as_str().into();
    built.problems = problems.into();
    built
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        self.name
    }
    fn stream(&self) -> BoxStream<'_, Batch> {
        let batches: Vec<Batch> = self
            .next
            .lock()
            .unwrap()
            .iter()
            .map(|b| match b {
                Batch2::Ok(cs) => Ok(cs
                    .iter()
                    .map(|(id, cus, s)| conn(self.name, id, cus, *s))
                    .collect()),
                Batch2::Err(kind, customer, retry) => {
                    let mut e = Error::new(self.name, "GET /x", *kind, "scripted");
                    if let Some(c) = customer {
                        e = e.with_customer(*c);
                    }
                    if let Some(r) = retry {
                        e = e.with_retry_after(Duration::from_secs(*r));
                    }
                    Err(e)
                }
            })
            .collect();
        stream::iter(batches).boxed()
    }
}

fn watcher(p: &Scripted, trip: u32, clear: u32) -> Watcher {
    let mut w = Watcher::new(WatchConfig {
        interval: Duration::from_secs(60),
        jitter: 0.0,
        trip,
        clear,
        timeout: Duration::from_secs(5),
    });
    w.add(Arc::new(p.clone()), None);
    w
}

fn names(poll: &connhealth_core::watch::Poll) -> Vec<&'static str> {
    poll.changes.iter().map(|c| c.kind.name()).collect()
}

#[tokio::test(start_paused = true)]
async fn first_poll_announces_then_only_changes() {
    let p = Scripted::new("p");
    let mut w = watcher(&p, 1, 1);
    p.statuses(&[("a", Status::Healthy), ("b", Status::Degraded)]);
    assert_eq!(names(&w.poll().await), ["appeared", "appeared"]);
    assert!(w.poll().await.changes.is_empty());
    p.statuses(&[("a", Status::ActionRequired), ("b", Status::Degraded)]);
    let poll = w.poll().await;
    assert_eq!(names(&poll), ["status_changed", "problem_raised"]);
    assert_eq!(
        poll.changes[0].kind,
        ChangeKind::StatusChanged {
            from: Status::Healthy,
            to: Status::ActionRequired
        }
    );
    assert!(poll.changes[0].since.is_some());
}

#[tokio::test(start_paused = true)]
async fn flapping_below_the_trip_threshold_says_nothing() {
    let p = Scripted::new("p");
    let mut w = watcher(&p, 2, 2);
    p.statuses(&[("a", Status::Healthy)]);
    w.poll().await;
    for s in [
        Status::Degraded,
        Status::Healthy,
        Status::Degraded,
        Status::Healthy,
    ] {
        p.statuses(&[("a", s)]);
        assert!(w.poll().await.changes.is_empty(), "flap to {s} announced");
    }
    // Two bad polls in a row trip it…
    p.statuses(&[("a", Status::Degraded)]);
    assert!(w.poll().await.changes.is_empty());
    let poll = w.poll().await;
    assert_eq!(names(&poll), ["status_changed", "problem_raised"]);
    // … and it takes two good ones to clear.
    p.statuses(&[("a", Status::Healthy)]);
    assert!(w.poll().await.changes.is_empty());
    assert_eq!(
        names(&w.poll().await),
        ["status_changed", "problem_cleared"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_outage_is_one_event_each_way_and_nothing_disappears() {
    let p = Scripted::new("p");
    let mut w = watcher(&p, 1, 1);
    p.statuses(&[
        ("a", Status::Healthy),
        ("b", Status::Healthy),
        ("c", Status::Degraded),
    ]);
    w.poll().await;
    p.answer(vec![Batch2::Err(ErrorKind::ServerError, None, None)]);
    let poll = w.poll().await;
    assert_eq!(names(&poll), ["provider_unavailable"]);
    assert_eq!(
        poll.report.summary.unknown, 3,
        "connections of an unavailable provider show as unknown"
    );
    for _ in 0..3 {
        assert!(
            w.poll().await.changes.is_empty(),
            "the outage is announced once"
        );
    }
    p.statuses(&[
        ("a", Status::Healthy),
        ("b", Status::Healthy),
        ("c", Status::Degraded),
    ]);
    let poll = w.poll().await;
    assert_eq!(names(&poll), ["provider_recovered"]);
    assert!(poll.changes[0].since.is_some());
    assert_eq!(poll.report.summary.healthy, 2);
}

#[tokio::test(start_paused = true)]
async fn a_partial_answer_keeps_the_failed_customers_connections() {
    let p = Scripted::new("p");
    let mut w = watcher(&p, 1, 1);
    p.answer(vec![Batch2::Ok(vec![
        ("a", "cus_1", Status::Healthy),
        ("b", "cus_2", Status::Healthy),
    ])]);
    w.poll().await;
    p.answer(vec![
        Batch2::Ok(vec![("a", "cus_1", Status::Healthy)]),
        Batch2::Err(ErrorKind::Forbidden, Some("cus_2"), None),
    ]);
    assert!(w.poll().await.changes.is_empty());
    // When cus_2 answers without b, b is gone.
    p.answer(vec![
        Batch2::Ok(vec![("a", "cus_1", Status::Healthy)]),
        Batch2::Ok(vec![]),
    ]);
    assert_eq!(names(&w.poll().await), ["disappeared"]);
}

#[tokio::test(start_paused = true)]
async fn rate_limits_change_nothing_and_slow_polling_down() {
    let p = Scripted::new("p");
    let mut w = watcher(&p, 1, 1);
    p.statuses(&[("a", Status::Healthy)]);
    w.poll().await;
    p.answer(vec![Batch2::Err(
        ErrorKind::RateLimited,
        Some("cus_1"),
        Some(600),
    )]);
    let poll = w.poll().await;
    assert!(poll.changes.is_empty(), "{:?}", poll.changes);
    assert_eq!(poll.report.summary.healthy, 1, "status unchanged");
    // The provider is not asked again before its Retry-After, even if it would now answer badly.
    p.statuses(&[("a", Status::ActionRequired)]);
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(w.poll().await.changes.is_empty());
    }
    tokio::time::advance(Duration::from_secs(301)).await;
    assert_eq!(names(&w.poll().await), ["status_changed", "problem_raised"]);
}

#[tokio::test(start_paused = true)]
async fn a_restart_from_saved_state_announces_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let p = Scripted::new("p");
    let mut w = watcher(&p, 1, 1);
    p.statuses(&[("a", Status::Healthy), ("b", Status::Disconnected)]);
    assert_eq!(w.poll().await.changes.len(), 2);
    w.state().save(&path).unwrap();
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() == 1,
        "no temp file left behind"
    );

    let mut again = watcher(&p, 1, 1).with_state(WatchState::load(&path).unwrap());
    assert!(again.poll().await.changes.is_empty());
    // A missing file is an empty state; a corrupt one is an error.
    assert_eq!(
        WatchState::load(&dir.path().join("none.json")).unwrap(),
        WatchState::default()
    );
    std::fs::write(&path, "{ nope").unwrap();
    assert!(WatchState::load(&path)
        .unwrap_err()
        .to_string()
        .contains("not a connhealth state file"));
}

#[test]
fn jitter_spreads_the_interval() {
    let w = Watcher::new(WatchConfig {
        interval: Duration::from_secs(100),
        jitter: 0.1,
        ..WatchConfig::default()
    });
    for _ in 0..100 {
        let d = w.next_delay();
        assert!(
            d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
            "{d:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_provider_rate_limited_from_its_first_poll_says_why() {
    let p = Scripted::new("p");
    let mut w = watcher(&p, 1, 1);
    p.answer(vec![Batch2::Err(
        ErrorKind::RateLimited,
        Some("cus_1"),
        Some(120),
    )]);
    let poll = w.poll().await;
    assert!(
        poll.changes.is_empty(),
        "a 429 is not news: {:?}",
        poll.changes
    );
    let entry = &poll.report.providers[0];
    assert_eq!(entry.errors.len(), 1, "{entry:?}");
    assert_eq!(entry.errors[0].kind, ErrorKind::RateLimited);
    // Once it answers, its connections appear (no provider_recovered: it was never down).
    tokio::time::advance(Duration::from_secs(121)).await;
    p.statuses(&[("a", Status::Healthy)]);
    assert_eq!(names(&w.poll().await), ["appeared"]);
}

/// Issue 16 item 2: a watcher that polls only some providers (`watch --provider B`) leaves the
/// others' memory alone: nothing `disappeared`, nothing dropped, nothing re-`appeared` later.
#[tokio::test(start_paused = true)]
async fn providers_not_polled_are_left_alone() {
    let a = Scripted::new("a");
    let b = Scripted::new("b");
    a.statuses(&[("x", Status::Healthy), ("y", Status::Degraded)]);
    b.statuses(&[("z", Status::Healthy)]);
    let mut both = watcher(&a, 1, 1);
    both.add(Arc::new(b.clone()), None);
    assert_eq!(names(&both.poll().await), ["appeared"; 3]);
    let saved = both.state().clone();

    // Only `b` is polled this time.
    let mut only_b = watcher(&b, 1, 1).with_state(saved.clone());
    let poll = only_b.poll().await;
    assert!(poll.changes.is_empty(), "{:?}", names(&poll));
    assert!(
        poll.report.connections.iter().all(|c| c.provider == "b"),
        "the view shows only what this watcher polls"
    );
    let after = only_b.state().clone();
    assert_eq!(
        after.connections.keys().collect::<Vec<_>>(),
        saved.connections.keys().collect::<Vec<_>>(),
        "connections of the provider not polled were dropped"
    );
    assert_eq!(after.providers.get("a"), saved.providers.get("a"));

    // The next full run announces nothing again.
    let mut full = watcher(&a, 1, 1).with_state(after);
    full.add(Arc::new(b.clone()), None);
    let poll = full.poll().await;
    assert!(poll.changes.is_empty(), "{:?}", names(&poll));
}

/// Issue 16 items 8 and 9: the state file is locked by one process at a time, stale temp files
/// of this state file (from a killed save) are removed when it is opened, and a save leaves
/// no temp file behind.
#[test]
fn a_state_file_is_locked_and_stale_temp_files_are_removed() {
    use connhealth_core::watch::StateFile;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let stale = dir.path().join(".state.json.tmp.4242");
    let other = dir.path().join(".other.json.tmp.4242");
    std::fs::write(&stale, b"half a save").unwrap();
    std::fs::write(&other, b"not ours").unwrap();

    let file = StateFile::open(&path).unwrap();
    assert!(
        !stale.exists(),
        "the stale temp file of this state file was kept"
    );
    assert!(
        other.exists(),
        "a temp file of another state file was removed"
    );
    assert_eq!(file.load().unwrap(), WatchState::default());

    let second = StateFile::open(&path).unwrap_err();
    let msg = second.to_string();
    assert!(msg.contains("in use"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");

    let mut state = WatchState::default();
    state.providers.insert(
        "p".into(),
        connhealth_core::watch::ProviderState {
            available: true,
            since: Utc::now(),
            last: None,
        },
    );
    file.save(&state).unwrap();
    assert_eq!(file.load().unwrap(), state);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert_eq!(leftovers, [".other.json.tmp.4242"]);

    drop(file);
    let again = StateFile::open(&path).expect("the lock is released with the file");
    assert_eq!(again.load().unwrap(), state);
}

#[tokio::test(start_paused = true)]
async fn a_targeted_refresh_applies_at_once_despite_the_trip_threshold() {
    let p = Scripted::new("p");
    let mut w = watcher(&p, 3, 3);
    p.statuses(&[("a", Status::Healthy), ("b", Status::Healthy)]);
    assert_eq!(names(&w.poll().await), ["appeared", "appeared"]);
    // One poll showing `a` worse is below trip = 3: a streak of 1, nothing said.
    p.statuses(&[("a", Status::Degraded), ("b", Status::Healthy)]);
    assert!(w.poll().await.changes.is_empty());
    assert_eq!(w.state().connections["p:a"].streak, 1);

    let at = Utc::now();
    let read = [conn("p", "a", "cus_1", Status::ActionRequired)];
    let refreshed = w.apply_refresh("p", "cus_1", &read, false, at);
    assert_eq!(refreshed.changes[0].kind.name(), "status_changed");
    assert_eq!(
        refreshed.changes[0].kind,
        ChangeKind::StatusChanged {
            from: Status::Healthy,
            to: Status::ActionRequired
        }
    );
    assert_eq!(refreshed.changes[0].at, at);
    let tracked = &w.state().connections["p:a"];
    assert_eq!(tracked.connection.status, Status::ActionRequired);
    assert_eq!(tracked.streak, 0);
    assert_eq!(tracked.since, at);
    let in_view = refreshed
        .report
        .connections
        .iter()
        .find(|c| c.id == "p:a")
        .expect("p:a in the view");
    assert_eq!(in_view.status, Status::ActionRequired);
    // Not a whole-customer read: `b` is untouched.
    assert!(w.state().connections.contains_key("p:b"));
    // The same read again says nothing.
    assert!(w
        .apply_refresh("p", "cus_1", &read, false, Utc::now())
        .changes
        .is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_whole_customer_refresh_replaces_only_that_customers_connections() {
    let p = Scripted::new("p");
    let mut w = watcher(&p, 1, 1);
    p.answer(vec![Batch2::Ok(vec![
        ("a", "cus_1", Status::Healthy),
        ("b", "cus_1", Status::Healthy),
        ("c", "cus_2", Status::Healthy),
    ])]);
    assert_eq!(w.poll().await.changes.len(), 3);

    let read = [
        conn("p", "a", "cus_1", Status::Healthy),
        conn("p", "n", "cus_1", Status::Degraded),
        // Another customer's and another provider's rows: ignored.
        conn("p", "c", "cus_2", Status::Disconnected),
        conn("q", "z", "cus_1", Status::Disconnected),
    ];
    let refreshed = w.apply_refresh("p", "cus_1", &read, true, Utc::now());
    let mut got: Vec<(String, &str)> = refreshed
        .changes
        .iter()
        .map(|c| (c.connection_id.clone().unwrap(), c.kind.name()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("p:b".to_owned(), "disappeared"),
            ("p:n".to_owned(), "appeared")
        ]
    );
    let s = w.state();
    assert_eq!(s.connections["p:c"].connection.status, Status::Healthy);
    assert!(!s.connections.contains_key("q:z"));
    assert!(!s.connections.contains_key("p:b"));
}

fn remembered(w: &Watcher, id: &str) -> Arc<Connection> {
    w.state().connections[id].connection.clone()
}

#[tokio::test(start_paused = true)]
async fn the_report_points_to_the_remembered_connections_not_copies() {
    let p = Scripted::new("p");
    let mut w = watcher(&p, 1, 1);
    p.statuses(&[("a", Status::Healthy), ("b", Status::Degraded)]);
    let poll = w.poll().await;
    for c in &poll.report.connections {
        assert!(
            Arc::ptr_eq(c, &remembered(&w, &c.id)),
            "{} is a copy in the poll's report",
            c.id
        );
    }
    let again = w.report(Utc::now());
    assert!(Arc::ptr_eq(
        &again.connections[0],
        &poll.report.connections[0]
    ));

    // An unavailable provider's connections are shown `unknown`: those are the view's own.
    p.answer(vec![Batch2::Err(ErrorKind::ServerError, None, None)]);
    let out = w.poll().await;
    assert!(out
        .report
        .connections
        .iter()
        .all(|c| { c.status == Status::Unknown && !Arc::ptr_eq(c, &remembered(&w, &c.id)) }));
    assert_eq!(remembered(&w, "p:b").status, Status::Degraded);

    // A targeted refresh replaces the remembered allocation; the view follows it.
    let fresh = conn("p", "a", "cus_1", Status::Disconnected);
    let before = remembered(&w, "p:a");
    w.apply_refresh_changes("p", "cus_1", &[fresh], false, Utc::now());
    let after = remembered(&w, "p:a");
    assert!(!Arc::ptr_eq(&before, &after));
    assert_eq!(after.status, Status::Disconnected);
}

/// `tests/data/state-before-shared-connections.json` was written by `connhealth watch --once
/// --state` (over the testkit's simulators) before the watcher's connections became shared
/// (`Arc<Connection>`): it still loads, and is written back byte for byte.
#[test]
fn a_state_file_written_before_connections_were_shared_still_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/state-before-shared-connections.json");
    let state = WatchState::load(&path).unwrap();
    assert_eq!(state.connections.len(), 3);
    assert_eq!(
        state.providers.keys().collect::<Vec<_>>(),
        ["channel3", "subtotal", "violet"]
    );
    let t = &state.connections["channel3:conn-7890-shopify"];
    assert_eq!(t.connection.status, Status::ActionRequired);
    assert_eq!(t.connection.platform, "shopify");
    assert!(!t.connection.problems.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("state.json");
    state.save(&out).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&path).unwrap(),
        "the format changed"
    );
}

/// A sweep whose answers equal what is remembered (but for when they were read) announces
/// nothing and moves every `observed_at`, in the watcher's memory and in the report; a
/// changed answer among them is still announced.
#[tokio::test(start_paused = true)]
async fn an_unchanged_answer_moves_observed_at_in_place_and_announces_nothing() {
    let p = Scripted::new("p");
    let mut w = watcher(&p, 1, 1);
    p.statuses(&[("a", Status::Healthy), ("b", Status::Degraded)]);
    let first = w.poll().await;
    let (a0, b0) = (remembered(&w, "p:a"), remembered(&w, "p:b"));
    let read0 = [a0.observed_at.get(), b0.observed_at.get()];
    std::thread::sleep(Duration::from_millis(2)); // `observed_at` is the wall clock's
    let poll = w.poll().await;
    assert!(poll.changes.is_empty(), "{:?}", names(&poll));
    for ((before, read0), id) in [(&a0, read0[0]), (&b0, read0[1])]
        .into_iter()
        .zip(["p:a", "p:b"])
    {
        let now = remembered(&w, id);
        // The same allocation, not a copy: the time moved in place.
        assert!(Arc::ptr_eq(&now, before), "{id} was copied");
        assert!(now.observed_at.get() > read0, "{id} was not re-read");
        let reported = poll.report.connection(id).unwrap();
        assert_eq!(reported.observed_at, now.observed_at);
        // A report from before shares the connection, so it shows the latest read too.
        assert_eq!(
            first.report.connection(id).unwrap().observed_at,
            now.observed_at
        );
    }
    p.statuses(&[("a", Status::Healthy), ("b", Status::Disconnected)]);
    let poll = w.poll().await;
    assert_eq!(
        poll.changes[0].kind,
        ChangeKind::StatusChanged {
            from: Status::Degraded,
            to: Status::Disconnected
        }
    );
    assert_eq!(remembered(&w, "p:b").status, Status::Disconnected);
}
