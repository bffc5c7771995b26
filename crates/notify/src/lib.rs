//! # connhealth-notify
//!
//! connhealth's notifications out (DESIGN.md "Notifications out"): `[[notify]]` sinks of kind
//! `webhook` (signed per the **Standard Webhooks** specification) or `slack` (an incoming
//! webhook), filters, mutes, digests, and a delivery worker over the store's outbox that
//! retries on a schedule, honours `Retry-After`, never follows a redirect, disables a sink on
//! 410 and resumes after a restart (it keeps nothing the store does not).
//!
//! The pieces, in the order a server wires them:
//! 1. [`SinkConfig`] / [`Mute`] deserialize from the config; [`validate_all`] checks them at
//!    start (an unset env var, a secret that is not `whsec_` + base64, `http://` off loopback:
//!    one-line errors).
//! 2. [`Notifier::route`] names the sinks whose filters pass a change: put them in the
//!    event's sinks (`Journal::set_router`, `Events::route`), so the store writes the outbox rows in the event's
//!    transaction.
//! 3. [`Notifier::spawn`] (or [`Notifier::tick`]) delivers; [`Notifier::metrics`] counts by sink
//!    and outcome; `Store::deliveries` is what `GET /v1/notifications` shows.
//!
//! ```
//! use connhealth_notify::{Signer, SinkConfig};
//! use connhealth_core::Secret;
//!
//! // The Standard Webhooks specification's test vector.
//! let signer = Signer::new(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
//! let sig = signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
//! assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
//!
//! // A sink from the config, validated against an environment.
//! let cfg: SinkConfig = serde_json::from_value(serde_json::json!({
//!     "name": "ops", "kind": "webhook", "url": "https://hooks.example.com/connhealth",
//!     "secret_env": "CONNHEALTH_NOTIFY_SECRET", "min_severity": "degraded",
//! })).unwrap();
//! let err = cfg.validate_with(|_| None).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "notify \"ops\": secret_env: environment variable CONNHEALTH_NOTIFY_SECRET is not set"
//! );
//! let sink = cfg.validate_with(|_| Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into())).unwrap();
//! assert_eq!(sink.name, "ops");
//! ```
#![forbid(unsafe_code)]

mod config;
mod guard;
pub mod message;
mod sign;
mod worker;

pub use config::{
    validate_all, DurationSpec, Filter, Mute, MuteMatch, Sink, SinkConfig, SinkKind,
    DEFAULT_RETRY_SCHEDULE, DEFAULT_TIMEOUT, EVENT_NAMES,
};
pub use guard::{is_private, PrivateAddress, SystemResolver};
pub use sign::Signer;
pub use worker::{
    parse_retry_after, send_test, Attempt, Clock, MetricOutcome, MetricRow, Metrics, Notifier,
    NotifierOptions, SystemClock, TickReport, TokioClock, DIGEST_THRESHOLD, LEASE,
};

use connhealth_core::Change;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// A `[[notify]]` or `[[mute]]` table is wrong (one line, naming the sink and key).
    #[error("{0}")]
    Config(String),
    /// The store failed.
    #[error("notify: store: {0}")]
    Store(#[from] connhealth_store::StoreError),
    /// A bug.
    #[error("notify: {0}")]
    Internal(String),
}

/// The names of the sinks whose filters pass `change` (an event's sinks: `NewEvent::notify`, `Events::route`).
pub fn route<'a>(sinks: impl IntoIterator<Item = &'a Sink>, change: &Change) -> Vec<String> {
    sinks
        .into_iter()
        .filter(|s| s.filter.matches(change))
        .map(|s| s.name.clone())
        .collect()
}
