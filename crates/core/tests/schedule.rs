//! The split sweep and the poll loop's rules with an in-process provider (the
//! simulator-backed scheduling tests are in crates/server/tests/schedule.rs): a sweep's older
//! answer never overwrites a targeted read applied while it was in flight; a re-check goes
//! through the anti-flap streaks; the configured-rate hook of the staleness budget.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use connhealth_core::futures::stream::{self, BoxStream, StreamExt};
use connhealth_core::schedule::{PollLoop, ScheduleConfig, Step};
use connhealth_core::watch::{WatchConfig, Watcher};
use connhealth_core::{
    Batch, ChangeKind, Connection, Customer, Error, Provider, RefreshHint, Role, Status,
};

/// Answers every customer's status from a table the test changes; the sweep and the
/// targeted read read the same table (as a provider's API would).
#[derive(Debug, Clone, Default)]
struct Table {
    rows: Arc<Mutex<Vec<(&'static str, Status)>>>,
    refreshes: Arc<Mutex<Vec<RefreshHint>>>,
}

fn conn(customer: &str, status: Status) -> Connection {
    Connection::new(
        "table",
        None,
        Customer::new(customer),
        "shopify",
        Role::Source,
        status,
        Utc::now(),
    )
}

impl Table {
    fn set(&self, customer: &'static str, status: Status) {
        let mut rows = self.rows.lock().unwrap();
        match rows.iter_mut().find(|(c, _)| *c == customer) {
            Some(r) => r.1 = status,
            None => rows.push((customer, status)),
        }
    }
}

#[connhealth_core::async_trait]
impl Provider for Table {
    fn name(&self) -> &str {
        "table"
    }
    fn stream(&self) -> BoxStream<'_, Batch> {
        let rows = self.rows.lock().unwrap().clone();
        stream::iter(rows.into_iter().map(|(c, s)| Ok(vec![conn(c, s)]))).boxed()
    }
    async fn refresh(
        &self,
        customer_id: &str,
        hint: RefreshHint,
    ) -> Result<Vec<Connection>, Error> {
        self.refreshes.lock().unwrap().push(hint);
        let rows = self.rows.lock().unwrap().clone();
        Ok(rows
            .into_iter()
            .filter(|(c, _)| *c == customer_id)
            .map(|(c, s)| conn(c, s))
            .collect())
    }
}

fn watcher(table: &Table, trip: u32) -> Watcher {
    let mut w = Watcher::new(WatchConfig {
        interval: Duration::from_secs(600),
        jitter: 0.0,
        trip,
        ..WatchConfig::default()
    });
    w.add(Arc::new(table.clone()), None);
    w
}

fn status_of(w: &Watcher, customer: &str) -> Status {
    w.state()
        .connections
        .values()
        .find(|t| t.connection.customer.id == customer)
        .map(|t| t.connection.status)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_sweep_never_overwrites_a_read_applied_while_it_was_in_flight() {
    let table = Table::default();
    table.set("a", Status::Healthy);
    table.set("b", Status::Healthy);
    let mut w = watcher(&table, 1);
    w.poll().await;

    // The sweep fetches `a` as disconnected...
    table.set("a", Status::Disconnected);
    table.set("b", Status::Disconnected);
    let sweep = w.begin_sweep();
    let swept = sweep.fetch().await;
    // ...then a webhook's read says `a` is healthy again, before the sweep is applied.
    table.set("a", Status::Healthy);
    let fresh = table.refresh("a", RefreshHint::Customer).await.unwrap();
    let changes = w.apply_refresh_changes("table", "a", &fresh, true, Utc::now());
    assert!(changes.is_empty(), "{changes:?}");
    let poll = w.finish_sweep(swept);
    // The sweep's answer for `a` is older: left out. `b` is the sweep's to say.
    assert_eq!(status_of(&w, "a"), Status::Healthy);
    assert_eq!(status_of(&w, "b"), Status::Disconnected);
    let about: Vec<&str> = poll
        .changes
        .iter()
        .filter_map(|c| c.customer_id.as_deref())
        .collect();
    assert!(!about.contains(&"a"), "{:?}", poll.changes);
    assert!(about.contains(&"b"), "{:?}", poll.changes);

    // The next sweep speaks for `a` again (a removed customer is `disappeared`).
    table.rows.lock().unwrap().retain(|(c, _)| *c != "a");
    let poll = w.poll().await;
    assert!(poll
        .changes
        .iter()
        .any(|c| c.customer_id.as_deref() == Some("a")
            && matches!(c.kind, ChangeKind::Disappeared { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_recheck_goes_through_the_streaks_and_asks_with_the_scheduled_hint() {
    let table = Table::default();
    table.set("a", Status::Degraded);
    // trip 2: a worse status is announced after two reads in a row.
    let mut w = watcher(&table, 2).with_schedule(ScheduleConfig::default());
    let mut rounds = PollLoop::new();
    assert!(matches!(rounds.next(&mut w).await, Step::Swept { .. }));
    table.set("a", Status::Disconnected);
    let t0 = tokio::time::Instant::now();
    let Step::Rechecked { changes, .. } = rounds.next(&mut w).await else {
        panic!("a re-check comes first")
    };
    assert_eq!(t0.elapsed(), Duration::from_secs(60));
    assert!(
        changes.is_empty(),
        "one read is a streak of one: {changes:?}"
    );
    assert_eq!(status_of(&w, "a"), Status::Degraded);
    let Step::Rechecked { changes, .. } = rounds.next(&mut w).await else {
        panic!("a second re-check before the next sweep")
    };
    assert_eq!(t0.elapsed(), Duration::from_secs(120));
    assert!(
        changes
            .iter()
            .any(|c| matches!(c.kind, ChangeKind::StatusChanged { .. })),
        "{changes:?}"
    );
    assert_eq!(status_of(&w, "a"), Status::Disconnected);
    assert_eq!(
        *table.refreshes.lock().unwrap(),
        [RefreshHint::Scheduled, RefreshHint::Scheduled]
    );
}

#[tokio::test(start_paused = true)]
async fn a_configured_rate_is_what_the_budget_is_judged_on() {
    let table = Table::default();
    for c in ["a", "b", "c", "d"] {
        table.set(c, Status::Healthy);
    }
    let mut w = watcher(&table, 1).with_schedule(ScheduleConfig {
        max_staleness: Duration::from_secs(3600),
        ..ScheduleConfig::default()
    });
    // 4 customers at 0.001 customers/s: 4,000 s of sweeping + 600 s interval > 1 h.
    let mut rounds = PollLoop::new().with_configured_rate(Some(0.001));
    assert!(matches!(rounds.next(&mut w).await, Step::Swept { .. }));
    let b = rounds.stats().budget().unwrap();
    assert!(b.configured && b.exceeded(), "{b:?}");
    assert_eq!(b.customers, 4);
    assert_eq!(b.achievable, Duration::from_secs(4600));
    assert!(rounds
        .stats()
        .budget_warning()
        .unwrap()
        .contains("(configured rate budget)"));
    // Without one, the sweep's measured rate: an instant sweep gives no figure at all.
    let mut rounds = PollLoop::new();
    assert!(matches!(rounds.next(&mut w).await, Step::Swept { .. }));
    assert!(rounds.stats().budget().is_none());
}
