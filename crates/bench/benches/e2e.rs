//! Families 1 and 2 of the end-to-end benchmarks, over the testkit simulators with injected
//! latency (see `connhealth_bench::e2e` for what each measures and why).
//!
//! `cargo bench -p connhealth-bench --bench e2e` (both families, about 6 minutes on two cores)
//! `cargo bench -p connhealth-bench --bench e2e -- family1` (one family)
//!
//! Criterion prints its own statistics per case; after each family this prints the ratios to
//! the latency-bound ideal, computed from the same samples (medians). Every case runs in flat
//! sampling mode, 10 samples, so each family takes a few minutes.
// criterion's macros generate public functions without docs.
#![allow(missing_docs)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use connhealth_bench::e2e::{
    self, busy_fraction, median, run_checked, AggregateFamily, AggregateRow, CpuMeter, E2eOptions,
    E2eReport, Family1, FanoutCase, FanoutRow,
};
use connhealth_bench::{families_table, ProviderKind};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use tokio::runtime::Runtime;

fn client_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-client")
        .build()
        .expect("runtime")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Each timed iteration's wall time, and the CPU time the process used during it (so that
/// criterion's own analysis between samples is not counted).
#[derive(Default)]
struct Samples(Mutex<Vec<(Duration, Option<Duration>)>>);

impl Samples {
    fn record(&self, meter: CpuMeter) {
        self.0.lock().unwrap().push(meter.elapsed());
    }

    /// The median wall time and the CPU busy fraction over all iterations; `None` when the
    /// case was filtered out on the command line.
    fn summary(self) -> Option<(Duration, Option<f64>)> {
        let v = self.0.into_inner().unwrap();
        if v.is_empty() {
            return None;
        }
        let wall: Duration = v.iter().map(|(w, _)| *w).sum();
        let cpu: Option<Duration> = v.iter().map(|(_, c)| *c).sum();
        let busy = cpu.map(|c| busy_fraction(c, wall));
        Some((median(v.into_iter().map(|(w, _)| w).collect()), busy))
    }
}

/// Criterion's samples per case (flat sampling: one run each).
const SAMPLES: usize = 10;

fn family1(c: &mut Criterion) {
    // `runs` only labels the tables: the medians are of criterion's samples.
    let opts = E2eOptions {
        runs: SAMPLES,
        ..E2eOptions::default()
    };
    let sims = e2e::family1_sims(&opts).expect("simulators");
    let fam = Family1::new(&sims, opts.concurrency);
    let rt = client_runtime();
    let l = opts.latency();
    let fan = |n: usize| l * n.div_ceil(opts.concurrency) as u32;
    let cases = [
        (
            "channel3",
            fam.alone(ProviderKind::Channel3),
            fan(opts.channel3),
        ),
        // After the first run the token is cached: one request.
        ("violet", fam.alone(ProviderKind::Violet), l),
        (
            "subtotal",
            fam.alone(ProviderKind::Subtotal),
            fan(opts.subtotal),
        ),
        ("aggregate", fam.aggregate(), Duration::ZERO),
    ];
    let mut rows = Vec::new();
    let mut g = c.benchmark_group("family1");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(25));
    for (name, agg, ideal) in &cases {
        let connections = rt.block_on(run_checked(agg)); // opens the connections, logs in
        let before = sims.stats().requests();
        rt.block_on(run_checked(agg));
        let requests = sims.stats().requests() - before;
        let samples = Samples::default();
        g.bench_function(*name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let samples = &samples;
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let meter = CpuMeter::start();
                        run_checked(agg).await;
                        samples.record(meter);
                    }
                    start.elapsed()
                }
            })
        });
        let Some((wall, busy)) = samples.summary() else {
            continue; // filtered out on the command line
        };
        rows.push(AggregateRow {
            name: (*name).to_owned(),
            connections,
            requests,
            wall_ms: ms(wall),
            ideal_ms: ms(*ideal),
            ratio_vs_ideal: if ideal.is_zero() {
                0.0
            } else {
                wall.as_secs_f64() / ideal.as_secs_f64()
            },
            cpu_busy: busy,
        });
    }
    g.finish();
    if rows.len() < 4 {
        return;
    }
    let slowest = rows[..3]
        .iter()
        .max_by(|a, b| a.wall_ms.total_cmp(&b.wall_ms))
        .cloned()
        .expect("three providers");
    let agg = &mut rows[3];
    agg.ideal_ms = slowest.ideal_ms;
    agg.ratio_vs_ideal = agg.wall_ms / slowest.ideal_ms;
    let ratio = agg.wall_ms / slowest.wall_ms;
    let report = E2eReport {
        options: opts.clone(),
        family1: Some(AggregateFamily {
            rows,
            slowest: slowest.name,
            ratio,
            latency_ms: opts.latency_ms,
            concurrency: opts.concurrency,
        }),
        family2: Vec::new(),
        errors: Vec::new(),
    };
    eprintln!("\n{}", families_table(&report));
}

fn family2(c: &mut Criterion) {
    let opts = E2eOptions {
        runs: SAMPLES,
        ..E2eOptions::default()
    };
    let sims = e2e::family2_sims(&opts).expect("simulators");
    let rt = client_runtime();
    let kinds = [
        None,
        Some(ProviderKind::Channel3),
        Some(ProviderKind::Violet),
        Some(ProviderKind::Subtotal),
    ];
    let mut rows = Vec::new();
    for &latency_ms in &opts.fanout_latency_ms {
        let latency = Duration::from_millis(latency_ms);
        e2e::set_fanout_latency(&sims, latency);
        let mut g = c.benchmark_group(format!("family2_{latency_ms}ms"));
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(SAMPLES)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(latency * opts.fanout_rounds as u32 * 15);
        for &concurrency in &opts.fanout_concurrency {
            for kind in kinds {
                let case = FanoutCase::new(&sims, kind, concurrency, opts.fanout_rounds, latency);
                sims.reset();
                let samples = Samples::default();
                g.bench_function(format!("{}_c{concurrency}", case.name()), |b| {
                    b.to_async(&rt).iter_custom(|iters| {
                        let (samples, case) = (&samples, &case);
                        async move {
                            let start = Instant::now();
                            for _ in 0..iters {
                                let meter = CpuMeter::start();
                                case.run().await;
                                samples.record(meter);
                            }
                            start.elapsed()
                        }
                    })
                });
                let Some((wall, busy)) = samples.summary() else {
                    continue; // filtered out on the command line
                };
                let (max_in_flight, tcp_connections) = case.sim_counters(&sims);
                rows.push(FanoutRow {
                    provider: case.name().to_owned(),
                    concurrency,
                    requests: case.requests(),
                    latency_ms,
                    ideal_ms: ms(case.ideal()),
                    wall_ms: ms(wall),
                    ratio: wall.as_secs_f64() / case.ideal().as_secs_f64(),
                    max_in_flight,
                    tcp_connections,
                    cpu_busy: busy,
                });
            }
        }
        g.finish();
    }
    if rows.is_empty() {
        return;
    }
    let report = E2eReport {
        options: opts,
        family1: None,
        family2: rows,
        errors: Vec::new(),
    };
    eprintln!("\n{}", families_table(&report));
}

criterion_group!(benches, family1, family2);
criterion_main!(benches);
