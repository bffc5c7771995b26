//! Subtotal poll fan-out against the testkit simulator, and the pure mapping.
//!
//! - `fanout`: 2,000 configured customers, 20 ms latency per `GET /connections`, concurrency
//!   64, `/retailers` resolved once per poll. Ideal wall time: ceil(2000 / 64) × 20 ms = 640 ms.
//! - `map_1000`: mapping 1,000 decoded connections (all four statuses, Link URL configured).
//!
//! Run: `cargo bench -p connhealth-subtotal --bench fanout`.
// criterion's macros generate public functions without docs.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use connhealth_core::{Outcome, Provider, Secret};
use connhealth_subtotal::{
    map_connection, ConnectionResponse, ConnectionStatus, MapContext, Subtotal,
};
use connhealth_testkit::subtotal::LIST_CONNECTIONS;
use connhealth_testkit::{Fault, SubtotalSim};
use criterion::{criterion_group, criterion_main, Criterion};

const CUSTOMERS: usize = 2_000;
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
        let sim = SubtotalSim::start_generated(CUSTOMERS, 42)
            .await
            .expect("simulator");
        sim.faults().on(LIST_CONNECTIONS, Fault::Latency(LATENCY));
        let provider = Subtotal::builder()
            .base_url(sim.base_url())
            .api_key(Secret::new(sim.api_key()))
            .customers(sim.customer_ids())
            .concurrency(CONCURRENCY)
            .link_url("https://link.subtotal.com/abc123")
            .build()
            .expect("provider");
        (sim, provider)
    });

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

    let mut group = c.benchmark_group("subtotal");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("fanout_2000_customers_20ms_c64", |b| {
        b.to_async(&rt).iter(|| async { black_box(run().await) })
    });
    group.finish();
}

fn mapping(c: &mut Criterion) {
    let statuses = ["active", "initialized", "unauthenticated", "disconnected"];
    let items: Vec<ConnectionResponse> = (0..1000)
        .map(|i| ConnectionResponse {
            connection_id: Some(format!("01J51S0JYV6N7K1030CV{i:06}")),
            customer_id: Some("8a46e581-48ba-498a-9ad0-2ee72582e1af".into()),
            retailer_id: Some(["walmart", "target", "01J7SC0NN73R6F5VVSP3ZKPDA3"][i % 3].into()),
            status: Some(ConnectionStatus::parse(statuses[i % 4])),
            email: Some("alice@example.com".into()),
            mobile: None,
            is_simulated: Some(i % 10 == 0),
        })
        .collect();
    let names: HashMap<String, String> = [("walmart", "Walmart"), ("target", "Target")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let link = url::Url::parse("https://link.subtotal.com/abc123").unwrap();
    let ctx = MapContext {
        provider: "subtotal",
        observed_at: chrono::Utc::now(),
        link_url: Some(&link),
        include_personal_data: false,
        retailer_names: Some(&names),
    };
    c.bench_function("subtotal/map_1000", |b| {
        b.iter(|| {
            items
                .iter()
                .filter_map(|it| map_connection(black_box(it), Some("cus"), &ctx))
                .count()
        })
    });
}

criterion_group!(benches, fanout, mapping);
criterion_main!(benches);
