//! The `[[provider]]` table of kind `"violet"` in a connhealth config file, and
//! [`VioletBuilder::from_config`].

use connhealth_core::config_file::{self as env, EnvError, Lookup};
use serde::Deserialize;

use crate::{Violet, VioletBuilder};

/// One Violet app as a config file describes it. The keys are a public contract
/// (ARCHITECTURE.md, "Config file"); the app secret and the owner's credentials are never in
/// it, only the names of the environment variables that hold them.
///
/// ```
/// use connhealth_violet::{VioletBuilder, VioletConfig};
///
/// let config: VioletConfig = serde_json::from_value(serde_json::json!({
///     "kind": "violet",
///     "app_id": 10001,
///     "app_secret_env": "VIOLET_APP_SECRET",
///     "username_env": "VIOLET_USERNAME",
///     "password_env": "VIOLET_PASSWORD",
/// }))
/// .unwrap();
/// let env = |name: &str| Some(format!("value of {name}"));
/// let violet = VioletBuilder::from_config(&config, &env).unwrap().build().unwrap();
/// # let _ = violet;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VioletConfig {
    /// The table's `kind`: `"violet"`.
    pub kind: String,
    /// The name in reports and connection ids (default `violet`).
    pub name: Option<String>,
    /// The API base URL (default [`Violet::SANDBOX_BASE_URL`]).
    pub base_url: Option<String>,
    /// The app id (not a secret).
    pub app_id: u64,
    /// The environment variable holding the app secret.
    pub app_secret_env: String,
    /// The environment variable holding the owner's username (an e-mail address).
    pub username_env: String,
    /// The environment variable holding the owner's password.
    pub password_env: String,
    /// The environment variable holding the secret webhooks are signed with (default: the
    /// one `app_secret_env` names, as Violet signs with the app secret).
    pub webhook_secret_env: Option<String>,
    /// Leave out merchants with PUBLIC distribution.
    pub exclude_public: Option<bool>,
    /// The whole fetch's time budget, in seconds; one request gets at most 30 s of it.
    pub timeout_secs: Option<u64>,
    /// At most this many requests in flight.
    pub concurrency: Option<usize>,
    /// The request budget, `"600/min"` (`N/s`, `N/min` or `N/h`), shared by everything that
    /// calls this provider; see [`connhealth_core::rate`].
    pub rate_limit: Option<connhealth_core::http::RateLimit>,
}

impl VioletConfig {
    /// The `kind` this table has.
    pub const KIND: &'static str = "violet";
}

impl VioletBuilder {
    /// A builder set up from a config table, reading the app secret, username and password
    /// from the environment variables it names (through `env`, e.g.
    /// `&connhealth_core::config_file::process`). Settings the table leaves out keep the
    /// builder's defaults; further setters may follow. [`VioletBuilder::build`] validates.
    pub fn from_config(config: &VioletConfig, env: Lookup<'_>) -> Result<Self, EnvError> {
        let mut b = Violet::builder()
            .app_id(config.app_id)
            .app_secret(env::secret(env, "app_secret_env", &config.app_secret_env)?)
            .username(env::secret(env, "username_env", &config.username_env)?.expose())
            .password(env::secret(env, "password_env", &config.password_env)?);
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
        if let Some(x) = config.exclude_public {
            b = b.exclude_public(x);
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connhealth_core::Provider;

    #[test]
    fn every_key_reaches_the_builder_and_each_variable_is_named() {
        let c: VioletConfig = serde_json::from_value(serde_json::json!({
            "kind": "violet", "name": "violet-live", "base_url": "http://127.0.0.1:9",
            "app_id": 7, "app_secret_env": "S", "username_env": "U", "password_env": "P",
            "exclude_public": true, "timeout_secs": 5, "concurrency": 3,
        }))
        .unwrap();
        let all = |n: &str| Some(format!("secret-of-{n}"));
        let p = VioletBuilder::from_config(&c, &all)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(p.name(), "violet-live");
        let dbg = format!("{p:?}");
        assert!(
            !dbg.contains("secret-of-S") && !dbg.contains("secret-of-P"),
            "{dbg}"
        );
        for (missing, key) in [
            ("S", "app_secret_env"),
            ("U", "username_env"),
            ("P", "password_env"),
        ] {
            let env = |n: &str| (n != missing).then(|| "v".to_owned());
            let e = VioletBuilder::from_config(&c, &env).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{key}: environment variable {missing} is not set")
            );
        }
    }

    #[test]
    fn webhook_secret_defaults_to_the_app_secret_and_can_be_its_own() {
        use connhealth_core::webhook::hmac_sha256;
        use connhealth_core::{HeaderMap, Secret};
        let base = serde_json::json!({
            "kind": "violet", "app_id": 7, "app_secret_env": "S", "username_env": "U",
            "password_env": "P",
        });
        let env = |n: &str| Some(format!("value-of-{n}"));
        let body = br#"{"event":"MERCHANT_CONNECTED","merchant_id":1}"#;
        let signed_with = |secret: &str| {
            let mut h = HeaderMap::new();
            let tag = hmac_sha256(&Secret::new(secret), &[body]);
            let sig: String = tag.iter().map(|b| format!("{b:02x}")).collect();
            h.insert("X-Violet-Hmac", sig.parse().unwrap());
            h
        };
        let now = chrono::Utc::now();

        let c: VioletConfig = serde_json::from_value(base.clone()).unwrap();
        let p = VioletBuilder::from_config(&c, &env)
            .unwrap()
            .build()
            .unwrap();
        assert!(matches!(
            p.verify_webhook(&signed_with("value-of-S"), body, now),
            Some(Ok(_))
        ));

        let mut own = base;
        own["webhook_secret_env"] = "W".into();
        let c: VioletConfig = serde_json::from_value(own).unwrap();
        let p = VioletBuilder::from_config(&c, &env)
            .unwrap()
            .build()
            .unwrap();
        assert!(matches!(
            p.verify_webhook(&signed_with("value-of-W"), body, now),
            Some(Ok(_))
        ));
        assert_eq!(
            p.verify_webhook(&signed_with("value-of-S"), body, now),
            Some(Err(connhealth_core::WebhookError::BadSignature))
        );
        assert!(!format!("{p:?}").contains("value-of-W"));
    }
}
