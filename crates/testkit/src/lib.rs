//! Loopback HTTP simulators of the three commerce APIs `connhealth` polls — Channel3,
//! Violet and Subtotal — with seeded data generators, fault injection and request
//! statistics.
//!
//! The simulators speak the providers' raw JSON (not `connhealth`'s model), listen on
//! `127.0.0.1` on a free port, and run as tasks of the **caller's** tokio runtime, so a test
//! with a paused clock (`#[tokio::test(start_paused = true)]`) sees injected latency and
//! token expiry move with `tokio::time::advance`.
//!
//! ```
//! use connhealth_testkit::Channel3Sim;
//!
//! # fn main() -> std::io::Result<()> {
//! let rt = tokio::runtime::Runtime::new()?;
//! rt.block_on(async {
//!     // Three generated customers (the documented example `cus_doc_example` first).
//!     let sim = Channel3Sim::start_generated(3, 1).await?;
//!     // Point the Channel3 adapter here: base URL + `x-api-key`.
//!     let base_url = sim.base_url(); // "http://127.0.0.1:PORT"; append "/v0/partner/..."
//!     let api_key = sim.api_key();
//!     assert!(base_url.starts_with("http://127.0.0.1:"));
//!     assert!(!api_key.is_empty());
//!     assert_eq!(sim.customer_ids().len(), 3);
//!     // Make the next request on any route answer 429 with `Retry-After: 2`.
//!     sim.faults().push(
//!         connhealth_testkit::FaultRule::new(connhealth_testkit::Fault::too_many_requests(2))
//!             .times(1),
//!     );
//!     assert_eq!(sim.stats().total_requests(), 0);
//!     Ok::<_, std::io::Error>(())
//! })
//! # }
//! ```
//!
//! * [`channel3`], [`violet`], [`subtotal`]: one simulator each; each module documents its
//!   routes, route-name constants and the choices made where the provider's docs are silent.
//! * [`data`]: deterministic generators (`same seed → same bytes`).
//! * [`faults`]: [`Fault`], [`FaultRule`], [`Faults`] and [`Stats`].
//! * [`ratelimit`]: [`RateLimitFault`], a token bucket per credential (429 + `Retry-After`).
//! * [`Fleet`]: all three at once. The `connhealth-sim` binary serves a fleet until Ctrl-C.
#![forbid(unsafe_code)]
// Handlers return early with a ready `Response` as the error of small helpers; boxing it
// would only add noise.
#![allow(clippy::result_large_err)]

pub mod channel3;
pub mod checks;
pub mod data;
pub mod faults;
#[cfg(feature = "proptest")]
pub mod fuzz;
mod mutate;
pub mod ratelimit;
mod server;
pub mod subtotal;
mod util;
pub mod violet;
pub mod webhooks;

pub use channel3::Channel3Sim;
pub use checks::{assert_well_formed, well_formed};
pub use faults::{Fault, FaultRule, Faults, Stats};
pub use ratelimit::RateLimitFault;
pub use subtotal::SubtotalSim;
pub use violet::VioletSim;

/// All three simulators, started together.
#[derive(Debug)]
pub struct Fleet {
    /// The Channel3 Partner API simulator.
    pub channel3: Channel3Sim,
    /// The Violet API simulator.
    pub violet: VioletSim,
    /// The Subtotal API simulator.
    pub subtotal: SubtotalSim,
}

impl Fleet {
    /// Start the three simulators, each with `customers` generated customers (documented
    /// examples included) from `seed`.
    pub async fn start(customers: usize, seed: u64) -> std::io::Result<Fleet> {
        Ok(Fleet {
            channel3: Channel3Sim::start_generated(customers, seed).await?,
            violet: VioletSim::start_generated(customers, seed).await?,
            subtotal: SubtotalSim::start_generated(customers, seed).await?,
        })
    }

    /// Apply `fault` to every route of every simulator, until cleared.
    pub fn fault_all(&self, fault: Fault) {
        self.channel3.faults().on_all(fault.clone());
        self.violet.faults().on_all(fault.clone());
        self.subtotal.faults().on_all(fault);
    }

    /// Clear the fault rules of all three simulators.
    pub fn clear_faults(&self) {
        self.channel3.faults().clear();
        self.violet.faults().clear();
        self.subtotal.faults().clear();
    }

    /// Stop all three servers gracefully.
    pub async fn shutdown(self) {
        self.channel3.shutdown().await;
        self.violet.shutdown().await;
        self.subtotal.shutdown().await;
    }
}
