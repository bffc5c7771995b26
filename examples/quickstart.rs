//! Using connhealth as a library: three providers, one report.
//!
//! Runs against the built-in simulators so it needs no account:
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! `connhealth::simulators::{channel3, violet, subtotal}` are the adapters' ordinary builders
//! with the simulators' base URLs and credentials filled in. Against the real APIs, start from
//! `Channel3::builder()` (and so on) instead and pass your credentials from your own secret
//! store, as the comments below show.

use std::time::Duration;

use connhealth::simulators::{self, Fleet};
use connhealth::{Aggregator, Status};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Simulated Channel3, Violet and Subtotal on loopback, 25 generated customers each.
    let fleet = Fleet::start(25, 1).await?;

    // Real API: Channel3::builder().api_key(Secret::new(key))
    let channel3 = simulators::channel3(&fleet.channel3).build()?; // no customer list: every merchant is discovered
                                                                   // Real API: Violet::builder().app_id(id).app_secret(..).username(..).password(..)
    let violet = simulators::violet(&fleet.violet).build()?;
    // Real API: Subtotal::builder().api_key(Secret::new(key)).customers(ids)
    let subtotal = simulators::subtotal(&fleet.subtotal).build()?;

    let report = Aggregator::new()
        .with_timeout(Duration::from_secs(30))
        .with_provider(channel3)
        .with_provider(violet)
        .with_provider(subtotal)
        .run()
        .await;

    println!(
        "overall: {}  ({} connections)",
        report.overall, report.summary.total
    );
    for p in &report.providers {
        println!(
            "  {:<9} {:<9} {} connections in {} ms",
            p.provider, p.outcome, p.connections, p.elapsed_ms
        );
    }
    // What must someone do? Every connection that needs action, with its remediation.
    for c in report
        .connections
        .iter()
        .filter(|c| c.status == Status::ActionRequired)
        .take(5)
    {
        for p in &c.problems {
            println!(
                "  {} {} {}: {} -> {:?}",
                c.provider, c.customer.id, c.platform, p.code, p.remediation
            );
        }
    }
    Ok(())
}
