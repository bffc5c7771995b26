//! What every adapter's `Builder::from_config` shares: credentials read from the environment
//! variables a config file names, and the rule that turns a whole-fetch budget into a
//! per-request timeout.
//!
//! A connhealth config file never holds a secret: it names the environment variable that does
//! (`api_key_env = "CHANNEL3_API_KEY"`). Each adapter's `Builder::from_config` reads those
//! variables through a lookup function (the process environment with [`process`], a map in
//! tests), using [`secret`] so that every adapter reports a missing variable the same way.
//!
//! ```
//! use connhealth_core::config_file as env;
//!
//! let lookup = |name: &str| (name == "MY_KEY").then(|| "s3cret".to_owned());
//! let key = env::secret(&lookup, "api_key_env", "MY_KEY").unwrap();
//! assert_eq!(key.expose(), "s3cret");
//! let e = env::secret(&lookup, "api_key_env", "OTHER").unwrap_err();
//! assert_eq!(e.to_string(), "api_key_env: environment variable OTHER is not set");
//! ```

use std::fmt;
use std::time::Duration;

use crate::Secret;

/// Where environment variables come from: a name in, the value (if set) out.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as a [`Lookup`] (`&config_file::process`).
pub fn process(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A config key names an environment variable that is not set, or set to only whitespace.
///
/// `Display` reads `"{key}: environment variable {var} is not set"` (or `is empty`): the key
/// path relative to the provider's table, for the caller to prefix with the file and table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    key: String,
    var: String,
    empty: bool,
}

impl EnvError {
    /// The config key that named the variable (`api_key_env`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The variable's name (never its value).
    pub fn var(&self) -> &str {
        &self.var
    }

    /// The reason without the key: `environment variable X is not set`.
    pub fn reason(&self) -> String {
        let what = if self.empty { "empty" } else { "not set" };
        format!("environment variable {} is {what}", self.var)
    }
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason())
    }
}

impl std::error::Error for EnvError {}

/// The value of the variable `var`, named by config key `key`, as a [`Secret`]. A variable
/// that is unset, or holds only whitespace, is an [`EnvError`].
pub fn secret(lookup: Lookup<'_>, key: &str, var: &str) -> Result<Secret, EnvError> {
    match lookup(var) {
        Some(v) if !v.trim().is_empty() => Ok(Secret::new(v)),
        found => Err(EnvError {
            key: key.to_owned(),
            var: var.to_owned(),
            empty: found.is_some(),
        }),
    }
}

/// The longest one request may take when a config sets only the whole fetch's budget.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The timeout of one request for a provider whose whole fetch may take `timeout_secs`:
/// that budget, but never more than [`MAX_REQUEST_TIMEOUT`].
pub fn request_timeout(timeout_secs: u64) -> Duration {
    Duration::from_secs(timeout_secs).min(MAX_REQUEST_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_unset_are_told_apart_and_the_value_never_shows() {
        let lookup = |name: &str| match name {
            "SET" => Some("value-123".to_owned()),
            "BLANK" => Some("  \t".to_owned()),
            _ => None,
        };
        assert_eq!(secret(&lookup, "k", "SET").unwrap().expose(), "value-123");
        let blank = secret(&lookup, "password_env", "BLANK").unwrap_err();
        assert_eq!(
            blank.to_string(),
            "password_env: environment variable BLANK is empty"
        );
        let unset = secret(&lookup, "api_key_env", "NOPE").unwrap_err();
        assert_eq!((unset.key(), unset.var()), ("api_key_env", "NOPE"));
        assert_eq!(unset.reason(), "environment variable NOPE is not set");
    }

    #[test]
    fn a_request_gets_the_fetch_budget_up_to_thirty_seconds() {
        assert_eq!(request_timeout(5), Duration::from_secs(5));
        assert_eq!(request_timeout(30), Duration::from_secs(30));
        assert_eq!(request_timeout(u64::MAX), Duration::from_secs(30));
    }
}
