//! A string that never prints.

use std::fmt;
use std::sync::Arc;

/// A credential (API key, token, password). `Debug` and `Display` print `[redacted]`; the
/// value is only reachable through [`Secret::expose`], which makes every use greppable.
///
/// ```
/// use connhealth_core::Secret;
/// let key = Secret::new("c3_sk_live_123");
/// assert_eq!(format!("{key:?} {key}"), "[redacted] [redacted]");
/// assert_eq!(key.expose(), "c3_sk_live_123");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wrap a credential.
    pub fn new(value: impl Into<String>) -> Self {
        // Shared, not copied, by clones: every request carries its credentials' clones.
        Secret(Arc::from(value.into()))
    }

    /// The raw value, for putting into a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty (an empty credential is a configuration error).
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(Arc::from(s))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(Arc::from(s))
    }
}
