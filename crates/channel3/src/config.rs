//! The `[[provider]]` table of kind `"channel3"` in a connhealth config file, and
//! [`Channel3Builder::from_config`].

use connhealth_core::config_file::{self as env, EnvError, Lookup};
use serde::Deserialize;

use crate::{Channel3, Channel3Builder};

/// One Channel3 partner account as a config file describes it. The keys are a public
/// contract (ARCHITECTURE.md, "Config file"); credentials are never in it, only the names of
/// the environment variables that hold them.
///
/// ```
/// use connhealth_channel3::{Channel3Builder, Channel3Config};
///
/// let config: Channel3Config = serde_json::from_value(serde_json::json!({
///     "kind": "channel3",
///     "api_key_env": "CHANNEL3_API_KEY",
///     "customers": ["cus_123"],
/// }))
/// .unwrap();
/// let env = |name: &str| (name == "CHANNEL3_API_KEY").then(|| "c3_sk_test".to_owned());
/// let provider = Channel3Builder::from_config(&config, &env).unwrap().build().unwrap();
/// assert_eq!(provider.customers(), Some(&["cus_123".to_owned()][..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Channel3Config {
    /// The table's `kind`: `"channel3"`.
    pub kind: String,
    /// The name in reports and connection ids (default `channel3`).
    pub name: Option<String>,
    /// The API host (default [`crate::DEFAULT_BASE_URL`]).
    pub base_url: Option<String>,
    /// The environment variable holding the partner key (`c3_sk_…`).
    pub api_key_env: String,
    /// These customers only; without it, every merchant of the account is discovered.
    pub customers: Option<Vec<String>>,
    /// The whole fetch's time budget, in seconds; one request gets at most 30 s of it.
    pub timeout_secs: Option<u64>,
    /// At most this many requests in flight.
    pub concurrency: Option<usize>,
    /// The request budget, `"600/min"` (`N/s`, `N/min` or `N/h`), shared by everything that
    /// calls this provider; see [`connhealth_core::rate`].
    pub rate_limit: Option<connhealth_core::http::RateLimit>,
    /// The `redirect_uri` of connect sessions (the `connect_link` action); without it no
    /// connection offers that action.
    pub connect_redirect_uri: Option<String>,
}

impl Channel3Config {
    /// The `kind` this table has.
    pub const KIND: &'static str = "channel3";
}

impl Channel3Builder {
    /// A builder set up from a config table, reading the key from the environment variable it
    /// names (through `env`, e.g. `&connhealth_core::config_file::process`). Settings the table leaves
    /// out keep the builder's defaults; further setters may follow. Values are validated, as
    /// always, by [`Channel3Builder::build`].
    pub fn from_config(config: &Channel3Config, env: Lookup<'_>) -> Result<Self, EnvError> {
        let mut b =
            Channel3::builder().api_key(env::secret(env, "api_key_env", &config.api_key_env)?);
        b = b.table_keys(
            config.name.as_deref(),
            config.base_url.as_deref(),
            config.timeout_secs,
            config.concurrency,
        );
        b = b.rate_limit_opt(config.rate_limit);
        if let Some(ids) = &config.customers {
            b = b.customers(ids.iter().cloned());
        }
        if let Some(uri) = &config.connect_redirect_uri {
            b = b.connect_redirect_uri(uri.clone());
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connhealth_core::Provider;

    fn config(v: serde_json::Value) -> Result<Channel3Config, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn every_key_reaches_the_builder() {
        let c = config(serde_json::json!({
            "kind": "channel3", "name": "c3-eu", "base_url": "http://127.0.0.1:9",
            "api_key_env": "K", "customers": ["a", "b", "a"], "timeout_secs": 5, "concurrency": 7,
        }))
        .unwrap();
        let env = |n: &str| (n == "K").then(|| "c3_sk_x".to_owned());
        let p = Channel3Builder::from_config(&c, &env)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(p.name(), "c3-eu");
        assert_eq!(p.customers(), Some(&["a".to_owned(), "b".to_owned()][..]));
        let dbg = format!("{p:?}");
        assert!(
            dbg.contains("limit: 7") && !dbg.contains("c3_sk_x"),
            "{dbg}"
        );
    }

    #[test]
    fn a_missing_variable_and_an_unknown_key_are_named() {
        let c = config(serde_json::json!({"kind": "channel3", "api_key_env": "NOPE"})).unwrap();
        let e = Channel3Builder::from_config(&c, &|_: &str| None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "api_key_env: environment variable NOPE is not set"
        );
        let e = config(serde_json::json!({"kind": "channel3", "api_key": "x"})).unwrap_err();
        assert!(e.to_string().contains("unknown field `api_key`"), "{e}");
    }
}
