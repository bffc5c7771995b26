//! Priority scheduling (issue 22) over real HTTP to the testkit simulators, on tokio's paused
//! clock: sweeps every `interval`, re-checks of customers that are not healthy every
//! `recheck_secs` (also while a long sweep is in flight), Violet's cached hourly re-check
//! (never `refresh=true`), moving a customer to the front, and the `/readyz` staleness
//! budget warning.

#[path = "../../store/tests/common/mod.rs"]
mod pg;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use connhealth::schedule::{PollLoop, ScheduleConfig, Step};
use connhealth::simulators::{self, Channel3Sim, VioletSim};
use connhealth::watch::{WatchConfig, Watcher};
use connhealth::{ErrorKind, Provider, RefreshHint, Status};
use connhealth_server::{Server, ServerConfig};
use connhealth_testkit::channel3::LIST_CONNECTIONS;
use connhealth_testkit::violet::CONNECTION_HEALTH_MERCHANT;
use connhealth_testkit::{Fault, FaultRule};
use tokio::time::Instant;

const RECHECK: Duration = Duration::from_secs(60);

/// `n` Channel3 customers with one healthy (`active` web crawl) connection each.
async fn healthy_channel3(n: usize) -> Channel3Sim {
    let sim = Channel3Sim::start_generated(n, 22).await.unwrap();
    for id in sim.customer_ids() {
        assert!(sim.set_connections(&id, Vec::new()));
        assert!(sim.set_connection_status(&id, "web_crawl", "active"));
    }
    sim
}

fn channel3(sim: &Channel3Sim, concurrency: usize) -> Arc<dyn Provider> {
    Arc::new(
        simulators::channel3(sim)
            .customers(sim.customer_ids())
            .concurrency(concurrency)
            // Paused clock: no client timers (the simulator's latency is the clock here).
            .without_timers()
            .build()
            .unwrap(),
    )
}

fn watcher(
    interval: Duration,
    max_staleness: Duration,
    providers: &[Arc<dyn Provider>],
) -> Watcher {
    let mut w = Watcher::new(WatchConfig {
        interval,
        jitter: 0.0,
        // Sweeps here take minutes of (paused) time by design.
        timeout: Duration::from_secs(48 * 3600),
        ..WatchConfig::default()
    })
    .with_schedule(ScheduleConfig {
        recheck: RECHECK,
        max_staleness,
        ..ScheduleConfig::default()
    });
    for p in providers {
        w.add(p.clone(), None);
    }
    w
}

/// Every step until `until`, with the instant it was returned.
async fn run_until(rounds: &mut PollLoop, w: &mut Watcher, until: Instant) -> Vec<(Instant, Step)> {
    let mut steps = Vec::new();
    loop {
        tokio::select! {
            step = rounds.next(w) => steps.push((Instant::now(), step)),
            _ = tokio::time::sleep_until(until) => return steps,
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn two_percent_unhealthy_are_rechecked_every_60s_while_the_slow_sweep_keeps_max_staleness() {
    let sim = healthy_channel3(100).await;
    let ids = sim.customer_ids();
    let broken = [ids[10].clone(), ids[60].clone()];
    for id in &broken {
        assert!(sim.set_connection_status(id, "web_crawl", "action_required"));
    }
    // 2 s per customer read, one at a time: a sweep of 100 customers takes ~200 s, more
    // than three recheck periods.
    sim.faults()
        .push(FaultRule::new(Fault::Latency(Duration::from_secs(2))).route(LIST_CONNECTIONS));
    let max_staleness = Duration::from_secs(600);
    let mut w = watcher(Duration::from_secs(60), max_staleness, &[channel3(&sim, 1)]);
    let mut rounds = PollLoop::new();
    let t0 = Instant::now();
    let steps = run_until(&mut rounds, &mut w, t0 + Duration::from_secs(1500)).await;

    // Sweeps: each read all 100 customers in ~200 s and the next began `interval` later.
    let sweeps: Vec<(Instant, Duration)> = steps
        .iter()
        .filter_map(|(t, s)| match s {
            Step::Swept { elapsed, .. } => Some((*t, *elapsed)),
            _ => None,
        })
        .collect();
    assert!(sweeps.len() >= 5, "{sweeps:?}");
    for (_, elapsed) in &sweeps {
        assert!(
            (Duration::from_secs(195)..Duration::from_secs(215)).contains(elapsed),
            "{sweeps:?}"
        );
    }
    let first_sweep_end = sweeps[0].0;
    let report = w.report(chrono::Utc::now());
    assert_eq!(report.connections.len(), 100);
    let unhealthy: Vec<&str> = report
        .connections
        .iter()
        .filter(|c| c.status != Status::Healthy)
        .map(|c| c.customer.id.as_str())
        .collect();
    let mut want = broken.iter().map(String::as_str).collect::<Vec<_>>();
    want.sort();
    let mut got = unhealthy.clone();
    got.sort();
    assert_eq!(got, want, "2 % of the connections are not healthy");

    // Re-checks: only the broken customers, each every 60 s ± 10 %, also during sweeps.
    let mut rechecks: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    for (t, s) in &steps {
        if let Step::Rechecked {
            customer_id, error, ..
        } = s
        {
            assert!(error.is_none(), "{error:?}");
            rechecks.entry(customer_id.clone()).or_default().push(*t);
        }
    }
    assert_eq!(
        rechecks.keys().collect::<Vec<_>>(),
        {
            let mut b: Vec<&String> = broken.iter().collect();
            b.sort();
            b
        },
        "healthy customers are left to the sweeps"
    );
    let mut gaps = Vec::new();
    for times in rechecks.values() {
        assert!(times.len() >= 20, "{times:?}");
        for pair in times.windows(2) {
            gaps.push(pair[1] - pair[0]);
        }
    }
    for g in &gaps {
        assert!(
            (RECHECK.mul_f64(0.9)..=RECHECK.mul_f64(1.1)).contains(g),
            "a re-check period of {g:?}: {gaps:?}"
        );
    }
    let in_sweep = rechecks.values().flatten().any(|t| {
        sweeps
            .iter()
            .any(|(end, elapsed)| *t > *end - *elapsed + Duration::from_secs(5) && *t < *end)
    });
    assert!(in_sweep, "re-checks land while a sweep is in flight");
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;

    // The simulator's side: after the first sweep, no broken customer waited more than
    // 66 s between two reads.
    for id in &broken {
        let needle = format!("/merchants/{id}/connections");
        let arrivals: Vec<Instant> = sim
            .stats()
            .timed_paths()
            .into_iter()
            .filter(|(t, p)| p.contains(&needle) && *t >= first_sweep_end)
            .map(|(t, _)| t)
            .collect();
        assert!(arrivals.len() >= 20);
        let worst = arrivals.windows(2).map(|p| p[1] - p[0]).max().unwrap();
        assert!(worst <= RECHECK.mul_f64(1.1), "{id}: {worst:?}");
    }

    // Healthy customers: every one read within max_staleness, and the budget holds.
    let now = Instant::now();
    let oldest = ids
        .iter()
        .map(|id| now - w.schedule().last_read("channel3", id))
        .max()
        .unwrap();
    assert!(oldest <= max_staleness, "{oldest:?}");
    let budget = rounds.stats().budget().expect("measured after a sweep");
    assert!(!budget.exceeded(), "{budget:?}");
    assert!(rounds.stats().budget_warning().is_none());
    assert_eq!(
        rounds.stats().rechecks().get("channel3").copied(),
        Some(rechecks.values().map(Vec::len).sum::<usize>() as u64)
    );
    println!(
        "schedule figures: re-check period mean {:.2} s ({:.3} of 60 s), min {:.2} s, max {:.2} s; sweep {:.1} s; oldest customer {:.0} s ({:.3} of max_staleness {} s); achievable staleness {} s",
        secs(mean),
        secs(mean) / 60.0,
        secs(*gaps.iter().min().unwrap()),
        secs(*gaps.iter().max().unwrap()),
        secs(sweeps[1].1),
        secs(oldest),
        secs(oldest) / secs(max_staleness),
        max_staleness.as_secs(),
        budget.achievable.as_secs()
    );
}

#[tokio::test(start_paused = true)]
async fn a_customer_moved_to_the_front_is_read_at_once_ahead_of_the_due_ones() {
    let sim = healthy_channel3(10).await;
    let ids = sim.customer_ids();
    for id in &ids[..3] {
        assert!(sim.set_connection_status(id, "web_crawl", "disconnected"));
    }
    let calm = ids[7].clone();
    let mut w = watcher(
        Duration::from_secs(3600),
        Duration::from_secs(24 * 3600),
        &[channel3(&sim, 4)],
    )
    .with_schedule(ScheduleConfig {
        recheck: RECHECK,
        concurrency: 1,
        ..ScheduleConfig::default()
    });
    let mut rounds = PollLoop::new();
    let t0 = Instant::now();
    let first = rounds.next(&mut w).await;
    assert!(matches!(first, Step::Swept { .. }), "{first:?}");
    // Half a period later nothing is due; then a webhook about `calm` moves it to the front.
    let quiet = run_until(&mut rounds, &mut w, t0 + Duration::from_secs(30)).await;
    assert!(quiet.is_empty(), "{quiet:?}");
    w.move_to_front("channel3", &calm);
    let steps = run_until(&mut rounds, &mut w, t0 + Duration::from_secs(125)).await;
    let order: Vec<(u64, &str)> = steps
        .iter()
        .filter_map(|(t, s)| match s {
            Step::Rechecked { customer_id, .. } => {
                Some(((*t - t0).as_secs(), customer_id.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(order[0], (30, calm.as_str()), "{order:?}");
    // Then the three broken ones at 60 s (one at a time), and again at 120 s; `calm` is
    // healthy, so it is not re-checked again.
    assert_eq!(order.len(), 7, "{order:?}");
    assert!(
        order[1..4]
            .iter()
            .all(|(t, id)| *t == 60 && ids[..3].iter().any(|b| b == id)),
        "{order:?}"
    );
    assert!(
        order[4..].iter().all(|(t, id)| *t == 120 && *id != calm),
        "{order:?}"
    );
}

fn violet(sim: &VioletSim) -> Arc<connhealth::violet::Violet> {
    Arc::new(simulators::violet(sim).without_timers().build().unwrap())
}

#[tokio::test(start_paused = true)]
async fn violet_is_never_recomputed_on_a_schedule_and_rechecked_at_most_hourly() {
    let sim = VioletSim::start_generated(20, 22).await.unwrap();
    let v = violet(&sim);
    // A merchant the sweep reports (PUBLIC ones are left out by default), then disabled.
    let listed = v.fetch().await;
    let bad: i64 = listed.connections[0].customer.id.parse().unwrap();
    assert!(sim.set_merchant_status(bad, "DISABLED"));
    // Sweeps every 3 h: in between, only the schedule asks for the disabled merchant.
    let provider: Arc<dyn Provider> = v.clone();
    let mut w = watcher(
        Duration::from_secs(3 * 3600),
        Duration::from_secs(24 * 3600),
        &[provider],
    );
    let mut rounds = PollLoop::new();
    let t0 = Instant::now();
    let steps = run_until(&mut rounds, &mut w, t0 + Duration::from_secs(3 * 3600 - 60)).await;
    let report = w.report(chrono::Utc::now());
    let bad_id = format!("violet:{bad}");
    let not_healthy: Vec<String> = report
        .connections
        .iter()
        .filter(|c| connhealth::schedule::needs_recheck(c.status))
        .map(|c| c.customer.id.clone())
        .collect();
    assert!(report
        .connections
        .iter()
        .any(|c| c.id == bad_id && c.status != Status::Healthy));
    let mut rechecks: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (t, s) in &steps {
        if let Step::Rechecked {
            customer_id, error, ..
        } = s
        {
            assert!(error.is_none(), "{error:?}");
            rechecks
                .entry(customer_id.clone())
                .or_default()
                .push((*t - t0).as_secs());
        }
    }
    let mut want = not_healthy.clone();
    want.sort();
    assert_eq!(rechecks.keys().cloned().collect::<Vec<_>>(), want);
    for (m, times) in &rechecks {
        assert_eq!(times, &[3600, 7200], "{m}: hourly, not every recheck_secs");
    }
    let per_merchant: Vec<String> = sim
        .stats()
        .timed_paths()
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| p.contains("/operations/connection_health/"))
        .collect();
    assert_eq!(
        per_merchant.len(),
        2 * not_healthy.len(),
        "{per_merchant:?}"
    );
    assert!(
        per_merchant.iter().all(|p| !p.contains("refresh=true")),
        "{per_merchant:?}"
    );
    assert_eq!(
        sim.health_refreshes(),
        0,
        "refresh=true never runs on a schedule"
    );

    // The provider's own bound: a second scheduled read within the hour is refused unsent,
    // and a webhook's refresh still recomputes.
    let before = sim.stats().requests(CONNECTION_HEALTH_MERCHANT);
    let other = report
        .connections
        .iter()
        .find(|c| !connhealth::schedule::needs_recheck(c.status))
        .map(|c| c.customer.id.clone())
        .expect("a healthy merchant, never re-checked");
    v.refresh(&other, RefreshHint::Scheduled).await.unwrap();
    let e = v.refresh(&other, RefreshHint::Scheduled).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(
        e.retry_after()
            .is_some_and(|d| d > Duration::from_secs(3500)),
        "{e}"
    );
    assert_eq!(sim.stats().requests(CONNECTION_HEALTH_MERCHANT), before + 1);
    assert_eq!(sim.health_refreshes(), 0);
    v.refresh(&other, RefreshHint::Customer).await.unwrap();
    assert_eq!(
        sim.health_refreshes(),
        1,
        "webhooks and actions still recompute"
    );
}

/// A client without timers of its own (the clock is paused).
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn readyz_after_two_sweeps(max_staleness: Duration) -> (serde_json::Value, String) {
    let sim = healthy_channel3(20).await;
    sim.faults()
        .push(FaultRule::new(Fault::Latency(Duration::from_secs(2))).route(LIST_CONNECTIONS));
    // 20 customers × 2 s one at a time: 40 s a sweep, every 60 s: ~100 s between reads.
    readyz_after(max_staleness, channel3(&sim, 1)).await
}

/// `/readyz` and `/metrics` 150 s (paused) after serve started over `provider` alone.
async fn readyz_after(
    max_staleness: Duration,
    provider: Arc<dyn Provider>,
) -> (serde_json::Value, String) {
    let w = watcher(Duration::from_secs(60), max_staleness, &[provider]);
    let server = Server::new(ServerConfig::new("127.0.0.1:0".parse().unwrap()), w).unwrap();
    let bound = server.bind().await.unwrap();
    let addr = bound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_secs(150)).await;
    let client = plain_client();
    let resp = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a budget warning is never a 503");
    let body: serde_json::Value = resp.json().await.unwrap();
    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    (body, metrics)
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn readyz_warns_when_the_sweep_rate_cannot_meet_max_staleness_and_not_otherwise() {
    let (body, metrics) = readyz_after_two_sweeps(Duration::from_secs(90)).await;
    assert_eq!(body["status"], "ready");
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{body}");
    assert_eq!(warnings[0]["code"], "staleness_budget");
    let message = warnings[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("20 customers at 0.")
            && message.contains("customers/s (measured sweep rate)")
            && message.contains("more than max_staleness 90 s"),
        "{message}"
    );
    let achievable = metric(&metrics, "connhealth_schedule_achievable_staleness_seconds");
    assert!((95.0..=110.0).contains(&achievable), "{achievable}");
    assert_eq!(
        metric(&metrics, "connhealth_schedule_max_staleness_seconds"),
        90.0
    );
    assert_eq!(metric(&metrics, "connhealth_schedule_customers"), 20.0);
    assert!(
        metrics.contains("# TYPE connhealth_schedule_rechecks_total counter"),
        "{metrics}"
    );

    let (body, metrics) = readyz_after_two_sweeps(Duration::from_secs(24 * 3600)).await;
    assert_eq!(body["warnings"], serde_json::json!([]), "{body}");
    let rate = metric(&metrics, "connhealth_schedule_sweep_customers_per_second");
    assert!((0.45..=0.55).contains(&rate), "{rate}");
    assert!(metric(&metrics, "connhealth_schedule_oldest_customer_age_seconds") < 150.0);
}

/// Wait until `ok` holds; a failure guard only (30 s), never a timing assertion.
async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} never happened");
}

/// A webhook's targeted read is applied (and stored, with its event published) while a sweep
/// is in flight: before scheduling it waited in the inbox until the sweep ended. Real clock
/// (the store and the webhook worker run on it); the waits are failure guards only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_applied_while_a_sweep_hangs() {
    const SECRET: &str = "violet-app-secret-schedule-3c1d";
    let fleet = connhealth_testkit::Fleet::start(3, 41).await.unwrap();
    let db = pg::sqlite().await;
    let (journal, loaded) =
        connhealth_store::Journal::load(db.store(), connhealth_store::JournalOptions::default())
            .await
            .unwrap();
    let mut w = Watcher::new(WatchConfig {
        interval: Duration::from_millis(200),
        jitter: 0.0,
        timeout: Duration::from_secs(120),
        ..WatchConfig::default()
    })
    .with_state(loaded);
    let c3 = simulators::channel3(&fleet.channel3)
        .customers(fleet.channel3.customer_ids())
        .request_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let violet = simulators::violet(&fleet.violet)
        .webhook_secret(connhealth::Secret::new(SECRET))
        .build()
        .unwrap();
    w.add(Arc::new(c3), None);
    w.add(Arc::new(violet), None);
    let server = Server::new(ServerConfig::new("127.0.0.1:0".parse().unwrap()), w)
        .unwrap()
        .with_store(journal, |_| {});
    let polls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = polls.clone();
    let server = server.on_poll(move |_, _| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let bound = server.bind().await.unwrap();
    let addr = bound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    until("the first sweep", || {
        polls.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;
    // Every Channel3 read from now on hangs: the next sweep stays in flight.
    fleet.channel3.faults().on(LIST_CONNECTIONS, Fault::Hang);
    let c3_stats = fleet.channel3.stats();
    until("a hanging sweep", || {
        c3_stats.in_flight(LIST_CONNECTIONS) > 0
    })
    .await;
    let swept = polls.load(std::sync::atomic::Ordering::SeqCst);

    let merchant = fleet.violet.merchant_ids()[0];
    assert!(fleet.violet.set_merchant_status(merchant, "DISABLED"));
    let emitter = fleet
        .violet
        .emit_webhooks_to(&format!("http://{addr}/v1/webhooks/violet"), SECRET);
    fleet
        .violet
        .emit_webhook("MERCHANT_DISCONNECTED", merchant)
        .expect("webhooks are on");
    emitter.flush().await;
    assert_eq!(emitter.deliveries()[0].status, Some(202));
    let client = plain_client();
    let id = format!("violet:{merchant}");
    let mut event = serde_json::Value::Null;
    for _ in 0..1500 {
        let body: serde_json::Value = client
            .get(format!("http://{addr}/v1/events?after=0&limit=1000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // `status_changed`, or `appeared` for a merchant the sweep's report left out.
        if let Some(e) = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["connection_id"] == id.as_str() && e["source"] == "webhook")
        {
            event = e.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        event["source"], "webhook",
        "no webhook event while the sweep hung"
    );
    // ... and the sweep is still in flight: nothing waited for it.
    assert!(c3_stats.in_flight(LIST_CONNECTIONS) > 0);
    assert_eq!(polls.load(std::sync::atomic::Ordering::SeqCst), swept);
    let report: serde_json::Value = client
        .get(format!(
            "http://{addr}/v1/connections/{}",
            id.replace(':', "%3A")
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(report["status"], "healthy", "{report}");
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}

/// With a configured `rate_limit` the budget is judged on it (the customers per second it
/// allows), not on the sweep rate measured: 20 customers at 30 requests/min is 40 s a sweep.
#[tokio::test(start_paused = true)]
async fn readyz_judges_the_staleness_budget_on_a_configured_rate_limit() {
    let sim = healthy_channel3(20).await;
    let paced: Arc<dyn Provider> = Arc::new(
        simulators::channel3(&sim)
            .customers(sim.customer_ids())
            .concurrency(4)
            .rate_limit("30/min".parse().unwrap())
            .without_timers()
            .build()
            .unwrap(),
    );
    let (body, metrics) = readyz_after(Duration::from_secs(90), paced).await;
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{body}");
    assert_eq!(warnings[0]["code"], "staleness_budget");
    let message = warnings[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("20 customers at 0.50 customers/s (configured rate budget)")
            && message.contains("take 100 s per sweep cycle, more than max_staleness 90 s"),
        "{message}"
    );
    assert_eq!(
        metric(&metrics, "connhealth_schedule_achievable_staleness_seconds"),
        100.0
    );
    // The budget really paced every read (sweeps and the re-checks of customers nearing
    // max_staleness alike): at most 0.5/s over the 150 s, plus the one-request burst.
    let reads = sim.stats().requests(LIST_CONNECTIONS);
    assert!(
        (40..=76).contains(&reads),
        "{reads} reads in 150 s at 0.5/s"
    );
}
