//! Quick checks of the scale curve's measurements (tiny points only: these run in
//! `cargo test --workspace`).

use std::process::Command;

use connhealth_bench::{scale_curve, BenchReport, ProviderKind, ScaleOptions, ScaleRow};
use connhealth_testkit::data;

const SEED: u64 = 42;

/// What the simulators hold for `n` customers each: (Channel3 rows, Violet merchants,
/// Subtotal connections).
fn expected_connections(n: usize) -> (usize, usize, usize) {
    let c3 = data::channel3_customers(n, SEED)
        .customers
        .iter()
        .map(|c| c.connections.len())
        .sum();
    let violet = data::violet_merchants(n, SEED).merchants.len();
    let subtotal = data::subtotal_customers(n, SEED).connections.len();
    (c3, violet, subtotal)
}

fn check_shape(row: &ScaleRow, n: usize, concurrency: u64) {
    assert_eq!(row.error, None, "{row:?}");
    assert_eq!(row.customers, n);
    let (c3, violet, subtotal) = expected_connections(n);
    let by_name = |name: &str| {
        row.providers
            .iter()
            .find(|p| p.provider == name)
            .unwrap_or_else(|| panic!("{name} missing from {row:?}"))
    };
    let (pc, pv, ps) = (by_name("channel3"), by_name("violet"), by_name("subtotal"));
    assert_eq!(pc.connections, c3);
    assert_eq!(pv.connections, violet);
    assert_eq!(ps.connections, subtotal);
    assert_eq!(row.connections, c3 + violet + subtotal);
    // Requests: one List connections per merchant plus one List merchants page (size 100);
    // Violet logs in and reads the report; Subtotal one list per customer plus /retailers.
    assert_eq!(pc.requests, n as u64 + 1);
    assert_eq!(pv.requests, 2);
    assert_eq!(ps.requests, n as u64 + 1);
    assert_eq!(row.requests, pc.requests + pv.requests + ps.requests);
    // Connections are reused: on the scale of the bound, never one per request. (Not exactly
    // the bound: hyper dials a new connection when a request starts just before a finished one
    // is back in the pool, which happens under load.)
    let reused = 2 * concurrency + 1;
    assert!(pc.tcp_connections <= reused, "{pc:?}");
    assert!(pv.tcp_connections <= 2, "{pv:?}");
    assert!(ps.tcp_connections <= reused, "{ps:?}");
    assert!(pc.tcp_connections < pc.requests / 2 && ps.tcp_connections < ps.requests / 2);
    assert_eq!(
        row.tcp_connections,
        pc.tcp_connections + pv.tcp_connections + ps.tcp_connections
    );
    assert!(row.wall_ms > 0.0 && row.requests_per_sec > 0.0);
    // A connection holds at least its id and the struct itself.
    assert!(row.report_bytes as usize > row.connections * 200, "{row:?}");
}

#[test]
fn a_tiny_point_in_process_counts_everything() {
    let rows = scale_curve(&ScaleOptions {
        customers: vec![50],
        providers: ProviderKind::ALL.to_vec(),
        concurrency: 4,
        latency_ms: 0,
        seed: SEED,
        isolate: false,
    });
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    check_shape(row, 50, 4);
    assert!(!row.isolated);
    // The test harness has no counting allocator.
    assert_eq!(row.heap, None);
}

#[test]
fn one_provider_alone() {
    let rows = scale_curve(&ScaleOptions {
        customers: vec![10],
        providers: vec![ProviderKind::Subtotal],
        concurrency: 2,
        isolate: false,
        ..ScaleOptions::default()
    });
    let row = &rows[0];
    assert_eq!(row.error, None);
    assert_eq!(row.providers.len(), 1);
    assert_eq!(row.providers[0].provider, "subtotal");
    assert_eq!(row.connections, expected_connections(10).2);
}

#[test]
fn the_binary_measures_points_in_processes_of_their_own() {
    let dir = std::env::temp_dir().join(format!("connhealth-bench-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_connhealth-bench"))
        .args(["--customers", "30", "--concurrency", "4", "--json", "--out"])
        .arg(&dir)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: BenchReport = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert!(report.is_ok());
    let row = &report.scale[0];
    check_shape(row, 30, 4);
    assert!(row.isolated);
    // The binary installs the counting allocator.
    let heap = row.heap.as_ref().expect("heap figures");
    assert!(heap.allocated_bytes > row.report_bytes && heap.allocations > 0);
    assert!(heap.peak_bytes >= row.report_bytes / 2, "{heap:?}");
    if cfg!(target_os = "linux") {
        assert!(row.rss_peak_bytes.is_some() && row.rss_before_bytes.is_some());
        assert!(row.sims_cpu_ms.is_some() && row.client_cpu_ms.is_some());
    }
    // Both files were written, and read back the same.
    let latest = BenchReport::load(dir.join("latest.json")).expect("latest.json");
    assert_eq!(latest, report);
    let stamped = dir.join(format!("scale-{}.json", report.unix_time));
    assert!(stamped.exists(), "{}", stamped.display());
    assert!(report.table().contains("scale curve"));
    let _ = std::fs::remove_dir_all(&dir);
}
