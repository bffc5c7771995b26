//! Actions: the remediation, done (DESIGN.md, "Actions").
//!
//! A [`Provider`](crate::Provider) lists the actions one of its connections supports
//! ([`Provider::actions`](crate::Provider::actions)) and performs one
//! ([`Provider::act`](crate::Provider::act)), answering a typed [`ActionOutcome`] or a typed
//! [`ActionError`]. Which connection supports which action is each adapter's rule (documented
//! in its crate docs); the default is none.
//!
//! ```
//! use connhealth_core::action::{Action, ActionKind};
//!
//! let kind: ActionKind = "disconnect".parse().unwrap();
//! assert_eq!(kind, ActionKind::Disconnect);
//! assert!(kind.is_destructive());
//! assert!("launch_rockets".parse::<ActionKind>().is_err());
//! let listed = Action::new(kind);
//! assert_eq!(
//!     serde_json::to_value(listed).unwrap(),
//!     serde_json::json!({"kind": "disconnect", "destructive": true})
//! );
//! ```

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Error;
use crate::model::Connection;

/// The kind of an action; snake_case in JSON and in routes (`/actions/{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActionKind {
    /// Mint a single-use link the customer follows to connect a platform (Channel3).
    ConnectLink,
    /// Recompute the connection's state at the provider now (Violet).
    Refresh,
    /// A link the customer follows to re-authenticate an existing connection (Subtotal).
    ReauthLink,
    /// End the connection at the provider (Subtotal). Destructive.
    Disconnect,
}

impl ActionKind {
    /// Every kind, in a stable order.
    pub const ALL: [ActionKind; 4] = [
        ActionKind::ConnectLink,
        ActionKind::Refresh,
        ActionKind::ReauthLink,
        ActionKind::Disconnect,
    ];

    /// The JSON / route name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::ConnectLink => "connect_link",
            ActionKind::Refresh => "refresh",
            ActionKind::ReauthLink => "reauth_link",
            ActionKind::Disconnect => "disconnect",
        }
    }

    /// Whether doing it cannot be undone from here (a dashboard asks for confirmation).
    pub fn is_destructive(self) -> bool {
        matches!(self, ActionKind::Disconnect)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A kind name this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action kind {0:?} (known: connect_link, refresh, reauth_link, disconnect)")]
pub struct UnknownActionKind(pub String);

impl FromStr for ActionKind {
    type Err = UnknownActionKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActionKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownActionKind(s.to_owned()))
    }
}

/// One action a connection supports, as `/v1/connections` lists it: `{kind, destructive}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Action {
    /// What it does.
    pub kind: ActionKind,
    /// Whether it cannot be undone from here.
    pub destructive: bool,
}

impl Action {
    /// The action of that kind (destructive as the kind is).
    pub fn new(kind: ActionKind) -> Self {
        Action {
            kind,
            destructive: kind.is_destructive(),
        }
    }
}

/// What a performed action answered: `{kind, ok, url?, connection?, message, retry_at?}`.
///
/// `url` may be a bearer secret (a connect session's single-use link): show it to the person
/// who asked, never log or store it.
#[derive(Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ActionOutcome {
    /// The action.
    pub kind: ActionKind,
    /// Whether it was done.
    pub ok: bool,
    /// A link to hand the customer, for link actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The connection as the provider reports it after the action, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
    /// What happened, in words (no secrets, no URL).
    pub message: String,
    /// When it may be tried again, when a rate rule refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for ActionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionOutcome")
            .field("kind", &self.kind)
            .field("ok", &self.ok)
            .field("url", &self.url.as_ref().map(|_| "[redacted]"))
            .field("connection", &self.connection.as_ref().map(|c| &c.id))
            .field("message", &self.message)
            .field("retry_at", &self.retry_at)
            .finish()
    }
}

impl ActionOutcome {
    /// A successful outcome with its message.
    pub fn done(kind: ActionKind, message: impl Into<String>) -> Self {
        ActionOutcome {
            kind,
            ok: true,
            url: None,
            connection: None,
            message: message.into(),
            retry_at: None,
        }
    }

    /// With a link for the customer.
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// With the connection as it now is.
    pub fn with_connection(mut self, connection: Connection) -> Self {
        self.connection = Some(connection);
        self
    }

    /// The failed outcome `error` stands for (`ok: false`, its message, `retry_at`).
    pub fn failed(kind: ActionKind, error: &ActionError) -> Self {
        ActionOutcome {
            kind,
            ok: false,
            url: None,
            connection: None,
            message: error.to_string(),
            retry_at: error.retry_at(),
        }
    }
}

/// Why an action was not done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// The connection does not support that kind (or the provider no actions at all).
    #[error("{provider}: connection {connection_id:?} does not support the action {kind}")]
    Unsupported {
        /// The provider's name.
        provider: String,
        /// The connection.
        connection_id: String,
        /// The action asked for.
        kind: ActionKind,
    },
    /// A rate rule forbids it now; nothing was sent.
    #[error("{provider}: {kind} of connection {connection_id:?} is allowed again at {retry_at}: {reason}")]
    RateLimited {
        /// The provider's name.
        provider: String,
        /// The connection.
        connection_id: String,
        /// The action asked for.
        kind: ActionKind,
        /// When it may run again.
        retry_at: DateTime<Utc>,
        /// The rule, in words.
        reason: String,
    },
    /// The provider failed at one step (its error names the provider and the endpoint).
    #[error("{step}: {source}")]
    Provider {
        /// Which step failed, in words (e.g. "token minted; the PATCH failed").
        step: String,
        /// The provider's error.
        source: Error,
    },
}

impl ActionError {
    /// When it may be retried, for [`ActionError::RateLimited`].
    pub fn retry_at(&self) -> Option<DateTime<Utc>> {
        match self {
            ActionError::RateLimited { retry_at, .. } => Some(*retry_at),
            _ => None,
        }
    }

    /// The provider's error, for [`ActionError::Provider`].
    pub fn provider_error(&self) -> Option<&Error> {
        match self {
            ActionError::Provider { source, .. } => Some(source),
            _ => None,
        }
    }

    /// A provider failure at `step`.
    pub fn at_step(step: impl Into<String>, source: Error) -> Self {
        ActionError::Provider {
            step: step.into(),
            source,
        }
    }

    /// [`ActionError::Unsupported`] for `connection` and `kind`.
    pub fn unsupported(connection: &Connection, kind: ActionKind) -> Self {
        ActionError::Unsupported {
            provider: connection.provider.clone(),
            connection_id: connection.id.clone(),
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn kinds_round_trip_and_only_disconnect_is_destructive() {
        for k in ActionKind::ALL {
            assert_eq!(k.as_str().parse::<ActionKind>().unwrap(), k);
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
            assert_eq!(k.is_destructive(), k == ActionKind::Disconnect);
        }
        let e = "Disconnect".parse::<ActionKind>().unwrap_err();
        assert!(e.to_string().contains("\"Disconnect\""), "{e}");
    }

    #[test]
    fn a_failed_outcome_carries_the_step_and_the_endpoint_and_debug_hides_the_url() {
        let err = ActionError::at_step(
            "token minted; the PATCH failed",
            Error::new(
                "subtotal",
                "PATCH /connections/{connection_id}",
                ErrorKind::ServerError,
                "boom",
            )
            .with_status(500),
        );
        let out = ActionOutcome::failed(ActionKind::Disconnect, &err);
        assert!(!out.ok);
        assert_eq!(
            out.message,
            "token minted; the PATCH failed: subtotal: PATCH /connections/{connection_id}: server_error (HTTP 500): boom"
        );
        assert_eq!(out.retry_at, None);
        let link = ActionOutcome::done(ActionKind::ConnectLink, "minted")
            .with_url("https://x.example/s/secret-token");
        assert!(!format!("{link:?}").contains("secret-token"));
        let json = serde_json::to_value(&link).unwrap();
        assert_eq!(json["url"], "https://x.example/s/secret-token");
        assert!(json.get("connection").is_none() && json.get("retry_at").is_none());
    }

    #[test]
    fn rate_limited_says_when() {
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let err = ActionError::RateLimited {
            provider: "violet".into(),
            connection_id: "violet:1".into(),
            kind: ActionKind::Refresh,
            retry_at: at,
            reason: "at most once per 15 minutes".into(),
        };
        let out = ActionOutcome::failed(ActionKind::Refresh, &err);
        assert_eq!(out.retry_at, Some(at));
        assert!(
            out.message.contains("2026-01-01 00:15:00 UTC"),
            "{}",
            out.message
        );
    }
}
