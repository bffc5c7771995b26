//! `connhealth-webhook-bench`: the webhook benchmark of issue 18 (see
//! [`connhealth_bench::webhooks`]); prints its table.
//!
//! `cargo run -p connhealth-bench --release --bin connhealth-webhook-bench [-- RATE SECS]`

use std::process::ExitCode;

use connhealth_bench::webhooks::{webhook_bench, WebhookBenchOptions};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut opts = WebhookBenchOptions::default();
    if let Some(rate) = args.next().and_then(|a| a.parse().ok()) {
        opts.rate = rate;
    }
    if let Some(secs) = args.next().and_then(|a| a.parse().ok()) {
        opts.secs = secs;
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
    match runtime.block_on(webhook_bench(&opts)) {
        Ok(report) => {
            print!("{}", report.table());
            match serde_json::to_string(&report) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("{e}"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("webhook bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}
