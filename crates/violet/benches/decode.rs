//! Decode + normalize of a 10,000-merchant Violet report, against plain
//! `serde_json::from_slice::<serde_json::Value>` of the same bytes, plus peak memory.
//!
//! `cargo bench -p connhealth-violet --bench decode`
//!
//! After criterion's timings this prints a summary: the median time ratio
//! (decode+normalize / Value parse; target ≤ 1.0) and the peak bytes allocated during each
//! (counted by a global allocator wrapper) relative to the body size.
// criterion's macros generate public functions without docs.
#![allow(missing_docs)]
// The peak-memory figure needs a counting `GlobalAlloc` (below), which is unsafe to implement.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};

/// Counts live bytes and the peak since the last reset.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to `System` unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MERCHANTS: usize = 10_000;

fn report_bytes() -> Vec<u8> {
    let data = connhealth_testkit::data::violet_merchants(MERCHANTS, 42);
    serde_json::to_vec(&data.merchants).expect("serializable")
}

fn decode_and_normalize(body: &[u8]) -> Vec<connhealth_core::Connection> {
    let observed_at = "2024-05-01T12:00:00Z".parse().unwrap();
    connhealth_violet::decode_report("violet", body, observed_at, false).expect("decodes")
}

fn value_parse(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("valid JSON")
}

fn bench(c: &mut Criterion) {
    let body = report_bytes();
    let mut g = c.benchmark_group("violet_report_10k");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode_and_normalize", |b| {
        b.iter(|| decode_and_normalize(black_box(&body)))
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| value_parse(black_box(&body)))
    });
    g.finish();
}

/// Peak bytes allocated while `f` runs (above what was live before), and bytes still held
/// by its result.
fn peak_of<T>(f: impl FnOnce() -> T) -> (usize, usize, T) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let retained = CURRENT.load(Ordering::Relaxed).saturating_sub(base);
    (peak, retained, out)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn summary() {
    let body = report_bytes();
    let n = body.len() as f64;
    let runs = 11;
    let mut ours = Vec::new();
    let mut value = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        black_box(decode_and_normalize(&body));
        ours.push(t.elapsed());
        let t = Instant::now();
        black_box(value_parse(&body));
        value.push(t.elapsed());
    }
    let (ours_t, value_t) = (median(ours), median(value));
    let (ours_peak, ours_kept, conns) = peak_of(|| decode_and_normalize(&body));
    assert_eq!(conns.len(), MERCHANTS);
    drop(conns);
    let (value_peak, value_kept, v) = peak_of(|| value_parse(&body));
    drop(v);
    println!();
    println!(
        "violet decode summary ({MERCHANTS} merchants, body {:.1} MiB, median of {runs} runs)",
        n / 1048576.0
    );
    println!(
        "  decode+normalize: {:>8.1} ms  peak alloc {:>6.1} MiB = {:.2} x body  (result kept {:.1} MiB = {:.2} x body)",
        ours_t.as_secs_f64() * 1e3,
        ours_peak as f64 / 1048576.0,
        ours_peak as f64 / n,
        ours_kept as f64 / 1048576.0,
        ours_kept as f64 / n
    );
    println!(
        "  serde_json::Value: {:>7.1} ms  peak alloc {:>6.1} MiB = {:.2} x body  (result kept {:.1} MiB = {:.2} x body)",
        value_t.as_secs_f64() * 1e3,
        value_peak as f64 / 1048576.0,
        value_peak as f64 / n,
        value_kept as f64 / 1048576.0,
        value_kept as f64 / n
    );
    println!(
        "  time ratio decode+normalize / Value = {:.3} (target <= 1.0)",
        ours_t.as_secs_f64() / value_t.as_secs_f64()
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
