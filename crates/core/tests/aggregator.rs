//! The aggregator: concurrency, timeouts, errors and panics, on tokio's paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use connhealth_core::futures::stream::{self, BoxStream, StreamExt};
use connhealth_core::{
    Aggregator, Batch, Concurrency, Connection, Customer, Error, ErrorKind, Known, ObservedAt,
    Outcome, Provider, ProviderResult, Role, Status,
};
use tokio::time::Instant;

fn conn(provider: &str, pid: &str, status: Status) -> Connection {
    let mut built = Connection::new(
        provider,
        None,
        Customer::new("cus"),
        "shopify",
        Role::Source,
        status,
        Utc::now(),
    );
    built.id = Connection::make_id(provider, Some(pid), "cus", "shopify");
    built.provider_connection_id = Some(pid.into());
    built.provider_status = "x".into();
    built
}

/// A scripted provider: each step waits, then yields a batch (or panics).
#[derive(Debug, Clone)]
enum Step {
    Wait(Duration),
    Ok(Vec<&'static str>),
    Err(ErrorKind),
    Panic,
    Hang,
}

#[derive(Debug)]
struct Scripted {
    name: String,
    steps: Vec<Step>,
}

impl Scripted {
    fn new(name: &str, steps: Vec<Step>) -> Self {
        Scripted {
            name: name.into(),
            steps,
        }
    }
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    fn stream(&self) -> BoxStream<'_, Batch> {
        let name = self.name.clone();
        stream::iter(self.steps.clone())
            .then(move |step| {
                let name = name.clone();
                async move {
                    match step {
                        Step::Wait(d) => {
                            tokio::time::sleep(d).await;
                            None
                        }
                        Step::Ok(ids) => Some(Ok(ids
                            .iter()
                            .map(|id| conn(&name, id, Status::Healthy))
                            .collect())),
                        Step::Err(kind) => {
                            Some(Err(Error::new(&name, "GET /x", kind, "scripted")
                                .with_customer("cus_bad")))
                        }
                        Step::Panic => panic!("scripted panic in {name}"),
                        Step::Hang => {
                            std::future::pending::<()>().await;
                            None
                        }
                    }
                }
            })
            .filter_map(|x| async move { x })
            .boxed()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn providers_run_concurrently() {
    let mut agg = Aggregator::new();
    for i in 0..5 {
        let name = format!("p{i}");
        agg = agg.with_provider(Scripted::new(
            &name,
            vec![Step::Wait(secs(2)), Step::Ok(vec!["a", "b"])],
        ));
    }
    let start = Instant::now();
    let report = agg.run().await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= secs(2) && elapsed < secs(3),
        "took {elapsed:?} of paused time, expected ~2 s"
    );
    assert_eq!(report.summary.total, 10);
    assert!(report
        .providers
        .iter()
        .all(|p| p.outcome == Outcome::Ok && p.elapsed_ms >= 2000));
    let names: Vec<&str> = report
        .providers
        .iter()
        .map(|p| p.provider.as_str())
        .collect();
    assert_eq!(
        names,
        ["p0", "p1", "p2", "p3", "p4"],
        "configuration order kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_provider_keeps_what_arrived_and_spares_the_others() {
    let report = Aggregator::new()
        .with_timeout(secs(5))
        .with_provider(Scripted::new("fast", vec![Step::Ok(vec!["f1"])]))
        .with_provider(Scripted::new(
            "slow",
            vec![Step::Ok(vec!["s1"]), Step::Hang],
        ))
        .run()
        .await;
    let slow = &report.providers[1];
    assert_eq!(slow.outcome, Outcome::TimedOut);
    assert_eq!(slow.errors[0].kind, ErrorKind::Timeout);
    assert_eq!(slow.connections, 1);
    assert!(
        report.connection("slow:s1").is_some(),
        "what arrived before the timeout is kept"
    );
    assert!(report.connection("fast:f1").is_some());
    assert_eq!(report.providers[0].outcome, Outcome::Ok);
    assert_eq!(report.overall, Status::Unknown);
}

#[tokio::test(start_paused = true)]
async fn per_provider_timeout_and_overall_deadline() {
    let start = Instant::now();
    let report = Aggregator::new()
        .with_timeout(secs(100))
        .with_provider_timeout(Scripted::new("own", vec![Step::Hang]), secs(3))
        .with_provider(Scripted::new("default", vec![Step::Hang]))
        .with_deadline(secs(10))
        .run()
        .await;
    assert_eq!(report.providers[0].outcome, Outcome::TimedOut);
    assert_eq!(report.providers[1].outcome, Outcome::TimedOut);
    assert_eq!(report.providers[0].elapsed_ms, 3000);
    assert_eq!(
        report.providers[1].elapsed_ms, 10_000,
        "the deadline caps the default timeout"
    );
    assert_eq!(start.elapsed(), secs(10));
}

#[tokio::test(start_paused = true)]
async fn an_erroring_provider_spares_the_others() {
    let report = Aggregator::new()
        .with_provider(Scripted::new(
            "good",
            vec![Step::Wait(secs(1)), Step::Ok(vec!["g1", "g2"])],
        ))
        .with_provider(Scripted::new(
            "bad",
            vec![Step::Err(ErrorKind::Authentication)],
        ))
        .run()
        .await;
    assert_eq!(report.providers[0].outcome, Outcome::Ok);
    let bad = &report.providers[1];
    assert_eq!(bad.outcome, Outcome::Failed);
    assert_eq!(bad.errors.len(), 1);
    assert_eq!(bad.errors[0].kind, ErrorKind::Authentication);
    assert!(
        bad.errors[0]
            .message
            .starts_with("bad: GET /x: authentication"),
        "{}",
        bad.errors[0].message
    );
    assert_eq!(report.summary.total, 2);
    assert_eq!(report.overall, Status::Unknown);
}

#[tokio::test(start_paused = true)]
async fn some_customers_failing_is_partial() {
    let report = Aggregator::new()
        .with_provider(Scripted::new(
            "mixed",
            vec![
                Step::Ok(vec!["a"]),
                Step::Err(ErrorKind::Forbidden),
                Step::Ok(vec!["b"]),
            ],
        ))
        .run()
        .await;
    let p = &report.providers[0];
    assert_eq!(p.outcome, Outcome::Partial);
    assert_eq!(p.connections, 2);
    assert_eq!(p.errors[0].customer_id.as_deref(), Some("cus_bad"));
    assert_eq!(report.overall, Status::Unknown);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_provider_spares_the_others() {
    let report = Aggregator::new()
        .with_provider(Scripted::new(
            "calm",
            vec![Step::Wait(secs(1)), Step::Ok(vec!["c1"])],
        ))
        .with_provider(Scripted::new(
            "boom",
            vec![Step::Ok(vec!["b1"]), Step::Panic],
        ))
        .with_provider(Scripted::new("boom-early", vec![Step::Panic]))
        .run()
        .await;
    assert_eq!(report.providers[0].outcome, Outcome::Ok);
    let boom = &report.providers[1];
    assert_eq!(
        boom.outcome,
        Outcome::Partial,
        "one batch arrived before the panic"
    );
    assert_eq!(boom.errors[0].kind, ErrorKind::Panicked);
    assert!(boom.errors[0].message.contains("scripted panic in boom"));
    assert!(report.connection("boom:b1").is_some());
    assert_eq!(report.providers[2].outcome, Outcome::Failed);
    assert!(report.connection("calm:c1").is_some());
}

#[tokio::test(start_paused = true)]
async fn the_stream_yields_providers_as_they_finish() {
    let agg = Aggregator::new()
        .with_provider(Scripted::new(
            "slow",
            vec![Step::Wait(secs(3)), Step::Ok(vec!["s"])],
        ))
        .with_provider(Scripted::new(
            "fast",
            vec![Step::Wait(secs(1)), Step::Ok(vec!["f"])],
        ))
        .with_provider(Scripted::new(
            "mid",
            vec![Step::Wait(secs(2)), Step::Ok(vec!["m"])],
        ));
    let order: Vec<String> = agg.run_stream().map(|r| r.outcome.provider).collect().await;
    assert_eq!(order, ["fast", "mid", "slow"]);
}

#[tokio::test(start_paused = true)]
async fn duplicate_ids_keep_the_most_severe() {
    #[derive(Debug)]
    struct Dup;
    impl Provider for Dup {
        fn name(&self) -> &str {
            "dup"
        }
        fn stream(&self) -> BoxStream<'_, Batch> {
            stream::iter(vec![Ok(vec![
                conn("dup", "x", Status::Healthy),
                conn("dup", "x", Status::Degraded),
                conn("dup", "y", Status::Healthy),
            ])])
            .boxed()
        }
    }
    let report = Aggregator::new().with_provider(Dup).run().await;
    assert_eq!(report.summary.total, 2);
    assert_eq!(report.providers[0].connections, 2);
    assert_eq!(report.connection("dup:x").unwrap().status, Status::Degraded);
}

#[tokio::test(start_paused = true)]
async fn dropping_an_aggregation_cancels_its_providers() {
    #[derive(Debug)]
    struct Counting(Arc<AtomicUsize>);
    impl Provider for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn stream(&self) -> BoxStream<'_, Batch> {
            let done = self.0.clone();
            stream::once(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok(vec![])
            })
            .boxed()
        }
    }
    let done = Arc::new(AtomicUsize::new(0));
    let agg = Aggregator::new().with_provider(Counting(done.clone()));
    let run = agg.run();
    let _ = tokio::time::timeout(secs(1), run).await;
    tokio::time::sleep(secs(10)).await;
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "the provider kept running after the aggregation was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn fan_out_respects_its_bound() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let conc = Concurrency::new(8);
    let start = Instant::now();
    let results: Vec<usize> = conc
        .fan_out(0..100usize, |i| {
            let in_flight = in_flight.clone();
            let peak = peak.clone();
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                i
            }
        })
        .collect()
        .await;
    assert_eq!(results.len(), 100);
    assert_eq!(peak.load(Ordering::SeqCst), 8);
    // ceil(100 / 8) × 100 ms of paused time.
    assert_eq!(start.elapsed(), Duration::from_millis(1300));
}

#[tokio::test(start_paused = true)]
async fn a_shared_bound_limits_several_fan_outs_together() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let shared = Concurrency::shared(4);
    let work = |conc: Concurrency| {
        let in_flight = in_flight.clone();
        let peak = peak.clone();
        async move {
            conc.fan_out(0..20usize, move |_| {
                let in_flight = in_flight.clone();
                let peak = peak.clone();
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .collect::<Vec<()>>()
            .await
        }
    };
    tokio::join!(work(shared.clone()), work(shared.clone()), work(shared));
    assert_eq!(peak.load(Ordering::SeqCst), 4);
}

/// A bound beyond what a semaphore can hold (2^61 and up) used to panic when a shared bound was
/// created (a library caller or an adapter's discovery); it is capped instead.
#[tokio::test]
async fn an_absurd_bound_is_capped_not_a_panic() {
    use connhealth_core::futures::StreamExt as _;
    for limit in [1usize << 61, usize::MAX] {
        let shared = Concurrency::shared(limit);
        assert!(shared.limit() < limit);
        let out: Vec<u32> = shared
            .fan_out(0..3u32, |i| async move { i })
            .collect()
            .await;
        assert_eq!(out.len(), 3);
        assert_eq!(Concurrency::new(limit).limit(), shared.limit());
    }
}

/// A provider that answers these batches, in order.
#[derive(Debug, Clone)]
struct Batches(Vec<Vec<Connection>>);

impl Provider for Batches {
    fn name(&self) -> &str {
        "k"
    }
    fn stream(&self) -> BoxStream<'_, Batch> {
        stream::iter(self.0.clone().into_iter().map(Ok)).boxed()
    }
}

#[tokio::test(start_paused = true)]
async fn answers_equal_to_known_ones_come_back_as_pointers_and_only_changes_whole() {
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let t1 = t0 + chrono::Duration::minutes(5);
    let at = |mut c: Connection, t| {
        c.observed_at = ObservedAt::new(t);
        c
    };
    let healthy = |id| at(conn("k", id, Status::Healthy), t0);
    let known = Known::new([healthy("d"), healthy("a"), healthy("b")].map(Arc::new));
    assert_eq!(known.len(), 3);
    let read = |c: &Connection| at(c.clone(), t1);
    let mut b_now = read(&healthy("b"));
    b_now.status = Status::Degraded;
    let provider = Batches(vec![
        vec![read(&healthy("a")), b_now],
        vec![
            at(conn("k", "c", Status::Healthy), t1),
            read(&healthy("d")),
            read(&healthy("d")),
        ],
    ]);

    let results: Vec<ProviderResult> = Aggregator::new()
        .with_known(known.clone())
        .with_provider(provider.clone())
        .run_stream()
        .collect()
        .await;
    let r = &results[0];
    // "a" did not change: a pointer to the known connection and the new read time.
    assert_eq!(r.unchanged.len(), 1);
    assert!(Arc::ptr_eq(
        &r.unchanged[0].known,
        known.get("k:a").unwrap()
    ));
    assert_eq!(r.unchanged[0].observed_at, t1);
    // "b" changed, "c" is new, and "d" came twice: those are whole, and "d" once.
    let ids: Vec<&str> = r.connections.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["k:b", "k:c", "k:d"]);
    assert!(r.connections.iter().all(|c| c.observed_at == t1));
    assert_eq!(r.outcome.connections, 4);
    assert_eq!(
        r.outcome.outcome,
        Outcome::Partial,
        "a duplicate is reported"
    );

    // `run` gives the whole answer, the unchanged one as read now.
    let report = Aggregator::new()
        .with_known(known.clone())
        .with_provider(provider)
        .run()
        .await;
    let ids: Vec<&str> = report.connections.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["k:a", "k:b", "k:c", "k:d"]);
    let a = report.connection("k:a").unwrap();
    assert_eq!(a.observed_at, t1);
    assert!(a.same_except_observed_at(known.get("k:a").unwrap()));
    assert_eq!(report.connection("k:b").unwrap().status, Status::Degraded);
}
