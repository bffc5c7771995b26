//! Families 1 and 2: wall time against the latency-bound ideal, with latency injected in the
//! simulators.
//!
//! * Family 1 ([`family1`]): Channel3 (5,000 customers), Violet (10,000 merchants) and Subtotal
//!   (2,000 customers), each alone and all three through one [`Aggregator`]; the figure of
//!   merit is `aggregate / slowest alone` (target ≤ 1.05).
//! * Family 2 ([`family2`]): each provider's fan-out at several bounds; the figure of merit is
//!   `wall / (ceil(requests / concurrency) × latency)` (target ≤ 1.10), next to the same ratio
//!   for a bare-sleep control (the same bounded fan-out of tokio sleeps, no HTTP), which is the
//!   floor this machine's timer and scheduler allow.
//!
//! The simulators run on a runtime of their own ([`Sims`]); the client runs on another, as it
//! would against a remote API. The criterion bench `benches/e2e.rs` measures the same
//! closures; [`run_families`] measures them with plain timers (median of a few runs) for
//! `connhealth-bench --families`.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connhealth_channel3::Channel3;
use connhealth_core::futures::StreamExt;
use connhealth_core::{Aggregator, Concurrency, HealthReport, Outcome, Provider, Secret};
use connhealth_subtotal::Subtotal;
use connhealth_testkit::{channel3, subtotal, violet, Fault};
use connhealth_violet::Violet;
use serde::{Deserialize, Serialize};

use crate::sims::{SimSpec, Sims};
use crate::{on_fresh_thread, ProviderKind};

/// Settings of families 1 and 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct E2eOptions {
    /// Family 1: Channel3 customers (configured, so no discovery).
    pub channel3: usize,
    /// Family 1: Violet merchants (one report request).
    pub violet: usize,
    /// Family 1: Subtotal customers.
    pub subtotal: usize,
    /// Family 1: the fan-out bound of each provider.
    pub concurrency: usize,
    /// Family 1: latency injected on every route, in milliseconds.
    pub latency_ms: u64,
    /// Family 2: the fan-out bounds measured.
    pub fanout_concurrency: Vec<usize>,
    /// Family 2: requests per measurement = `rounds × concurrency`, so every bound has the same
    /// ideal, `rounds × latency`.
    pub fanout_rounds: usize,
    /// Family 2: the latencies injected on the fanned-out route, in milliseconds (each bound is
    /// measured at each latency).
    pub fanout_latency_ms: Vec<u64>,
    /// Measured runs per case (after one warm-up run); the median is reported.
    pub runs: usize,
    /// Seed of the simulators' data.
    pub seed: u64,
}

impl Default for E2eOptions {
    fn default() -> Self {
        E2eOptions {
            channel3: 5_000,
            violet: 10_000,
            subtotal: 2_000,
            concurrency: 64,
            latency_ms: 20,
            fanout_concurrency: vec![8, 64, 256],
            fanout_rounds: 10,
            fanout_latency_ms: vec![20, 100],
            runs: 5,
            seed: 42,
        }
    }
}

impl E2eOptions {
    /// Family 1's latency.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
}

/// One line of family 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateRow {
    /// `channel3`, `violet`, `subtotal` (each alone) or `aggregate`.
    pub name: String,
    /// Connections in the report.
    pub connections: usize,
    /// Requests made (per run).
    pub requests: u64,
    /// Median wall time.
    pub wall_ms: f64,
    /// The latency-bound ideal: `ceil(requests / concurrency) × latency` for a fan-out,
    /// `requests × latency` for Violet's sequential login + report (the slowest provider's for
    /// the aggregate).
    pub ideal_ms: f64,
    /// `wall / ideal`.
    pub ratio_vs_ideal: f64,
    /// CPU time of this process (client and simulators) over wall time × CPUs, during the
    /// measured runs: near 1.0 the case is CPU-bound, not latency-bound.
    pub cpu_busy: Option<f64>,
}

/// Family 1's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateFamily {
    /// Each provider alone, then the aggregate.
    pub rows: Vec<AggregateRow>,
    /// The slowest provider alone.
    pub slowest: String,
    /// `aggregate / slowest alone` (target ≤ 1.05).
    pub ratio: f64,
    /// Latency injected, in milliseconds.
    pub latency_ms: u64,
    /// Fan-out bound.
    pub concurrency: usize,
}

/// One line of family 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutRow {
    /// The provider (`bare sleep` for the control).
    pub provider: String,
    /// The fan-out bound.
    pub concurrency: usize,
    /// Requests per run.
    pub requests: usize,
    /// Injected latency, in milliseconds.
    pub latency_ms: u64,
    /// `ceil(requests / concurrency) × latency`.
    pub ideal_ms: f64,
    /// Median wall time.
    pub wall_ms: f64,
    /// `wall / ideal` (target ≤ 1.10).
    pub ratio: f64,
    /// The most requests the simulator handled at once (0 for the control).
    pub max_in_flight: u64,
    /// TCP connections the simulator accepted over the warm-up and the measured runs.
    pub tcp_connections: u64,
    /// CPU time of this process (client and simulators) over wall time × CPUs, during the
    /// measured runs: near 1.0 the case is CPU-bound, not latency-bound.
    pub cpu_busy: Option<f64>,
}

/// Families 1 and 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct E2eReport {
    /// The settings.
    pub options: E2eOptions,
    /// Family 1.
    pub family1: Option<AggregateFamily>,
    /// Family 2 (a bare-sleep control row before each bound's providers).
    pub family2: Vec<FanoutRow>,
    /// Why a family could not run.
    pub errors: Vec<String>,
}

/// Family 1's providers over started simulators: Channel3 with its customers configured (no
/// discovery), Violet (every merchant), Subtotal with its customers configured.
#[derive(Debug, Clone)]
pub struct Family1 {
    /// Channel3.
    pub channel3: Arc<dyn Provider>,
    /// Violet.
    pub violet: Arc<dyn Provider>,
    /// Subtotal.
    pub subtotal: Arc<dyn Provider>,
}

impl Family1 {
    /// Build the providers, each bound to `concurrency`.
    pub fn new(sims: &Sims, concurrency: usize) -> Self {
        let e = sims.endpoints();
        Family1 {
            channel3: Arc::new(channel3_configured(sims, concurrency, None)),
            violet: Arc::new(e.violet(concurrency)),
            subtotal: Arc::new(e.subtotal(concurrency, None)),
        }
    }

    /// One provider alone, through an aggregator (so it pays the same merge as the aggregate).
    pub fn alone(&self, kind: ProviderKind) -> Aggregator {
        let p = match kind {
            ProviderKind::Channel3 => &self.channel3,
            ProviderKind::Violet => &self.violet,
            ProviderKind::Subtotal => &self.subtotal,
        };
        let mut a = Aggregator::new().with_timeout(Duration::from_secs(600));
        a.push(p.clone(), None);
        a
    }

    /// All three.
    pub fn aggregate(&self) -> Aggregator {
        let mut a = Aggregator::new().with_timeout(Duration::from_secs(600));
        for p in [&self.channel3, &self.violet, &self.subtotal] {
            a.push(p.clone(), None);
        }
        a
    }
}

/// A Channel3 provider over the simulator's first `customers` merchants (all when `None`),
/// configured rather than discovered.
pub fn channel3_configured(sims: &Sims, concurrency: usize, customers: Option<usize>) -> Channel3 {
    let mut ids = sims.channel3.customer_ids();
    if let Some(n) = customers {
        ids.truncate(n);
    }
    Channel3::builder()
        .base_url(sims.channel3.base_url())
        .api_key(Secret::new(sims.channel3.api_key()))
        .customers(ids)
        .concurrency(concurrency)
        .build()
        .expect("a valid Channel3 configuration")
}

/// Run an aggregation and check that every provider answered fully; the connection count.
pub async fn run_checked(aggregator: &Aggregator) -> usize {
    let report: HealthReport = aggregator.run().await;
    for p in &report.providers {
        assert_eq!(
            p.outcome,
            Outcome::Ok,
            "{}: {:?}",
            p.provider,
            p.errors.first()
        );
    }
    report.connections.len()
}

/// The sims for family 1: the three sizes, latency on every route.
pub fn family1_sims(opts: &E2eOptions) -> io::Result<Sims> {
    Sims::start(&SimSpec {
        channel3: opts.channel3,
        violet: opts.violet,
        subtotal: opts.subtotal,
        seed: opts.seed,
        latency_us: opts.latency_ms * 1000,
    })
}

/// The sims for family 2: `rounds × max(bound)` customers each, no latency yet (see
/// [`set_fanout_latency`]).
pub fn family2_sims(opts: &E2eOptions) -> io::Result<Sims> {
    let n = opts.fanout_rounds * opts.fanout_concurrency.iter().copied().max().unwrap_or(1);
    let sims = Sims::start(&SimSpec {
        channel3: n,
        violet: n,
        subtotal: n,
        seed: opts.seed,
        latency_us: 0,
    })?;
    Ok(sims)
}

/// Replace the simulators' fault rules with `latency` on the fanned-out routes only (Channel3
/// and Subtotal List connections, Violet's one-merchant report).
pub fn set_fanout_latency(sims: &Sims, latency: Duration) {
    sims.channel3.faults().clear();
    sims.subtotal.faults().clear();
    sims.violet.faults().clear();
    let l = Fault::Latency(latency);
    sims.channel3
        .faults()
        .on(channel3::LIST_CONNECTIONS, l.clone());
    sims.subtotal
        .faults()
        .on(subtotal::LIST_CONNECTIONS, l.clone());
    sims.violet
        .faults()
        .on(violet::CONNECTION_HEALTH_MERCHANT, l);
}

/// One family-2 case: a provider's fan-out of `requests` requests at bound `concurrency`.
pub struct FanoutCase {
    kind: Option<ProviderKind>,
    concurrency: usize,
    requests: usize,
    latency: Duration,
    channel3: Option<Channel3>,
    subtotal: Option<Subtotal>,
    violet: Option<(Violet, Vec<String>)>,
}

impl std::fmt::Debug for FanoutCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutCase")
            .field("provider", &self.name())
            .field("concurrency", &self.concurrency)
            .field("requests", &self.requests)
            .finish()
    }
}

impl FanoutCase {
    /// The case for `kind` (`None`: the bare-sleep control) at bound `concurrency`, with
    /// `rounds × concurrency` requests.
    pub fn new(
        sims: &Sims,
        kind: Option<ProviderKind>,
        concurrency: usize,
        rounds: usize,
        latency: Duration,
    ) -> Self {
        let requests = rounds * concurrency;
        let e = sims.endpoints();
        let mut case = FanoutCase {
            kind,
            concurrency,
            requests,
            latency,
            channel3: None,
            subtotal: None,
            violet: None,
        };
        match kind {
            Some(ProviderKind::Channel3) => {
                case.channel3 = Some(channel3_configured(sims, concurrency, Some(requests)))
            }
            Some(ProviderKind::Subtotal) => {
                let ids = &e.subtotal_customers[..requests.min(e.subtotal_customers.len())];
                // Retailer names are looked up once per poll, outside the bound: leave it out.
                case.subtotal = Some(
                    Subtotal::builder()
                        .base_url(&e.subtotal_url)
                        .api_key(Secret::new(&e.subtotal_key))
                        .customers(ids.to_vec())
                        .concurrency(concurrency)
                        .resolve_retailer_names(false)
                        .build()
                        .expect("a valid Subtotal configuration"),
                )
            }
            Some(ProviderKind::Violet) => {
                let ids: Vec<String> = sims
                    .violet
                    .merchant_ids()
                    .into_iter()
                    .take(requests)
                    .map(|id| id.to_string())
                    .collect();
                case.violet = Some((e.violet(concurrency), ids));
            }
            None => {}
        }
        case
    }

    /// `channel3`, `violet`, `subtotal` or `bare sleep`.
    pub fn name(&self) -> &'static str {
        self.kind.map_or("bare sleep", ProviderKind::as_str)
    }

    /// Requests per run.
    pub fn requests(&self) -> usize {
        self.requests
    }

    /// `ceil(requests / concurrency) × latency`.
    pub fn ideal(&self) -> Duration {
        self.latency * self.requests.div_ceil(self.concurrency) as u32
    }

    /// One run: every request answered (panics otherwise); how many results came back.
    pub async fn run(&self) -> usize {
        if let Some(p) = &self.channel3 {
            return fetch_checked(p, self.requests).await;
        }
        if let Some(p) = &self.subtotal {
            return fetch_checked(p, self.requests).await;
        }
        if let Some((v, ids)) = &self.violet {
            let mut n = 0;
            let mut s = v.client().merchants_health(ids.iter().cloned());
            while let Some(r) = s.next().await {
                r.expect("a merchant's report");
                n += 1;
            }
            assert_eq!(n, self.requests);
            return n;
        }
        let l = self.latency;
        Concurrency::new(self.concurrency)
            .fan_out(0..self.requests, move |_| tokio::time::sleep(l))
            .count()
            .await
    }

    /// The most requests the simulator handled at once on this case's route, and the TCP
    /// connections it accepted, since its counters were last reset (zeros for the control).
    pub fn sim_counters(&self, sims: &Sims) -> (u64, u64) {
        match self.route() {
            Some((route, k)) => {
                let s = match k {
                    ProviderKind::Channel3 => sims.channel3.stats(),
                    ProviderKind::Violet => sims.violet.stats(),
                    ProviderKind::Subtotal => sims.subtotal.stats(),
                };
                (s.max_in_flight(route), s.tcp_connections())
            }
            None => (0, 0),
        }
    }

    /// The simulator route this case fans out on.
    fn route(&self) -> Option<(&'static str, ProviderKind)> {
        self.kind.map(|k| {
            let route = match k {
                ProviderKind::Channel3 => channel3::LIST_CONNECTIONS,
                ProviderKind::Subtotal => subtotal::LIST_CONNECTIONS,
                ProviderKind::Violet => violet::CONNECTION_HEALTH_MERCHANT,
            };
            (route, k)
        })
    }
}

async fn fetch_checked(p: &dyn Provider, batches: usize) -> usize {
    let f = p.fetch().await;
    assert_eq!(f.outcome(), Outcome::Ok, "{:?}", f.errors.first());
    assert_eq!(f.ok_batches, batches);
    f.ok_batches
}

/// Measures this process's CPU use over a stretch of wall time.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    cpu: Option<Duration>,
    wall: Instant,
}

impl CpuMeter {
    /// Start measuring.
    pub fn start() -> Self {
        CpuMeter {
            cpu: crate::procfs::cpu_time(),
            wall: Instant::now(),
        }
    }

    /// CPU time since [`CpuMeter::start`] over wall time × CPUs (`None` off Linux).
    pub fn busy(&self) -> Option<f64> {
        let (wall, cpu) = self.elapsed();
        Some(busy_fraction(cpu?, wall))
    }

    /// Wall time and CPU time (all threads; 10 ms resolution) since [`CpuMeter::start`].
    pub fn elapsed(&self) -> (Duration, Option<Duration>) {
        let cpu = match (crate::procfs::cpu_time(), self.cpu) {
            (Some(now), Some(then)) => now.checked_sub(then),
            _ => None,
        };
        (self.wall.elapsed(), cpu)
    }
}

/// `cpu / (wall × CPUs)`: 1.0 means every CPU was busy with this process the whole time.
pub fn busy_fraction(cpu: Duration, wall: Duration) -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if wall.is_zero() {
        0.0
    } else {
        cpu.as_secs_f64() / (wall.as_secs_f64() * cpus)
    }
}

/// The median (the upper one of an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn client_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-client")
        .build()
}

/// Family 1 with plain timers: one warm-up of each, then `opts.runs` rounds of (each provider
/// alone, the aggregate), interleaved so that machine noise spreads evenly; medians.
pub fn family1(opts: &E2eOptions) -> io::Result<AggregateFamily> {
    let sims = family1_sims(opts)?;
    let fam = Family1::new(&sims, opts.concurrency);
    let l = opts.latency();
    let c = opts.concurrency.max(1);
    let ideal = |kind: ProviderKind, customers: usize| match kind {
        ProviderKind::Violet => l * 2, // login, then the report (the token is cached after)
        _ => l * customers.div_ceil(c) as u32,
    };
    let cases: Vec<(String, Aggregator, Duration)> = vec![
        (
            "channel3".into(),
            fam.alone(ProviderKind::Channel3),
            ideal(ProviderKind::Channel3, opts.channel3),
        ),
        (
            "violet".into(),
            fam.alone(ProviderKind::Violet),
            l, // after the warm-up the token is cached: one request
        ),
        (
            "subtotal".into(),
            fam.alone(ProviderKind::Subtotal),
            ideal(ProviderKind::Subtotal, opts.subtotal),
        ),
        ("aggregate".into(), fam.aggregate(), Duration::ZERO),
    ];
    let runs = opts.runs.max(1);
    let measured = on_fresh_thread(|| {
        let rt = client_runtime()?;
        let mut walls: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
        let mut busy: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
        let mut conns = vec![0usize; cases.len()];
        let mut requests = vec![0u64; cases.len()];
        for (i, (_, agg, _)) in cases.iter().enumerate() {
            conns[i] = rt.block_on(run_checked(agg));
        }
        for _ in 0..runs {
            for (i, (_, agg, _)) in cases.iter().enumerate() {
                let before = sims.stats().requests();
                let meter = CpuMeter::start();
                let t = Instant::now();
                rt.block_on(run_checked(agg));
                walls[i].push(t.elapsed());
                busy[i].extend(meter.busy());
                requests[i] = sims.stats().requests() - before;
            }
        }
        Ok::<_, io::Error>((walls, busy, conns, requests))
    })?;
    let (walls, busy, conns, requests) = measured;
    let mut rows: Vec<AggregateRow> = Vec::new();
    for (i, (name, _, ideal)) in cases.iter().enumerate() {
        let wall = median(walls[i].clone());
        rows.push(AggregateRow {
            name: name.clone(),
            connections: conns[i],
            requests: requests[i],
            wall_ms: ms(wall),
            ideal_ms: ms(*ideal),
            ratio_vs_ideal: if ideal.is_zero() {
                0.0
            } else {
                wall.as_secs_f64() / ideal.as_secs_f64()
            },
            cpu_busy: mean(&busy[i]),
        });
    }
    let (slowest_i, _) = rows[..3]
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.wall_ms.total_cmp(&b.1.wall_ms))
        .expect("three providers");
    let slowest = rows[slowest_i].clone();
    let agg = &mut rows[3];
    agg.ideal_ms = slowest.ideal_ms;
    agg.ratio_vs_ideal = agg.wall_ms / slowest.ideal_ms;
    let ratio = agg.wall_ms / slowest.wall_ms;
    Ok(AggregateFamily {
        rows,
        slowest: slowest.name,
        ratio,
        latency_ms: opts.latency_ms,
        concurrency: c,
    })
}

/// Family 2 with plain timers: for every bound, the bare-sleep control then each provider; one
/// warm-up run (which opens the pool's connections), then `opts.runs` measured runs; medians.
pub fn family2(opts: &E2eOptions) -> io::Result<Vec<FanoutRow>> {
    let sims = family2_sims(opts)?;
    let mut rows = Vec::new();
    let kinds = [
        None,
        Some(ProviderKind::Channel3),
        Some(ProviderKind::Violet),
        Some(ProviderKind::Subtotal),
    ];
    let rt = on_fresh_thread(client_runtime)?;
    for &latency_ms in &opts.fanout_latency_ms {
        let latency = Duration::from_millis(latency_ms);
        set_fanout_latency(&sims, latency);
        for &c in &opts.fanout_concurrency {
            for kind in kinds {
                let case = FanoutCase::new(&sims, kind, c, opts.fanout_rounds, latency);
                sims.reset();
                let (walls, busy) = on_fresh_thread(|| {
                    rt.block_on(case.run());
                    let meter = CpuMeter::start();
                    let walls = (0..opts.runs.max(1))
                        .map(|_| {
                            let t = Instant::now();
                            rt.block_on(case.run());
                            t.elapsed()
                        })
                        .collect::<Vec<_>>();
                    (walls, meter.busy())
                });
                let wall = median(walls);
                let (max_in_flight, tcp) = case.sim_counters(&sims);
                rows.push(FanoutRow {
                    provider: case.name().to_owned(),
                    concurrency: c,
                    requests: case.requests(),
                    latency_ms,
                    ideal_ms: ms(case.ideal()),
                    wall_ms: ms(wall),
                    ratio: wall.as_secs_f64() / case.ideal().as_secs_f64(),
                    max_in_flight,
                    tcp_connections: tcp,
                    cpu_busy: busy,
                });
            }
        }
    }
    on_fresh_thread(move || drop(rt));
    Ok(rows)
}

/// Both families with plain timers.
pub fn run_families(opts: &E2eOptions) -> E2eReport {
    let mut errors = Vec::new();
    let family1 = family1(opts)
        .map_err(|e| errors.push(format!("family 1: {e}")))
        .ok();
    let family2 = family2(opts).unwrap_or_else(|e| {
        errors.push(format!("family 2: {e}"));
        Vec::new()
    });
    E2eReport {
        options: opts.clone(),
        family1,
        family2,
        errors,
    }
}
