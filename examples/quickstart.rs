//! Using connhealth as a library: three providers, one report.
//!
//! Runs against the built-in simulators so it needs no account:
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! Against the real APIs, drop the simulators and pass your base URLs (or keep the defaults)
//! and credentials from your own secret store.

use std::time::Duration;

use connhealth::channel3::Channel3;
use connhealth::subtotal::Subtotal;
use connhealth::violet::Violet;
use connhealth::{Aggregator, Secret, Status};
use connhealth_testkit::Fleet;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Simulated Channel3, Violet and Subtotal on loopback, 25 generated customers each.
    let fleet = Fleet::start(25, 1).await?;

    let channel3 = Channel3::builder()
        .base_url(fleet.channel3.base_url())
        .api_key(Secret::new(fleet.channel3.api_key()))
        .build()?; // no customer list: every merchant is discovered
    let violet = Violet::builder()
        .base_url(fleet.violet.base_url())
        .app_id(fleet.violet.app_id())
        .app_secret(Secret::new(fleet.violet.app_secret()))
        .username(fleet.violet.username())
        .password(Secret::new(fleet.violet.password()))
        .build()?;
    let subtotal = Subtotal::builder()
        .base_url(fleet.subtotal.base_url())
        .api_key(Secret::new(fleet.subtotal.api_key()))
        .customers(fleet.subtotal.customer_ids())
        .build()?;

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
