//! `connhealth-rate-bench`: one full Channel3 sweep under a simulator rate limit, with and
//! without `rate_limit` (see [`connhealth_bench::ratebudget`]); prints a table and one JSON
//! line per run.
//!
//! `cargo run -p connhealth-bench --release --bin connhealth-rate-bench [-- RUNS [CUSTOMERS [BURST]]]`

use std::process::ExitCode;

use connhealth_bench::ratebudget::{rate_bench_run, table, RateBenchOptions, RateMode};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let mut opts = RateBenchOptions::default();
    if let Some(n) = args.next().and_then(|a| a.parse().ok()) {
        opts.customers = n;
    }
    if let Some(b) = args.next().and_then(|a| a.parse().ok()) {
        opts.burst = b;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut done = Vec::new();
    for _ in 0..runs {
        for mode in [RateMode::Budget, RateMode::Adaptive] {
            match runtime.block_on(rate_bench_run(&opts, mode)) {
                Ok(run) => {
                    if let Ok(s) = serde_json::to_string(&run) {
                        println!("{s}");
                    }
                    done.push(run);
                }
                Err(e) => {
                    eprintln!("rate bench failed ({mode:?}): {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    print!("{}", table(&done));
    ExitCode::SUCCESS
}
