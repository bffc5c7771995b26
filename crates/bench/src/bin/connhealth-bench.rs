//! `connhealth-bench`: the scale curve (and, with `--families`, families 1 and 2) against the
//! testkit simulators; prints tables and writes `target/bench/*.json`.
//!
//! `cargo run -p connhealth-bench --release [-- --quick | --families | --help]`

use std::process::ExitCode;

use clap::Parser;
use connhealth_bench::alloc::CountingAlloc;
use connhealth_bench::BenchArgs;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// End-to-end benchmarks of connhealth against loopback simulators.
#[derive(Debug, Parser)]
#[command(name = "connhealth-bench", version, about)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> ExitCode {
    // Scale points re-invoke this executable; play the child's role when that is what we are.
    if let Some(code) = connhealth_bench::child_main() {
        return ExitCode::from(code as u8);
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(connhealth_bench::run_cli(cli.args));
    ExitCode::from(code as u8)
}
