//! # connhealth-bench
//!
//! End-to-end benchmarks of connhealth against the testkit simulators, in three families:
//!
//! 1. **Together vs alone** ([`e2e::family1`]): Channel3 (5,000 customers), Violet (10,000
//!    merchants) and Subtotal (2,000 customers) with latency injected, each alone and all three
//!    through one aggregator: `aggregate / slowest alone` (target ≤ 1.05).
//! 2. **Fan-out efficiency** ([`e2e::family2`]): each provider's fan-out at bounds 8, 64 and
//!    256: `wall / (ceil(requests / concurrency) × latency)` (target ≤ 1.10).
//! 3. **The scale curve** ([`scale_curve`]): one aggregation of all three providers over 100 →
//!    1,000 → 10,000 → 100,000 customers each: wall time, requests/s, bytes allocated per
//!    connection, peak heap and peak RSS against what the report itself holds, and TCP
//!    connects (connection reuse).
//!
//! Families 1 and 2 are criterion benches (`cargo bench -p connhealth-bench --bench e2e`);
//! the scale curve is [`run_bench`], behind `cargo run -p connhealth-bench --release`, which
//! prints [`BenchReport::table`] and writes
//! `target/bench/scale-<unix time>.json` plus `target/bench/latest.json` for comparison across
//! commits. `BENCHMARKS.md` at the repository root has the figures.
//!
//! One tiny scale point, in this process (the binaries run each point in a fresh process, so
//! that peak RSS is the point's own):
//!
//! ```
//! use connhealth_bench::{scale_curve, ProviderKind, ScaleOptions};
//!
//! let rows = scale_curve(&ScaleOptions {
//!     customers: vec![20],
//!     providers: ProviderKind::ALL.to_vec(),
//!     concurrency: 4,
//!     isolate: false,
//!     ..ScaleOptions::default()
//! });
//! let row = &rows[0];
//! assert_eq!(row.error, None);
//! // 20 Channel3 merchants × 15 platforms, 20 Violet merchants, 20 Subtotal customers (1-4 each).
//! assert!(row.connections >= 300 + 20 + 20);
//! // Connections are reused: near the bound per provider, far fewer than the requests. (Not
//! // exactly the bound: a request can start in the moment between a response's permit being
//! // released and its connection going back to the pool, and then opens one more.)
//! assert!(row.tcp_connections >= 3, "{row:?}");
//! assert!(row.tcp_connections * 2 <= row.requests, "{row:?}");
//! assert!(row.report_bytes > 0);
//! ```
//!
//! Heap figures need the counting allocator as the binary's global allocator (see [`alloc`]);
//! without it they are `None`.

pub mod alloc;
pub mod child;
pub mod e2e;
pub mod procfs;
pub mod ratebudget;
mod report;
pub mod scale;
pub mod sims;
pub mod webhooks;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use e2e::{E2eOptions, E2eReport};
pub use report::{families_table, scale_table, BenchOptions, BenchReport, Machine};
pub use scale::{scale_curve, HeapFigures, ProviderRow, ScaleOptions, ScaleRow};
pub use sims::{Endpoints, SimSpec, SimStats, Sims};

/// The three providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Channel3 (one request per merchant, merchants discovered page by page).
    Channel3,
    /// Violet (one report of every merchant).
    Violet,
    /// Subtotal (one request per configured customer).
    Subtotal,
}

impl ProviderKind {
    /// All three, in report order.
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::Channel3,
        ProviderKind::Violet,
        ProviderKind::Subtotal,
    ];

    /// The provider's default name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Channel3 => "channel3",
            ProviderKind::Violet => "violet",
            ProviderKind::Subtotal => "subtotal",
        }
    }

    /// The kind whose default name is `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        ProviderKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// Run `f` on a new thread and wait for it. Tokio runtimes are created, driven and dropped
/// there, so that callers may be inside a runtime themselves (as the CLI's `bench` is).
pub(crate) fn on_fresh_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// If this process is a benchmark child (see [`child`]), play its role and return the exit
/// code the process should end with; `None` otherwise. A binary that does not go through
/// [`run_bench`] for every invocation calls this first thing in `main`.
pub fn child_main() -> Option<i32> {
    child::run_role()
}

/// Run the benchmarks: the scale curve, and families 1 and 2 when `opts.families` is set.
///
/// If this process is a benchmark child (re-invoked by the scale curve), it plays that role
/// instead and **exits the process**: an executable that calls `run_bench` therefore needs
/// nothing else to support isolated points, as long as it calls it with the arguments it was
/// given.
pub async fn run_bench(opts: BenchOptions) -> BenchReport {
    if let Some(code) = child_main() {
        std::process::exit(code);
    }
    let run = move || {
        let scale = scale_curve(&opts.scale);
        let families = opts.families.as_ref().map(e2e::run_families);
        BenchReport::new(opts, scale, families)
    };
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::spawn_blocking(run)
            .await
            .expect("the benchmark thread panicked"),
        Err(_) => run(),
    }
}

/// Where reports go by default: `$CARGO_TARGET_DIR/bench`, else `target/bench`.
pub fn default_output_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("bench")
}

/// Command-line options of `connhealth-bench` (flatten them into a clap command).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Leave out the 100,000-customer point (the curve then takes seconds).
    #[arg(long)]
    pub quick: bool,
    /// The points of the curve: customers per provider, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    pub customers: Vec<usize>,
    /// Poll only these providers (default: all three).
    #[arg(long = "provider", value_enum, value_name = "PROVIDER")]
    pub providers: Vec<ProviderKind>,
    /// Fan-out bound per provider (1 to 10,000, as in a config file).
    #[arg(long, default_value_t = 64, value_parser = concurrency_bound)]
    pub concurrency: usize,
    /// Latency injected on every simulator route, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Seed of the simulators' data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Measure every point in this process (quicker; memory figures then include the
    /// simulators and carry over between points).
    #[arg(long)]
    pub in_process: bool,
    /// Also run families 1 and 2 (aggregate vs alone, fan-out efficiency) with plain timers;
    /// a few minutes.
    #[arg(long)]
    pub families: bool,
    /// Measured runs per family case (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Where to write the JSON reports (default `target/bench`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Do not write JSON reports.
    #[arg(long)]
    pub no_write: bool,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// `--concurrency`: 1 to 10,000 (beyond 2^61 the semaphore behind it cannot be created).
fn concurrency_bound(s: &str) -> Result<usize, String> {
    const MAX: usize = 10_000;
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {MAX}, got {s:?}")),
    }
}

impl BenchArgs {
    /// The options these arguments stand for.
    pub fn options(&self) -> BenchOptions {
        let mut o = if self.quick {
            BenchOptions::quick()
        } else {
            BenchOptions::default()
        };
        if !self.customers.is_empty() {
            o.scale.customers = self.customers.clone();
        }
        if !self.providers.is_empty() {
            o.scale.providers = ProviderKind::ALL
                .into_iter()
                .filter(|k| self.providers.contains(k))
                .collect();
        }
        o.scale.concurrency = self.concurrency;
        o.scale.latency_ms = self.latency_ms;
        o.scale.seed = self.seed;
        o.scale.isolate = !self.in_process;
        if self.families {
            o.families = Some(E2eOptions {
                runs: self.runs.max(1),
                seed: self.seed,
                ..E2eOptions::default()
            });
        }
        o
    }
}

/// The whole command: run, print the tables (and the change against the previous
/// `latest.json`), write the JSON files. Returns the process exit code: 0, or 1 when a
/// measurement failed.
pub async fn run_cli(args: BenchArgs) -> i32 {
    let report = run_bench(args.options()).await;
    let dir = args.out.clone().unwrap_or_else(default_output_dir);
    let previous = BenchReport::load(dir.join("latest.json")).ok();
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot serialize the report: {e}"),
        }
    } else {
        print!("{}", report.table());
        if let Some(prev) = &previous {
            println!();
            print!("{}", report.compare(prev));
        }
    }
    if !args.no_write {
        match report.write_json(&dir) {
            Ok(path) => eprintln!(
                "wrote {} and {}",
                path.display(),
                dir.join("latest.json").display()
            ),
            Err(e) => eprintln!("cannot write the report into {}: {e}", dir.display()),
        }
    }
    if report.is_ok() {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod args_tests {
    use super::BenchArgs;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: BenchArgs,
    }

    /// Issue 16: a huge bound passed and then panicked in a semaphore.
    #[test]
    fn concurrency_is_bounded() {
        for bad in ["0", "10001", "2305843009213693952"] {
            let e = Cmd::try_parse_from(["bench", "--concurrency", bad]).unwrap_err();
            assert!(
                e.to_string()
                    .contains("must be a whole number from 1 to 10000"),
                "{bad}: {e}"
            );
        }
        for ok in ["1", "64", "10000"] {
            let c = Cmd::try_parse_from(["bench", "--concurrency", ok]).unwrap();
            assert_eq!(c.args.concurrency.to_string(), ok);
        }
    }
}
