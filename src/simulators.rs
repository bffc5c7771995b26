//! The three adapters wired to the testkit's loopback simulators (feature `simulators`).
//!
//! One place knows how a [`Fleet`]'s simulators are reached (base URL, credentials, the
//! customers a provider cannot discover): `connhealth demo`, the server's tests, the facade's
//! tests and the quickstart example all start here and add only the settings they are about
//! (timeouts, retry policy, body caps). It lives in the facade, not in `connhealth-testkit`,
//! because the testkit depends on no adapter (the adapters' own tests use it).
//!
//! ```
//! use connhealth::simulators::{self, Fleet};
//! use connhealth::{Aggregator, Status};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let fleet = Fleet::start(5, 7).await.unwrap();
//! let mut agg = Aggregator::new();
//! for p in simulators::providers(&fleet).unwrap() {
//!     agg.push(p, None);
//! }
//! let report = agg.run().await;
//! assert_eq!(report.providers.len(), 3);
//! assert!(report.summary.total > 0);
//! assert!(report.overall > Status::Healthy); // the documented examples include unhealthy ones
//! fleet.shutdown().await;
//! # }
//! ```

use std::sync::Arc;

use crate::channel3::{Channel3, Channel3Builder};
use crate::subtotal::{Subtotal, SubtotalBuilder};
use crate::violet::{Violet, VioletBuilder};
use crate::{Provider, Result, Secret};

pub use connhealth_testkit::{Channel3Sim, Fleet, SubtotalSim, VioletSim};

/// The Link URL the simulated Subtotal connections' re-authentication remediations point at.
pub const SUBTOTAL_LINK_URL: &str = "https://link.subtotal.com/demo";

/// A Channel3 builder aimed at `sim` with its key. No customers are set, so every merchant is
/// discovered; add `.customers(sim.customer_ids())` to ask for them directly.
pub fn channel3(sim: &Channel3Sim) -> Channel3Builder {
    Channel3::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
}

/// A Violet builder aimed at `sim` with its app id, app secret and owner credentials.
pub fn violet(sim: &VioletSim) -> VioletBuilder {
    Violet::builder()
        .base_url(sim.base_url())
        .app_id(sim.app_id())
        .app_secret(Secret::new(sim.app_secret()))
        .username(sim.username())
        .password(Secret::new(sim.password()))
}

/// A Subtotal builder aimed at `sim` with its key and every customer it holds (Subtotal cannot
/// list customers).
pub fn subtotal(sim: &SubtotalSim) -> SubtotalBuilder {
    Subtotal::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .customers(sim.customer_ids())
}

/// The three providers as `connhealth demo` uses them: Channel3 discovering its merchants,
/// Violet including PUBLIC merchants (the documented example is one), Subtotal with re-auth
/// links.
pub fn providers(fleet: &Fleet) -> Result<Vec<Arc<dyn Provider>>> {
    Ok(vec![
        Arc::new(channel3(&fleet.channel3).build()?),
        Arc::new(violet(&fleet.violet).exclude_public(false).build()?),
        Arc::new(
            subtotal(&fleet.subtotal)
                .link_url(SUBTOTAL_LINK_URL)
                .build()?,
        ),
    ])
}
