//! Fan-out of List connections against the testkit simulator: 5,000 configured customers,
//! 20 ms latency per request, concurrency 64. Ideal wall time: ceil(5000 / 64) × 20 ms = 1.58 s.
//!
//! Run: `cargo bench -p connhealth-channel3 --bench fanout`.
// criterion's macros generate public functions without docs.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use connhealth_channel3::Channel3;
use connhealth_core::futures::StreamExt;
use connhealth_core::{Concurrency, Outcome, Provider, Secret};
use connhealth_testkit::channel3::LIST_CONNECTIONS;
use connhealth_testkit::{Channel3Sim, Fault};
use criterion::{criterion_group, criterion_main, Criterion};

const CUSTOMERS: usize = 5_000;
const CONCURRENCY: usize = 64;
const LATENCY: Duration = Duration::from_millis(20);

fn ideal() -> Duration {
    LATENCY * CUSTOMERS.div_ceil(CONCURRENCY) as u32
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (sim, provider) = rt.block_on(async {
        let sim = Channel3Sim::start_generated(CUSTOMERS, 42)
            .await
            .expect("simulator");
        sim.faults().on(LIST_CONNECTIONS, Fault::Latency(LATENCY));
        let provider = Channel3::builder()
            .base_url(sim.base_url())
            .api_key(Secret::new(sim.api_key()))
            .customers(sim.customer_ids())
            .concurrency(CONCURRENCY)
            .build()
            .expect("provider");
        (sim, provider)
    });

    // The floor on this machine: the same bounded fan-out of bare 20 ms tokio sleeps, no HTTP
    // (tokio's timer has 1 ms ticks and the machine is shared, so this alone exceeds 1.00).
    let floor = rt.block_on(async {
        let start = Instant::now();
        Concurrency::new(CONCURRENCY)
            .fan_out(0..CUSTOMERS, |_| tokio::time::sleep(LATENCY))
            .count()
            .await;
        start.elapsed()
    });
    eprintln!(
        "fanout: timer floor (5000 bare sleeps, bound {CONCURRENCY}): {floor:.3?}, ratio {:.3}",
        floor.as_secs_f64() / ideal().as_secs_f64()
    );

    // One plain timed run first, for the ratio to the ideal (criterion prints its own stats).
    let run = || async {
        let fetched = provider.fetch().await;
        assert_eq!(
            fetched.outcome(),
            Outcome::Ok,
            "{:?}",
            fetched.errors.first()
        );
        assert_eq!(fetched.ok_batches, CUSTOMERS);
        fetched.connections.len()
    };
    rt.block_on(run()); // warm the connection pool
    sim.stats().reset();
    let start = Instant::now();
    let conns = rt.block_on(run());
    let wall = start.elapsed();
    eprintln!(
        "fanout: {CUSTOMERS} customers, {conns} connections, concurrency {CONCURRENCY}, latency {LATENCY:?}: \
         wall {wall:.3?}, ideal {:.3?}, ratio {:.3}; max in flight {}, tcp connections {}",
        ideal(),
        wall.as_secs_f64() / ideal().as_secs_f64(),
        sim.stats().max_in_flight(LIST_CONNECTIONS),
        sim.stats().tcp_connections(),
    );

    let mut group = c.benchmark_group("channel3");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.warm_up_time(Duration::from_secs(2));
    group.bench_function("fanout_5000_customers_c64_20ms", |b| {
        b.to_async(&rt).iter(run);
    });
    group.finish();
    drop(provider);
    rt.block_on(sim.shutdown());
}

criterion_group!(benches, fanout);
criterion_main!(benches);
