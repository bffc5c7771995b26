//! The `[[provider]]` table of kind `"subtotal"` in a connhealth config file, and
//! [`SubtotalBuilder::from_config`].

use connhealth_core::config_file::{self as env, EnvError, Lookup};
use serde::Deserialize;

use crate::{Subtotal, SubtotalBuilder};

/// One Subtotal account as a config file describes it. The keys are a public contract
/// (ARCHITECTURE.md, "Config file"); the API key is never in it, only the name of the
/// environment variable that holds it. Subtotal cannot list customers: `customers` is required.
///
/// ```
/// use connhealth_subtotal::{SubtotalBuilder, SubtotalConfig};
///
/// let config: SubtotalConfig = serde_json::from_value(serde_json::json!({
///     "kind": "subtotal",
///     "api_key_env": "SUBTOTAL_API_KEY",
///     "customers": ["8a46e581-48ba-498a-9ad0-2ee72582e1af"],
/// }))
/// .unwrap();
/// let env = |name: &str| (name == "SUBTOTAL_API_KEY").then(|| "st_test".to_owned());
/// let subtotal = SubtotalBuilder::from_config(&config, &env).unwrap().build().unwrap();
/// assert_eq!(subtotal.customers().len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SubtotalConfig {
    /// The table's `kind`: `"subtotal"`.
    pub kind: String,
    /// The name in reports and connection ids (default `subtotal`).
    pub name: Option<String>,
    /// The API host (default [`crate::DEFAULT_BASE_URL`]).
    pub base_url: Option<String>,
    /// The environment variable holding the API key.
    pub api_key_env: String,
    /// The customers to watch.
    pub customers: Vec<String>,
    /// Base of the Link URL offered in re-authentication remediations.
    pub link_url: Option<String>,
    /// The whole fetch's time budget, in seconds; one request gets at most 30 s of it.
    pub timeout_secs: Option<u64>,
    /// The environment variable holding the webhook destination's `signing_secret`; absent:
    /// webhooks are not configured for this provider.
    pub webhook_secret_env: Option<String>,
    /// At most this many requests in flight.
    pub concurrency: Option<usize>,
    /// The request budget, `"600/min"` (`N/s`, `N/min` or `N/h`), shared by everything that
    /// calls this provider; see [`connhealth_core::rate`].
    pub rate_limit: Option<connhealth_core::http::RateLimit>,
}

impl SubtotalConfig {
    /// The `kind` this table has.
    pub const KIND: &'static str = "subtotal";
}

impl SubtotalBuilder {
    /// A builder set up from a config table, reading the API key from the environment variable
    /// it names (through `env`, e.g. `&connhealth_core::config_file::process`). Settings the
    /// table leaves out keep the builder's defaults; further setters may follow.
    /// [`SubtotalBuilder::build`] validates.
    pub fn from_config(config: &SubtotalConfig, env: Lookup<'_>) -> Result<Self, EnvError> {
        let mut b = Subtotal::builder()
            .api_key(env::secret(env, "api_key_env", &config.api_key_env)?)
            .customers(config.customers.clone());
        if let Some(var) = &config.webhook_secret_env {
            b = b.webhook_secret(env::secret(env, "webhook_secret_env", var)?);
        }
        b = b.table_keys(
            config.name.as_deref(),
            config.base_url.as_deref(),
            config.timeout_secs,
            config.concurrency,
        );
        b = b.rate_limit_opt(config.rate_limit);
        if let Some(url) = &config.link_url {
            b = b.link_url(url.clone());
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connhealth_core::Provider;

    #[test]
    fn every_key_reaches_the_builder() {
        let c: SubtotalConfig = serde_json::from_value(serde_json::json!({
            "kind": "subtotal", "name": "st", "base_url": "http://127.0.0.1:9",
            "api_key_env": "K", "customers": ["c1", "c2"],
            "link_url": "https://link.subtotal.com/x", "timeout_secs": 5, "concurrency": 2,
        }))
        .unwrap();
        let env = |n: &str| (n == "K").then(|| "st_key".to_owned());
        let p = SubtotalBuilder::from_config(&c, &env)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(p.name(), "st");
        assert_eq!(p.customers(), ["c1", "c2"]);
        assert!(!format!("{p:?}").contains("st_key"));
        let blank = |_: &str| Some(" ".to_owned());
        let e = SubtotalBuilder::from_config(&c, &blank).unwrap_err();
        assert_eq!(
            e.to_string(),
            "api_key_env: environment variable K is empty"
        );
    }

    #[test]
    fn webhook_secret_env_configures_webhooks_and_its_absence_leaves_them_off() {
        let base = serde_json::json!({"kind": "subtotal", "api_key_env": "K", "customers": []});
        let env = |n: &str| Some(format!("value-of-{n}"));
        let now = chrono::Utc::now();
        let headers = connhealth_core::HeaderMap::new();

        let off: SubtotalConfig = serde_json::from_value(base.clone()).unwrap();
        let p = SubtotalBuilder::from_config(&off, &env)
            .unwrap()
            .build()
            .unwrap();
        assert!(p.verify_webhook(&headers, b"{}", now).is_none());

        let mut on = base;
        on["webhook_secret_env"] = "W".into();
        let on: SubtotalConfig = serde_json::from_value(on).unwrap();
        let p = SubtotalBuilder::from_config(&on, &env)
            .unwrap()
            .build()
            .unwrap();
        // Configured: verified, here refused for the missing signature.
        assert_eq!(
            p.verify_webhook(&headers, b"{}", now),
            Some(Err(connhealth_core::WebhookError::MissingHeader {
                name: "X-Subtotal-Signature"
            }))
        );
        assert!(!format!("{p:?}").contains("value-of-W"));
        let no_w = |n: &str| (n != "W").then(|| "v".to_owned());
        let e = SubtotalBuilder::from_config(&on, &no_w).unwrap_err();
        assert_eq!(
            e.to_string(),
            "webhook_secret_env: environment variable W is not set"
        );
    }

    #[test]
    fn customers_are_required() {
        let e = serde_json::from_value::<SubtotalConfig>(
            serde_json::json!({"kind": "subtotal", "api_key_env": "K"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("missing field `customers`"), "{e}");
    }
}
