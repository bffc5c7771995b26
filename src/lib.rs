//! # connhealth
//!
//! Which of my customers' connections are healthy, and what must someone do about the rest?
//!
//! `connhealth` asks several commerce APIs at once — Channel3 (partner merchant connections),
//! Violet (connection-health reports) and Subtotal (customer ↔ retailer connections) — maps every
//! answer onto one normalized [`Connection`] / [`Status`] model, and merges them into a
//! [`HealthReport`].
//!
//! This facade re-exports the core model, the [`Provider`] trait and the [`Aggregator`], and
//! each provider adapter behind a cargo feature of the same name (all on by default).
//!
//! ```
//! use connhealth::{Aggregator, Status};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // With no providers configured, the report is empty and healthy.
//! let report = Aggregator::new().run().await;
//! assert_eq!(report.overall, Status::Healthy);
//! assert_eq!(report.summary.total, 0);
//! # }
//! ```
#![forbid(unsafe_code)]

pub use connhealth_core::*;

/// The Channel3 Partner API adapter (feature `channel3`).
#[cfg(feature = "channel3")]
pub use connhealth_channel3 as channel3;
/// The Subtotal connections adapter (feature `subtotal`).
#[cfg(feature = "subtotal")]
pub use connhealth_subtotal as subtotal;
/// The Violet connection-health adapter (feature `violet`).
#[cfg(feature = "violet")]
pub use connhealth_violet as violet;

#[cfg(feature = "simulators")]
pub mod simulators;
