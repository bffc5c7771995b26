//! Load: many concurrent aggregations against the simulators while faults are switched on and
//! off at random (seeded), then leak checks: no request still in flight at the simulators, TCP
//! connections reused (bounded), the runtime's task count back to its baseline once the
//! providers are dropped, and every report well-formed.
//!
//! `load_short` (≈5 s: 50 concurrent workers aggregating round after round for 4 s) runs in CI. `load_full` (50 concurrent
//! aggregations for 30 s) is ignored; run it with
//! `cargo test --release -p connhealth --test load -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connhealth::http::RetryPolicy;
use connhealth::simulators;
use connhealth::{Aggregator, ErrorKind, HealthReport, Outcome, Provider, Status};
use connhealth_testkit::{channel3 as c3sim, subtotal as stsim, violet as vsim};
use connhealth_testkit::{Fault, FaultRule, Faults, Fleet, Stats};

const CUSTOMERS: usize = 10;
const BODY_CAP: usize = 256 * 1024;

/// xorshift64*: a seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random fault (or none) for a whole simulator.
fn random_rule(rng: &mut Rng) -> Option<(String, FaultRule)> {
    let ms = Duration::from_millis;
    let (name, fault, times): (&str, Fault, Option<u32>) = match rng.below(18) {
        0..=3 => return None,
        4 => (
            "latency 5-50 ms",
            Fault::LatencyBetween(ms(5), ms(50)),
            None,
        ),
        5 => ("latency 3 s", Fault::Latency(ms(3000)), None),
        6 => ("hang", Fault::Hang, None),
        7 => (
            "500 burst",
            Fault::status(500),
            Some(1 + rng.below(3) as u32),
        ),
        8 => ("502 always", Fault::status(502), None),
        9 => (
            "503 + Retry-After: 0",
            Fault::Status {
                status: 503,
                retry_after: Some("0".into()),
                body: None,
            },
            Some(2),
        ),
        10 => ("429 + Retry-After: 1", Fault::too_many_requests(1), Some(3)),
        11 => ("reset mid-body", Fault::DropMidBody, None),
        12 => ("malformed JSON", Fault::MalformedJson, None),
        13 => ("truncated body", Fault::TruncatedBody, None),
        14 => (
            "oversized body",
            Fault::OversizedBody(BODY_CAP + 1024),
            None,
        ),
        15 => ("unknown enums", Fault::UnknownEnums, None),
        16 => ("duplicate ids", Fault::DuplicateIds, None),
        _ => ("empty arrays", Fault::EmptyArrays, None),
    };
    let mut rule = FaultRule::new(fault);
    if let Some(t) = times {
        rule = rule.times(t);
    }
    Some((name.to_owned(), rule))
}

struct Providers {
    channel3: Arc<dyn Provider>,
    violet: Arc<dyn Provider>,
    subtotal: Arc<dyn Provider>,
}

fn providers(fleet: &Fleet) -> Providers {
    let retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_total: Duration::from_secs(1),
        max_retry_after: Duration::from_secs(1),
    };
    let request = Duration::from_millis(800);
    Providers {
        channel3: Arc::new(
            simulators::channel3(&fleet.channel3)
                .customers(fleet.channel3.customer_ids())
                .request_timeout(request)
                .retry(retry.clone())
                .max_body_bytes(BODY_CAP)
                .concurrency(8)
                .build()
                .unwrap(),
        ),
        violet: Arc::new(
            simulators::violet(&fleet.violet)
                .request_timeout(request)
                .retry(retry.clone())
                .max_body_bytes(BODY_CAP)
                .build()
                .unwrap(),
        ),
        subtotal: Arc::new(
            simulators::subtotal(&fleet.subtotal)
                .request_timeout(request)
                .retry(retry)
                .max_body_bytes(BODY_CAP)
                .concurrency(8)
                .build()
                .unwrap(),
        ),
    }
}

fn aggregator(p: &Providers) -> Aggregator {
    let mut a = Aggregator::new().with_timeout(Duration::from_millis(2000));
    a.push(p.channel3.clone(), None);
    a.push(p.violet.clone(), None);
    a.push(p.subtotal.clone(), None);
    a
}

/// Every structural promise of a report (the roll-up rule written out independently).
fn report_problems(report: &HealthReport) -> Vec<String> {
    let mut bad = Vec::new();
    let worst = report
        .connections
        .iter()
        .map(|c| match c.status {
            Status::NotConnected => Status::Healthy,
            s => s,
        })
        .max()
        .unwrap_or(Status::Healthy);
    let expected = if report.providers.iter().any(|p| p.outcome != Outcome::Ok) {
        worst.max(Status::Unknown)
    } else {
        worst
    };
    if report.overall != expected {
        bad.push(format!(
            "overall {} but the roll-up gives {expected}",
            report.overall
        ));
    }
    for w in report.connections.windows(2) {
        if w[0].id >= w[1].id {
            bad.push(format!("not sorted/unique at {}", w[1].id));
        }
    }
    for c in &report.connections {
        bad.extend(connhealth_testkit::well_formed(c));
    }
    if report.summary.total != report.connections.len() {
        bad.push("summary.total is off".into());
    }
    if report.providers.len() != 3 {
        bad.push(format!("{} provider entries", report.providers.len()));
    }
    for p in &report.providers {
        if p.connections != report.connections_of(&p.provider).count() {
            bad.push(format!("{}: connection count is off", p.provider));
        }
        if (p.outcome == Outcome::Ok) != p.errors.is_empty() {
            bad.push(format!(
                "{}: {:?} with {} errors",
                p.provider,
                p.outcome,
                p.errors.len()
            ));
        }
        if let Some(e) = p.errors.iter().find(|e| e.kind == ErrorKind::Panicked) {
            bad.push(format!("{} panicked: {}", p.provider, e.message));
        }
    }
    match serde_json::to_vec(report).map(|v| serde_json::from_slice::<HealthReport>(&v)) {
        Ok(Ok(back)) if back == *report => {}
        _ => bad.push("the report does not round-trip through JSON".into()),
    }
    bad
}

fn sims(fleet: &Fleet) -> [(&'static str, &Faults, &Stats, &'static [&'static str]); 3] {
    [
        (
            "channel3",
            fleet.channel3.faults(),
            fleet.channel3.stats(),
            &c3sim::ROUTES,
        ),
        (
            "violet",
            fleet.violet.faults(),
            fleet.violet.stats(),
            &vsim::ROUTES,
        ),
        (
            "subtotal",
            fleet.subtotal.faults(),
            fleet.subtotal.stats(),
            &stsim::ROUTES,
        ),
    ]
}

#[derive(Default, Debug)]
struct Tally {
    aggregations: usize,
    outcomes: BTreeMap<(String, &'static str), usize>,
    kinds: BTreeMap<&'static str, usize>,
    durations_ms: Vec<u64>,
    bad: Vec<String>,
}

fn outcome_name(o: Outcome) -> &'static str {
    o.as_str()
}

/// `workers` tasks aggregate in a loop (each at most `per_worker` times, all stopping at
/// `duration`) while a toggler switches faults on and off; then the leak checks.
async fn run_load(seed: u64, workers: usize, per_worker: usize, duration: Duration) {
    let rt = tokio::runtime::Handle::current();
    let fleet = Fleet::start(CUSTOMERS, seed).await.unwrap();
    // Let the servers' accept loops settle before counting tasks.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let baseline_tasks = rt.metrics().num_alive_tasks();

    let p = Arc::new(providers(&fleet));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + duration;

    // The toggler: every 100-400 ms, each simulator gets a new random fault or none.
    let toggles = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let toggler = {
        let stop = stop.clone();
        let toggles = toggles.clone();
        let handles: Vec<(&'static str, Faults)> = sims(&fleet)
            .iter()
            .map(|(n, f, _, _)| (*n, (*f).clone()))
            .collect();
        tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            while !stop.load(Ordering::SeqCst) {
                for (name, faults) in &handles {
                    faults.clear();
                    let label = match random_rule(&mut rng) {
                        Some((label, rule)) => {
                            faults.push(rule);
                            label
                        }
                        None => "none".to_owned(),
                    };
                    *toggles
                        .lock()
                        .unwrap()
                        .entry(format!("{name}: {label}"))
                        .or_default() += 1;
                }
                tokio::time::sleep(Duration::from_millis(100 + rng.below(300))).await;
            }
            for (_, faults) in &handles {
                faults.clear();
            }
        })
    };

    let mut tasks = Vec::new();
    for _ in 0..workers {
        let p = p.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_worker {
                if Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                let report = aggregator(&p).run().await;
                let ms = t0.elapsed().as_millis() as u64;
                let bad = report_problems(&report);
                let mut t = tally.lock().unwrap();
                t.aggregations += 1;
                t.durations_ms.push(ms);
                for o in &report.providers {
                    *t.outcomes
                        .entry((o.provider.clone(), outcome_name(o.outcome)))
                        .or_default() += 1;
                    for e in &o.errors {
                        *t.kinds.entry(e.kind.as_str()).or_default() += 1;
                    }
                }
                t.bad.extend(bad);
            }
        }));
    }
    for t in tasks {
        t.await.expect("no worker panicked");
    }
    let run_time = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    toggler.await.unwrap();

    // Settle: server handlers of requests the clients gave up on (latency faults) finish.
    let settle_until = Instant::now() + Duration::from_secs(5);
    let in_flight = |fleet: &Fleet| -> u64 {
        sims(fleet)
            .iter()
            .map(|(_, _, s, routes)| routes.iter().map(|r| s.in_flight(r)).sum::<u64>())
            .sum()
    };
    while in_flight(&fleet) > 0 && Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut requests = 0;
    let mut connections = 0;
    for (name, _, stats, routes) in sims(&fleet) {
        for r in routes {
            assert_eq!(
                stats.in_flight(r),
                0,
                "{name} {r}: requests still in flight"
            );
        }
        requests += stats.total_requests();
        connections += stats.tcp_connections();
    }

    // After the storm, fault-free aggregations answer fully again, over the pooled
    // connections: at most one new connection per concurrent request of one aggregation
    // (8 Channel3 + 8 Subtotal + retailers + Violet), however many aggregations run.
    for (_, _, stats, _) in sims(&fleet) {
        stats.reset();
    }
    const CALM: usize = 10;
    for _ in 0..CALM {
        let report = aggregator(&p).run().await;
        assert!(
            report_problems(&report).is_empty(),
            "{:?}",
            report_problems(&report)
        );
        for o in &report.providers {
            assert_eq!(o.outcome, Outcome::Ok, "after the storm: {:?}", o.errors);
        }
    }
    let calm_requests: u64 = sims(&fleet)
        .iter()
        .map(|(_, _, s, _)| s.total_requests())
        .sum();
    let calm_connections: u64 = sims(&fleet)
        .iter()
        .map(|(_, _, s, _)| s.tcp_connections())
        .sum();
    assert!(calm_requests >= (CALM * (2 * CUSTOMERS + 1)) as u64);
    assert!(
        calm_connections <= 19,
        "{calm_connections} new TCP connections for {calm_requests} requests after the storm"
    );

    // Drop every client (closing their pools): the task count returns to the baseline.
    drop(p);
    let tasks_before_drop = rt.metrics().num_alive_tasks();
    let settle_until = Instant::now() + Duration::from_secs(5);
    while rt.metrics().num_alive_tasks() > baseline_tasks && Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tasks_after = rt.metrics().num_alive_tasks();

    let t = std::mem::take(&mut *tally.lock().unwrap());
    let mut d = t.durations_ms.clone();
    d.sort_unstable();
    let pct = |q: f64| {
        d.get(((d.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "load (seed {seed}): {} aggregations by {workers} workers in {:.1} s; aggregation ms p50 {} p95 {} max {}",
        t.aggregations,
        run_time.as_secs_f64(),
        pct(0.5),
        pct(0.95),
        pct(1.0)
    );
    println!("  simulator requests {requests}, TCP connections accepted {connections}");
    println!("  after the storm: {CALM} fault-free aggregations, {calm_requests} requests over {calm_connections} new TCP connections");
    println!("  tasks: baseline {baseline_tasks}, with pools open {tasks_before_drop}, after drop {tasks_after}");
    println!("  outcomes: {:?}", t.outcomes);
    println!("  error kinds: {:?}", t.kinds);
    println!("  fault toggles: {:?}", toggles.lock().unwrap());

    assert!(
        t.bad.is_empty(),
        "malformed reports: {:?}",
        &t.bad[..t.bad.len().min(20)]
    );
    assert!(
        t.aggregations >= workers,
        "every worker aggregated at least once"
    );
    let faulty: usize = t
        .outcomes
        .iter()
        .filter(|((_, o), _)| *o != "ok")
        .map(|(_, n)| n)
        .sum();
    assert!(faulty > 0, "faults were injected and seen");
    // Connection reuse is asserted after the storm (above: a handful of new connections for
    // hundreds of calm requests). Inside the storm every fault that breaks a connection (reset,
    // truncation, timeout, oversized body) costs a new one, and how many requests time out
    // depends on how busy the machine is: on two loaded cores more connections than requests
    // were seen on unchanged code, so the storm's own count is printed, not asserted.
    assert_eq!(
        tasks_after, baseline_tasks,
        "tasks leaked: {tasks_after} alive, {baseline_tasks} before"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_short() {
    // 50 concurrent workers, each aggregating round after round for 4 s.
    run_load(7, 50, usize::MAX, Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "30 s; run with --release -- --ignored"]
async fn load_full() {
    // 50 concurrent aggregations for 30 s.
    run_load(42, 50, usize::MAX, Duration::from_secs(30)).await;
}
