//! `connhealth-sim`: serve the Channel3, Violet and Subtotal simulators on loopback until
//! Ctrl-C, printing one JSON line with their base URLs and credentials (and the Subtotal
//! customers' ids: Subtotal cannot list customers, so a config names them).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use connhealth_testkit::{
    data, Channel3Sim, Fault, FaultRule, Faults, RateLimitFault, SubtotalSim, VioletSim,
};
use serde_json::json;

/// Loopback simulators of the Channel3, Violet and Subtotal APIs.
#[derive(Debug, Parser)]
#[command(name = "connhealth-sim", version, about)]
struct Args {
    /// Generated customers per provider (documented examples included).
    #[arg(long, default_value_t = 200)]
    customers: usize,

    /// Seed of the data generators.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Latency added to every request of every simulator, in milliseconds.
    #[arg(long)]
    latency_ms: Option<u64>,

    /// Port of the Channel3 simulator (default: any free port).
    #[arg(long, default_value_t = 0)]
    channel3_port: u16,

    /// Port of the Violet simulator (default: any free port).
    #[arg(long, default_value_t = 0)]
    violet_port: u16,

    /// Port of the Subtotal simulator (default: any free port).
    #[arg(long, default_value_t = 0)]
    subtotal_port: u16,

    /// A fault, as `PROVIDER:ROUTE:KIND[:ARG]` (repeatable). PROVIDER is channel3, violet,
    /// subtotal or `*`; ROUTE a route name (e.g. list_connections) or `*`; KIND one of
    /// `latency:MS`, `latency-between:A-B`, `status:CODE[:RETRY_AFTER]`, `hang`,
    /// `drop-mid-body`, `malformed-json`, `truncated-body`, `oversized-body:BYTES`,
    /// `unknown-enums`, `missing-optionals`, `empty-arrays`, `duplicate-ids`.
    #[arg(long = "fault", value_name = "PROVIDER:ROUTE:KIND[:ARG]")]
    faults: Vec<String>,

    /// Limit every credential of every simulator to this rate (`N/s`, `N/min` or `N/h`): a
    /// token bucket per API key; an empty bucket is answered 429 with `Retry-After`.
    #[arg(long, value_name = "N/s", value_parser = parse_rate_limit)]
    rate_limit: Option<RateLimitFault>,

    /// The bucket size of `--rate-limit` (default: one second's worth, at least 1).
    #[arg(long, value_name = "N", requires = "rate_limit")]
    rate_limit_burst: Option<u32>,
}

fn parse_rate_limit(s: &str) -> Result<RateLimitFault, String> {
    s.parse()
}

struct FaultSpec {
    provider: String,
    rule: FaultRule,
}

fn parse_fault(spec: &str) -> Result<FaultSpec, String> {
    let mut parts = spec.splitn(3, ':');
    let provider = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let route = parts.next().map(str::trim).unwrap_or_default();
    let kind = parts
        .next()
        .ok_or_else(|| format!("invalid fault `{spec}`: expected PROVIDER:ROUTE:KIND[:ARG]"))?;
    if !matches!(
        provider.as_str(),
        "channel3" | "violet" | "subtotal" | "*" | "all"
    ) {
        return Err(format!(
            "invalid fault `{spec}`: unknown provider `{provider}` (channel3, violet, subtotal, *)"
        ));
    }
    let fault: Fault = kind.parse().map_err(|e| format!("{e}"))?;
    let mut rule = FaultRule::new(fault);
    if !route.is_empty() && route != "*" {
        rule = rule.route(route);
    }
    Ok(FaultSpec { provider, rule })
}

fn apply(specs: &[FaultSpec], provider: &str, faults: &Faults) {
    for s in specs {
        if s.provider == provider || s.provider == "*" || s.provider == "all" {
            faults.push(s.rule.clone());
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut specs = Vec::new();
    if let Some(ms) = args.latency_ms {
        specs.push(FaultSpec {
            provider: "*".into(),
            rule: FaultRule::new(Fault::Latency(Duration::from_millis(ms))),
        });
    }
    for f in &args.faults {
        specs.push(parse_fault(f)?);
    }
    let io = |what: &str, e: std::io::Error| format!("cannot start the {what} simulator: {e}");
    let channel3 = Channel3Sim::start_on_port(
        data::channel3_customers(args.customers, args.seed),
        args.channel3_port,
    )
    .await
    .map_err(|e| io("Channel3", e))?;
    let violet = VioletSim::start_on_port(
        data::violet_merchants(args.customers, args.seed),
        args.violet_port,
    )
    .await
    .map_err(|e| io("Violet", e))?;
    let subtotal_data = data::subtotal_customers(args.customers, args.seed);
    // Subtotal cannot list customers: a config names them, so the line carries their ids.
    let subtotal_customers = subtotal_data.customer_ids();
    let subtotal = SubtotalSim::start_on_port(subtotal_data, args.subtotal_port)
        .await
        .map_err(|e| io("Subtotal", e))?;
    apply(&specs, "channel3", channel3.faults());
    apply(&specs, "violet", violet.faults());
    apply(&specs, "subtotal", subtotal.faults());
    if let Some(mut limit) = args.rate_limit {
        if let Some(b) = args.rate_limit_burst {
            limit = limit.with_burst(b);
        }
        for faults in [channel3.faults(), violet.faults(), subtotal.faults()] {
            faults.set_rate_limit(Some(limit));
        }
    }

    let line = json!({
        "channel3": { "base_url": channel3.base_url(), "api_key": channel3.api_key() },
        "violet": {
            "base_url": violet.base_url(),
            "app_id": violet.app_id(),
            "app_secret": violet.app_secret(),
            "username": violet.username(),
            "password": violet.password(),
        },
        "subtotal": {
            "base_url": subtotal.base_url(),
            "api_key": subtotal.api_key(),
            "customers": subtotal_customers,
        },
    });
    println!("{line}");

    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    channel3.shutdown().await;
    violet.shutdown().await;
    subtotal.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connhealth-sim: {e}");
            ExitCode::from(2)
        }
    }
}
