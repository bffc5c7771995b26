//! # connhealth-core
//!
//! The base of connhealth: the normalized connection-health model ([`Connection`], [`Status`],
//! [`HealthReport`]), the [`Provider`] trait every adapter implements, the concurrent
//! [`Aggregator`], and the HTTP plumbing adapters share ([`http`]: retries, size caps, typed
//! errors, URL rules) plus [`Secret`] for credentials.
//!
//! A provider yields batches of connections; the aggregator runs all providers at once, each
//! under a timeout, and rolls their answers up:
//!
//! ```
//! use connhealth_core::{Aggregator, Batch, Connection, Customer, Provider, Role, Status};
//! use futures::stream::{self, BoxStream, StreamExt};
//!
//! #[derive(Debug)]
//! struct OneShop;
//!
//! impl Provider for OneShop {
//!     fn name(&self) -> &str { "example" }
//!     fn stream(&self) -> BoxStream<'_, Batch> {
//!         let now = chrono::Utc::now();
//!         let mut conn = Connection::new(
//!             "example",
//!             Some("c1"),
//!             Customer::new("cus_1"),
//!             "shopify",
//!             Role::Source,
//!             Status::Healthy,
//!             now,
//!         );
//!         conn.provider_status = "active".into();
//!         stream::iter(vec![Ok(vec![conn])]).boxed()
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let report = Aggregator::new().with_provider(OneShop).run().await;
//! assert_eq!(report.overall, Status::Healthy);
//! assert_eq!(report.summary.total, 1);
//! assert_eq!(report.connections[0].id, "example:c1");
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod action;
mod aggregator;
pub mod config_file;
pub mod diff;
mod error;
pub mod http;
pub mod jwt;
pub mod lenient;
mod model;
mod options;
mod provider;
pub mod rate;
pub mod schedule;
mod secret;
pub mod watch;
pub mod webhook;

pub use action::{Action, ActionError, ActionKind, ActionOutcome};
pub use aggregator::{Aggregator, Known, ProviderResult, Unchanged};
pub use diff::{diff, Change, ChangeKind};
pub use error::{Error, ErrorKind, Result};
pub use model::shared;
pub use model::{
    Account, Check, Connection, Customer, HealthReport, ObservedAt, Outcome, ParseStatusError,
    Problem, ProviderOutcome, Remediation, ReportError, Role, Status, Summary, SyncProgress,
    SyncState,
};
pub use options::{AdapterDefaults, ClientOptions, ValidatedOptions, MAX_CONCURRENCY};
pub use provider::{until_refused, Batch, Concurrency, Fetched, Provider, RefreshHint};
pub use secret::Secret;
pub use watch::{WatchConfig, WatchState, Watcher};
pub use webhook::{WebhookError, WebhookEvent, WebhookEventType};

// Re-exported so adapters and users name the same versions.
/// The header map `verify_webhook` functions take (the `http` crate's, as axum and reqwest use).
pub use ::http::HeaderMap;
pub use async_trait::async_trait;
pub use chrono;
pub use futures;
/// The list type of a [`Connection`]'s checks, problems and accounts, and its `vec!`.
pub use thin_vec::{thin_vec, ThinVec};
