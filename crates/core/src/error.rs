//! The one error type every adapter converts into.
//!
//! An [`Error`] always says which provider and which endpoint failed, what kind of failure it
//! was ([`ErrorKind`], stable snake_case names), the HTTP status when there was a response, and
//! the provider's own message when its body carried one. It never carries a secret: messages
//! are built from status lines and response bodies, never from request headers.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::ReportError;

/// What kind of failure an [`Error`] is. The JSON names are a stable contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// 401: credentials missing, wrong or expired.
    Authentication,
    /// 403: the credentials may not do this (e.g. a merchant of another partner).
    Forbidden,
    /// 404: no such customer / connection.
    NotFound,
    /// 400/409/422 and other 4xx: the provider rejected the request as invalid.
    ///
    /// Not in the first list of kinds (ARCHITECTURE.md); added because a validation error is neither a server
    /// error nor a configuration error of ours.
    InvalidRequest,
    /// 429: slow down. Transient; never makes a connection unhealthy.
    RateLimited,
    /// 5xx.
    ServerError,
    /// The request or the whole provider fetch took too long.
    Timeout,
    /// Could not connect, or the connection dropped.
    Connection,
    /// The body was not the documented JSON.
    Decode,
    /// The body exceeded the size cap.
    TooLarge,
    /// Our configuration is wrong (bad base URL, missing credential, refused redirect…).
    Config,
    /// The provider's code panicked (a bug in connhealth; the other providers are unaffected).
    Panicked,
    /// The provider does not offer this operation (e.g. a targeted refresh of an adapter
    /// without one).
    Unsupported,
}

impl ErrorKind {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Authentication => "authentication",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::Decode => "decode",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Config => "config",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Unsupported => "unsupported",
        }
    }

    /// The kind an HTTP error status maps to. The one place this decision is made.
    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Forbidden,
            404 | 410 => ErrorKind::NotFound,
            408 => ErrorKind::Timeout,
            413 => ErrorKind::TooLarge,
            429 => ErrorKind::RateLimited,
            500..=599 => ErrorKind::ServerError,
            300..=399 => ErrorKind::Config,
            _ => ErrorKind::InvalidRequest,
        }
    }

    /// Whether a request that failed this way may succeed if repeated (for safe requests).
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Connection
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure talking to a provider (or inside one), with everything needed to report it.
///
/// `Display` reads `"{provider}: {endpoint}: {kind} (HTTP {status}): {message}"`.
#[derive(Debug)]
pub struct Error(Box<Inner>);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

// Boxed so that `Result<T, Error>` stays one pointer wide on the happy path.
#[derive(Debug)]
struct Inner {
    provider: String,
    endpoint: String,
    kind: ErrorKind,
    http_status: Option<u16>,
    message: String,
    provider_code: Option<i64>,
    customer_id: Option<String>,
    retry_after: Option<Duration>,
    source: Option<BoxError>,
}

impl Error {
    /// A new error. `endpoint` is a label such as `GET /v0/partner/merchants/{customer_id}/connections`.
    pub fn new(
        provider: impl Into<String>,
        endpoint: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Error(Box::new(Inner {
            provider: provider.into(),
            endpoint: endpoint.into(),
            kind,
            http_status: None,
            message: message.into(),
            provider_code: None,
            customer_id: None,
            retry_after: None,
            source: None,
        }))
    }

    /// A configuration error (no endpoint involved).
    pub fn config(provider: impl Into<String>, message: impl Into<String>) -> Self {
        Error::new(provider, "config", ErrorKind::Config, message)
    }

    /// Set the HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.0.http_status = Some(status);
        self
    }

    /// Set the provider's own error code (e.g. Violet's `error_code`).
    pub fn with_provider_code(mut self, code: i64) -> Self {
        self.0.provider_code = Some(code);
        self
    }

    /// Name the one customer whose request failed.
    pub fn with_customer(mut self, customer_id: impl Into<String>) -> Self {
        self.0.customer_id = Some(customer_id.into());
        self
    }

    /// Record how long the provider asked us to wait.
    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.0.retry_after = Some(d);
        self
    }

    /// Attach the underlying cause. Its text must not contain secrets (reqwest errors are
    /// stripped of their URL before they get here, see the `http` module).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.0.source = Some(source.into());
        self
    }

    /// Relabel the endpoint, keeping everything else (status, customer, `Retry-After`,
    /// provider code, source): e.g. an error raised while building a URL names the request it
    /// was for.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.0.endpoint = endpoint.into();
        self
    }

    /// Reclassify, keeping everything else (e.g. a login answered 400 is an `authentication`
    /// failure, not an invalid request).
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.0.kind = kind;
        self
    }

    /// Replace the message, keeping everything else. The new message must not carry a secret.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.0.message = message.into();
        self
    }

    /// Rewrite the message from the current one (e.g. to prefix what the request was about),
    /// keeping everything else.
    pub fn map_message(mut self, f: impl FnOnce(&str) -> String) -> Self {
        self.0.message = f(&self.0.message);
        self
    }

    /// Rename the provider (used when a provider is configured under its own `name`).
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.0.provider = provider.into();
        self
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        &self.0.provider
    }
    /// The endpoint label.
    pub fn endpoint(&self) -> &str {
        &self.0.endpoint
    }
    /// The failure kind.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }
    /// The HTTP status, when there was a response.
    pub fn http_status(&self) -> Option<u16> {
        self.0.http_status
    }
    /// The message (the provider's `detail`/`message` when it gave one).
    pub fn message(&self) -> &str {
        &self.0.message
    }
    /// The provider's own error code, when its body carried one.
    pub fn provider_code(&self) -> Option<i64> {
        self.0.provider_code
    }
    /// The customer whose request failed, when known.
    pub fn customer_id(&self) -> Option<&str> {
        self.0.customer_id.as_deref()
    }
    /// How long the provider asked us to wait (from `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }
    /// Whether repeating a safe request may succeed.
    pub fn is_transient(&self) -> bool {
        self.0.kind.is_transient()
    }

    fn render(&self) -> String {
        let mut s = format!("{}: {}: {}", self.0.provider, self.0.endpoint, self.0.kind);
        if let Some(st) = self.0.http_status {
            s.push_str(&format!(" (HTTP {st})"));
        }
        if let Some(c) = &self.0.customer_id {
            s.push_str(&format!(" for customer {c:?}"));
        }
        if !self.0.message.is_empty() {
            s.push_str(": ");
            s.push_str(&self.0.message);
        }
        s
    }

    /// The form this error takes inside a [`crate::HealthReport`].
    pub fn to_report(&self) -> ReportError {
        ReportError {
            kind: self.0.kind,
            message: self.to_string(),
            http_status: self.0.http_status,
            customer_id: self.0.customer_id.clone(),
        }
    }
}

/// Shorthand for `Result<T, connhealth_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
